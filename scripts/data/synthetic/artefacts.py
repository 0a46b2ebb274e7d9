# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Acquisition noise and artefacts of each modality, at four levels (0 clean ... 3 severe).

They change intensities only, never geometry, so the lesion masks stay exact: quantum noise and streaks for CT,
Rician noise, bias field and ghosting for MRI, exposure and grid for radiographs, speckle and attenuation for
ultrasound, glare and motion blur for endoscopy, hairs and bubbles for dermoscopy, vignetting, haze and dust for
fundus photographs, speckle and shadowing for OCT.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .canvas import Canvas, blend, random_walk, smooth_noise, stroke

__all__ = ["NOISE_LEVELS", "ARTEFACTS", "apply_artefacts"]

#: Noise/artefact levels, recorded as ``noise_level`` in the datalist.
NOISE_LEVELS: tuple[int, ...] = (0, 1, 2, 3)


def _scaled(canvas: Canvas, pixels_at_256: float) -> float:
    return pixels_at_256 * min(canvas.shape) / 256.0


def _correlated_noise(canvas: Canvas, rng: np.random.Generator, sigma: float, correlation_px: float = 0.7):
    noise = ndimage.gaussian_filter(rng.standard_normal(canvas.shape).astype(np.float32), correlation_px)
    return noise * (sigma / (noise.std() + 1e-8))


