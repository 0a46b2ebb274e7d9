# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Drawing primitives of the phantoms: a normalised coordinate grid, soft shapes, smooth noise and strokes.

Everything works on float32 arrays with values in [0, 1] (grey ``(H, W)`` or colour ``(H, W, 3)``). Shapes are
placed in *normalised* coordinates: the image centre is ``(0, 0)`` and the shorter side spans ``[-1, 1]``, so that
one scene description renders at any size and aspect. Lengths that must stay a few pixels wide whatever the
size (edges, line widths) are given in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["Canvas", "smooth_noise", "random_walk", "branching_tree", "stroke", "blend", "fill"]


class Canvas:
    """The coordinate frame of one image.

    Args:
        height: image height in pixels.
        width: image width in pixels.

    Attributes:
        y, x: normalised row and column coordinates, broadcastable to ``(height, width)``.
        scale: pixels per normalised unit (half the shorter side).
        px: one pixel in normalised units.
    """

    def __init__(self, height: int, width: int) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"Canvas of {height}x{width} pixels is too small; expected at least 8x8.")
        self.height, self.width = int(height), int(width)
        self.scale = min(self.height, self.width) / 2.0
        self.px = 1.0 / self.scale
        self.y = ((np.arange(self.height, dtype=np.float32) - (self.height - 1) / 2) / self.scale)[:, None]
        self.x = ((np.arange(self.width, dtype=np.float32) - (self.width - 1) / 2) / self.scale)[None, :]

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def half_extent(self) -> tuple[float, float]:
        """Normalised half height and half width (one of them is 1)."""
        return self.height / (2 * self.scale), self.width / (2 * self.scale)

    def radial(
        self,
        center: tuple[float, float],
        radii: tuple[float, float],
        angle: float = 0.0,
        rng: np.random.Generator | None = None,
        wobble: float = 0.0,
    ) -> np.ndarray:
        """Normalised elliptic radius around ``center=(cy, cx)`` with ``radii=(ry, rx)``: < 1 inside.

        With ``wobble > 0`` the outline's radius varies smoothly with the angle (organs, body outlines); the
        same array thresholded at several levels gives concentric layers (skin, fat, muscle) of one outline.
        """
        return _radial(self.y, self.x, center, radii, angle, rng, wobble)

    def inside(self, radial: np.ndarray, level: float | np.ndarray, size: float, edge_px: float = 1.0) -> np.ndarray:
        """Opacity of ``radial < level``, with a linear edge ``edge_px`` wide for an outline of radius ``size``."""
        # (level - radial) * size approximates the signed distance to the outline near it, in normalised units.
        signed = (level - radial) * size / (max(edge_px, 0.5) * self.px)
        return np.clip(signed + 0.5, 0.0, 1.0).astype(np.float32)

    def ellipse(
        self,
        center: tuple[float, float],
        radii: tuple[float, float],
        angle: float = 0.0,
        edge_px: float = 1.0,
        rng: np.random.Generator | None = None,
        wobble: float = 0.0,
    ) -> np.ndarray:
        """Opacity of an ellipse (1 inside, 0 outside) with a soft edge ``edge_px`` pixels wide."""
        # Evaluate only the ellipse's bounding window: most shapes cover a small part of the image.
        reach = (max(radii) * (1.0 + 2.5 * wobble) + (max(edge_px, 0.5) + 2.0) * self.px) * self.scale
        row, col = center[0] * self.scale + (self.height - 1) / 2, center[1] * self.scale + (self.width - 1) / 2
        rows = slice(int(np.clip(np.floor(row - reach), 0, self.height)),
                     int(np.clip(np.ceil(row + reach) + 1, 0, self.height)))
        cols = slice(int(np.clip(np.floor(col - reach), 0, self.width)),
                     int(np.clip(np.ceil(col + reach) + 1, 0, self.width)))
        opacity = np.zeros(self.shape, dtype=np.float32)
        radial = _radial(self.y[rows], self.x[:, cols], center, radii, angle, rng, wobble)  # draws rng even if empty
        if radial.size:
            opacity[rows, cols] = self.inside(radial, 1.0, min(radii), edge_px)
        return opacity

    def band(self, y_top: np.ndarray | float, y_bottom: np.ndarray | float, edge_px: float = 1.0) -> np.ndarray:
        """Opacity of the rows between two (per-column) boundaries ``y_top < y < y_bottom``."""
        top = np.clip((self.y - y_top) / (edge_px * self.px) + 0.5, 0.0, 1.0)
        bottom = np.clip((y_bottom - self.y) / (edge_px * self.px) + 0.5, 0.0, 1.0)
        return np.broadcast_to(top * bottom, self.shape).astype(np.float32)

    def segment(
        self, start: tuple[float, float], end: tuple[float, float], half_width: float, edge_px: float = 1.0
    ) -> np.ndarray:
        """Opacity of an elongated ellipse (a bone, a rib) from ``start`` to ``end`` (normalised (y, x))."""
        center = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        length = float(np.hypot(end[0] - start[0], end[1] - start[1])) / 2
        angle = float(np.arctan2(end[0] - start[0], end[1] - start[1]))
        return self.ellipse(center, (half_width, length), angle=angle, edge_px=edge_px)

    def pixels(self, points: np.ndarray) -> np.ndarray:
        """Normalised points ``(N, 2)`` (y, x) as pixel (row, col) positions."""
        points = np.asarray(points, dtype=np.float32)
        return np.stack([points[:, 0] * self.scale + (self.height - 1) / 2,
                         points[:, 1] * self.scale + (self.width - 1) / 2], axis=1)


