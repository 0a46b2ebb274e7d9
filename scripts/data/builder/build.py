# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The whole ComLesion-style build: ingest, difficulty filter, CoT/VQA generation, quality scoring, datalist.

Everything a run writes goes under ``out_dir``::

    ingest_report.json             records per source, every skipped image and why
    difficulty/<source>/           cache/ (k-fold U-Nets, errors), ccdf_knee.png, cases.csv, summary.json
    difficulty/summary.json        the fit and hard-case count of every source
    text/generator_cache/          generator replies (a rerun repeats no answered call)
    text/scorer_cache/             scorer replies
    text/samples.csv               status, attempts and scores of every case
    text/quality_report.json       counts, score statistics, endpoint call statistics
    text/scores.png                S_final histogram with the threshold
    datalist.json                  {"training": [...], "test": [...]}: the accepted cases
    report.md                      a readable summary of all of the above

Every stage is resumable: rerunning the same command after an interruption reuses trained models, cached
predictions and cached replies.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..transforms import LoadImageAndLabeld, ScaleIntensityByModalityd
from .difficulty import DifficultySettings, SourceDifficulty, filter_source
from .files import reject_unknown_keys, settings_from_mapping, write_json
from .generation import case_picture, case_question, generate_reasoning, lesion_summary, template_reasoning
from .ingest import IngestReport, SourceSpec, ingest_sources
from .llm import ChatEndpoint, EndpointError, EndpointSettings, MalformedReplyError, ResponseCache
from .quality import PAPER_WEIGHTS, QualityScores, final_score, score_sample

__all__ = ["TextSettings", "SplitSettings", "BuildConfig", "Annotation", "annotate_case", "annotate_cases",
           "split_records", "build_dataset", "STAGES"]

#: Stages a build can stop after.
STAGES: tuple[str, ...] = ("ingest", "filter", "text")


@dataclass
class TextSettings:
    """Generation and quality-assurance settings.

    Attributes:
        quality_threshold: samples with ``S_final`` below it are regenerated (paper: 0.8).
        max_regenerations: regeneration rounds after the first generation (bounded; the best round is kept).
        weights: ``(w1, w2, w3)`` of ``S_final`` (paper: 0.3, 0.3, 0.4).
        keep_rejected: keep samples still below the threshold after the last round (flagged
            ``quality.passed = false``) instead of leaving them out.
        max_workers: cases annotated concurrently (HTTP calls overlap; the cache is shared safely).
    """

    quality_threshold: float = 0.8
    max_regenerations: int = 2
    weights: Sequence[float] = PAPER_WEIGHTS
    keep_rejected: bool = False
    max_workers: int = 4

    def __post_init__(self) -> None:
        self.weights = tuple(float(w) for w in self.weights)
        final_score(0, 0, 0, self.weights)  # validates the weights
        if not 0 <= self.quality_threshold <= 1 or self.max_regenerations < 0 or self.max_workers < 1:
            raise ValueError("quality_threshold must lie in [0, 1], max_regenerations >= 0 and max_workers >= 1; got "
                             f"{self.quality_threshold}, {self.max_regenerations}, {self.max_workers}.")


@dataclass
class SplitSettings:
    """Train/test split of the accepted cases (slices of one image stay together).

    Attributes:
        test_fraction: share of images in the test section (the paper holds out 2421 of 13678 cases).
        seed: shuffling seed.
    """

    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {self.test_fraction}.")


