# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A grid of phantoms per modality with the asked lesions and the distractors outlined."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..vocabulary import MODALITIES, lesion_types_for  # noqa: E402
from .artefacts import NOISE_LEVELS  # noqa: E402
from .phantom import render_phantom  # noqa: E402

__all__ = ["TARGET_COLOUR", "DISTRACTOR_COLOUR", "plot_phantom_grid"]

TARGET_COLOUR = "#39ff14"
DISTRACTOR_COLOUR = "#ff2bd6"
_FIGURE_STREAM = 7  # seeds of the figure's phantoms are drawn apart from any split's


def plot_phantom_grid(
    out_path: str | Path = "docs/images/synthetic_phantoms.png",
    seed: int = 0,
    columns: int = 4,
    cell_inches: float = 2.6,
    dpi: int = 110,
) -> Path:
    """Save a grid with one row per modality: phantoms, asked lesions and distractors outlined.

    Each row cycles through the modality's lesion types and alternates the asked finding; the noise level grows
    along the row, and every phantom holds 1-2 lesions of each finding so that both outlines show.

    Args:
        out_path: PNG to write (folders are created).
        seed: seed of the drawn phantoms.
        columns: phantoms per modality.
        cell_inches: size of one cell.
        dpi: resolution.

    Returns:
        The written path.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}.")
    rows = len(MODALITIES)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * cell_inches, rows * cell_inches * 0.95),
                                squeeze=False)
    for row, modality in enumerate(MODALITIES):
        lesion_types = lesion_types_for(modality=modality)
        for column in range(columns):
            lesion_type = lesion_types[column % len(lesion_types)]
            rng = np.random.default_rng([seed, _FIGURE_STREAM, row, column])
            asked_index = (column // len(lesion_types)) % 2  # each type with both questions along the row
            asked = (lesion_type.disease, lesion_type.distractor)[asked_index]
            other = (lesion_type.disease, lesion_type.distractor)[1 - asked_index]
            phantom = render_phantom(
                lesion_type,
                seed=int(rng.integers(2**31)),
                noise_level=NOISE_LEVELS[column % len(NOISE_LEVELS)],
                counts={asked: int(rng.integers(1, 3)), other: int(rng.integers(1, 3))},
            )
            axis = axes[row, column]
            axis.imshow(phantom.image, cmap="gray" if phantom.image.ndim == 2 else None, vmin=0, vmax=255,
                        interpolation="antialiased")
            for finding, colour, style in ((asked, TARGET_COLOUR, "solid"), (other, DISTRACTOR_COLOUR, "dashed")):
                mask = phantom.mask(finding)
                if mask.any():
                    axis.contour(mask > 0, levels=[0.5], colors=colour, linewidths=0.9, linestyles=style)
            axis.set_title(f"{modality} · {lesion_type.anatomy}\nasked: {asked}", fontsize=7.5, pad=2)
            axis.set_xlabel(f"distractor: {other} · noise {phantom.noise_level}", fontsize=6.5, labelpad=1)
            axis.set_xticks([])
            axis.set_yticks([])
    handles = [Line2D([], [], color=TARGET_COLOUR, lw=2, label="asked finding (mask)"),
               Line2D([], [], color=DISTRACTOR_COLOUR, lw=2, ls="--", label="distractor (not in mask)")]
    figure.legend(handles=handles, loc="upper center", ncol=2, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.985), h_pad=0.6, w_pad=0.3)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=dpi, facecolor="white")
    plt.close(figure)
    return out_path
