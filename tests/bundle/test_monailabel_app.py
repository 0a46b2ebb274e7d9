# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The MONAI Label app on a real server (tests/bundle/conftest.py), through MONAI Label's own client and ours."""

from __future__ import annotations

import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import requests
from CoreSegLib import CoreSegClient, ServerError
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from PIL import Image
from pydicom.uid import generate_uid

from tests.data.conftest import write_dicom

QUESTION = "Where is the liver tumor?"
MODEL = "coreseg"


def _write_dicom_series(folder: Path, planes: np.ndarray) -> list[Path]:
    """One CT file per (rows, columns) plane, 2.5 mm apart, as a scanner writes a series."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    return [Path(write_dicom(folder / f"slice_{index:03d}.dcm", plane * 4 + 900, intercept=-1024,
                             StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=index + 1,
                             PatientID="CORESEG-TEST", PatientName="Test^Series",
                             ImagePositionPatient=[0.0, 0.0, 2.5 * index], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                             PixelSpacing=[0.7, 0.8], SliceThickness=2.5))
            for index, plane in enumerate(planes)]


@pytest.fixture(scope="module")
def client(coreseg_server) -> CoreSegClient:
    return CoreSegClient(coreseg_server.url, timeout=300)


def test_info_lists_the_reasoning_model_with_its_question_parameter(coreseg_server):
    info = MONAILabelClient(coreseg_server.url).info()
    assert info["name"] == "CORE-Seg"
    model = info["models"][MODEL]
    assert model["type"] == "segmentation" and model["labels"] == {"lesion": 1}
    assert model["config"]["question"] == ""
    assert CoreSegClient(coreseg_server.url).reasoning_models() == [MODEL]


def test_2d_round_trip_with_monailabel_client_gives_the_predictor_answer(coreseg_server, demo_predictor, tmp_path):
    label_file, params = MONAILabelClient(coreseg_server.url, tmpdir=str(tmp_path)).infer(
        MODEL, "ct2d", {"question": QUESTION})
    expected = demo_predictor.predict(coreseg_server.studies / "ct2d.png", QUESTION)
    assert params["question"] == QUESTION
    assert params["completion"] == expected.completion
    assert (params["reasoning"], params["answer"], params["boxes"]) == (expected.reasoning, expected.answer,
                                                                        expected.boxes)
    assert params["format_valid"] == expected.format_valid and params["mask_pixels"] == int(expected.mask.sum())
    label = np.asarray(Image.open(label_file))
    assert label.shape == Image.open(coreseg_server.studies / "ct2d.png").size[::-1] == expected.mask.shape
    assert set(np.unique(label)) <= {0, 1}
    np.testing.assert_array_equal(label, expected.mask)


def test_3d_slice_round_trip_keeps_the_volume_geometry(client, coreseg_server, demo_predictor, tmp_path):
    volume_path = coreseg_server.studies / "ct3d.nii.gz"
    result = client.infer(MODEL, QUESTION, image_id="ct3d", slice_index=1, output_dir=tmp_path)
    expected = demo_predictor.predict(volume_path, QUESTION, slice_index=1, slice_axis=2)
    assert result.params["slice_index"] == 1 and result.params["answer"] == expected.answer
    assert result.label_path.name.endswith(".nii.gz")
    label, reference = nib.load(result.label_path), nib.load(volume_path)
    assert label.shape == reference.shape
    np.testing.assert_allclose(label.affine, reference.affine, atol=1e-4)
    data = np.asarray(label.dataobj)
    np.testing.assert_array_equal(data[:, :, 1], expected.mask.T)  # voxel order: (x, y) = mask transposed
    assert data[:, :, [0, 2]].sum() == 0
    # the stock Slicer plugin's Options table sends numbers as text
    as_text = client.infer(MODEL, QUESTION, image_id="ct3d", slice_index="1", output_dir=tmp_path / "text")
    assert as_text.params["slice_index"] == 1 and as_text.params["completion"] == result.params["completion"]


def test_3d_every_slice_gives_one_answer_per_slice_in_one_label_volume(client, coreseg_server, demo_predictor,
                                                                       tmp_path):
    result = client.infer(MODEL, QUESTION, image_id="ct3d", all_slices=True, result_extension=".nrrd",
                          output_dir=tmp_path)
    assert [entry["slice_index"] for entry in result.slices] == [0, 1, 2]
    label = itk.imread(str(result.label_path))
    reference = itk.imread(str(coreseg_server.studies / "ct3d.nii.gz"))
    assert tuple(itk.size(label)) == tuple(itk.size(reference))
    np.testing.assert_allclose(np.asarray(label.GetOrigin()), np.asarray(reference.GetOrigin()), atol=1e-4)
    data = itk.array_from_image(label)  # (z, y, x)
    for entry in result.slices:
        expected = demo_predictor.predict(coreseg_server.studies / "ct3d.nii.gz", QUESTION,
                                          slice_index=entry["slice_index"], slice_axis=2)
        assert entry["completion"] == expected.completion
        np.testing.assert_array_equal(data[entry["slice_index"]], expected.mask)


@pytest.mark.parametrize("as_zip", [False, True])
def test_dicom_series_uploaded_as_a_session(client, tmp_path, as_zip):
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 255, size=(3, 40, 48))
    files = _write_dicom_series(tmp_path / "series", planes)
    if as_zip:
        archive = tmp_path / "series.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            for path in files:
                handle.write(path, path.name)
        session = client.create_session(archive, uncompress=True)
    else:
        session = client.create_session(files)
    try:
        result = client.infer(MODEL, QUESTION, session_id=session, slice_index=2, output_dir=tmp_path / "out")
    finally:
        client.remove_session(session)
    label = itk.imread(str(result.label_path))
    assert tuple(itk.size(label)) == (48, 40, 3)  # (columns, rows, slices)
    np.testing.assert_allclose(label.GetSpacing(), (0.8, 0.7, 2.5), atol=1e-4)
    assert result.params["image_size"] == [40, 48]
    data = itk.array_from_image(label)
    assert data[[0, 1]].sum() == 0 and data[2].sum() == result.params["mask_pixels"]


def test_twenty_concurrent_requests_are_all_answered_alike(client):
    single = client.infer(MODEL, QUESTION, image_id="ct2d")
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: client.infer(MODEL, QUESTION, image_id="ct2d"), range(20)))
    assert len(results) == 20
    assert all(result.params["completion"] == single.params["completion"] for result in results)
    assert all(result.label_path is not None and result.label_path.stat().st_size > 0 for result in results)


def test_info_answers_while_an_inference_runs(client):
    from bundle.benchmark_serving import info_latencies_during_inference

    result, durations, _ = info_latencies_during_inference(client, MODEL, QUESTION, "ct3d_long", pause=0.2)
    assert len(result.slices) == 12
    assert durations, "the inference ended before /info/ could be asked"
    assert max(durations) < 1.0, durations


@pytest.mark.parametrize(("params", "image", "status", "says"), [
    ({}, "ct2d", 422, "no question"),
    ({"question": "   "}, "ct2d", 422, "no question"),
    ({"question": "x" * 2001}, "ct2d", 422, "2001 characters"),
    ({"question": QUESTION}, "no_such_image", 404, "Unknown image 'no_such_image'"),
    ({"question": QUESTION}, "ct3d", 422, "send 'slice_index'"),
    ({"question": QUESTION, "slice_index": 7}, "ct3d", 422, "0 to 2"),
    ({"question": QUESTION, "slice_index": 0, "result_extension": ".jpg"}, "ct3d", 422, "result_extension"),
    ({"question": QUESTION, "slice_index": 0, "slice_axis": "x"}, "ct3d", 422, "slice_axis must be 0, 1 or 2"),
])
def test_bad_requests_get_clear_4xx_errors(client, coreseg_server, params, image, status, says):
    others = {key: value for key, value in params.items() if key != "question"}
    with pytest.raises(ServerError) as raised:
        client.infer(MODEL, params.get("question", ""), image_id=image, **others)
    assert raised.value.status_code == status and says in raised.value.detail
    with pytest.raises(MONAILabelClientException) as stock:  # MONAI Label's client gets the same answer
        MONAILabelClient(coreseg_server.url).infer(MODEL, image, params)
    assert f"Status: {status}" in stock.value.msg and says in stock.value.msg


def test_corrupt_upload_unknown_model_and_bad_json_are_refused_and_the_server_lives_on(client, coreseg_server,
                                                                                        tmp_path):
    corrupt = tmp_path / "scan.png"
    corrupt.write_bytes(b"this is not a PNG")
    with pytest.raises(ServerError) as raised:
        client.infer(MODEL, QUESTION, image_file=corrupt)
    assert raised.value.status_code == 422 and "Cannot read the image" in raised.value.detail
    with pytest.raises(ServerError) as raised:
        client.infer("no_such_model", QUESTION, image_id="ct2d")
    assert raised.value.status_code == 404 and "Unknown model" in raised.value.detail
    response = requests.post(f"{coreseg_server.url}/infer/{MODEL}", params={"image": "ct2d"},
                             files={"params": (None, "{not json")}, timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]
    with pytest.raises(ServerError) as raised:
        client.infer(MODEL, QUESTION, session_id="no-such-session")
    assert raised.value.status_code == 404
    assert coreseg_server.process.poll() is None
    assert client.infer(MODEL, QUESTION, image_file=coreseg_server.studies / "ct2d.png").format_valid in (True, False)
    assert client.info()["models"][MODEL]


def test_serving_benchmark_prints_its_figures(coreseg_server, capsys):
    from bundle.benchmark_serving import main

    main(["--url", coreseg_server.url, "--image", "ct2d", "--volume", "ct3d", "--concurrent", "3"])
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert printed["concurrent_answered"] == "3" and float(printed["infer_2d_median_s"]) > 0
