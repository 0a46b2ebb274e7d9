# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from scripts.data.transforms import LoadImageAndLabeld
from scripts.inference import Prediction, Predictor, predict, write_label_image, write_mask
from scripts.networks import save_trainable_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(tiny_model, device="cpu", max_new_tokens=6)


@pytest.fixture(scope="module")
def bundle_network():
    """The network the bundle's inference config builds (the demo preset), with its own random weights."""
    missing = ROOT / "models" / "no-such-checkpoint.pt"
    return Predictor.from_bundle(ROOT, checkpoint=missing, allow_untrained=True, device="cpu").network


def _png(tmp_path, size=(40, 72)) -> str:
    array = np.random.default_rng(0).integers(0, 255, size=size, dtype=np.uint8)
    path = tmp_path / "scan.png"
    Image.fromarray(array).save(path)
    return str(path)


def _volume(tmp_path) -> str:
    volume = np.random.default_rng(1).normal(40, 30, size=(36, 28, 5)).astype(np.float32)  # (i, j, k)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    return str(path)


def test_prediction_is_in_the_original_geometry(predictor, tmp_path):
    prediction = predictor.predict(_png(tmp_path), "Where is the nodule?", modality="CT", anatomy="lung")
    assert prediction.image_size == (40, 72) and prediction.mask.shape == (40, 72)
    assert prediction.mask.dtype == np.uint8 and set(np.unique(prediction.mask)) <= {0, 1}
    assert prediction.format_valid == (prediction.format_error == "")
    entry = predictor.save(prediction, tmp_path / "out")
    mask = np.asarray(Image.open(entry["mask"]))
    assert mask.shape == (40, 72) and set(np.unique(mask)) <= {0, 255}
    saved = json.loads(Path(entry["json"]).read_text())
    assert saved["question"] == "Where is the nodule?" and saved["image_size"] == [40, 72]
    assert saved["completion"] == prediction.completion and saved["mask_pixels"] == int(prediction.mask.sum())


def test_volume_slice_prediction_is_written_as_nifti_with_the_input_affine(predictor, tmp_path):
    path = _volume(tmp_path)
    prediction = predictor.predict(path, "Find the lesion.", modality="CT", anatomy="abdomen", slice_index=3)
    assert prediction.image_size == (28, 36)  # rows run along j, columns along i
    entry = predictor.save(prediction, tmp_path / "out")
    assert entry["mask"].endswith("_slice3_mask.nii.gz")
    written = nib.load(entry["mask"])
    assert written.shape == (36, 28, 5)
    np.testing.assert_allclose(written.affine, nib.load(path).affine)


def test_written_masks_read_back_as_the_same_labels(tmp_path):
    """Orientation round trip: a mask written for a slice loads (as a label) onto the same pixels."""
    image = _volume(tmp_path)
    mask = np.zeros((28, 36), dtype=np.uint8)
    mask[3:9, 20:33] = 1  # asymmetric, so any transposition or flip shows
    prediction = Prediction(image=image, question="q", completion="", reasoning="", answer="", format_valid=False,
                            format_error="x", seg_count=0, no_lesion=False, boxes=[], mask=mask,
                            image_size=(28, 36), slice_index=2, slice_axis=2)
    written = write_mask(prediction, tmp_path / "mask.nii.gz")
    sample = LoadImageAndLabeld()({"image": image, "label": str(written), "slice_index": 2})
    np.testing.assert_array_equal(np.asarray(sample["label"])[0], mask)
    png = tmp_path / "plain.png"
    Image.fromarray(np.zeros((28, 36), dtype=np.uint8)).save(png)
    prediction.image, prediction.slice_index = str(png), None
    written = write_mask(prediction, tmp_path / "mask.png")
    sample = LoadImageAndLabeld()({"image": str(png), "label": str(written)})
    np.testing.assert_array_equal(np.asarray(sample["label"])[0], mask)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_label_image_of_several_slices_reads_back_slice_by_slice(tmp_path, suffix):
    """write_label_image (the MONAI Label app's writer): every slice's mask, label value 1, the input's grid."""
    image = _volume(tmp_path)
    masks = {0: np.zeros((28, 36), np.uint8), 2: np.zeros((28, 36), np.uint8)}
    masks[0][3:9, 20:33], masks[2][10:12, 1:5] = 1, 1
    predictions = [Prediction(image=image, question="q", completion="", reasoning="", answer="", format_valid=True,
                              format_error="", seg_count=1, no_lesion=False, boxes=[], mask=mask,
                              image_size=(28, 36), slice_index=index, slice_axis=2) for index, mask in masks.items()]
    written = write_label_image(predictions, image, tmp_path / f"label{suffix}")
    for index in range(nib.load(image).shape[2]):
        sample = LoadImageAndLabeld()({"image": image, "label": str(written), "slice_index": index})
        np.testing.assert_array_equal(np.asarray(sample["label"])[0], masks.get(index, 0 * masks[0]))
    if suffix == ".nii.gz":
        np.testing.assert_allclose(nib.load(written).affine, nib.load(image).affine, atol=1e-5)
        assert set(np.unique(np.asarray(nib.load(written).dataobj)).tolist()) == {0, 1}
    with pytest.raises(ValueError, match="No predictions"):
        write_label_image([], image, tmp_path / "none.nii.gz")
    predictions[0].mask = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="does not fit"):
        write_label_image(predictions, image, tmp_path / "bad.nii.gz")


