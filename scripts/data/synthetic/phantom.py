# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""One phantom: a scene, 0-3 lesions of each finding of a lesion type, and the modality's artefacts.

:func:`render_phantom` is a pure function of its arguments: the same lesion type and seed give the same pixels
and masks on every machine, whatever else was generated before (each image owns its random generator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..vocabulary import LesionType
from .artefacts import NOISE_LEVELS, apply_artefacts
from .canvas import Canvas, blend, smooth_noise
from .findings import FindingStyle, style_of
from .scenes import Scene, image_size, render_scene
from .shapes import lesion_shape

__all__ = ["COUNT_PROBABILITIES", "Lesion", "Phantom", "render_phantom"]

#: Probabilities of 0, 1, 2 and 3 lesions of each finding (drawn independently for the two findings, then
#: capped by the finding's ``max_count``).
COUNT_PROBABILITIES: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)

# Lesions smaller than this many pixels are not placed (they would vanish in the resized model inputs).
_MIN_AREA_PX = 12
# Lesions keep this many pixels apart, so that each is its own 8-connected component of the mask.
_GAP_PX = 3
_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Lesion:
    """One placed lesion: its finding and its binary footprint ``mask`` at ``(top, left)`` in the image."""

    finding: str
    top: int
    left: int
    mask: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.mask.shape[0]), slice(self.left, self.left + self.mask.shape[1])

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Phantom:
    """A rendered phantom.

    Attributes:
        image: uint8 ``(H, W)`` (CT, MRI, X-ray, ultrasound, OCT) or ``(H, W, 3)`` (endoscopy, dermoscopy, fundus).
        lesion_type: what it shows; lesions of ``lesion_type.disease`` and ``lesion_type.distractor``.
        seed: the seed that reproduces it with :func:`render_phantom`.
        noise_level: artefact level, one of :data:`scripts.data.synthetic.artefacts.NOISE_LEVELS`.
        lesions: the placed lesions, in drawing order.
    """

    image: np.ndarray
    lesion_type: LesionType
    seed: int
    noise_level: int
    lesions: tuple[Lesion, ...]

    @property
    def findings(self) -> tuple[str, str]:
        return self.lesion_type.disease, self.lesion_type.distractor

    def count(self, finding: str) -> int:
        """Number of lesions of ``finding``."""
        self._check_finding(finding)
        return sum(lesion.finding == finding for lesion in self.lesions)

    def mask(self, finding: str) -> np.ndarray:
        """uint8 ``(H, W)`` mask of the lesions of ``finding``: 255 on them, 0 elsewhere."""
        self._check_finding(finding)
        mask = np.zeros(self.image.shape[:2], dtype=np.uint8)
        for lesion in self.lesions:
            if lesion.finding == finding:
                mask[lesion.slices][lesion.mask] = 255
        return mask

    def _check_finding(self, finding: str) -> None:
        if finding not in self.findings:
            raise ValueError(f"{finding!r} is not a finding of this phantom; expected one of {self.findings}.")