@dataclass
class BuildConfig:
    """Everything a build needs; :meth:`from_mapping` reads the JSON config (``docs/dataset_builder.md``)."""

    sources: list[SourceSpec]
    difficulty: DifficultySettings = field(default_factory=DifficultySettings)
    generator: EndpointSettings = field(default_factory=EndpointSettings)
    scorer: EndpointSettings = field(default_factory=EndpointSettings)
    text: TextSettings = field(default_factory=TextSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    filter: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BuildConfig:
        """A config from a mapping: ``sources`` (list, required), ``difficulty``, ``generator``, ``scorer``,
        ``text``, ``split`` (objects) and ``filter`` (false skips the difficulty filter)."""
        reject_unknown_keys(values, cls, "builder config keys")
        sources = values.get("sources")
        if not isinstance(sources, list) or not sources:
            raise ValueError("The builder config needs 'sources': a non-empty list of source objects "
                             "(name, images + masks or datalist, modality, anatomy, disease...).")
        return cls(
            sources=[SourceSpec.from_mapping(s) for s in sources],
            difficulty=settings_from_mapping(DifficultySettings, values.get("difficulty"), "difficulty settings"),
            generator=EndpointSettings.from_config(values.get("generator"), "generator"),
            scorer=EndpointSettings.from_config(values.get("scorer"), "scorer"),
            text=settings_from_mapping(TextSettings, values.get("text"), "text settings"),
            split=settings_from_mapping(SplitSettings, values.get("split"), "split settings"),
            filter=bool(values.get("filter", True)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> BuildConfig:
        """Read a JSON config."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise FileNotFoundError(f"Builder config {str(path)!r} does not exist.") from error
        except json.JSONDecodeError as error:
            raise ValueError(f"Builder config {str(path)!r} is not valid JSON: {error}.") from error
        if not isinstance(values, dict):
            raise ValueError(f"Builder config {str(path)!r} must hold a JSON object, got {type(values).__name__}.")
        return cls.from_mapping(values)


@dataclass
class Annotation:
    """The text stage's outcome for one case.

    Attributes:
        record: the case with ``question``, ``reasoning``, ``reasoning_source`` and ``quality`` added.
        status: ``"accepted"``, ``"rejected"`` (below the threshold after the last round) or ``"failed"``.
        reason: why it failed or was rejected.
        attempts: generation rounds made.
        scores: the scores of every round.
        malformed: malformed replies met (and re-asked).
    """

    record: dict[str, Any]
    status: str
    reason: str = ""
    attempts: int = 0
    scores: list[QualityScores] = field(default_factory=list)
    malformed: int = 0


def _load_view(record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    # Called directly rather than through Compose, which would wrap the row-naming ValueError in a RuntimeError.
    sample = ScaleIntensityByModalityd()(LoadImageAndLabeld()(dict(record)))
    return np.asarray(sample["image"]), np.asarray(sample["label"])[0], tuple(sample["original_size"])


def annotate_case(
    record: Mapping[str, Any],
    generator: ChatEndpoint | None,
    scorer: ChatEndpoint | None,
    settings: TextSettings,
) -> Annotation:
    """Question, reasoning (two-step LLM or templates) and quality scores of one case, regenerating while
    ``S_final`` is below the threshold (bounded). Never raises for an endpoint or reply problem: the case is
    returned as ``"failed"`` with the reason, and its answered calls stay cached for the next run."""
    record = dict(record)
    stats: dict[str, int] = {}
    rounds = 0
    try:
        needs_picture = any(e is not None and e.settings.send_image for e in (generator, scorer))
        image, mask, size = _load_view(record)
        picture = case_picture(image, mask) if needs_picture else None
        lesions = lesion_summary(record, size)
        question = case_question(record)
        best: tuple[str, QualityScores | None] | None = None
        scores: list[QualityScores] = []
        for attempt in range(settings.max_regenerations + 1):
            rounds = attempt + 1
            if generator is None:
                reasoning = template_reasoning(record, attempt, size)
            else:
                reasoning = generate_reasoning(record, generator, attempt, picture, lesions, stats)
            if scorer is None:
                best = (reasoning, None)
                break
            result = score_sample(record, question, reasoning, scorer, attempt, picture, lesions, settings.weights,
                                  stats)
            scores.append(result)
            if best is None or result.S_final > best[1].S_final:
                best = (reasoning, result)
            if result.S_final >= settings.quality_threshold:
                break
    except (EndpointError, MalformedReplyError) as error:
        return Annotation(record, "failed", str(error), rounds, [], stats.get("malformed", 0))
    except ValueError as error:  # unreadable pixels: the message names the row
        return Annotation(record, "failed", f"unreadable: {error}", 0, [], stats.get("malformed", 0))
    reasoning, chosen = best
    record.update(question=question, reasoning=reasoning,
                  reasoning_source="template" if generator is None else f"llm:{generator.settings.model}")
    status, reason = "accepted", ""
    if chosen is not None:
        passed = chosen.S_final >= settings.quality_threshold
        record["quality"] = {**chosen.to_dict(), "attempts": len(scores), "passed": passed,
                             "scorer": scorer.settings.model}
        if not passed:
            status = "rejected"
            reason = (f"S_final {chosen.S_final:.3f} < {settings.quality_threshold} after {len(scores)} "
                      "generation round(s)")
    return Annotation(record, status, reason, rounds, scores, stats.get("malformed", 0))


def annotate_cases(
    records: Sequence[Mapping[str, Any]],
    generator: ChatEndpoint | None,
    scorer: ChatEndpoint | None,
    settings: TextSettings,
    progress: bool = True,
) -> list[Annotation]:
    """:func:`annotate_case` over all records (``settings.max_workers`` threads), in the records' order."""
    results: list[Annotation | None] = [None] * len(records)
    bar = tqdm(total=len(records), desc="reasoning + QA", unit="case", disable=not progress)
    with ThreadPoolExecutor(max_workers=settings.max_workers) as pool:
        futures = {pool.submit(annotate_case, record, generator, scorer, settings): index
                   for index, record in enumerate(records)}
        counts: Counter = Counter()
        for future in as_completed(futures):
            results[futures[future]] = annotation = future.result()
            counts[annotation.status] += 1
            bar.update()
            bar.set_postfix(counts)
    bar.close()
    return results


def split_records(records: Sequence[Mapping[str, Any]], settings: SplitSettings) -> dict[str, list[dict]]:
    """``{"training": [...], "test": [...]}`` with whole images (all slices of a volume) on one side."""
    images = sorted({str(r["image"]) for r in records})
    order = np.random.default_rng(settings.seed).permutation(len(images))
    n_test = math.floor(len(images) * settings.test_fraction + 0.5) if settings.test_fraction else 0
    if settings.test_fraction and len(images) > 1:
        n_test = min(max(n_test, 1), len(images) - 1)
    test_images = {images[i] for i in order[:n_test]}
    return {"training": [dict(r) for r in records if str(r["image"]) not in test_images],
            "test": [dict(r) for r in records if str(r["image"]) in test_images]}


def _run_filter(records: list[dict], config: BuildConfig, out_dir: Path,
                progress: bool) -> tuple[list[dict], list[SourceDifficulty]]:
    by_source: dict[str, list[dict]] = {}
    for record in records:
        by_source.setdefault(record["source"], []).append(record)
    kept, results = [], []
    for source, source_records in by_source.items():
        result = filter_source(source_records, source, config.difficulty, out_dir / "difficulty", progress)
        results.append(result)
        for index in np.flatnonzero(result.hard):
            column = result.errors[:, index]
            kept.append({**source_records[index],
                         "difficulty": {"mean_error": round(float(np.nanmean(column)), 4),
                                        "votes": int(result.votes[index]), "models": int(column.size)}})
    write_json(out_dir / "difficulty" / "summary.json", [r.summary() for r in results])
    return kept, results


def _plot_scores(annotations: Sequence[Annotation], threshold: float, path: Path) -> Path | None:
    finals = [s.S_final for a in annotations for s in a.scores]
    if not finals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.hist(finals, bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.8, label="every generation round")
    axis.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold}")
    axis.set_xlabel("S_final = 0.3 S_normal + 0.3 S_lesion + 0.4 S_reason")
    axis.set_ylabel("samples")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _text_report(annotations: Sequence[Annotation], endpoints: Mapping[str, ChatEndpoint | None],
                 settings: TextSettings, out_dir: Path) -> dict[str, Any]:
    with (out_dir / "samples.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "slice_index", "disease", "status", "attempts", "S_normal", "S_lesion", "S_reason",
                         "S_final", "malformed_replies", "reason"])
        for a in annotations:
            best = max(a.scores, key=lambda s: s.S_final) if a.scores else None
            writer.writerow([a.record["image"], a.record.get("slice_index", ""), a.record.get("disease"), a.status,
                             a.attempts, *(["", "", "", ""] if best is None else
                                           [f"{best.S_normal:.3f}", f"{best.S_lesion:.3f}", f"{best.S_reason:.3f}",
                                            f"{best.S_final:.3f}"]), a.malformed, a.reason])
    chosen = [a.record["quality"] for a in annotations if "quality" in a.record]
    report = {
        "cases": len(annotations),
        "status": dict(Counter(a.status for a in annotations)),
        "regenerated": sum(1 for a in annotations if a.attempts > 1),
        "attempts": dict(sorted(Counter(a.attempts for a in annotations if a.status != "failed").items())),
        "scored": len(chosen),
        "mean_scores": {key: round(float(np.mean([q[key] for q in chosen])), 4)
                        for key in ("S_normal", "S_lesion", "S_reason", "S_final")} if chosen else None,
        "threshold": settings.quality_threshold,
        "weights": list(settings.weights),
        "endpoints": {role: None if e is None else {"model": e.settings.model, "base_url": e.settings.base_url,
                                                    **dict(e.stats)}
                      for role, e in endpoints.items()},
        "failed": [{"image": a.record["image"], "slice_index": a.record.get("slice_index"), "reason": a.reason}
                   for a in annotations if a.status == "failed"],
    }
    write_json(out_dir / "quality_report.json", report)
    _plot_scores(annotations, settings.quality_threshold, out_dir / "scores.png")
    return report


def _markdown_report(ingest: IngestReport, filtered: Sequence[SourceDifficulty] | None, text: dict | None,
                     datalist: dict | None, out_dir: Path) -> Path:
    lines = ["# Dataset build report", "", "## Ingest", "", f"{ingest.records} records from "
             f"{sum(ingest.images.values())} images; {len(ingest.skipped)} images skipped.", ""]
    for source, reasons in ingest.reasons().items():
        lines.append(f"- {source}: " + ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items())))
    if filtered is not None:
        lines += ["", "## Difficulty-aware filtering", "",
                  "| source | cases | alpha | Clauset x_min | knee | hard cases | note |", "|---|---|---|---|---|---|---|"]
        for r in filtered:
            fit = r.fit
            numbers = ("-", "-", "-") if fit is None else (f"{fit.alpha:.2f} ± {fit.sigma:.2f}",
                                                           f"{fit.clauset_xmin:.3f}", f"{fit.knee:.3f}")
            lines.append(f"| {r.source} | {r.cases} | {' | '.join(numbers)} | {int(r.hard.sum())} | {r.note} |")
    if text is not None:
        lines += ["", "## Reasoning generation and quality assurance", "",
                  f"Status: {text['status']}; regenerated: {text['regenerated']}; rounds per case: {text['attempts']}.",
                  f"Mean scores of the kept rounds: {text['mean_scores']}.", "", "Endpoints:"]
        for role, stats in text["endpoints"].items():
            lines.append(f"- {role}: {'offline (templates)' if stats is None and role == 'generator' else stats}")
        if text["failed"]:
            lines += ["", f"{len(text['failed'])} cases failed (rerun the build to retry them; answered calls are "
                          "cached): see text/quality_report.json."]
    if datalist is not None:
        lines += ["", "## Datalist", ""]
        for section, records in datalist.items():
            counts = Counter((r["modality"], r["anatomy"], r["disease"]) for r in records)
            lines.append(f"- {section}: {len(records)} cases; " + ", ".join(
                f"{m}/{a}/{d} x{n}" for (m, a, d), n in sorted(counts.items())))
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_dataset(
    config: BuildConfig,
    out_dir: str | Path,
    stop_after: str | None = None,
    progress: bool = True,
    generator_client: Any | None = None,
    scorer_client: Any | None = None,
) -> dict[str, Any]:
    """Run the build (see the module docstring for what is written where).

    Args:
        config: the build's settings.
        out_dir: output folder (reused across runs: caches make reruns resume).
        stop_after: ``"ingest"`` or ``"filter"`` to stop early (e.g. to look at the knee plots before paying
            for LLM calls); ``None`` runs everything.
        progress: show progress bars.
        generator_client, scorer_client: ``openai.OpenAI`` clients to use instead of building them from the
            settings.

    Returns:
        A summary: paths written and counts per stage.
    """
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after must be one of {', '.join(STAGES)} or None, got {stop_after!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, ingest = ingest_sources(config.sources, progress)
    ingest.write(out_dir / "ingest_report.json")
    summary: dict[str, Any] = {"out_dir": str(out_dir), "ingested": len(records), "skipped": len(ingest.skipped)}
    filtered = text = datalist = None
    if stop_after != "ingest":
        if config.filter:
            records, filtered = _run_filter(records, config, out_dir, progress)
        summary["hard_cases"] = len(records)
    if stop_after not in ("ingest", "filter"):
        text_dir = out_dir / "text"
        generator = scorer = None
        if config.generator.enabled:
            generator = ChatEndpoint(config.generator, ResponseCache(text_dir / "generator_cache"), generator_client)
        if config.scorer.enabled:
            scorer = ChatEndpoint(config.scorer, ResponseCache(text_dir / "scorer_cache"), scorer_client)
        annotations = annotate_cases(records, generator, scorer, config.text, progress)
        text_dir.mkdir(parents=True, exist_ok=True)
        text = _text_report(annotations, {"generator": generator, "scorer": scorer}, config.text, text_dir)
        kept_status = {"accepted", "rejected"} if config.text.keep_rejected else {"accepted"}
        kept = [a.record for a in annotations if a.status in kept_status]
        datalist = split_records(kept, config.split)
        summary["datalist"] = str(write_json(out_dir / "datalist.json", datalist))
        summary["status"] = text["status"]
        summary.update({section: len(rows) for section, rows in datalist.items()})
    summary["report"] = str(_markdown_report(ingest, filtered, text, datalist, out_dir))
    return summary
