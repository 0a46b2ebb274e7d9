# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Anatomical context of the phantoms: one scene per (modality, anatomy) of the lesion vocabulary.

A scene is the normal image (body outline, organs, vessels, bones, retina, skin...) before lesions and
artefacts, plus the named regions where lesions grow (``"liver"``, ``"lung"``, ``"thyroid"``...). Grey values
follow each modality's usual display (CT in a brain, soft-tissue or lung window, MRI by sequence, radiographs
with bone bright, ultrasound as echogenicity before speckle); the lesion styles in ``findings.py`` are tuned to
them. Shapes are drawn in the canvas's normalised coordinates, so one scene renders at any size and aspect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .canvas import Canvas, blend, branching_tree, fill, random_walk, smooth_noise, stroke

__all__ = ["Scene", "SCENES", "IMAGE_SIZES", "image_size", "render_scene"]


@dataclass
class Scene:
    """A normal image and the regions lesions may occupy.

    Attributes:
        image: float32 ``(H, W)`` grey or ``(H, W, 3)`` colour, values in [0, 1].
        regions: boolean ``(H, W)`` masks by name.
        field_of_view: float32 ``(H, W)`` opacity of the imaged area (ultrasound sector, scope or fundus
            circle); the artefacts keep everything outside it black. ``None``: the whole frame.
        shading: float32 ``(H, W)`` illumination of colour scenes; lesion colours are multiplied by it so that a
            lesion in a dim corner is dim too. ``None``: uniform.
    """

    image: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    field_of_view: np.ndarray | None = None
    shading: np.ndarray | None = None


class _Painter:
    """Paints layers back to front and remembers them, to tell later which part of a layer stays visible."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.layers: list[tuple[str, np.ndarray]] = []

    def paint(self, name: str, alpha: np.ndarray, value: float | tuple | np.ndarray) -> np.ndarray:
        blend(self.image, alpha, value)
        self.layers.append((name, alpha))
        return alpha

    def visible(self, name: str, threshold: float = 0.5) -> np.ndarray:
        """Where the layers called ``name`` are opaque and not covered by a later layer."""
        seen = np.zeros(self.image.shape[:2], dtype=np.float32)
        for layer_name, alpha in self.layers:
            if layer_name == name:
                seen = np.maximum(seen, alpha)
            else:
                seen = seen * (1.0 - alpha)
        return seen > threshold


def _texture(canvas: Canvas, rng: np.random.Generator, sigma: float, amplitude: float) -> np.ndarray:
    """Smooth noise of normalised correlation length ``sigma``, scaled to ``amplitude``."""
    return amplitude * smooth_noise(canvas.shape, sigma * canvas.scale, rng)


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=max(1, int(pixels))) if pixels > 0 else mask


def _px(canvas: Canvas, pixels_at_256: float) -> float:
    """A length given in pixels of a 256-pixel image, at this canvas's size."""
    return pixels_at_256 * min(canvas.shape) / 256.0


# --------------------------------------------------------------------------------------------- head (CT, MRI)


def _head(canvas: Canvas, rng: np.random.Generator, values: dict[str, float]) -> Scene:
    c = canvas
    center = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04))
    radii = (rng.uniform(0.84, 0.92), rng.uniform(0.66, 0.75))
    angle = rng.uniform(-0.12, 0.12)
    rho = c.radial(center, radii, angle, rng, wobble=0.025)
    size = min(radii)
    painter = _Painter(fill(c, values["background"]))
    painter.paint("scalp", c.inside(rho, 1.0, size, 1.5), values["scalp"] + _texture(c, rng, 0.03, 0.02))
    painter.paint("skull", c.inside(rho, 0.955, size, 1.0), values["skull"])
    brain = c.inside(rho, 0.90, size, 1.0)
    painter.paint("brain", brain, values["grey"] + _texture(c, rng, 0.02, 0.012))
    folded = 0.70 + 0.06 * smooth_noise(c.shape, 0.05 * c.scale, rng)
    painter.paint("brain", c.inside(rho, folded, size, 2.5), values["white"] + _texture(c, rng, 0.03, 0.01))
    sulci = (np.abs(smooth_noise(c.shape, 0.02 * c.scale, rng)) < 0.22) & (rho > 0.8) & (rho < 0.9)
    painter.paint("csf", ndimage.gaussian_filter(sulci.astype(np.float32), 0.6) * 0.8, values["csf"])
    cy, cx = center
    ventricles = np.zeros(c.shape, dtype=np.float32)
    spread = rng.uniform(0.08, 0.12)
    for side in (-1, 1):
        ventricles = np.maximum(ventricles, c.ellipse(
            (cy - 0.08, cx + side * spread * radii[1] / 0.7), (0.24, 0.045 + rng.uniform(0, 0.02)),
            angle=angle + side * 0.25, edge_px=1.2, rng=rng, wobble=0.1))
        ventricles = np.maximum(ventricles, c.ellipse(
            (cy + 0.28, cx + side * 0.2), (0.07, 0.03), angle=side * 0.6, edge_px=1.2))
    ventricles = np.maximum(ventricles, c.ellipse((cy + 0.1, cx), (0.07, 0.015), angle=angle, edge_px=1.0))
    painter.paint("csf", ventricles, values["csf"])
    # The falx: a thin midline membrane in front of and behind the ventricles.
    falx_lines = [_line(c, (cy - radii[0] * 0.88, cx), (cy - 0.34, cx)),
                  _line(c, (cy + 0.36, cx), (cy + radii[0] * 0.88, cx))]
    falx = stroke(c.shape, falx_lines, _px(c, 1.3)) * brain
    painter.paint("falx", falx * 0.7, values["falx"])
    region = painter.visible("brain") & (rho < 0.84) & ~(ndimage.binary_dilation(ventricles > 0.1, iterations=2))
    return Scene(painter.image, {"brain": region})


def _line(canvas: Canvas, start, end) -> np.ndarray:
    """Pixel points along a straight normalised segment, one per pixel."""
    start_px, end_px = canvas.pixels(np.array([start, end]))
    count = int(np.hypot(*(end_px - start_px))) + 2
    return np.linspace(start_px, end_px, count)


def _ct_head(canvas: Canvas, rng: np.random.Generator) -> Scene:
    return _head(canvas, rng, {"background": 0.0, "scalp": 0.33, "skull": 1.0, "grey": 0.47, "white": 0.40,
                               "csf": 0.14, "falx": 0.62})


def _mri_head(canvas: Canvas, rng: np.random.Generator) -> Scene:
    # FLAIR: fluid suppressed (dark), grey matter a little brighter than white matter, fatty scalp bright.
    return _head(canvas, rng, {"background": 0.0, "scalp": 0.58, "skull": 0.04, "grey": 0.50, "white": 0.41,
                               "csf": 0.05, "falx": 0.06})


# ------------------------------------------------------------------------------------------ abdomen (CT, MRI)


