# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import numpy as np
import pytest

from scripts.data.synthetic.canvas import Canvas
from scripts.data.synthetic.findings import FINDING_STYLES, FindingStyle, appearance, style_of
from scripts.data.synthetic.scenes import SCENES, render_scene
from scripts.data.vocabulary import ANATOMIES, LESION_TYPES, MODALITIES

COLOUR_MODALITIES = {"endoscopy", "dermoscopy", "fundus"}


def test_every_finding_of_the_vocabulary_has_a_style():
    for lesion in LESION_TYPES:
        for finding in (lesion.disease, lesion.distractor):
            style = style_of(lesion.modality, finding)
            assert len(style.tone) == (3 if lesion.modality in COLOUR_MODALITIES else 1), finding
    assert len(FINDING_STYLES) == 2 * len(LESION_TYPES)


def test_unknown_finding_is_a_clear_error():
    with pytest.raises(ValueError, match="No phantom style for 'glioma' in 'CT' images"):
        style_of("CT", "glioma")


@pytest.mark.parametrize("lesion", LESION_TYPES, ids=lambda lesion: lesion.disease)
def test_the_two_findings_of_a_pair_look_different(lesion):
    disease, distractor = style_of(lesion.modality, lesion.disease), style_of(lesion.modality, lesion.distractor)
    differences = [a != b for a, b in zip(disease.traits, distractor.traits)]
    assert sum(differences) >= 2, (disease.traits, distractor.traits)
    assert appearance(disease) != appearance(distractor)


@pytest.mark.parametrize("lesion", LESION_TYPES, ids=lambda lesion: lesion.disease)
def test_diseases_are_complex_lesions(lesion):
    style = style_of(lesion.modality, lesion.disease)
    assert style.blurred
    assert style.shape in {"irregular", "spiculated", "lobulated", "linear"}


def test_appearance_phrase():
    style = FindingStyle("hypoechoic", "spiculated", (0.05, 0.1), (0.2,), "fill", 3.0, 0.1, "gland",
                         detail="posterior acoustic shadowing")
    assert appearance(style) == ("hypoechoic, irregular, spiculated, heterogeneous, with a blurred margin and "
                                 "posterior acoustic shadowing")
    sharp = FindingStyle("anechoic", "round", (0.05, 0.1), (0.0,), "fill", 0.7, 0.0, "gland")
    assert appearance(sharp) == "anechoic, round, homogeneous, with a sharp margin"


@pytest.mark.parametrize("bad, message", [
    (dict(shape="star"), "Unknown shape 'star'"),
    (dict(blend="multiply"), "Unknown blend 'multiply'"),
    (dict(tone=(0.1, 0.2)), "tone must hold 1"),
])
def test_style_rejects_bad_fields(bad, message):
    fields = dict(tone_word="dark", shape="round", radius=(0.1, 0.2), tone=(0.1,), blend="fill", margin_px=1.0,
                  texture=0.0, region="brain")
    with pytest.raises(ValueError, match=message):
        FindingStyle(**{**fields, **bad})


def test_scenes_cover_the_vocabulary_and_provide_the_regions_lesions_need():
    assert {lesion.modality for lesion in LESION_TYPES} == set(MODALITIES)
    assert {lesion.anatomy for lesion in LESION_TYPES} == set(ANATOMIES)
    for lesion in LESION_TYPES:
        assert (lesion.modality, lesion.anatomy) in SCENES
    for (modality, anatomy) in SCENES:
        scene = render_scene(modality, anatomy, Canvas(224, 256), np.random.default_rng(3))
        assert scene.image.dtype == np.float32
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        assert scene.image.ndim == (3 if modality in COLOUR_MODALITIES else 2)
        findings = {f for lesion in LESION_TYPES if (lesion.modality, lesion.anatomy) == (modality, anatomy)
                    for f in (lesion.disease, lesion.distractor)}
        needed = {name for f in findings for name in (style_of(modality, f).region, style_of(modality, f).clip) if name}
        for name in needed:
            assert scene.regions[name].shape == (224, 256)
            assert scene.regions[name].dtype == bool
            assert scene.regions[name].any(), f"{modality}/{anatomy} region {name!r} is empty"


def test_unknown_scene_is_a_clear_error():
    with pytest.raises(ValueError, match="No phantom scene for OCT/heart"):
        render_scene("OCT", "heart", Canvas(64, 64), np.random.default_rng(0))
