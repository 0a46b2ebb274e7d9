# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Box-prompt training of the tiny SAM2 and its sam2-format checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from scripts.data.synthetic import ensure_benchmark
from scripts.networks import build_coreseg
from scripts.networks.presets import build_segmenter
from scripts.pretrain_sam import BoxPromptedSegmenter, run


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain_sam")
    datalist = ensure_benchmark(folder / "data", {"training": 8, "validation": 4, "test": 1}, seed=2, progress=False)
    report = run(datalist, str(folder / "sam.pt"), sam_image_size=64, iters=3, batch_size=2, num_workers=0,
                 progress=False)
    return folder, report


def test_training_writes_a_sam2_checkpoint_that_coreseg_loads(pretrained):
    folder, report = pretrained
    content = torch.load(folder / "sam.pt", map_location="cpu", weights_only=True)
    assert set(content) == {"model"}
    model = build_coreseg("tiny", sam_image_size=64, sam_checkpoint=str(folder / "sam.pt"))
    state = model.segmenter.mask_decoder.state_dict()
    assert all(torch.equal(value, content["model"][f"sam_mask_decoder.{name}"]) for name, value in state.items())
    fresh = build_segmenter("tiny", sam_image_size=64)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.mask_decoder.state_dict().values(), state.values()))


def test_report_records_settings_loss_and_prompt_following(pretrained):
    folder, report = pretrained
    assert json.loads((folder / "sam.json").read_text()) == json.loads(json.dumps(report))
    assert report["settings"]["iters"] == 3 and report["loss_curve"][-1]["step"] == 3
    for scores in (report["validation_untrained"], report["validation"]):
        assert 0 <= scores["dice_own_box"] <= 1 and 0 <= scores["dice_other_box"] <= 1
        assert scores["samples"] >= 2 and scores["prompt_sensitivity"] > 0  # the box changes the mask


def test_the_box_trains_the_encoder_and_decoder_through_a_frozen_prompt_encoder():
    torch.manual_seed(0)
    model = BoxPromptedSegmenter(build_segmenter("tiny", sam_image_size=64, train_sam_encoder=True))
    logits = model(torch.randn(2, 3, 64, 64), torch.tensor([[4.0, 4.0, 20.0, 30.0], [30.0, 10.0, 60.0, 40.0]]))
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    segmenter = model.segmenter
    decoder = segmenter.mask_decoder  # the single-mask path (the other mask tokens' heads stay unused)
    for part in (decoder.transformer, decoder.output_upscaling, decoder.output_hypernetworks_mlps[0]):
        assert all(p.grad is not None for p in part.parameters())
    assert any(p.grad is not None for p in segmenter.image_encoder.parameters())
    assert all(not p.requires_grad for p in segmenter.prompt_encoder.parameters())
    with pytest.raises(ValueError, match=r"boxes of shape \(2, 4\)"):
        model(torch.randn(2, 3, 64, 64), torch.zeros(2, 1, 4))


def test_a_datalist_without_lesions_is_refused(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": "a_m.png", "num_targets": 0}],
                                    "validation": []}))
    with pytest.raises(ValueError, match="'training' section has no record with a lesion"):
        run(str(datalist), str(tmp_path / "sam.pt"), progress=False)


def test_a_segmenter_of_unknown_config_cannot_be_written_as_sam2_checkpoint(tmp_path):
    from scripts.networks import MedSAM2Segmenter, save_sam2_checkpoint

    built = build_segmenter("tiny", sam_image_size=64)
    anonymous = MedSAM2Segmenter.__new__(MedSAM2Segmenter)
    torch.nn.Module.__init__(anonymous)
    with pytest.raises(ValueError, match="SAM2 config is unknown"):
        save_sam2_checkpoint(anonymous, tmp_path / "x.pt")
    assert save_sam2_checkpoint(built, tmp_path / "sub" / "x.pt").is_file()