def _abdomen(canvas: Canvas, rng: np.random.Generator, v: dict[str, float]) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    center = (rng.uniform(0.0, 0.06), rng.uniform(-0.04, 0.04))
    radii = (min(0.68, 0.82 * half_height) * rng.uniform(0.9, 1.0),
             min(0.94, 0.95 * half_width) * rng.uniform(0.88, 1.0))
    rho = c.radial(center, radii, 0.0, rng, wobble=0.035)
    size = min(radii)
    (cy, cx), (ry, rx) = center, radii

    def at(py: float, px: float) -> tuple[float, float]:
        return cy + py * ry, cx + px * rx

    p = _Painter(fill(c, v["background"]))
    if v.get("table") is not None:
        table_y = cy + ry * 1.08
        p.paint("table", c.band(table_y, table_y + 3 * c.px * _px(c, 1.0), 1.0) * 0.8, v["table"])
    p.paint("skin", c.inside(rho, 1.0, size, 1.5), v["muscle"])
    p.paint("fat", c.inside(rho, 0.985, size, 1.0), v["fat"] + _texture(c, rng, 0.03, 0.015))
    p.paint("muscle", c.inside(rho, 0.90, size, 1.2), v["muscle"] + _texture(c, rng, 0.02, 0.015))
    cavity = c.inside(rho, 0.85, size, 1.2)
    p.paint("fat", cavity, v["fat"] + _texture(c, rng, 0.03, 0.015))
    for _ in range(int(rng.integers(6, 11))):
        loop_center = at(rng.uniform(-0.65, 0.15), rng.uniform(-0.25, 0.65))
        loop_radii = (rng.uniform(0.07, 0.12) * ry, rng.uniform(0.05, 0.09) * rx)
        loop_angle = rng.uniform(0, np.pi)
        p.paint("bowel", c.ellipse(loop_center, loop_radii, loop_angle, 1.2, rng, 0.12) * cavity, v["bowel_wall"])
        content = v["gas"] if rng.random() < 0.4 else v["bowel_content"]
        lumen_radii = (loop_radii[0] * 0.6, loop_radii[1] * 0.6)
        p.paint("bowel", c.ellipse(loop_center, lumen_radii, loop_angle, 1.5) * cavity, content)
    stomach = c.ellipse(at(-0.45, 0.32), (0.22 * ry, 0.24 * rx), angle=0.4, edge_px=1.2, rng=rng, wobble=0.1) * cavity
    p.paint("stomach", stomach, v["bowel_wall"])
    p.paint("stomach", stomach * c.band(-10, at(-0.5, 0)[0], 1.5) * (stomach > 0.9), v["gas"])
    liver = c.ellipse(at(-0.14, -0.42), (0.52 * ry, 0.42 * rx), angle=0.35, edge_px=1.3, rng=rng, wobble=0.08)
    p.paint("liver", liver * cavity, v["liver"] + _texture(c, rng, 0.015, 0.012))
    for _ in range(int(rng.integers(3, 6))):  # hepatic and portal veins
        start = c.pixels(np.array([at(0.1, -0.22)]))[0]
        vein = random_walk(tuple(start), rng.uniform(2.3, 4.0), rng.uniform(0.2, 0.45) * c.scale, rng, 0.05)
        # painted as part of the liver: lesions may grow over the veins
        p.paint("liver", stroke(c.shape, [vein], _px(c, rng.uniform(2.0, 3.5))) * liver * 0.8, v["liver_vessel"])
    p.paint("spleen", c.ellipse(at(0.12, 0.66), (0.3 * ry, 0.13 * rx), angle=-0.6, edge_px=1.3, rng=rng,
                                wobble=0.08) * cavity, v["spleen"])
    pancreas = c.ellipse(at(0.08, 0.2), (0.1 * ry, 0.36 * rx), angle=-0.25, edge_px=1.2, rng=rng, wobble=0.18)
    p.paint("pancreas", pancreas * cavity, v["pancreas"] + _texture(c, rng, 0.01, 0.02))
    p.paint("vessel", c.ellipse(at(0.32, 0.07), (0.075 * ry, 0.075 * ry), edge_px=1.0), v["aorta"])
    p.paint("vessel", c.ellipse(at(0.28, -0.15), (0.06 * ry, 0.05 * rx), edge_px=1.0), v["ivc"])
    for side in (-1, 1):
        p.paint("psoas", c.ellipse(at(0.55, side * 0.17), (0.17 * ry, 0.09 * rx), angle=side * 0.3, edge_px=1.2),
                v["muscle"])
        kidney_center = at(0.42, side * 0.42)
        kidney = c.ellipse(kidney_center, (0.21 * ry, 0.12 * rx), angle=side * 0.5, edge_px=1.2, rng=rng, wobble=0.05)
        p.paint("kidney", kidney, v["kidney_cortex"])
        p.paint("kidney", c.ellipse(kidney_center, (0.15 * ry, 0.075 * rx), angle=side * 0.5, edge_px=2.0),
                v["kidney_medulla"])
        p.paint("sinus", c.ellipse(at(0.43, side * 0.35), (0.07 * ry, 0.035 * rx), angle=side * 0.5, edge_px=1.5),
                v["sinus"])
    vertebra = c.ellipse(at(0.6, 0.0), (0.17 * ry, 0.17 * ry), edge_px=1.0)
    p.paint("bone", vertebra, v["cortex"])
    p.paint("bone", c.ellipse(at(0.6, 0.0), (0.14 * ry, 0.14 * ry), edge_px=1.0), v["marrow"]
            + _texture(c, rng, 0.01, 0.03))
    p.paint("bone", c.ellipse(at(0.86, 0.0), (0.12 * ry, 0.14 * rx), edge_px=1.0), v["cortex"])
    p.paint("canal", c.ellipse(at(0.84, 0.0), (0.065 * ry, 0.065 * ry), edge_px=1.0), v["canal"])
    pancreas_region = p.visible("pancreas")
    # Pseudocysts grow next to the gland as often as in it.
    around = ndimage.binary_dilation(pancreas_region, iterations=max(1, int(0.1 * c.scale))) & (cavity > 0.5)
    return Scene(p.image, {"liver": _erode(p.visible("liver"), 2), "kidney": p.visible("kidney"),
                           "pancreas": pancreas_region, "peripancreatic": around})


def _ct_abdomen(canvas: Canvas, rng: np.random.Generator) -> Scene:
    return _abdomen(canvas, rng, {
        "background": 0.0, "table": 0.55, "fat": 0.22, "muscle": 0.50, "bowel_wall": 0.50, "bowel_content": 0.40,
        "gas": 0.01, "liver": 0.58, "liver_vessel": 0.70, "spleen": 0.55, "pancreas": 0.50, "aorta": 0.80,
        "ivc": 0.68, "kidney_cortex": 0.70, "kidney_medulla": 0.60, "sinus": 0.24, "cortex": 0.97, "marrow": 0.72,
        "canal": 0.36})


def _mri_abdomen(canvas: Canvas, rng: np.random.Generator) -> Scene:
    # T2-weighted single-shot: fat bright, liver dark, flowing blood black, CSF very bright.
    return _abdomen(canvas, rng, {
        "background": 0.0, "table": None, "fat": 0.60, "muscle": 0.20, "bowel_wall": 0.32, "bowel_content": 0.28,
        "gas": 0.02, "liver": 0.26, "liver_vessel": 0.06, "spleen": 0.50, "pancreas": 0.40, "aorta": 0.03,
        "ivc": 0.08, "kidney_cortex": 0.48, "kidney_medulla": 0.62, "sinus": 0.58, "cortex": 0.05, "marrow": 0.38,
        "canal": 0.92})


# ----------------------------------------------------------------------------------------------- CT, lung, neck


