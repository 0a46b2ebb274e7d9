# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Difficulty-aware filtering: the power-law/knee step on known distributions, and k-fold U-Nets on a collection
with planted hard cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kneed import KneeLocator

from scripts.data.builder.difficulty import (
    DifficultySettings,
    TooFewCasesError,
    cross_validated_errors,
    filter_source,
    fit_error_tail,
    fold_assignment,
    vote_hard_cases,
)
from scripts.data.builder.ingest import SourceSpec, ingest_source

from .conftest import write_planted_collection


def pareto(rng: np.random.Generator, n: int, xmin: float, alpha: float) -> np.ndarray:
    """Continuous power law p(x) ~ x^-alpha for x >= xmin, by inverse transform."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


def test_fit_recovers_alpha_and_xmin_of_a_power_law_tail_above_a_bulk():
    rng = np.random.default_rng(0)
    tail = pareto(rng, 4000, xmin=0.01, alpha=2.5)
    tail = tail[tail <= 1.0]  # errors cannot exceed 1 (0.1% of this tail lies above)
    bulk = rng.uniform(0.0005, 0.01, 3000)  # easy cases below the power-law regime
    fit = fit_error_tail(np.concatenate([bulk, tail, np.zeros(50)]))  # zeros (perfect cases) are left out
    assert fit.valid
    assert fit.n_errors == bulk.size + tail.size
    assert abs(fit.alpha - 2.5) < 3 * fit.sigma + 0.05
    assert 0.007 < fit.clauset_xmin < 0.014
    assert fit.lognormal_p > 0.05 or fit.lognormal_ratio > 0  # a lognormal does not beat the power law
    assert fit.exponential_ratio > 0 and fit.exponential_p < 0.01  # an exponential tail is rejected


def test_knee_is_the_kneedle_point_of_the_fitted_ccdf():
    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.uniform(0.001, 0.05, 500), pareto(rng, 1500, 0.05, 3.0)])
    errors = errors[errors <= 1.0]
    fit = fit_error_tail(errors)
    assert fit.knee_found and fit.clauset_xmin < fit.knee < errors.max()
    # Kneedle on a convex decreasing curve: the point farthest below the chord, where the slope equals the
    # chord's. For y = (x / x0)^(1 - alpha) on [x0, x1] that point has a closed form.
    xs = np.unique(errors[errors >= fit.clauset_xmin])
    x0, x1, beta = xs[0], xs[-1], fit.alpha - 1.0
    y0, y1 = 1.0, (x1 / x0) ** -beta
    analytic = (beta * x0**beta * (x1 - x0) / (y0 - y1)) ** (1.0 / (beta + 1.0))
    spacing = np.diff(xs)[np.searchsorted(xs, analytic) - 1]
    assert abs(fit.knee - analytic) <= 2 * spacing + 1e-3
    # the same as kneed directly on the fitted curve, and the count above it is the data's
    assert fit.knee == KneeLocator(xs, fit.fitted_ccdf(xs), curve="convex", direction="decreasing").knee
    assert fit.n_above_knee == int((errors >= fit.knee).sum())
    # the share of the data above the knee matches the fitted tail probability there
    expected = (errors >= fit.clauset_xmin).mean() * fit.fitted_ccdf(np.array([fit.knee]))[0]
    assert abs((errors >= fit.knee).mean() - expected) < 0.02


def test_fit_refuses_too_few_cases_and_bad_values():
    with pytest.raises(TooFewCasesError, match="positive errors"):
        fit_error_tail([0.0] * 30 + [0.5] * 5, min_cases=20)
    with pytest.raises(TooFewCasesError, match="distinct"):
        fit_error_tail([0.2] * 40 + [0.3] * 40)
    with pytest.raises(ValueError, match="non-negative"):
        fit_error_tail([0.1, -0.2, 0.3])


def test_votes_need_the_requested_number_of_models():
    errors = np.array([[0.9, 0.1, 0.6], [0.8, 0.7, 0.2], [0.1, 0.1, 0.9]])
    votes, hard = vote_hard_cases(errors, threshold=0.5, min_votes=2)
    assert votes.tolist() == [2, 1, 2] and hard.tolist() == [True, False, True]
    assert vote_hard_cases(errors, 0.5, 3)[1].tolist() == [False, False, False]


def test_folds_keep_slices_of_one_volume_together_and_are_balanced():
    groups = [f"vol{i // 4}" for i in range(40)] + [f"img{i}" for i in range(10)]
    folds = fold_assignment(groups, folds=5, seed=3)
    for group in set(groups):
        assert len({f for g, f in zip(groups, folds) if g == group}) == 1
    per_fold = np.bincount([folds[groups.index(g)] for g in sorted(set(groups))], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
    with pytest.raises(TooFewCasesError, match="cannot fill"):
        fold_assignment(["a", "b"], folds=3, seed=0)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="folds >= 2"):
        DifficultySettings(folds=1)
    with pytest.raises(ValueError, match="min_votes"):
        DifficultySettings(models=2, min_votes=3)
    with pytest.raises(ValueError, match="divisible"):
        DifficultySettings(spatial_size=62, channels=(8, 16, 32))
    assert DifficultySettings(models=3).votes_needed == 2


SMALL = dict(folds=3, models=3, channels=(8, 16, 32), spatial_size=64, epochs=25, batch_size=8,
             learning_rate=3e-3, min_cases=10)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    images, masks, hard_names = write_planted_collection(root)
    records = ingest_source(SourceSpec(name="planted", images=str(images), masks=str(masks), modality="CT",
                                       anatomy="abdomen", disease="liver tumor"), progress=False)
    result = filter_source(records, "planted", DifficultySettings(**SMALL), root / "difficulty", progress=False)
    return root, records, hard_names, result


def test_planted_hard_cases_are_in_the_tail(planted):
    root, records, hard_names, result = planted
    names = [r["image"].rsplit("/", 1)[-1] for r in records]
    selected = {name for name, hard in zip(names, result.hard) if hard}
    assert set(hard_names) <= selected, (sorted(hard_names), sorted(selected), result.fit)
    # the tail is the hard cases, not the whole collection: easy cases are learnt and mostly left out
    assert len(selected - set(hard_names)) <= len(hard_names)
    mean_error = np.nanmean(result.errors, axis=0)
    planted_mask = np.isin(names, hard_names)
    assert mean_error[planted_mask].min() > np.median(mean_error[~planted_mask])
    assert result.fit is not None and result.fit.knee <= mean_error[planted_mask].min()
    # outputs: the plot, the per-case CSV and the summary
    folder = root / "difficulty" / "planted"
    assert (folder / "ccdf_knee.png").stat().st_size > 10_000
    rows = (folder / "cases.csv").read_text().splitlines()
    assert len(rows) == len(records) + 1 and rows[0].startswith("image,slice_index,mean_error")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["hard"] == int(result.hard.sum()) and summary["fit"]["knee"] == pytest.approx(result.fit.knee)


def test_every_case_is_predicted_only_by_models_that_never_saw_it(planted):
    root, records, _, result = planted
    cache = next((root / "difficulty" / "planted" / "cache").iterdir())
    folds = fold_assignment([r["image"] for r in records], SMALL["folds"], 0)
    seen = np.zeros((SMALL["models"], len(records)), dtype=int)
    for path in cache.glob("fold*-model*.json"):
        fold, model = (int(part) for part in path.stem.replace("fold", "").split("-model"))
        cases = json.loads(path.read_text())["cases"]
        assert set(cases) == set(np.flatnonzero(folds == fold).tolist())  # its held-out fold, only
        seen[model, cases] += 1
    assert (seen == 1).all()  # every case once per model
    assert not np.isnan(result.errors).any()


def test_cached_models_and_errors_are_reused(planted, monkeypatch):
    root, records, _, result = planted
    import scripts.data.builder.difficulty as difficulty

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(difficulty, "_train_model", no_training)
    monkeypatch.setattr(difficulty, "load_cases", no_training)
    errors, _, _ = cross_validated_errors(records, DifficultySettings(**SMALL),
                                          root / "difficulty" / "planted" / "cache", progress=False)
    np.testing.assert_array_equal(errors, result.errors)


def test_an_interrupted_run_resumes_from_the_saved_models(tmp_path, monkeypatch):
    images, masks, _ = write_planted_collection(tmp_path, easy=10, hard=2, size=32)
    records = ingest_source(SourceSpec(name="s", images=str(images), masks=str(masks), modality="CT",
                                       anatomy="abdomen", disease="liver tumor"), progress=False)
    settings = DifficultySettings(folds=2, models=2, channels=(4, 8), spatial_size=32, epochs=1, batch_size=4)
    import scripts.data.builder.difficulty as difficulty

    real_train, trained = difficulty._train_model, []

    def train_then_stop(*args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt  # the user stops the run during the third model
        trained.append(args[5])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(difficulty, "_train_model", train_then_stop)
    with pytest.raises(KeyboardInterrupt):
        cross_validated_errors(records, settings, tmp_path / "cache", progress=False)
    first = list(trained)

    def count(*args, **kwargs):
        trained.append(args[5])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(difficulty, "_train_model", count)
    errors, _, folder = cross_validated_errors(records, settings, tmp_path / "cache", progress=False)
    assert len(trained) == 4 and set(trained[2:]).isdisjoint(first)  # only the two missing models trained
    assert not np.isnan(errors).any() and len(list(folder.glob("*.pt"))) == 4
    # another setting gets its own cache folder instead of stale models
    _, _, other = cross_validated_errors(records, DifficultySettings(**{**settings.__dict__, "epochs": 2}),
                                         tmp_path / "cache", progress=False)
    assert other != folder


def test_small_sources_follow_the_policy(tmp_path):
    images, masks, _ = write_planted_collection(tmp_path, easy=5, hard=1, size=32)
    records = ingest_source(SourceSpec(name="tiny", images=str(images), masks=str(masks), modality="CT",
                                       anatomy="abdomen", disease="liver tumor"), progress=False)
    common = dict(folds=2, models=1, channels=(4, 8), spatial_size=32, epochs=1, batch_size=4, min_cases=50)
    kept = filter_source(records, "tiny", DifficultySettings(**common), tmp_path / "d", progress=False)
    assert kept.fit is None and kept.hard.all() and "not filtered" in kept.note and "kept" in kept.note
    dropped = filter_source(records, "tiny", DifficultySettings(**common, small_sources="drop"), tmp_path / "d",
                            progress=False)
    assert not dropped.hard.any() and "dropped" in dropped.note
