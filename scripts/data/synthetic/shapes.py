# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Binary lesion shapes: star-shaped outlines around a centre, so that every lesion is one connected region."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .canvas import radial_profile

__all__ = ["SHAPE_KINDS", "lesion_shape"]

# kind -> (irregularity of the outline, range of the long/short axis ratio, spicule amplitude, bend)
_SHAPE_PARAMETERS: dict[str, tuple[float, tuple[float, float], float, float]] = {
    "round": (0.04, (1.0, 1.15), 0.0, 0.0),
    "oval": (0.04, (1.5, 2.1), 0.0, 0.0),
    "lobulated": (0.16, (1.0, 1.4), 0.0, 0.0),
    "irregular": (0.38, (1.0, 1.6), 0.0, 0.0),
    "spiculated": (0.22, (1.0, 1.4), 0.45, 0.0),
    "elongated": (0.07, (2.8, 4.5), 0.0, 0.6),
    "flat": (0.05, (2.0, 3.0), 0.0, 0.0),
    "linear": (0.05, (6.0, 9.0), 0.0, 0.25),
}

#: Shape kinds understood by :func:`lesion_shape`.
SHAPE_KINDS: tuple[str, ...] = tuple(_SHAPE_PARAMETERS)


def lesion_shape(kind: str, radius_px: float, rng: np.random.Generator) -> np.ndarray:
    """A random binary lesion of one shape kind, centred in a square patch of odd size.

    The outline is ``r(theta)`` around the centre (before stretching and bending), and only the 8-connected
    piece holding the centre is kept, so a lesion is one connected region; the patch has a one-pixel empty border.

    Args:
        kind: one of :data:`SHAPE_KINDS`.
        radius_px: mean radius along the long axis, in pixels (at least 1.5).
        rng: random generator; the draw depends on nothing else.

    Returns:
        A boolean array ``(2k + 1, 2k + 1)``.
    """
    if kind not in _SHAPE_PARAMETERS:
        raise ValueError(f"Unknown lesion shape {kind!r}; expected one of {', '.join(SHAPE_KINDS)}.")
    irregularity, aspect_range, spicules, bend_range = _SHAPE_PARAMETERS[kind]
    radius_px = max(float(radius_px), 1.5)
    aspect = rng.uniform(*aspect_range)
    # "flat" lesions lie along the image rows (drusen under the retina); the others take any orientation.
    angle = rng.uniform(-0.12, 0.12) if kind == "flat" else rng.uniform(0.0, np.pi)
    bend = rng.uniform(-bend_range, bend_range)
    half = int(np.ceil(radius_px * (1.0 + 2.2 * irregularity + spicules) + abs(bend) * radius_px)) + 2
    rows, cols = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    along, across = cols * cos + rows * sin, -cols * sin + rows * cos
    # Bend the long axis into an arc (folds, fracture lines) before measuring the radius.
    across = across - bend * along**2 / radius_px
    across = across * aspect
    rho = np.hypot(along, across)
    theta = np.arctan2(across, along)
    outline = radius_px * radial_profile(theta, rng, amplitude=irregularity)
    if spicules:
        count = int(rng.integers(7, 13))
        phase = rng.uniform(0, 2 * np.pi)
        outline = outline * (1.0 + spicules * np.maximum(np.cos(count * theta + phase), 0.0) ** 12)
    shape = rho <= outline
    shape[[0, -1], :] = False
    shape[:, [0, -1]] = False
    shape[half, half] = True
    # Thin spicule tips can fall between pixel centres and leave isolated pixels: keep the piece that holds the
    # centre, so that one lesion is always one 8-connected component.
    labels, _ = ndimage.label(shape, structure=np.ones((3, 3), dtype=bool))
    return labels == labels[half, half]