def _ct_lung(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    center = (rng.uniform(0.0, 0.05), rng.uniform(-0.03, 0.03))
    radii = (min(0.66, 0.82 * half_height) * rng.uniform(0.92, 1.0),
             min(0.95, 0.95 * half_width) * rng.uniform(0.9, 1.0))
    rho = c.radial(center, radii, 0.0, rng, wobble=0.03)
    size = min(radii)
    (cy, cx), (ry, rx) = center, radii
    p = _Painter(fill(c, 0.0))
    p.paint("body", c.inside(rho, 1.0, size, 1.5), 0.78 + _texture(c, rng, 0.03, 0.01))
    p.paint("fat", c.inside(rho, 0.97, size, 1.0) - c.inside(rho, 0.9, size, 1.0), 0.66)
    heart = c.ellipse((cy + 0.1 * ry, cx + 0.12 * rx), (0.34 * ry, 0.3 * rx), angle=0.5, edge_px=1.2)
    lungs = np.zeros(c.shape, dtype=np.float32)
    for side in (-1, 1):
        lung = c.ellipse((cy - 0.04 * ry, cx + side * 0.45 * rx), (0.74 * ry, 0.4 * rx), angle=side * 0.1,
                         edge_px=1.0, rng=rng, wobble=0.06)
        lungs = np.maximum(lungs, lung * c.inside(rho, 0.86, size, 1.0))
    lungs = lungs * (1.0 - heart)
    p.paint("lung", lungs, 0.08 + _texture(c, rng, 0.01, 0.012))
    trees = []
    for side in (-1, 1):
        hilum = c.pixels(np.array([(cy + 0.0, cx + side * 0.2 * rx)]))[0]
        for angle in np.linspace(-1.4, 1.4, 6) + (0.0 if side > 0 else np.pi):
            trees.append(branching_tree(tuple(hilum), angle + rng.normal(0, 0.2), rng.uniform(0.3, 0.5) * c.scale, rng,
                                        levels=3, curvature=0.08))
    vessels = np.zeros(c.shape, dtype=np.float32)
    for generation, width in enumerate((2.6, 1.7, 1.1)):
        curves = [curve for tree in trees for curve in tree[generation]]
        vessels = np.maximum(vessels, stroke(c.shape, curves, _px(c, width)) * (1 - 0.2 * generation))
    vessels = vessels * lungs
    dots = np.zeros(c.shape, dtype=np.float32)
    lung_pixels = np.flatnonzero(lungs > 0.9)
    if lung_pixels.size:
        picks = rng.choice(lung_pixels, size=min(lung_pixels.size, int(rng.integers(25, 60))), replace=False)
        dots.flat[picks] = 1.0
    dots = np.clip(ndimage.gaussian_filter(dots, _px(c, 0.9)) * 6.0, 0, 1)
    p.paint("vessel", np.maximum(vessels, dots) * 0.85, 0.5)
    p.paint("airway", c.ellipse((cy - 0.3 * ry, cx), (0.055, 0.055), edge_px=1.0), 0.62)
    p.paint("airway", c.ellipse((cy - 0.3 * ry, cx), (0.042, 0.042), edge_px=1.0), 0.02)
    p.paint("bone", c.ellipse((cy + 0.72 * ry, cx), (0.14 * ry, 0.14 * ry), edge_px=1.0), 0.97)
    p.paint("bone", c.ellipse((cy - 0.9 * ry, cx), (0.05 * ry, 0.15 * rx), edge_px=1.0), 0.95)  # sternum
    for theta in rng.uniform(0, 2 * np.pi, int(rng.integers(8, 13))):
        point = (cy + 0.93 * ry * np.sin(theta), cx + 0.93 * rx * np.cos(theta))
        p.paint("bone", c.ellipse(point, (0.035, 0.05), angle=theta + np.pi / 2, edge_px=1.0), 0.93)
    lung = p.visible("lung", 0.5) & (vessels < 0.3) & (dots < 0.3)
    periphery = lung & ~_erode(lung, 0.12 * c.scale)
    base = lung & (c.y > cy + 0.15 * ry)
    return Scene(p.image, {"lung": lung, "lung_periphery": periphery, "lung_base": base})


def _ct_neck(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    center = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03))
    radii = (min(0.72, 0.85 * half_height) * rng.uniform(0.92, 1.0),
             min(0.86, 0.9 * half_width) * rng.uniform(0.9, 1.0))
    rho = c.radial(center, radii, 0.0, rng, wobble=0.03)
    size = min(radii)
    (cy, cx), (ry, rx) = center, radii

    def at(py: float, px: float) -> tuple[float, float]:
        return cy + py * ry, cx + px * rx

    p = _Painter(fill(c, 0.0))
    p.paint("skin", c.inside(rho, 1.0, size, 1.5), 0.48)
    p.paint("fat", c.inside(rho, 0.975, size, 1.0), 0.24 + _texture(c, rng, 0.03, 0.012))
    for side in (-1, 1):
        p.paint("muscle", c.ellipse(at(0.45, side * 0.42), (0.33, 0.3 * rx), angle=side * 0.4, edge_px=1.2, rng=rng,
                                    wobble=0.05), 0.48 + _texture(c, rng, 0.02, 0.012))
        p.paint("muscle", c.ellipse(at(-0.25, side * 0.62), (0.09, 0.3 * rx), angle=side * 0.9, edge_px=1.2), 0.5)
        p.paint("thyroid", c.ellipse(at(-0.42, side * 0.22), (0.14, 0.1), angle=side * 0.6, edge_px=1.2, rng=rng,
                                     wobble=0.08), 0.72)
        p.paint("vessel", c.ellipse(at(-0.15, side * 0.4), (0.055, 0.055), edge_px=1.0), 0.86)
        p.paint("vessel", c.ellipse(at(-0.1, side * 0.55), (0.06, 0.08), angle=rng.uniform(0, 1), edge_px=1.0),
                0.74)
    p.paint("thyroid", c.ellipse(at(-0.6, 0.0), (0.04, 0.16), edge_px=1.2), 0.72)
    p.paint("airway", c.ellipse(at(-0.45, 0.0), (0.12, 0.12), edge_px=1.0), 0.6)
    p.paint("airway", c.ellipse(at(-0.45, 0.0), (0.095, 0.095), edge_px=1.0), 0.01)
    p.paint("esophagus", c.ellipse(at(-0.08, 0.02), (0.05, 0.07), edge_px=1.0), 0.45)
    p.paint("bone", c.ellipse(at(0.22, 0.0), (0.15, 0.17), edge_px=1.0), 0.97)
    p.paint("bone", c.ellipse(at(0.22, 0.0), (0.12, 0.14), edge_px=1.0), 0.7 + _texture(c, rng, 0.01, 0.03))
    p.paint("bone", c.ellipse(at(0.56, 0.0), (0.13, 0.2), edge_px=1.0), 0.95)
    p.paint("canal", c.ellipse(at(0.5, 0.0), (0.08, 0.09), edge_px=1.0), 0.4)
    stations = np.zeros(c.shape, dtype=bool)
    for side in (-1, 1):
        stations |= c.ellipse(at(0.0, side * 0.58), (0.26, 0.24 * rx), edge_px=1.0) > 0.5
    # Lymph nodes sit in the fat along the vessels and may push the muscles aside, but not the bones or organs.
    blocked = p.visible("bone") | p.visible("airway") | p.visible("thyroid") | p.visible("vessel") | p.visible("canal")
    node_station = stations & (rho < 0.88) & ~blocked
    return Scene(p.image, {"node_station": node_station})


# ----------------------------------------------------------------------------------------- MRI, breast and heart