def _ct(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    if level >= 2:
        # Streaks from a dense object (metal, dense contrast): alternating bright and dark rays through it.
        body = np.argwhere(image > 0.3)
        source_y, source_x = body[rng.integers(len(body))] if len(body) else (c.height // 2, c.width // 2)
        rows, cols = np.mgrid[0 : c.height, 0 : c.width].astype(np.float32)
        for angle in rng.uniform(0, np.pi, int(rng.integers(4, 9)) * (level - 1)):
            distance = (cols - source_x) * np.sin(angle) - (rows - source_y) * np.cos(angle)
            width = _scaled(c, rng.uniform(1.0, 2.5))
            image += rng.choice([-1, 1]) * rng.uniform(0.03, 0.06) * level / 3 * np.exp(-(distance / width) ** 2)
    if level == 3:
        radius = np.hypot(c.y, c.x)
        image += 0.012 * np.sin(radius * c.scale / rng.uniform(2.5, 4.0))
    image += _correlated_noise(c, rng, (0.008, 0.02, 0.035, 0.055)[level], 0.8)
    return image


def _mri(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    bias = np.exp((0.03, 0.1, 0.18, 0.28)[level] * smooth_noise(c.shape, 0.45 * c.scale, rng))
    image *= bias
    if level >= 2:
        # Ghosts of the anatomy shifted along the phase-encoding direction (motion during acquisition).
        axis = int(rng.integers(2))
        shift = int(c.shape[axis] * rng.uniform(0.15, 0.3))
        image += 0.05 * (level - 1) * np.roll(image, shift, axis=axis)
    sigma = (0.01, 0.025, 0.045, 0.07)[level]
    real = image + rng.normal(0, sigma, c.shape)
    imaginary = rng.normal(0, sigma, c.shape)
    return np.sqrt(real**2 + imaginary**2).astype(np.float32)  # Rician magnitude noise


def _xray(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    if level >= 1:
        image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)  # exposure / processing curve
    if level >= 2:
        # Collimator edges and a side marker.
        edge = int(c.shape[1] * rng.uniform(0.02, 0.06))
        image[:, :edge] = image[:, :edge] * 0.5 + 0.3
        image[:, -edge:] = image[:, -edge:] * 0.5 + 0.3
        row, col = int(c.height * rng.uniform(0.05, 0.15)), int(c.width * rng.uniform(0.1, 0.8))
        size = int(_scaled(c, 10))
        image[row : row + size, col : col + size // 2 + 1] = 0.95
    if level == 3:
        image = image + 0.02 * np.sin(np.arange(c.width) * rng.uniform(0.8, 1.5))[None, :]  # anti-scatter grid
        image = image * 0.85 + 0.12  # scatter haze
    image += _correlated_noise(c, rng, (0.008, 0.02, 0.035, 0.05)[level], 0.7)
    return image


def _ultrasound(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    depth = (c.y - c.y.min()) / (c.y.max() - c.y.min())
    image = image * np.exp(-(0.15, 0.3, 0.45, 0.65)[level] * depth)  # attenuation left by the time-gain control
    if level >= 2:
        # Reverberation: faint horizontal bands repeating the near field.
        period = rng.uniform(0.1, 0.2)
        image = image + 0.04 * (level - 1) * np.exp(-depth * 3) * (np.sin(depth / period * 2 * np.pi) > 0.9)
    if level == 3:
        # Contact loss under part of the probe: a dark vertical band.
        center = rng.uniform(c.x.min(), c.x.max())
        image = image * (1 - 0.6 * np.exp(-(((c.x - center) / 0.12) ** 2)))
    # Speckle: the magnitude of smoothed complex Gaussian noise, elongated along the beam's lateral direction.
    real = ndimage.gaussian_filter(rng.standard_normal(c.shape).astype(np.float32), (0.8, 2.0))
    imaginary = ndimage.gaussian_filter(rng.standard_normal(c.shape).astype(np.float32), (0.8, 2.0))
    speckle = np.hypot(real, imaginary)
    speckle /= speckle.mean()
    strength = (0.45, 0.6, 0.75, 0.9)[level]
    image = image * (1 - strength + strength * speckle)
    return image + _correlated_noise(c, rng, 0.01 * (level + 1), 1.0)


def _endoscopy(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    if level >= 2:
        length = int(_scaled(c, 2 + 3 * (level - 1)))
        image = ndimage.uniform_filter1d(image, length, axis=int(rng.integers(2)))  # motion blur
    if level == 3:
        image = image * rng.uniform(1.05, 1.2) + 0.03
    # Specular highlights: small saturated spots, on the brighter (nearer, wetter) mucosa.
    count = int(rng.integers((1, 3, 6, 10)[level], (3, 6, 10, 16)[level]))
    luminance = image.mean(axis=2)
    bright = np.argwhere(luminance > np.percentile(luminance, 60))
    glare = np.zeros(c.shape, dtype=np.float32)
    for row, col in bright[rng.integers(len(bright), size=count)] if len(bright) else ():
        center = ((row - (c.height - 1) / 2) * c.px, (col - (c.width - 1) / 2) * c.px)
        radius = _scaled(c, rng.uniform(1.5, 5.0)) * c.px
        spot = c.ellipse(center, (radius, radius * rng.uniform(1.0, 2.5)), rng.uniform(0, np.pi), _scaled(c, 2.0))
        glare = np.maximum(glare, spot)
    blend(image, glare, (1.0, 1.0, 0.98))
    image += _correlated_noise(c, rng, (0.004, 0.01, 0.02, 0.03)[level], 0.7)[..., None]
    return image


def _dermoscopy(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    angle = rng.uniform(0, 2 * np.pi)
    image *= (1 + (0.0, 0.05, 0.1, 0.15)[level] * (c.x * np.cos(angle) + c.y * np.sin(angle)))[..., None]
    hairs = []
    for _ in range(int(rng.integers((0, 2, 5, 10)[level], (1, 5, 10, 17)[level]))):
        start = (rng.uniform(-0.1, 1.1) * c.height, rng.uniform(-0.1, 1.1) * c.width)
        hairs.append(random_walk(start, rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.4) * c.scale, rng, 0.03))
    if hairs:
        blend(image, stroke(c.shape, hairs, _scaled(c, rng.uniform(1.5, 2.8))) * 0.9, (0.16, 0.11, 0.08))
    if level >= 2:
        for _ in range(int(rng.integers(1, 3 * level))):  # air bubbles in the immersion gel
            center = (rng.uniform(-0.9, 0.9), rng.uniform(-0.9, 0.9))
            radius = rng.uniform(0.02, 0.07)
            ring = c.ellipse(center, (radius, radius), edge_px=1.0) - c.ellipse(center, (radius * 0.85,) * 2)
            blend(image, np.clip(ring, 0, 1) * 0.7, (1.0, 1.0, 1.0))
    image += _correlated_noise(c, rng, (0.004, 0.01, 0.02, 0.03)[level], 0.7)[..., None]
    return image


def _fundus(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    radius = np.hypot(c.y, c.x)
    image *= (1 - (0.05, 0.15, 0.3, 0.45)[level] * np.clip(radius, 0, 1) ** 4)[..., None]
    if level >= 1:
        # Uneven illumination: a bright crescent at one edge of the field.
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.clip(c.x * np.cos(angle) + c.y * np.sin(angle), 0, None)
        image += (0.12 * level / 3 * direction * np.exp(-(((radius - 0.95) / 0.12) ** 2)))[..., None]
        for _ in range(int(rng.integers(1, 2 + 2 * level))):  # dust on the lens
            center = (rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.7))
            dust = c.ellipse(center, (rng.uniform(0.015, 0.04),) * 2, edge_px=_scaled(c, 4.0))
            image *= (1 - 0.25 * dust)[..., None]
    if level >= 2:
        # Haze of media opacities: blur and a veil.
        image = ndimage.gaussian_filter(image, (_scaled(c, 0.8 * (level - 1)),) * 2 + (0,))
        image = image * (1 - 0.12 * (level - 1)) + 0.06 * (level - 1)
    image += _correlated_noise(c, rng, (0.004, 0.01, 0.018, 0.028)[level], 0.7)[..., None]
    return image


def _oct(image: np.ndarray, canvas: Canvas, level: int, rng: np.random.Generator) -> np.ndarray:
    c = canvas
    if level >= 1:
        # Shadows of floaters and retinal vessels: dark vertical columns below a point.
        for _ in range(int(rng.integers(1, 2 + 2 * level))):
            center = rng.uniform(c.x.min(), c.x.max())
            width = rng.uniform(0.01, 0.04)
            image = image * (1 - rng.uniform(0.2, 0.5) * np.exp(-(((c.x - center) / width) ** 2)))
    if level == 3:
        image = image * np.clip(1 - 0.4 * (c.x - c.x.min()) / (c.x.max() - c.x.min()), 0.5, 1)  # signal loss
    real = ndimage.gaussian_filter(rng.standard_normal(c.shape).astype(np.float32), (0.7, 1.2))
    imaginary = ndimage.gaussian_filter(rng.standard_normal(c.shape).astype(np.float32), (0.7, 1.2))
    speckle = np.hypot(real, imaginary)
    speckle /= speckle.mean()
    strength = (0.4, 0.55, 0.7, 0.85)[level]
    image = image * (1 - strength + strength * speckle)
    return image + np.abs(_correlated_noise(c, rng, (0.02, 0.035, 0.05, 0.07)[level], 0.7))


ArtefactModel = Callable[[np.ndarray, Canvas, int, np.random.Generator], np.ndarray]

#: The artefact model of each modality.
ARTEFACTS: dict[str, ArtefactModel] = {
    "CT": _ct,
    "MRI": _mri,
    "X-ray": _xray,
    "ultrasound": _ultrasound,
    "endoscopy": _endoscopy,
    "dermoscopy": _dermoscopy,
    "fundus": _fundus,
    "OCT": _oct,
}


def apply_artefacts(
    image: np.ndarray,
    modality: str,
    level: int,
    rng: np.random.Generator,
    field_of_view: np.ndarray | None = None,
) -> np.ndarray:
    """Noise and artefacts of ``modality`` at ``level``; the result is clipped to [0, 1].

    Args:
        image: float32 ``(H, W)`` or ``(H, W, 3)``, values in [0, 1] (not modified).
        modality: one of :data:`scripts.data.vocabulary.MODALITIES`.
        level: one of :data:`NOISE_LEVELS`.
        rng: random generator.
        field_of_view: opacity of the imaged area; everything outside it ends black.
    """
    if modality not in ARTEFACTS:
        raise ValueError(f"No artefact model for modality {modality!r}; expected one of {', '.join(ARTEFACTS)}.")
    if level not in NOISE_LEVELS:
        raise ValueError(f"noise level must be one of {NOISE_LEVELS}, got {level!r}.")
    canvas = Canvas(*image.shape[:2])
    result = ARTEFACTS[modality](image.astype(np.float32, copy=True), canvas, int(level), rng)
    if field_of_view is not None:
        result = result * (field_of_view[..., None] if result.ndim == 3 else field_of_view)
    return np.clip(result, 0.0, 1.0).astype(np.float32)
