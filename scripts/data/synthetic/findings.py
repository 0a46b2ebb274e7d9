# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""How each finding of :data:`scripts.data.vocabulary.LESION_TYPES` looks in its phantom.

The two findings of a lesion type always differ in a way one can see and say (intensity or colour, shape,
margin, texture, acoustic effect), so that the question decides which of them to segment. The diseases are the
"complex" ones of the paper (irregular, low-contrast, blurred); their paired findings are mostly well defined.
:func:`appearance` turns a style into the short phrase the reasoning templates use.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shapes import SHAPE_KINDS

__all__ = ["FindingStyle", "FINDING_STYLES", "BLURRED_MARGIN_PX", "HETEROGENEOUS_TEXTURE", "style_of", "appearance"]

# Margins at least this wide (Gaussian sigma, in pixels of a 256-pixel image) read as "blurred", and textures at
# least this strong as "heterogeneous"; below, "sharp" and "homogeneous".
BLURRED_MARGIN_PX = 2.0
HETEROGENEOUS_TEXTURE = 0.05

_SHAPE_WORDS = {
    "round": "round",
    "oval": "oval",
    "lobulated": "lobulated",
    "irregular": "irregular",
    "spiculated": "irregular, spiculated",
    "elongated": "elongated",
    "linear": "linear",
    "flat": "flat",
}


@dataclass(frozen=True)
class FindingStyle:
    """The look of one finding in its phantom.

    Attributes:
        tone_word: how its intensity or colour reads (``"hypodense"``, ``"dark red"``).
        shape: one of :data:`scripts.data.synthetic.shapes.SHAPE_KINDS`.
        radius: range of the lesion radius, as a fraction of the image's shorter side.
        tone: grey value (1 number) or colour (3 numbers) in [0, 1]; see ``blend``.
        blend: ``"fill"`` replaces the tissue with ``tone``; ``"add"`` adds ``tone`` (signed) to it, keeping the
            tissue's own texture (infiltrative, low-contrast lesions).
        margin_px: Gaussian width of the border in pixels of a 256-pixel image (scaled with the image).
        texture: strength of the internal mottling (0: homogeneous).
        region: scene region the lesion centres are drawn from.
        clip: scene region the lesion is cut to (``None``: kept whole); it then takes that region's outline.
        min_inside: for unclipped lesions, the share of the lesion that must lie in ``region``.
        accent: a second colour mixed in by the mottling (variegated lesions).
        core: tone added in the lesion's centre (necrosis, slough, rim enhancement).
        posterior: ultrasound only: brightness change below the lesion (< 0 shadowing, > 0 enhancement).
        relief: endoscopy only: strength of the shading of a raised lesion.
        max_count: most lesions of this finding in one image (one optic disc, two pleural spaces).
        shape_word: replaces the word derived from ``shape``.
        detail: an extra trait appended to the phrase (``"posterior acoustic enhancement"``).
    """

    tone_word: str
    shape: str
    radius: tuple[float, float]
    tone: tuple[float, ...]
    blend: str
    margin_px: float
    texture: float
    region: str
    clip: str | None = None
    min_inside: float = 0.9
    accent: tuple[float, ...] | None = None
    core: tuple[float, ...] | None = None
    posterior: float = 0.0
    relief: float = 0.0
    max_count: int = 3
    shape_word: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPE_KINDS:
            raise ValueError(f"Unknown shape {self.shape!r}; expected one of {', '.join(SHAPE_KINDS)}.")
        if self.blend not in ("fill", "add"):
            raise ValueError(f"Unknown blend {self.blend!r}; expected 'fill' or 'add'.")
        if len(self.tone) not in (1, 3):
            raise ValueError(f"tone must hold 1 (grey) or 3 (colour) values, got {self.tone}.")

    @property
    def blurred(self) -> bool:
        return self.margin_px >= BLURRED_MARGIN_PX

    @property
    def heterogeneous(self) -> bool:
        return self.texture >= HETEROGENEOUS_TEXTURE or self.accent is not None

    @property
    def traits(self) -> tuple[str, str, bool, bool]:
        """What a reader compares: (tone word, shape word, blurred margin, heterogeneous texture)."""
        return self.tone_word, self.shape_word or _SHAPE_WORDS[self.shape], self.blurred, self.heterogeneous