def test_bad_requests_are_reported(predictor, tmp_path):
    with pytest.raises(ValueError, match="question is empty"):
        predictor.predict(_png(tmp_path), "   ")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        predictor.predict(corrupt, "Where is the nodule?")


def test_bundle_predictor_needs_weights_unless_told_otherwise(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_sft.json"):
        Predictor.from_bundle(ROOT, checkpoint=tmp_path / "missing.pt", device="cpu")
    untrained = Predictor.from_bundle(ROOT, checkpoint=tmp_path / "missing.pt", allow_untrained=True,
                                      device="cpu", max_new_tokens=4)
    with torch.no_grad():
        for param in untrained.network.adapter.parameters():
            param.add_(1.0)
    save_trainable_weights(untrained.network, tmp_path / "model.pt")
    loaded = Predictor.from_bundle(ROOT, checkpoint=tmp_path / "model.pt", device="cpu")
    for a, b in zip(untrained.network.adapter.parameters(), loaded.network.adapter.parameters()):
        assert torch.equal(a, b)


def _inference_bundle(tmp_path, model):
    image = _png(tmp_path)
    datalist = {"test": [{"image": image, "question": "Where is the nodule?", "modality": "CT", "anatomy": "lung"},
                         {"image": image, "question": "Is there a cyst?"}]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    save_trainable_weights(model, tmp_path / "model.pt")
    return {"datalist": str(tmp_path / "datalist.json"), "checkpoint": str(tmp_path / "model.pt"),
            "output_dir": str(tmp_path / "predictions"), "max_new_tokens": 4, "bundle_root": str(ROOT)}


def test_inference_config_runs_through_the_bundle_api(bundle_network, tmp_path):
    overrides = _inference_bundle(tmp_path, bundle_network)
    workflow = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference.json"),
                              meta_file=str(ROOT / "configs" / "metadata.json"),
                              logging_file=str(ROOT / "configs" / "logging.conf"), workflow_type="infer", **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    index = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
    assert [entry["question"] for entry in index] == ["Where is the nodule?", "Is there a cyst?"]
    assert all(Path(entry["mask"]).is_file() and Path(entry["json"]).is_file() for entry in index)
    # two questions about one image: two answers on disk, none overwriting the other
    assert len({entry["mask"] for entry in index}) == len({entry["json"] for entry in index}) == 2
    for entry in index:
        assert json.loads(Path(entry["json"]).read_text())["question"] == entry["question"]


def test_predict_cli_prints_and_writes(bundle_network, tmp_path, capsys):
    overrides = _inference_bundle(tmp_path, bundle_network)
    predict(image=_png(tmp_path), question="Where is the nodule?", output_dir=str(tmp_path / "cli"),
            checkpoint=overrides["checkpoint"], device="cpu", max_new_tokens=4)
    printed = capsys.readouterr().out
    assert "answer:" in printed and "mask:" in printed
    assert (tmp_path / "cli" / "scan_mask.png").is_file() and (tmp_path / "cli" / "scan_prediction.json").is_file()