def _radial(
    y: np.ndarray,
    x: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    rng: np.random.Generator | None,
    wobble: float,
) -> np.ndarray:
    dy, dx = y - np.float32(center[0]), x - np.float32(center[1])
    if angle:
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        dx, dy = dx * cos + dy * sin, -dx * sin + dy * cos
    dy, dx = np.broadcast_arrays(dy / np.float32(radii[0]), dx / np.float32(radii[1]))
    distance = np.sqrt(dy * dy + dx * dx)
    if wobble and rng is not None:
        distance = distance / radial_profile(None, rng, wobble, (2, 3, 4, 5), unit=(dx, dy, distance))
    return distance.astype(np.float32, copy=False)


def radial_profile(
    theta: np.ndarray | None,
    rng: np.random.Generator,
    amplitude: float,
    harmonics: Sequence[int] = (2, 3, 4, 5, 6, 7),
    unit: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``1 + sum_k a_k cos(k theta + phi_k)``, a smooth random radius around a circle (never below 0.35).

    The angle is given either as ``theta`` or as ``unit=(cos_part, sin_part, norm)`` of a vector field, which
    avoids computing angles at all: ``cos(k theta + phi)`` is the real part of ``z**k e^{i phi}``.
    """
    if unit is None:
        z = np.exp(1j * theta.astype(np.float32)).astype(np.complex64)
    else:
        cos_part, sin_part, norm = unit
        z = ((cos_part + 1j * sin_part) / np.maximum(norm, 1e-12)).astype(np.complex64)
    radius = np.ones(z.shape, dtype=np.float32)
    power, previous = np.ones_like(z), 0
    for k in harmonics:
        for _ in range(k - previous):  # z**k by repeated products: exact and cheaper than complex pow
            power = power * z
        previous = k
        weight = rng.uniform(0.3, 1.0) * amplitude / (k - 1) ** 0.8  # higher harmonics weigh less: lumpy, not spiky
        phase = np.complex64(np.exp(1j * rng.uniform(0, 2 * np.pi)))
        radius += np.float32(weight) * (power * phase).real
    return np.maximum(radius, 0.35)


def smooth_noise(shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed over about ``sigma_px`` pixels.

    Large scales are drawn on a coarser grid and interpolated, which costs a fraction of a full-size filter.
    """
    height, width = shape[:2]
    factor = max(1.0, sigma_px / 3.0)
    low_shape = (int(np.ceil(height / factor)) + 3, int(np.ceil(width / factor)) + 3)
    low = ndimage.gaussian_filter(rng.standard_normal(low_shape).astype(np.float32), sigma_px / factor, mode="wrap")
    field = ndimage.zoom(low, factor, order=1, grid_mode=False)[:height, :width] if factor > 1 else low[:height, :width]
    field = field - field.mean()
    return (field / (field.std() + 1e-8)).astype(np.float32)


def random_walk(
    start: tuple[float, float],
    angle: float,
    length_px: float,
    rng: np.random.Generator,
    curvature: float = 0.08,
    step_px: float = 1.0,
) -> np.ndarray:
    """Points ``(N, 2)`` (row, col) of a smooth random curve starting at a pixel position and direction."""
    steps = max(2, int(length_px / step_px))
    turns = np.cumsum(rng.normal(0.0, curvature, steps))
    angles = angle + ndimage.gaussian_filter1d(turns, 3.0)
    deltas = np.stack([np.sin(angles), np.cos(angles)], axis=1) * step_px
    return np.asarray(start, dtype=np.float32) + np.cumsum(deltas, axis=0)


def branching_tree(
    root: tuple[float, float],
    angle: float,
    length_px: float,
    rng: np.random.Generator,
    levels: int = 3,
    branches: tuple[int, int] = (2, 4),
    curvature: float = 0.05,
) -> list[list[np.ndarray]]:
    """A vessel tree: ``levels`` generations of random-walk curves, each branching off its parent.

    Returns:
        One list of curves (pixel point arrays) per generation, trunk first, so that each generation can be
        stroked thinner than the one before.
    """
    generations: list[list[np.ndarray]] = [[random_walk(root, angle, length_px, rng, curvature)]]
    for _ in range(1, levels):
        children = []
        for parent in generations[-1]:
            for _ in range(int(rng.integers(*branches))):
                index = int(rng.integers(len(parent) // 4, max(len(parent) // 4 + 1, len(parent) - 1)))
                step = parent[min(index + 1, len(parent) - 1)] - parent[max(index - 1, 0)]
                heading = float(np.arctan2(step[0], step[1])) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
                reach = length_px * rng.uniform(0.3, 0.6) * (len(parent) - index) / len(parent) + 2
                children.append(random_walk(tuple(parent[index]), heading, reach, rng, curvature))
        generations.append(children)
        length_px *= 0.6
    return generations


def stroke(shape: tuple[int, int], curves: Sequence[np.ndarray], width_px: float) -> np.ndarray:
    """Opacity of curves drawn with a Gaussian pen of full width at half maximum ``width_px``.

    Args:
        shape: ``(H, W)`` of the result.
        curves: point arrays ``(N, 2)`` in pixel (row, col) coordinates, about one point per pixel of length.
        width_px: line width.
    """
    canvas = np.zeros(shape, dtype=np.float32)
    for points in curves:
        rows, cols = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        np.add.at(canvas, (rows[inside], cols[inside]), 1.0)
    sigma = max(width_px, 0.6) / 2.355
    # A blurred line of unit density peaks at 1 / (sqrt(2 pi) sigma): rescale so that its core is opaque.
    return np.clip(ndimage.gaussian_filter(canvas, sigma) * np.sqrt(2 * np.pi) * sigma, 0.0, 1.0)


def blend(image: np.ndarray, alpha: np.ndarray, value: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """``image * (1 - alpha) + value * alpha``, in place, for grey or colour images."""
    alpha = alpha[..., None] if image.ndim == 3 and alpha.ndim == 2 else alpha
    value = np.asarray(value, dtype=np.float32)
    image *= 1.0 - alpha
    image += alpha * value
    return image


def fill(canvas: Canvas, value: float | Sequence[float]) -> np.ndarray:
    """A new image of one grey value (scalar) or colour (3 values)."""
    value = np.asarray(value, dtype=np.float32)
    return np.broadcast_to(value, (*canvas.shape, *value.shape)).copy()