def appearance(style: FindingStyle) -> str:
    """A short phrase such as ``"hypodense, irregular, heterogeneous, with a blurred margin"``."""
    tone, shape, blurred, heterogeneous = style.traits
    margin = f"with a {'blurred' if blurred else 'sharp'} margin"
    if style.detail:
        margin += f" and {style.detail}"
    return f"{tone}, {shape}, {'heterogeneous' if heterogeneous else 'homogeneous'}, {margin}"


def _grey(value: float) -> tuple[float]:
    return (value,)


# Grey levels follow each scene's tissue values (see scenes.py), e.g. CT brain 0.40-0.47, liver 0.58.
FINDING_STYLES: dict[tuple[str, str], FindingStyle] = {
    # --- CT, head (brain window) ---
    ("CT", "intracranial hemorrhage"): FindingStyle(
        "hyperdense", "irregular", (0.04, 0.10), _grey(0.20), "add", 3.0, 0.07, "brain"),
    ("CT", "calcification"): FindingStyle(
        "very bright (calcium density)", "round", (0.010, 0.022), _grey(0.97), "fill", 0.6, 0.0, "brain"),
    # --- CT, abdomen (soft-tissue window) ---
    ("CT", "liver tumor"): FindingStyle(
        "hypodense", "irregular", (0.035, 0.085), _grey(-0.14), "add", 3.0, 0.07, "liver", min_inside=0.8),
    ("CT", "liver cyst"): FindingStyle(
        "dark (water density)", "round", (0.022, 0.06), _grey(0.30), "fill", 0.6, 0.0, "liver", min_inside=0.85),
    ("CT", "kidney tumor"): FindingStyle(
        "hypodense", "irregular", (0.025, 0.045), _grey(-0.15), "add", 2.5, 0.07, "kidney", min_inside=0.6),
    ("CT", "kidney stone"): FindingStyle(
        "very bright (calcium density)", "round", (0.008, 0.018), _grey(1.0), "fill", 0.5, 0.0, "kidney",
        min_inside=0.8),
    # --- CT, lung (lung window) ---
    ("CT", "lung nodule"): FindingStyle(
        "soft-tissue density", "spiculated", (0.018, 0.045), _grey(0.36), "add", 2.2, 0.08, "lung",
        min_inside=0.95),
    ("CT", "calcified granuloma"): FindingStyle(
        "very bright (calcium density)", "round", (0.009, 0.018), _grey(1.0), "fill", 0.5, 0.0, "lung",
        min_inside=0.95),
    ("CT", "COVID-19 infection"): FindingStyle(
        "hazy ground-glass", "irregular", (0.08, 0.16), _grey(0.16), "add", 4.5, 0.09, "lung_periphery",
        clip="lung"),
    ("CT", "atelectasis"): FindingStyle(
        "dense", "elongated", (0.05, 0.10), _grey(0.72), "fill", 0.7, 0.0, "lung_base", clip="lung",
        shape_word="band-like"),
    # --- CT, neck (soft-tissue window) ---
    ("CT", "lymph node metastasis"): FindingStyle(
        "soft-tissue density", "irregular", (0.035, 0.06), _grey(0.52), "fill", 2.5, 0.06, "node_station",
        min_inside=0.6, core=_grey(-0.24), detail="a dark necrotic centre"),
    ("CT", "reactive lymph node"): FindingStyle(
        "soft-tissue density", "oval", (0.025, 0.045), _grey(0.50), "fill", 0.6, 0.0, "node_station",
        min_inside=0.6),
    # --- MRI, head (FLAIR) ---
    ("MRI", "glioma"): FindingStyle(
        "hyperintense", "irregular", (0.05, 0.12), _grey(0.20), "add", 3.5, 0.08, "brain"),
    ("MRI", "cyst"): FindingStyle(
        "hypointense (fluid-like)", "round", (0.025, 0.055), _grey(0.06), "fill", 0.7, 0.0, "brain"),
    # --- MRI, abdomen (T2) ---
    ("MRI", "pancreatic tumor"): FindingStyle(
        "hypointense", "irregular", (0.025, 0.045), _grey(-0.16), "add", 3.0, 0.07, "pancreas", min_inside=0.4),
    ("MRI", "pseudocyst"): FindingStyle(
        "very bright (fluid)", "round", (0.03, 0.06), _grey(0.93), "fill", 0.7, 0.0, "peripancreatic",
        min_inside=0.9),
    # --- MRI, breast (contrast-enhanced, fat-suppressed T1) ---
    ("MRI", "breast cancer"): FindingStyle(
        "enhancing (bright)", "spiculated", (0.03, 0.065), _grey(0.30), "add", 2.5, 0.10, "breast",
        core=_grey(-0.14), detail="rim enhancement"),
    ("MRI", "fibroadenoma"): FindingStyle(
        "moderately bright", "oval", (0.03, 0.06), _grey(0.52), "fill", 0.7, 0.02, "breast"),
    # --- MRI, heart (late gadolinium enhancement, short axis) ---
    ("MRI", "myocardial scar"): FindingStyle(
        "bright (late enhancement)", "irregular", (0.05, 0.10), _grey(0.78), "fill", 2.5, 0.07, "myocardium",
        clip="myocardium"),
    ("MRI", "pericardial effusion"): FindingStyle(
        "dark grey (fluid)", "round", (0.10, 0.20), _grey(0.28), "fill", 0.7, 0.0, "pericardium",
        clip="pericardium", max_count=2, shape_word="crescent-shaped"),
    # --- X-ray, chest (PA) ---
    ("X-ray", "pneumonia"): FindingStyle(
        "hazy opacity", "irregular", (0.08, 0.15), _grey(0.22), "add", 5.0, 0.10, "lung", clip="lung"),
    ("X-ray", "pleural effusion"): FindingStyle(
        "dense, uniform opacity", "round", (0.35, 0.45), _grey(0.72), "fill", 0.8, 0.0, "effusion_zone",
        clip="effusion_zone", max_count=2, shape_word="basal, meniscus-shaped"),
    # --- X-ray, foot (dorsoplantar) ---
    ("X-ray", "bone fracture"): FindingStyle(
        "dark (lucent)", "linear", (0.04, 0.08), _grey(-0.32), "add", 2.0, 0.05, "bone", clip="bone",
        shape_word="thin, jagged line"),
    ("X-ray", "bone island"): FindingStyle(
        "very bright (sclerotic)", "round", (0.010, 0.022), _grey(0.98), "fill", 0.6, 0.0, "bone_medulla",
        min_inside=0.8),
    # --- ultrasound, neck (thyroid, linear probe) ---
    ("ultrasound", "thyroid nodule"): FindingStyle(
        "hypoechoic", "irregular", (0.04, 0.085), _grey(-0.22), "add", 3.0, 0.10, "thyroid", min_inside=0.85,
        posterior=-0.2, detail="faint posterior shadowing"),
    ("ultrasound", "thyroid cyst"): FindingStyle(
        "anechoic (black)", "round", (0.03, 0.065), _grey(0.03), "fill", 0.7, 0.0, "thyroid", min_inside=0.85,
        posterior=0.45, detail="posterior acoustic enhancement"),
    # --- ultrasound, breast (linear probe) ---
    ("ultrasound", "breast tumor"): FindingStyle(
        "hypoechoic", "spiculated", (0.04, 0.085), _grey(0.16), "fill", 2.5, 0.12, "gland", min_inside=0.6,
        posterior=-0.45, detail="posterior acoustic shadowing"),
    ("ultrasound", "breast cyst"): FindingStyle(
        "anechoic (black)", "oval", (0.03, 0.065), _grey(0.02), "fill", 0.7, 0.0, "gland", min_inside=0.6,
        posterior=0.45, detail="posterior acoustic enhancement"),
    # --- ultrasound, heart (apical four-chamber, phased array) ---
    ("ultrasound", "cardiac thrombus"): FindingStyle(
        "grey (echogenic)", "irregular", (0.035, 0.065), _grey(0.33), "fill", 2.5, 0.12, "lv_cavity"),
    ("ultrasound", "papillary muscle"): FindingStyle(
        "bright", "elongated", (0.035, 0.055), _grey(0.62), "fill", 0.7, 0.0, "lv_cavity"),
    # --- endoscopy, colon and stomach ---
    ("endoscopy", "colorectal polyp"): FindingStyle(
        "reddish, raised", "lobulated", (0.05, 0.11), (0.74, 0.30, 0.27), "fill", 2.5, 0.07, "mucosa",
        min_inside=1.0, relief=0.22),
    ("endoscopy", "mucosal fold"): FindingStyle(
        "pale pink, ridge-like", "elongated", (0.10, 0.18), (0.90, 0.56, 0.50), "fill", 0.9, 0.0, "mucosa",
        min_inside=1.0, relief=0.16, shape_word="elongated, curved"),
    ("endoscopy", "gastric ulcer"): FindingStyle(
        "white-yellow base", "irregular", (0.05, 0.11), (0.72, 0.24, 0.20), "fill", 2.5, 0.10, "mucosa",
        min_inside=1.0, core=(0.22, 0.62, 0.50), detail="a red rim"),
    ("endoscopy", "erosion"): FindingStyle(
        "bright red", "round", (0.015, 0.032), (0.86, 0.14, 0.14), "fill", 0.7, 0.0, "mucosa", min_inside=1.0),
    # --- dermoscopy, skin ---
    ("dermoscopy", "melanoma"): FindingStyle(
        "dark brown to black", "irregular", (0.08, 0.16), (0.36, 0.22, 0.15), "fill", 3.5, 0.20, "skin",
        min_inside=1.0, accent=(0.10, 0.08, 0.09)),
    ("dermoscopy", "benign nevus"): FindingStyle(
        "light brown", "round", (0.04, 0.08), (0.58, 0.40, 0.28), "fill", 0.8, 0.0, "skin", min_inside=1.0),
    ("dermoscopy", "basal cell carcinoma"): FindingStyle(
        "pearly pink", "irregular", (0.06, 0.13), (0.93, 0.70, 0.70), "fill", 3.0, 0.15, "skin", min_inside=1.0,
        accent=(0.78, 0.22, 0.26)),
    ("dermoscopy", "seborrheic keratosis"): FindingStyle(
        "brown, waxy", "oval", (0.05, 0.10), (0.45, 0.32, 0.20), "fill", 0.7, 0.02, "skin", min_inside=1.0),
    # --- dermoscopy, foot (plantar skin) ---
    ("dermoscopy", "diabetic foot ulcer"): FindingStyle(
        "red", "irregular", (0.08, 0.15), (0.70, 0.22, 0.20), "fill", 2.5, 0.15, "skin", min_inside=1.0,
        core=(0.25, 0.55, 0.30), detail="a yellow slough centre"),
    ("dermoscopy", "callus"): FindingStyle(
        "pale yellow-white", "oval", (0.06, 0.11), (0.94, 0.88, 0.70), "fill", 0.8, 0.0, "skin", min_inside=1.0),
    # --- fundus photography, eye ---
    ("fundus", "retinal hemorrhage"): FindingStyle(
        "dark red", "irregular", (0.02, 0.045), (0.42, 0.06, 0.04), "fill", 2.0, 0.08, "retina", min_inside=1.0),
    ("fundus", "hard exudate"): FindingStyle(
        "bright yellow", "round", (0.009, 0.018), (0.98, 0.92, 0.50), "fill", 0.6, 0.0, "retina", min_inside=1.0),
    ("fundus", "optic disc edema"): FindingStyle(
        "pale, swollen", "lobulated", (0.075, 0.095), (0.96, 0.78, 0.52), "fill", 4.0, 0.06, "disc", min_inside=0.0,
        max_count=1, shape_word="disc-shaped"),
    ("fundus", "drusen"): FindingStyle(
        "yellow", "round", (0.012, 0.024), (0.95, 0.82, 0.45), "fill", 1.0, 0.0, "macula", min_inside=0.5),
    # --- OCT, eye (macular B-scan) ---
    ("OCT", "macular edema"): FindingStyle(
        "dark (hyporeflective)", "irregular", (0.03, 0.07), _grey(0.06), "fill", 2.2, 0.06, "retina_layers",
        clip="retina_layers"),
    ("OCT", "drusen"): FindingStyle(
        "bright (hyperreflective)", "flat", (0.04, 0.08), _grey(0.75), "fill", 0.7, 0.0, "rpe_line",
        clip="rpe_band", shape_word="dome-shaped"),
}


def style_of(modality: str, finding: str) -> FindingStyle:
    """The style of ``finding`` in ``modality`` images."""
    try:
        return FINDING_STYLES[(modality, finding)]
    except KeyError:
        known = sorted({name for m, name in FINDING_STYLES if m == modality})
        raise ValueError(
            f"No phantom style for {finding!r} in {modality!r} images; known findings: {', '.join(known) or 'none'}."
        ) from None

