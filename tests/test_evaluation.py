# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import csv
import json

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from scripts.data.prompts import render_answer, render_completion
from scripts.evaluation import EvaluationReport, score_generation, summarize

SIZE = 32
META = {"original_size": (64, 128), "mllm_input_size": (32, 64), "modality": "CT", "anatomy": "lung",
        "disease": "lung nodule", "image_path": "a.png", "question": "Where is the nodule?"}


def _mask(box=None):
    mask = torch.zeros(1, SIZE, SIZE)
    if box is not None:
        x1, y1, x2, y2 = box
        mask[0, y1:y2, x1:x2] = 1
    return mask


def _completion(boxes_mllm):
    return render_completion("A round opacity differs from the lung.", render_answer("lung nodule", boxes_mllm))


CASES = {
    # name: (completion, predicted mask, ground-truth mask, ground-truth boxes in original pixels)
    "perfect": (_completion([[10, 5, 20, 15]]), _mask((4, 4, 12, 12)), _mask((4, 4, 12, 12)), [[20, 10, 40, 30]]),
    "empty": (_completion([]), _mask(), _mask(), []),
    "disjoint": (_completion([[40, 20, 50, 30]]), _mask((0, 0, 6, 6)), _mask((20, 20, 28, 28)), [[20, 10, 40, 30]]),
    "invalid": ("<think> </think> no answer", _mask(), _mask((4, 4, 12, 12)), [[20, 10, 40, 30]]),
    "hallucinated": (_completion([[10, 5, 20, 15]]), _mask((4, 4, 12, 12)), _mask(), []),
}


@pytest.fixture(scope="module")
def scores():
    names = list(CASES)
    completions = [CASES[n][0] for n in names]
    pred = torch.stack([CASES[n][1] for n in names])
    gt = torch.stack([CASES[n][2] for n in names])
    metadata = [{**META, "boxes": CASES[n][3], "num_distractors": i % 2} for i, n in enumerate(names)]
    return dict(zip(names, score_generation(completions, pred, gt, metadata))), pred, gt


def test_hand_made_cases(scores):
    by_name, _, _ = scores
    perfect = by_name["perfect"]
    assert (perfect.dice, perfect.iou, perfect.failure, perfect.format_valid) == (1.0, 1.0, False, True)
    assert perfect.box_miou == pytest.approx(1.0)  # [10,5,20,15] in 32x64 is [20,10,40,30] in 64x128
    empty = by_name["empty"]
    assert (empty.dice, empty.iou, empty.failure, empty.says_no_lesion, empty.box_miou) == (1.0, 1.0, False, True, 1.0)
    disjoint = by_name["disjoint"]
    assert (disjoint.dice, disjoint.failure, disjoint.format_valid, disjoint.box_miou) == (0.0, True, True, 0.0)
    invalid = by_name["invalid"]
    assert invalid.failure and not invalid.format_valid and invalid.format_error and invalid.dice == 0.0
    hallucinated = by_name["hallucinated"]
    assert (hallucinated.dice, hallucinated.failure, hallucinated.box_miou) == (0.0, True, 0.0)
    assert perfect.names_asked_finding and empty.names_asked_finding and not invalid.names_asked_finding


def test_answers_naming_another_finding_are_counted():
    other = _completion([[10, 5, 20, 15]]).replace("lung nodule", "Lung  Nodule")
    wrong = _completion([[10, 5, 20, 15]]).replace("lung nodule", "pleural effusion")
    malformed = wrong.replace("[10,5,20,15]", "[20,5,10,15]")  # names a finding even with a bad box
    metadata = [dict(META, boxes=[]), dict(META, boxes=[]), dict(META, boxes=[]), {k: v for k, v in META.items()
                                                                                  if k != "disease"}]
    masks = torch.stack([_mask()] * 4)
    scores = score_generation([other, wrong, malformed, wrong], masks, masks, metadata)
    assert [s.names_asked_finding for s in scores] == [True, False, False, None]
    assert not scores[2].format_valid
    assert summarize(scores)["finding_match_rate"] == pytest.approx(1 / 3)
    assert summarize(scores)["valid_finding_match_rate"] == pytest.approx(1 / 3)
    # An answer that names the finding but breaks the format counts for the first rate, not the second.
    named_but_malformed = other.replace("[10,5,20,15]", "[20,5,10,15]")
    scores = score_generation([other, named_but_malformed, wrong], masks[:3], masks[:3], metadata[:3])
    assert [(s.names_asked_finding, s.format_valid) for s in scores] == [(True, True), (True, False), (False, True)]
    summary = summarize(scores)
    assert (summary["finding_match_rate"], summary["valid_finding_match_rate"]) == pytest.approx((2 / 3, 1 / 3))


def test_scores_agree_with_monai_metrics(scores):
    by_name, pred, gt = scores
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, gt)[:, 0]
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(pred, gt)[:, 0]
    ours = list(by_name.values())
    np.testing.assert_allclose([s.dice for s in ours], dice.numpy())
    np.testing.assert_allclose([s.iou for s in ours], iou.numpy())
    summary = summarize(ours)
    assert summary["mDice"] == pytest.approx(float(dice.mean()))
    assert summary["failure_rate"] == pytest.approx(3 / 5)
    assert summary["dice_by_anatomy"]["lung"] == pytest.approx(float(dice.mean()))
    assert summary["dice_by_anatomy"]["heart"] is None  # no sample: reported as missing, not 0
    assert summary["dice_with_distractors"] == pytest.approx(float(dice[[1, 3]].mean()))


def test_report_files(tmp_path, scores):
    by_name, _, _ = scores
    overlays = [{"image": np.zeros((16, 16, 3)), "pred": np.eye(16, dtype=bool), "gt": np.eye(16, dtype=bool),
                 "title": "x"}]
    summary = EvaluationReport(tmp_path, method_name="tiny SFT").write(list(by_name.values()), overlays)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 5 and rows[0]["dice"] == "1.0"
    assert json.loads((tmp_path / "summary.json").read_text())["mDice"] == pytest.approx(summary["mDice"])
    table = (tmp_path / "table.md").read_text()
    assert "| Method | mDice ↑ | mIoU ↑ | Fail ↓ | Head | Abd. | Lung |" in table
    assert f"| tiny SFT | {100 * summary['mDice']:.2f} |" in table
    assert (tmp_path / "dice_by_group.png").stat().st_size > 0
    assert (tmp_path / "overlays_best_worst.png").stat().st_size > 0


def test_mismatched_batches_and_empty_reports_are_errors():
    with pytest.raises(ValueError, match="disagree"):
        score_generation(["a"], torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), [{}, {}])
    with pytest.raises(ValueError, match="Nothing"):
        summarize([])


def test_presence_accuracy_counts_well_formed_answers_that_say_rightly_whether_the_finding_is_there(scores):
    by_name, _, _ = scores
    summary = summarize(list(by_name.values()))
    # right: perfect and disjoint (boxes, finding present), empty ("There is no", nothing there);
    # wrong: invalid (no well-formed claim) and hallucinated (boxes on an empty ground truth)
    assert summary["presence_accuracy"] == pytest.approx(3 / 5)
    assert summary["no_lesion_answer_rate"] == pytest.approx(1 / 5)
    says_no_on_a_lesion = score_generation([_completion([])], _mask()[None], _mask((4, 4, 12, 12))[None],
                                           [{**META, "boxes": [[20, 10, 40, 30]]}])
    assert summarize(says_no_on_a_lesion)["presence_accuracy"] == 0.0