def _mri_breast(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    p = _Painter(fill(c, 0.0))
    chest_top = rng.uniform(0.15, 0.3)
    chest = c.ellipse((chest_top + 0.75, 0.0), (0.8, 0.98 * half_width), edge_px=1.5, rng=rng, wobble=0.02)
    p.paint("chest", chest, 0.16 + _texture(c, rng, 0.03, 0.01))
    p.paint("muscle", chest * c.band(chest_top - 0.05, chest_top + 0.1, 1.5), 0.24)
    p.paint("heart", c.ellipse((chest_top + 0.62, 0.12), (0.4, 0.45), edge_px=1.5), 0.62 + _texture(c, rng, 0.04, 0.03))
    for side in (-1, 1):
        p.paint("lung", c.ellipse((chest_top + 0.7, side * 0.72 * half_width), (0.45, 0.32), edge_px=1.2), 0.02)
    breasts = np.zeros(c.shape, dtype=np.float32)
    glands = np.zeros(c.shape, dtype=np.float32)
    for side in (-1, 1):
        bx = side * rng.uniform(0.42, 0.5) * half_width
        depth = rng.uniform(0.65, 0.85)
        center = (chest_top, bx)
        radii = (depth, rng.uniform(0.36, 0.44) * half_width)
        rho = c.radial(center, radii, rng.uniform(-0.1, 0.1), rng, wobble=0.04)
        breast = c.inside(rho, 1.0, min(radii), 1.5) * c.band(-10, chest_top, 1.5)
        breasts = np.maximum(breasts, breast)
        p.paint("skin", breast, 0.34)
        p.paint("breast", c.inside(rho, 0.96, min(radii), 1.0) * c.band(-10, chest_top, 1.0),
                0.15 + _texture(c, rng, 0.02, 0.01))
        feathery = smooth_noise(c.shape, 0.025 * c.scale, rng) + 1.2 * (0.8 - rho)
        gland = np.clip((feathery - 0.3) * 3.0, 0, 1) * c.inside(rho, 0.85, min(radii), 2.0) * c.band(-10, chest_top, 2)
        glands = np.maximum(glands, gland)
        p.paint("breast", gland, 0.38 + _texture(c, rng, 0.01, 0.03))
        p.paint("nipple", c.ellipse((chest_top - depth * 0.985, bx), (0.025, 0.04), edge_px=1.0), 0.3)
    region = (breasts > 0.5) & _erode(p.visible("breast", 0.5), 0.03 * c.scale)
    return Scene(p.image, {"breast": region})


def _mri_heart(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    center = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    radii = (min(0.8, 0.9 * half_height), min(0.98, 0.95 * half_width))
    rho = c.radial(center, radii, 0.0, rng, wobble=0.03)
    size = min(radii)
    (cy, cx) = center
    p = _Painter(fill(c, 0.0))
    p.paint("body", c.inside(rho, 1.0, size, 1.5), 0.3 + _texture(c, rng, 0.03, 0.02))
    p.paint("fat", c.inside(rho, 0.97, size, 1.0) - c.inside(rho, 0.9, size, 1.0), 0.68)
    for side in (-1, 1):
        p.paint("lung", c.ellipse((cy - 0.05, cx + side * 0.55 * radii[1]), (0.55, 0.3), edge_px=1.2, rng=rng,
                                  wobble=0.06), 0.04 + _texture(c, rng, 0.02, 0.01))
    lv = (cy + rng.uniform(-0.05, 0.05), cx + rng.uniform(0.05, 0.15))
    outer, inner = rng.uniform(0.27, 0.31), rng.uniform(0.17, 0.2)
    pericardium_outer = outer + rng.uniform(0.08, 0.1)
    p.paint("fat", c.ellipse(lv, (pericardium_outer + 0.04, pericardium_outer + 0.04), edge_px=2.0, rng=rng,
                             wobble=0.08), 0.66 + _texture(c, rng, 0.02, 0.03))
    rv_center = (lv[0] - 0.02, lv[1] - outer - 0.1)
    rv = c.ellipse(rv_center, (outer * 1.05, 0.2), angle=0.15, edge_px=1.2)
    p.paint("rv_wall", c.ellipse(rv_center, (outer * 1.05 + 0.025, 0.225), angle=0.15, edge_px=1.0), 0.12)
    p.paint("blood", rv, 0.45 + _texture(c, rng, 0.02, 0.02))
    lv_rho = c.radial(lv, (1.0, 1.0), 0.0, rng, wobble=0.02)
    p.paint("pericardium", c.inside(lv_rho, pericardium_outer, pericardium_outer, 1.0)
            * (1 - c.inside(lv_rho, outer + 0.012, outer, 1.0)), 0.6 + _texture(c, rng, 0.02, 0.03))
    p.paint("myocardium", c.inside(lv_rho, outer, outer, 1.0), 0.08 + _texture(c, rng, 0.02, 0.01))
    p.paint("blood", c.inside(lv_rho, inner, inner, 1.0), 0.45 + _texture(c, rng, 0.02, 0.02))
    p.paint("bone", c.ellipse((cy + 0.7 * radii[0], cx), (0.12, 0.12), edge_px=1.0), 0.4)
    ring = (lv_rho > outer + 0.02) & (lv_rho < pericardium_outer - 0.005) & (rv < 0.05)
    myocardium = p.visible("myocardium") & (lv_rho > inner + 0.01) & (lv_rho < outer - 0.01)
    return Scene(p.image, {"myocardium": myocardium, "pericardium": ring})


# ------------------------------------------------------------------------------------------------- radiographs


def _xray_chest(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    h = c.half_extent[0]
    p = _Painter(fill(c, 0.05))
    # Torso: narrow neck at the top, shoulders, then a nearly straight chest wall.
    shoulder = -0.72 * h + rng.uniform(-0.05, 0.05)
    torso_half_width = 0.22 + (0.72 + rng.uniform(0, 0.15)) * np.clip((c.y - (shoulder - 0.25)) / 0.3, 0, 1) ** 0.6
    torso = np.clip((torso_half_width - np.abs(c.x)) / (3 * c.px) + 0.5, 0, 1)
    p.paint("soft", torso, 0.42 + _texture(c, rng, 0.1, 0.03))
    spine_x = rng.uniform(-0.03, 0.03)
    apex, base = -0.8 * h + rng.uniform(-0.04, 0.04), 0.5 * h + rng.uniform(-0.06, 0.06)
    lungs = np.zeros(c.shape, dtype=np.float32)
    for side in (-1, 1):
        t = np.clip((c.y - apex) / (base - apex), 0, 1)
        lateral = spine_x + side * (0.2 + 0.64 * t**0.35 - 0.05 * t**4)
        medial = spine_x + side * 0.13
        dome_top = base - (0.1 if side < 0 else 0.04)
        dome = dome_top + 0.18 * ((c.x - (spine_x + side * 0.5)) / 0.45) ** 2
        inside_x = np.clip((side * (lateral - c.x)) / (2 * c.px) + 0.5, 0, 1) * np.clip(
            (side * (c.x - medial)) / (2 * c.px) + 0.5, 0, 1)
        lungs = np.maximum(lungs, inside_x * c.band(apex, dome, 2.5))
    # The heart shadow sits on the diaphragm and bulges to the patient's left (the image's right).
    heart_center = (base - 0.14 + rng.uniform(-0.03, 0.03), spine_x + rng.uniform(0.1, 0.16))
    heart = c.ellipse(heart_center, (0.28 * h, rng.uniform(0.3, 0.36)), angle=-0.35, edge_px=2.5, rng=rng,
                      wobble=0.04)
    diaphragm = lungs > 0.6
    lungs = lungs * (1 - heart)
    mediastinum = np.clip(1 - (np.abs(c.x - spine_x) - 0.13) / (2 * c.px), 0, 1) * c.band(apex - 0.1, base, 3.0)
    p.paint("mediastinum", mediastinum * torso, 0.6 + _texture(c, rng, 0.05, 0.01))
    p.paint("lung", lungs, 0.14 + _texture(c, rng, 0.05, 0.02))
    markings = []
    for side in (-1, 1):
        hilum = c.pixels(np.array([(0.0, spine_x + side * 0.2)]))[0]
        for angle in np.linspace(-1.2, 1.2, 5) + (0.0 if side > 0 else np.pi):
            markings.append(branching_tree(tuple(hilum), angle + rng.normal(0, 0.15), 0.35 * c.scale, rng, 3))
    vessel_alpha = np.zeros(c.shape, dtype=np.float32)
    for generation, width in zip(range(3), (3.0, 2.0, 1.3)):
        curves = [curve for tree in markings for curve in tree[generation]]
        vessel_alpha = np.maximum(vessel_alpha, stroke(c.shape, curves, _px(c, width)) * (1 - 0.25 * generation))
    p.image += 0.13 * vessel_alpha * lungs
    ribs = []
    for side in (-1, 1):
        for k in range(10):
            y0 = apex - 0.02 + k * (base - apex) * 0.105
            xs = np.linspace(0.06, 0.95, 50)
            ribs.append(c.pixels(np.stack([y0 - 0.06 * xs + 0.38 * xs**2, spine_x + side * xs], 1)))
    p.image += 0.08 * stroke(c.shape, [_densify(r) for r in ribs], _px(c, 7.0)) * torso
    for side in (-1, 1):
        clavicle = c.segment((apex + 0.02, spine_x + side * 0.08), (apex - 0.12, spine_x + side * 0.7), 0.035, 2.0)
        p.image += 0.16 * clavicle * torso
    spine = np.clip(1 - (np.abs(c.x - spine_x) - 0.06) / (2 * c.px), 0, 1)
    p.image += 0.08 * spine * torso
    p.paint("heart", heart * (1 - lungs), 0.72 + _texture(c, rng, 0.05, 0.01))
    below = (1 - lungs) * torso * c.band(base - 0.12, 10, 3.0) * (1 - heart)
    p.paint("abdomen", below, 0.68 + _texture(c, rng, 0.08, 0.02))
    bubble = c.ellipse((base + 0.12, spine_x + 0.45), (0.07, 0.13), edge_px=3.0) * torso
    p.paint("gas", bubble * 0.7, 0.3)
    trachea = c.band(-10, -0.15 * h, 3.0) * np.clip(1 - (np.abs(c.x - spine_x) - 0.035) / (2 * c.px), 0, 1)
    p.image -= 0.12 * trachea * torso
    lung = lungs > 0.6
    # Pleural fluid collects at the lung base and climbs the lateral chest wall (a meniscus).
    lowest = np.where(diaphragm.any(axis=0), c.height - 1 - np.argmax(diaphragm[::-1], axis=0), -1).astype(np.float32)
    rows = np.arange(c.height, dtype=np.float32)[:, None]
    lateral_share = np.clip((np.abs(c.x - spine_x) - 0.13) / 0.7, 0, 1)
    height_px = rng.uniform(0.25, 0.4) * c.scale * (0.45 + 0.8 * lateral_share**1.5)
    effusion_zone = lung & (rows > lowest[None, :] - height_px)
    return Scene(p.image, {"lung": lung, "effusion_zone": effusion_zone})


def _densify(points: np.ndarray) -> np.ndarray:
    """Resample a polyline to about one point per pixel."""
    lengths = np.hypot(*np.diff(points, axis=0).T)
    distance = np.concatenate([[0.0], np.cumsum(lengths)])
    samples = np.linspace(0.0, distance[-1], max(2, int(distance[-1]) + 1))
    return np.stack([np.interp(samples, distance, points[:, 0]), np.interp(samples, distance, points[:, 1])], 1)


def _xray_foot(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    h = c.half_extent[0]
    p = _Painter(fill(c, 0.05))
    side = rng.choice([-1, 1])  # left or right foot: the big toe on one side
    forefoot = c.ellipse((-0.3 * h, 0.0), (0.72 * h, 0.64), edge_px=3.0, rng=rng, wobble=0.04)
    heel = c.ellipse((0.55 * h, -side * 0.05), (0.5 * h, 0.42), edge_px=3.0, rng=rng, wobble=0.04)
    p.paint("soft", np.maximum(forefoot, heel), 0.3 + _texture(c, rng, 0.1, 0.02))
    outers, inners = [], []

    def bone(outer: np.ndarray, inner: np.ndarray) -> None:
        p.paint("bone", outer, 0.86)
        p.paint("bone", inner, 0.62 + _texture(c, rng, 0.008, 0.03))
        outers.append(outer)
        inners.append(inner)

    def long_bone(start, end, half_width, head=1.35):
        direction = np.subtract(end, start) / np.hypot(*np.subtract(end, start))
        bone(np.maximum(c.segment(start, end, half_width, 1.5),
                        c.ellipse(tuple(np.subtract(end, direction * half_width)), (half_width * head,) * 2,
                                  edge_px=1.5)),
             np.maximum(c.segment(start, end, half_width * 0.5, 2.0),
                        c.ellipse(tuple(np.subtract(end, direction * half_width)), (half_width * head * 0.6,) * 2,
                                  edge_px=2.0)))
        return direction

    for ray in range(5):
        lateral = side * (0.36 - 0.19 * ray)
        width = 0.07 if ray == 0 else 0.05
        base = (0.12 * h + 0.02 * ray, lateral * 0.8)
        head = (-0.38 * h + 0.05 * abs(ray - 1), lateral * 1.0)
        direction = long_bone(base, head, width)
        joint = np.array(head) + direction * 0.03
        lengths = (0.2 * h, 0.12 * h) if ray == 0 else (0.13 * h, 0.07 * h, 0.05 * h)
        for length in lengths:
            end = joint + direction * length
            long_bone(tuple(joint), tuple(end), width * 0.85, head=1.2)
            joint = end + direction * 0.025
    for k in range(4):  # cuneiforms and cuboid
        center = (0.26 * h + 0.03 * k, side * (0.3 - 0.19 * k))
        radii = (0.08, 0.085 if k < 3 else 0.11)
        bone(c.ellipse(center, radii, edge_px=1.5, rng=rng, wobble=0.05),
             c.ellipse(center, (radii[0] - 0.025, radii[1] - 0.025), edge_px=2.0))
    for center, radii in (((0.42 * h, side * 0.12), (0.09, 0.2)), ((0.62 * h, -side * 0.02), (0.16 * h, 0.2)),
                          ((0.86 * h, -side * 0.06), (0.22 * h, 0.26))):  # navicular, talus, calcaneus
        bone(c.ellipse(center, radii, edge_px=1.5, rng=rng, wobble=0.06),
             c.ellipse(center, (radii[0] - 0.03, radii[1] - 0.03), edge_px=2.0))
    bones = np.max(outers, axis=0) > 0.5
    medulla = np.max(inners, axis=0) > 0.5
    return Scene(p.image, {"bone": bones, "bone_medulla": _erode(medulla, 1)})


# ------------------------------------------------------------------------------------------------- ultrasound


def _linear_probe(canvas: Canvas) -> np.ndarray:
    """Field of view of a linear probe: the whole frame below a thin gel line."""
    return canvas.band(-canvas.half_extent[0] + 0.02, 10, 1.0)


def _sector_probe(canvas: Canvas, half_angle: float = 0.75) -> np.ndarray:
    """Field of view of a phased array: a fan from the top centre."""
    apex_y = -canvas.half_extent[0] - 0.05
    dy, dx = canvas.y - apex_y, canvas.x
    radius = np.hypot(dy, dx)
    angle = np.arctan2(dx, dy)
    depth = 2 * canvas.half_extent[0] + 0.02
    inside_angle = np.clip((half_angle - np.abs(angle)) * radius / (1.5 * canvas.px) + 0.5, 0, 1)
    inside_depth = np.clip((depth - radius) / (1.5 * canvas.px) + 0.5, 0, 1) * np.clip(
        (radius - 0.12) / (1.5 * canvas.px) + 0.5, 0, 1)
    return (inside_angle * inside_depth).astype(np.float32)


def _us_neck(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    top, bottom = -c.half_extent[0], c.half_extent[0]
    half_width = c.half_extent[1]
    p = _Painter(fill(c, 0.3) + _texture(c, rng, 0.1, 0.04))
    p.paint("skin", c.band(top, top + 0.06, 1.0), 0.72)
    p.paint("fat", c.band(top + 0.06, top + 0.22 + _texture(c, rng, 0.2, 0.02), 1.5), 0.36)
    p.paint("muscle", c.band(top + 0.22, top + 0.46 + _texture(c, rng, 0.2, 0.03), 2.0), 0.24)
    striation = 0.5 + 0.5 * np.sin((c.y - top) / (0.025 + 0.002 * smooth_noise(c.shape, 8, rng)))
    p.image += 0.05 * striation * c.band(top + 0.22, top + 0.46, 1.0)
    side = rng.choice([-1, 1])  # trachea on the medial side of the lobe
    thyroid_center = (top + 0.95 + rng.uniform(-0.08, 0.08), -side * rng.uniform(0.0, 0.2) * half_width)
    thyroid_radii = (rng.uniform(0.42, 0.52), rng.uniform(0.62, 0.8) * half_width)
    thyroid = c.ellipse(thyroid_center, thyroid_radii, edge_px=2.0, rng=rng, wobble=0.08)
    p.paint("thyroid", thyroid, 0.58 + _texture(c, rng, 0.02, 0.03))
    trachea_center = (thyroid_center[0] + 0.1, side * 0.95 * half_width)
    p.paint("trachea", c.ellipse(trachea_center, (0.32, 0.32), edge_px=1.5), 0.82)
    p.paint("trachea", c.ellipse(trachea_center, (0.29, 0.29), edge_px=2.0), 0.12)
    below = c.band(trachea_center[0], 10, 2.0) * np.clip(1 - np.abs(c.x - trachea_center[1]) / 0.3, 0, 1)
    p.paint("shadow", below, 0.08 + 0.15 * (0.5 + 0.5 * np.sin((c.y - trachea_center[0]) / 0.04)))
    carotid_center = (thyroid_center[0] + 0.12, thyroid_center[1] - side * (thyroid_radii[1] + 0.15))
    p.paint("vessel", c.ellipse(carotid_center, (0.2, 0.2), edge_px=1.0), 0.75)
    p.paint("vessel", c.ellipse(carotid_center, (0.17, 0.17), edge_px=1.5), 0.02)
    jugular = (carotid_center[0] - 0.2, carotid_center[1] - side * 0.28)
    p.paint("vessel", c.ellipse(jugular, (0.09, 0.18), angle=0.3, edge_px=1.5, rng=rng, wobble=0.1), 0.03)
    p.paint("muscle", c.ellipse((bottom - 0.15, thyroid_center[1]), (0.2, 0.5), edge_px=2.0), 0.22)
    region = _erode(p.visible("thyroid"), 0.02 * c.scale)
    return Scene(p.image, {"thyroid": region}, field_of_view=_linear_probe(c))


def _us_breast(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    top, bottom = -c.half_extent[0], c.half_extent[0]
    p = _Painter(fill(c, 0.3))
    p.paint("skin", c.band(top, top + 0.07, 1.0), 0.75)
    fat_bottom = top + 0.55 + _texture(c, rng, 0.25, 0.08)
    lobules = np.clip(0.5 + smooth_noise(c.shape, 0.06 * c.scale, rng), 0, 1)
    p.paint("fat", c.band(top + 0.07, fat_bottom, 2.0), 0.22 + 0.1 * lobules)
    ligaments = []
    for _ in range(int(rng.integers(4, 8))):
        start = c.pixels(np.array([(top + 0.08, rng.uniform(-1.5, 1.5))]))[0]
        ligaments.append(random_walk(tuple(start), rng.uniform(0.6, 2.5), 0.7 * c.scale, rng, curvature=0.1))
    p.image += 0.35 * stroke(c.shape, ligaments, _px(c, 1.5)) * c.band(top + 0.07, fat_bottom, 1.0)
    gland_bottom = fat_bottom + 0.6 + _texture(c, rng, 0.3, 0.1)
    gland = c.band(fat_bottom, gland_bottom, 3.0)
    p.paint("gland", gland, 0.6 + _texture(c, rng, 0.02, 0.05))
    muscle_top = gland_bottom + 0.15
    p.paint("muscle", c.band(muscle_top, muscle_top + 0.35, 2.0), 0.34 + 0.06 * np.sin((c.y - muscle_top) / 0.03))
    rib_x = rng.uniform(-0.8, 0.8)
    rib = c.ellipse((bottom - 0.05, rib_x), (0.12, 0.35), edge_px=1.5)
    p.paint("rib", rib, 0.8)
    p.paint("shadow", c.band(bottom - 0.05, 10, 1.0) * np.clip(1 - np.abs(c.x - rib_x) / 0.35, 0, 1), 0.04)
    region = _erode(p.visible("gland"), 0.015 * c.scale)
    return Scene(p.image, {"gland": region}, field_of_view=_linear_probe(c))


def _us_heart(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    top = -c.half_extent[0]
    p = _Painter(fill(c, 0.14) + _texture(c, rng, 0.06, 0.05))
    apex = (top + 0.22, rng.uniform(-0.06, 0.06))
    length = 2 * c.half_extent[0] - 0.3
    tilt = rng.uniform(-0.1, 0.1)

    def at(t: float, s: float) -> tuple[float, float]:
        # t: 0 at the apex, 1 at the far end of the atria; s: across (left ventricle on the image's right)
        return apex[0] + t * length, apex[1] + s + t * tilt

    wall = c.ellipse(at(0.5, 0.0), (0.53 * length, 0.52), angle=tilt, edge_px=4.0, rng=rng, wobble=0.05)
    p.paint("myocardium", wall, 0.42 + _texture(c, rng, 0.03, 0.06))
    chambers = {
        "lv": c.ellipse(at(0.36, 0.245), (0.33 * length, 0.215), angle=-0.1 + tilt, edge_px=2.5, rng=rng, wobble=0.05),
        "rv": c.ellipse(at(0.4, -0.25), (0.3 * length, 0.2), angle=0.15 + tilt, edge_px=2.5, rng=rng, wobble=0.06),
        "la": c.ellipse(at(0.84, 0.24), (0.15 * length, 0.21), angle=tilt, edge_px=2.5, rng=rng, wobble=0.06),
        "ra": c.ellipse(at(0.84, -0.24), (0.14 * length, 0.2), angle=tilt, edge_px=2.5, rng=rng, wobble=0.06),
    }
    for name, chamber in chambers.items():
        p.paint(name, chamber, 0.03 + _texture(c, rng, 0.05, 0.01))
    valves = []
    for s_ in (0.2, -0.2):
        for offset, angle in ((-0.13, 0.35), (0.13, -0.35)):
            hinge = c.pixels(np.array([at(0.67, s_ + offset)]))[0]
            valves.append(random_walk(tuple(hinge), -np.pi / 2 + angle * np.sign(offset), 0.09 * c.scale, rng, 0.02))
    p.image += 0.45 * stroke(c.shape, valves, _px(c, 2.0)) * (p.image < 0.2)
    septum = np.clip(1 - np.abs(c.x - at(0.4, 0.0)[1] - (c.y - apex[0]) * tilt) / 0.05, 0, 1) * wall
    p.image += 0.2 * septum * (p.image > 0.2)
    pericardium = np.clip(wall - c.ellipse(at(0.5, 0.0), (0.5 * length, 0.49), angle=tilt, edge_px=4.0), 0, 1)
    p.image += 0.25 * pericardium * c.band(at(0.4, 0)[0], 10, 4.0)
    region = _erode(p.visible("lv"), 0.02 * c.scale)
    return Scene(p.image, {"lv_cavity": region}, field_of_view=_sector_probe(c))


# ------------------------------------------------------------------------------------------- colour modalities


def _endoscopy(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    radius = min(half_width, rng.uniform(1.0, 1.15))
    fov = c.ellipse((0.0, 0.0), (radius, radius), edge_px=1.5) * c.band(-half_height + 0.02, half_height - 0.02)
    lumen_center = (rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4))
    distance = c.radial(lumen_center, (1.0, 1.0), 0.0, rng, wobble=0.12)
    # Light falls off with the distance from the scope tip: the far lumen is dark and red, the near wall bright.
    depth = np.exp(-((distance / rng.uniform(0.45, 0.6)) ** 2))
    shading = np.clip(1.05 - 0.85 * depth + _texture(c, rng, 0.15, 0.05), 0.08, 1.1).astype(np.float32)
    near = np.array([0.92, 0.56, 0.48]) * rng.uniform(0.94, 1.04, 3)
    far = np.array([0.70, 0.20, 0.16])
    image = near * (1 - depth[..., None]) + far * depth[..., None]
    image = image + _texture(c, rng, 0.05, 0.025)[..., None] * np.array([1.0, 0.6, 0.6])
    # Wide, soft rings of shading around the lumen: the tube's curvature, not folds.
    rings = 0.5 + 0.5 * np.sin(distance * rng.uniform(9, 14) + _texture(c, rng, 0.3, 1.0))
    image *= (1 - 0.07 * rings)[..., None]
    trees = [branching_tree(tuple(c.pixels(np.array([(rng.uniform(-1, 1), rng.uniform(-1, 1))]))[0]),
                            rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.6) * c.scale, rng, levels=2, curvature=0.15)
             for _ in range(int(rng.integers(4, 9)))]
    vessels = np.maximum(stroke(c.shape, [t[0][0] for t in trees], _px(c, 1.6)),
                         0.7 * stroke(c.shape, [b for t in trees for b in t[1]], _px(c, 1.0)))
    blend(image, vessels * 0.4, (0.6, 0.15, 0.22))
    lumen = c.ellipse(lumen_center, (rng.uniform(0.1, 0.16),) * 2, edge_px=0.08 * c.scale, rng=rng, wobble=0.25)
    blend(image, lumen, (0.08, 0.02, 0.02))
    image *= shading[..., None]
    mucosa = (fov > 0.99) & (lumen < 0.05) & (shading > 0.5)
    return Scene(image, {"mucosa": _erode(mucosa, 0.02 * c.scale)}, field_of_view=fov, shading=shading)


def _skin(canvas: Canvas, rng: np.random.Generator, plantar: bool) -> Scene:
    c = canvas
    half_height, half_width = c.half_extent
    if plantar:
        tone = np.array([0.93, 0.80, 0.68]) + rng.uniform(-0.06, 0.02) * np.array([1.0, 1.2, 1.3])
    else:
        t = rng.uniform(0.0, 1.0)
        tone = (1 - t) * np.array([0.95, 0.80, 0.71]) + t * np.array([0.66, 0.47, 0.36])
    image = fill(c, tone)
    image += _texture(c, rng, 0.2, 0.025)[..., None] * np.array([1.0, 0.9, 0.8])
    image += _texture(c, rng, 0.01, 0.012)[..., None]
    if plantar:
        # Dermatoglyphic ridges: parallel wavy lines with a period of a few pixels.
        angle = rng.uniform(0, np.pi)
        warp = smooth_noise(c.shape, 0.3 * c.scale, rng) * 0.08
        phase = (c.x * np.cos(angle) + c.y * np.sin(angle) + warp) / (_px(c, 5.0) * c.px) * 2 * np.pi
        image -= (0.045 * (0.5 + 0.5 * np.cos(phase)) ** 3)[..., None] * np.array([1.0, 1.1, 1.2])
    else:
        for angle in rng.uniform(0, np.pi, 2):
            warp = smooth_noise(c.shape, 0.2 * c.scale, rng) * 0.5
            phase = (c.x * np.cos(angle) + c.y * np.sin(angle)) / (_px(c, 14.0) * c.px) * 2 * np.pi + warp
            image -= (0.035 * np.abs(np.cos(phase / 2)) ** 40)[..., None]
    if rng.random() < 0.6:
        radius = rng.uniform(1.0, 1.2)
        fov = c.ellipse((0.0, 0.0), (radius, radius), edge_px=3.0)
    else:
        fov = np.ones(c.shape, dtype=np.float32)
    shading = (1.0 - 0.25 * np.clip(np.hypot(c.y, c.x) / 1.3, 0, 1) ** 2).astype(np.float32)
    image *= shading[..., None]
    return Scene(image, {"skin": _erode(fov > 0.99, 0.03 * c.scale)}, field_of_view=fov, shading=shading)


def _dermoscopy_skin(canvas: Canvas, rng: np.random.Generator) -> Scene:
    return _skin(canvas, rng, plantar=False)


def _dermoscopy_foot(canvas: Canvas, rng: np.random.Generator) -> Scene:
    return _skin(canvas, rng, plantar=True)


def _fundus(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    radius = min(0.97, c.half_extent[1])
    fov = c.ellipse((0.0, 0.0), (radius, radius), edge_px=1.5)
    side = rng.choice([-1, 1])  # right or left eye: the optic disc nasal, the macula temporal
    disc_center = (rng.uniform(-0.08, 0.08), side * rng.uniform(0.38, 0.48))
    disc_radius = rng.uniform(0.1, 0.12)
    macula_center = (disc_center[0] + rng.uniform(0.02, 0.08), disc_center[1] - side * 5.0 * disc_radius)
    tone = np.array([0.82, 0.36, 0.14]) * rng.uniform(0.85, 1.05) + rng.uniform(-0.04, 0.04, 3)
    image = fill(c, tone)
    image += _texture(c, rng, 0.04, 0.03)[..., None] * np.array([1.0, 0.5, 0.2])
    macula = c.ellipse(macula_center, (0.28, 0.28), edge_px=0.25 * c.scale)
    image *= (1 - 0.3 * macula)[..., None]
    image *= (1 - 0.15 * c.ellipse(macula_center, (0.05, 0.05), edge_px=4.0))[..., None]
    # Vessel arcades: from the disc up and down, sweeping temporally around the macula; nasal vessels straighter.
    trunks, branches = [], []
    span = abs(disc_center[1] - macula_center[1])
    for sign in (-1, 1):  # superior, inferior
        for reach in (rng.uniform(0.38, 0.48), rng.uniform(0.5, 0.62)):
            t = np.linspace(0, rng.uniform(0.6, 0.78) * np.pi, 160)
            ys = disc_center[0] + sign * reach * np.sin(t) * (1 - 0.2 * t / np.pi)
            xs = macula_center[1] + side * span * np.cos(t) * rng.uniform(0.95, 1.15)
            arc = _densify(c.pixels(np.stack([ys, xs], 1)))
            arc = arc + np.cumsum(rng.normal(0, 0.25, arc.shape), axis=0) * 0.3
            trunks.append(arc)
        for _ in range(2):
            start = tuple(c.pixels(np.array([disc_center]))[0] + rng.normal(0, 2, 2))
            angle = np.arctan2(sign, side) + rng.uniform(-0.4, 0.4)
            trunks.append(random_walk(start, angle, rng.uniform(0.5, 0.8) * c.scale, rng, curvature=0.04))
    for trunk in trunks:
        for _ in range(int(rng.integers(3, 6))):
            index = int(rng.integers(len(trunk) // 6, len(trunk) - 1))
            step = trunk[index + 1] - trunk[index - 1]
            heading = float(np.arctan2(step[0], step[1])) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            branches.append(random_walk(tuple(trunk[index]), heading, rng.uniform(0.12, 0.35) * c.scale, rng, 0.06))
    vessels = np.maximum(stroke(c.shape, trunks, _px(c, 3.4)), 0.85 * stroke(c.shape, branches, _px(c, 1.7)))
    blend(image, vessels * 0.72, (0.52, 0.08, 0.05))
    disc = c.ellipse(disc_center, (disc_radius, disc_radius * rng.uniform(0.85, 1.0)), edge_px=2.5)
    blend(image, disc, (0.97, 0.76, 0.50))
    blend(image, c.ellipse((disc_center[0], disc_center[1] - side * 0.02), (disc_radius * rng.uniform(0.3, 0.45),) * 2,
                           edge_px=4.0), (1.0, 0.9, 0.72))
    blend(image, vessels * disc * 0.65, (0.6, 0.12, 0.08))
    shading = (1.0 - 0.35 * np.clip(np.hypot(c.y, c.x) / radius, 0, 1) ** 2).astype(np.float32)
    image *= shading[..., None]
    retina = _erode(fov > 0.99, 0.06 * c.scale) & (c.ellipse(disc_center, (disc_radius * 1.4,) * 2) < 0.5)
    disc_region = c.ellipse(disc_center, (0.015, 0.015)) > 0.5
    macula_region = (c.ellipse(macula_center, (0.3, 0.3)) > 0.5) & retina
    return Scene(image, {"retina": retina, "disc": disc_region, "macula": macula_region}, field_of_view=fov,
                 shading=shading)


def _oct(canvas: Canvas, rng: np.random.Generator) -> Scene:
    c = canvas
    half_width = c.half_extent[1]
    fovea_x = rng.uniform(-0.3, 0.3) * half_width
    rpe = (rng.uniform(0.3, 0.45) + rng.uniform(-0.04, 0.04) * c.x + rng.uniform(0.0, 0.06) * (c.x / half_width) ** 2
           + 0.015 * smooth_noise((1, c.width), 0.3 * c.scale, rng))
    pit = np.exp(-(((c.x - fovea_x) / rng.uniform(0.25, 0.35)) ** 2))
    outer_thickness = rng.uniform(0.24, 0.3)
    slope = 0.15 * np.sign(rng.normal()) / half_width  # the nerve fibre layer thickens towards the optic disc
    inner_thickness = rng.uniform(0.36, 0.46) * (1 - 0.9 * pit) * (1 + slope * c.x)
    elm = rpe - outer_thickness
    ilm = elm - inner_thickness
    depth = c.y - ilm
    image = fill(c, 0.03)
    # inner retina from the ILM down: RNFL, GCL, IPL, INL, OPL (fractions of the inner thickness)
    layers = ((0.0, 0.16, 0.85), (0.16, 0.32, 0.42), (0.32, 0.48, 0.62), (0.48, 0.64, 0.20), (0.64, 0.76, 0.62),
              (0.76, 1.0, 0.14))
    for start, end, value in layers:
        band = c.band(ilm + start * inner_thickness, ilm + end * inner_thickness, 1.0)
        blend(image, band, value)
    outer = ((0.0, 0.55, 0.14), (0.55, 0.6, 0.5), (0.6, 0.7, 0.18), (0.7, 0.77, 0.9), (0.77, 0.84, 0.45),
             (0.84, 1.0, 1.0))
    for start, end, value in outer:
        blend(image, c.band(elm - 0.02 + start * (outer_thickness + 0.02),
                            elm - 0.02 + end * (outer_thickness + 0.02), 1.0), value)
    choroid = c.band(rpe, rpe + 0.45, 3.0) * np.exp(-np.clip(c.y - rpe, 0, None) / 0.35)
    vessels = np.clip(smooth_noise(c.shape, 0.03 * c.scale, rng), -1, 1)
    blend(image, choroid, 0.5 + 0.18 * vessels)
    image += _texture(c, rng, 0.01, 0.03) * (depth > 0)
    retina_layers = (c.y > ilm + 0.25 * inner_thickness) & (c.y < elm - 0.02)
    rpe_band = (c.y > rpe - 0.12) & (c.y < rpe - 0.005)
    rpe_line = (c.y > rpe - 0.025) & (c.y < rpe - 0.01)
    return Scene(image, {name: np.broadcast_to(mask, c.shape).copy() for name, mask in (
        ("retina_layers", retina_layers), ("rpe_band", rpe_band), ("rpe_line", rpe_line))})


# ---------------------------------------------------------------------------------------------------- registry

SceneRenderer = Callable[[Canvas, np.random.Generator], Scene]

#: The scene renderer of each (modality, anatomy) in the lesion vocabulary.
SCENES: dict[tuple[str, str], SceneRenderer] = {
    ("CT", "head"): _ct_head,
    ("CT", "abdomen"): _ct_abdomen,
    ("CT", "lung"): _ct_lung,
    ("CT", "neck"): _ct_neck,
    ("MRI", "head"): _mri_head,
    ("MRI", "abdomen"): _mri_abdomen,
    ("MRI", "breast"): _mri_breast,
    ("MRI", "heart"): _mri_heart,
    ("X-ray", "lung"): _xray_chest,
    ("X-ray", "foot"): _xray_foot,
    ("ultrasound", "neck"): _us_neck,
    ("ultrasound", "breast"): _us_breast,
    ("ultrasound", "heart"): _us_heart,
    ("endoscopy", "abdomen"): _endoscopy,
    ("dermoscopy", "skin"): _dermoscopy_skin,
    ("dermoscopy", "foot"): _dermoscopy_foot,
    ("fundus", "eye"): _fundus,
    ("OCT", "eye"): _oct,
}

#: Image width range (pixels) and height/width ratio range per modality; some anatomies override it.
IMAGE_SIZES: dict[str, tuple[tuple[int, int], tuple[float, float]]] = {
    "CT": ((224, 512), (0.8, 1.0)),
    "MRI": ((192, 448), (0.8, 1.25)),
    "X-ray": ((192, 384), (1.0, 1.3)),
    "ultrasound": ((256, 480), (0.7, 0.9)),
    "endoscopy": ((256, 448), (0.75, 1.0)),
    "dermoscopy": ((256, 512), (0.66, 0.8)),
    "fundus": ((256, 512), (0.75, 1.0)),
    "OCT": ((320, 512), (0.4, 0.6)),
}
_ANATOMY_ASPECTS: dict[tuple[str, str], tuple[float, float]] = {("X-ray", "foot"): (1.25, 1.5)}


def image_size(modality: str, anatomy: str, rng: np.random.Generator) -> tuple[int, int]:
    """A random ``(height, width)`` for this kind of image; both sides within 192-512 pixels, even."""
    (low, high), aspect_range = IMAGE_SIZES[modality]
    aspect = rng.uniform(*_ANATOMY_ASPECTS.get((modality, anatomy), aspect_range))
    width = rng.uniform(low, high)
    height = width * aspect
    if height > 512:
        height, width = 512, 512 / aspect
    height, width = max(192.0, height), max(192.0, width)
    return 2 * int(round(height / 2)), 2 * int(round(width / 2))


def render_scene(modality: str, anatomy: str, canvas: Canvas, rng: np.random.Generator) -> Scene:
    """The normal-anatomy scene of ``modality`` and ``anatomy`` on ``canvas``."""
    try:
        renderer = SCENES[(modality, anatomy)]
    except KeyError:
        known = ", ".join(f"{m}/{a}" for m, a in SCENES)
        raise ValueError(f"No phantom scene for {modality}/{anatomy}; known scenes: {known}.") from None
    scene = renderer(canvas, rng)
    scene.image = np.clip(scene.image, 0.0, 1.0).astype(np.float32)
    return scene