def render_phantom(
    lesion_type: LesionType,
    seed: int,
    noise_level: int | None = None,
    counts: Mapping[str, int] | None = None,
) -> Phantom:
    """Render the phantom of ``lesion_type`` for ``seed``.

    The seed decides everything (size, scene, lesion counts, shapes and places, artefacts); ``noise_level`` and
    ``counts`` override single draws without changing the others.

    Args:
        lesion_type: an entry of :data:`scripts.data.vocabulary.LESION_TYPES`.
        seed: a non-negative integer.
        noise_level: force this artefact level instead of drawing it.
        counts: force the number of lesions to *try* to place per finding (0-3 each; a lesion that finds no
            room in its region after a number of tries is left out, so :meth:`Phantom.count` is authoritative).

    Returns:
        The :class:`Phantom`.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if noise_level is not None and noise_level not in NOISE_LEVELS:
        raise ValueError(f"noise_level must be one of {NOISE_LEVELS}, got {noise_level!r}.")
    modality, anatomy = lesion_type.modality, lesion_type.anatomy
    findings = (lesion_type.disease, lesion_type.distractor)
    styles = {finding: style_of(modality, finding) for finding in findings}
    if counts is not None:
        unknown = set(counts) - set(findings)
        if unknown:
            raise ValueError(f"counts name findings {sorted(unknown)} that are not in {findings}.")
        for finding, count in counts.items():
            if not 0 <= int(count) <= 3:
                raise ValueError(f"counts[{finding!r}] must be within 0-3, got {count!r}.")

    rng = np.random.default_rng(int(seed))
    height, width = image_size(modality, anatomy, rng)
    drawn_level = int(rng.integers(len(NOISE_LEVELS)))
    drawn_counts = {finding: int(rng.choice(len(COUNT_PROBABILITIES), p=COUNT_PROBABILITIES)) for finding in findings}
    level = drawn_level if noise_level is None else int(noise_level)
    wanted = dict(drawn_counts, **(counts or {}))
    wanted = {finding: min(int(wanted[finding]), styles[finding].max_count) for finding in findings}

    canvas = Canvas(height, width)
    scene = render_scene(modality, anatomy, canvas, rng)
    queue = [finding for finding in findings for _ in range(wanted[finding])]
    rng.shuffle(queue)
    occupied = np.zeros(canvas.shape, dtype=bool)
    lesions = []
    for finding in queue:
        lesion = _place(finding, styles[finding], scene, occupied, rng)
        if lesion is not None:
            lesions.append(lesion)
    scale = min(canvas.shape) / 256.0
    for lesion in lesions:
        _draw(scene, lesion, styles[lesion.finding], scale, rng)
    image = apply_artefacts(scene.image, modality, level, rng, scene.field_of_view)
    pixels = np.round(image * 255.0).astype(np.uint8)
    return Phantom(pixels, lesion_type, int(seed), level, tuple(lesions))


def _place(
    finding: str, style: FindingStyle, scene: Scene, occupied: np.ndarray, rng: np.random.Generator
) -> Lesion | None:
    """Find room for one lesion in its region, clear of the others; ``None`` if none was found."""
    region = scene.regions[style.region]
    candidates = np.flatnonzero(region)
    if candidates.size == 0:
        return None
    height, width = region.shape
    clip = scene.regions[style.clip] if style.clip else None
    for _ in range(_PLACEMENT_TRIES):
        radius = rng.uniform(*style.radius) * min(height, width)
        shape = lesion_shape(style.shape, radius, rng)
        half = shape.shape[0] // 2
        row, col = divmod(int(candidates[rng.integers(candidates.size)]), width)
        top, left = row - half, col - half
        bottom, right = top + shape.shape[0], left + shape.shape[1]
        if clip is None:
            if top < 1 or left < 1 or bottom > height - 1 or right > width - 1:
                continue  # an unclipped lesion must lie wholly in the image
        else:
            shape = shape[max(0, -top) : shape.shape[0] - max(0, bottom - height),
                          max(0, -left) : shape.shape[1] - max(0, right - width)]
            top, left = max(top, 0), max(left, 0)
            bottom, right = top + shape.shape[0], left + shape.shape[1]
            shape = _largest_component(shape & clip[top:bottom, left:right])
        area = int(shape.sum())
        if area < _MIN_AREA_PX:
            continue
        if clip is None and (shape & region[top:bottom, left:right]).sum() < style.min_inside * area:
            continue
        if (shape & occupied[top:bottom, left:right]).any():
            continue
        _occupy(occupied, shape, top, left)
        return _trimmed(finding, shape, top, left)
    return None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _occupy(occupied: np.ndarray, shape: np.ndarray, top: int, left: int) -> None:
    """Mark a lesion and a margin of ``_GAP_PX`` around it as taken."""
    height, width = occupied.shape
    padded = np.pad(shape, _GAP_PX)
    grown = ndimage.binary_dilation(padded, structure=np.ones((3, 3), dtype=bool), iterations=_GAP_PX)
    top_p, left_p = top - _GAP_PX, left - _GAP_PX
    rows = slice(max(top_p, 0), min(top_p + grown.shape[0], height))
    cols = slice(max(left_p, 0), min(left_p + grown.shape[1], width))
    occupied[rows, cols] |= grown[rows.start - top_p : rows.stop - top_p, cols.start - left_p : cols.stop - left_p]


def _trimmed(finding: str, shape: np.ndarray, top: int, left: int) -> Lesion:
    rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
    mask = shape[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
    return Lesion(finding, top + int(rows[0]), left + int(cols[0]), mask)


def _draw(scene: Scene, lesion: Lesion, style: FindingStyle, scale: float, rng: np.random.Generator) -> None:
    """Paint one lesion into the scene image (in place)."""
    image = scene.image
    height, width = image.shape[:2]
    sigma = max(style.margin_px * scale, 0.6)
    pad = int(np.ceil(3 * sigma)) + 2
    top, left = max(lesion.top - pad, 0), max(lesion.left - pad, 0)
    bottom = min(lesion.top + lesion.mask.shape[0] + pad, height)
    right = min(lesion.left + lesion.mask.shape[1] + pad, width)
    local = np.zeros((bottom - top, right - left), dtype=bool)
    local[lesion.top - top : lesion.top - top + lesion.mask.shape[0],
          lesion.left - left : lesion.left - left + lesion.mask.shape[1]] = lesion.mask
    # Blur the footprint into an opacity: the mask sits at its half-opacity contour, the border fades around it.
    alpha = ndimage.gaussian_filter(local.astype(np.float32), sigma)
    radius = np.sqrt(lesion.area / np.pi)
    mottling = smooth_noise(local.shape, max(1.0, radius / 4), rng)
    tone = np.asarray(style.tone, dtype=np.float32)
    if style.blend == "fill":
        tone = tone + rng.uniform(-0.03, 0.03)
    else:
        tone = tone * rng.uniform(0.8, 1.2)
    colour = image.ndim == 3
    if colour:
        if style.accent is not None:
            weight = np.clip(0.4 + 0.6 * mottling, 0.0, 1.0)[..., None]
            value = tone * (1 - weight) + np.asarray(style.accent, dtype=np.float32) * weight
        else:
            value = tone + style.texture * mottling[..., None]
    else:
        value = tone[0] + style.texture * mottling
    if style.core is not None:
        depth = ndimage.distance_transform_edt(local)
        core = ndimage.gaussian_filter((depth > 0.45 * depth.max()).astype(np.float32), sigma + 1.0)
        change = np.asarray(style.core, dtype=np.float32)
        value = value + (core[..., None] * change if colour else core * change[0])
    if colour and scene.shading is not None:
        value = value * scene.shading[top:bottom, left:right, None]
    window = image[top:bottom, left:right]
    if style.blend == "fill":
        blend(window, alpha, value)
    else:
        window += (alpha[..., None] if colour else alpha) * value
    if style.relief:
        # Light from the upper left: a raised lesion is brighter on that side and shadowed on the other.
        height_map = ndimage.gaussian_filter(local.astype(np.float32), max(radius / 3, 1.0))
        grad_rows, grad_cols = np.gradient(height_map)
        lit = np.clip(1.0 - style.relief * radius * (grad_rows + grad_cols), 0.6, 1.4)
        window *= lit[..., None] if colour else lit
    if style.posterior:
        _posterior_effect(image, lesion, style.posterior, scale)


def _posterior_effect(image: np.ndarray, lesion: Lesion, strength: float, scale: float) -> None:
    """Ultrasound shadowing (< 0) or enhancement (> 0) in the columns below a lesion, fading with depth."""
    height = image.shape[0]
    columns = lesion.mask.any(axis=0)
    thickness = lesion.mask.sum(axis=0) / max(lesion.mask.sum(axis=0).max(), 1)
    bottoms = lesion.top + lesion.mask.shape[0] - np.argmax(lesion.mask[::-1], axis=0)
    rows = np.arange(height)[:, None]
    below = rows - bottoms[None, :]
    decay = 60.0 * scale
    profile = np.where(below > 0, np.exp(-below / decay) * (1 - np.exp(-below / (4.0 * scale))), 0.0)
    weight = ndimage.gaussian_filter1d((columns * thickness).astype(np.float32), 2.0 * scale)
    cols = slice(lesion.left, lesion.left + lesion.mask.shape[1])
    image[:, cols] *= (1.0 + strength * profile * weight[None, :]).astype(np.float32)
