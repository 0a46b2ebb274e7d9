# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scripts.data.coordinates import boxes_from_mask
from scripts.data.synthetic.artefacts import NOISE_LEVELS, apply_artefacts
from scripts.data.synthetic.phantom import render_phantom
from scripts.data.vocabulary import LESION_TYPES, lesion_types_for

COLOUR_MODALITIES = {"endoscopy", "dermoscopy", "fundus"}


@pytest.mark.parametrize("lesion", LESION_TYPES, ids=lambda lesion: f"{lesion.modality}-{lesion.disease}")
def test_every_lesion_type_renders_with_masks_of_its_own_findings(lesion):
    phantom = render_phantom(lesion, seed=11, noise_level=0, counts={lesion.disease: 2, lesion.distractor: 2})
    image = phantom.image
    assert image.dtype == np.uint8
    assert image.ndim == (3 if lesion.modality in COLOUR_MODALITIES else 2)
    height, width = image.shape[:2]
    assert 192 <= height <= 512 and 192 <= width <= 512
    assert image.std() > 10  # organ context, not a blank frame
    disease, distractor = phantom.mask(lesion.disease), phantom.mask(lesion.distractor)
    for finding, mask in ((lesion.disease, disease), (lesion.distractor, distractor)):
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert 1 <= phantom.count(finding) <= 2, f"{finding} found no room"
        # each lesion is its own 8-connected component, so boxes and counts agree
        assert len(boxes_from_mask(mask)) == phantom.count(finding)
        # and it shows: its mean differs from the ring of tissue just around it
        inside = mask > 0
        ring = ndimage.binary_dilation(inside, iterations=4) & ~ndimage.binary_dilation(inside, iterations=1)
        assert abs(image[inside].astype(float).mean() - image[ring].astype(float).mean()) > 2.0, finding
    # the mask of one finding never holds a pixel of the other
    assert not np.logical_and(disease, distractor).any()


def test_mask_is_the_union_of_the_findings_lesions():
    lesion = lesion_types_for(modality="CT", anatomy="abdomen")[0]
    phantom = render_phantom(lesion, seed=3, counts={lesion.disease: 3, lesion.distractor: 3})
    expected = np.zeros(phantom.image.shape[:2], dtype=bool)
    for placed in phantom.lesions:
        if placed.finding == lesion.disease:
            expected[placed.slices] |= placed.mask
    np.testing.assert_array_equal(phantom.mask(lesion.disease) > 0, expected)
    assert phantom.count(lesion.disease) == sum(p.finding == lesion.disease for p in phantom.lesions)


def test_same_seed_same_phantom_and_different_seed_differs():
    lesion = LESION_TYPES[5]
    first, again, other = render_phantom(lesion, 42), render_phantom(lesion, 42), render_phantom(lesion, 43)
    np.testing.assert_array_equal(first.image, again.image)
    for finding in first.findings:
        np.testing.assert_array_equal(first.mask(finding), again.mask(finding))
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)


def test_overriding_a_draw_keeps_all_others():
    lesion = LESION_TYPES[0]
    drawn = render_phantom(lesion, seed=8)
    forced = render_phantom(lesion, seed=8, noise_level=drawn.noise_level)
    np.testing.assert_array_equal(drawn.image, forced.image)
    noisier = render_phantom(lesion, seed=8, noise_level=(drawn.noise_level + 1) % 4)
    assert noisier.image.shape == drawn.image.shape
    assert [(p.finding, p.top, p.left) for p in noisier.lesions] == [(p.finding, p.top, p.left) for p in drawn.lesions]
    assert not np.array_equal(noisier.image, drawn.image)


def test_counts_can_be_zero():
    lesion = LESION_TYPES[3]
    phantom = render_phantom(lesion, seed=1, counts={lesion.disease: 0, lesion.distractor: 0})
    assert phantom.lesions == ()
    assert not phantom.mask(lesion.disease).any()
    assert boxes_from_mask(phantom.mask(lesion.distractor)) == []


def test_max_count_caps_single_structures():
    (disc_edema,) = [lesion for lesion in LESION_TYPES if lesion.disease == "optic disc edema"]
    phantom = render_phantom(disc_edema, seed=2, counts={"optic disc edema": 3, "drusen": 0})
    assert phantom.count("optic disc edema") == 1  # one optic disc per eye


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(seed=1.5), "seed must be a non-negative integer"),
    (dict(seed=0, noise_level=4), "noise_level must be one of"),
    (dict(seed=0, counts={"melanoma": 1}), "counts name findings"),
    (dict(seed=0, counts={"glioma": 5}), "must be within 0-3"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_phantom(LESION_TYPES[0], **kwargs)


def test_asking_a_mask_of_a_foreign_finding_is_an_error():
    phantom = render_phantom(LESION_TYPES[0], seed=0, counts={"glioma": 1, "cyst": 0})
    with pytest.raises(ValueError, match="'melanoma' is not a finding of this phantom"):
        phantom.mask("melanoma")


@pytest.mark.parametrize("modality", ["CT", "MRI", "X-ray", "ultrasound", "endoscopy", "dermoscopy", "fundus", "OCT"])
def test_artefacts_grow_with_the_level(modality):
    rng = np.random.default_rng(0)
    shape = (96, 128, 3) if modality in COLOUR_MODALITIES else (96, 128)
    clean = np.clip(0.5 + 0.2 * np.sin(np.arange(128) / 9.0) + np.zeros(shape[:2])[..., None].squeeze(), 0, 1)
    clean = np.broadcast_to(clean[..., None] if len(shape) == 3 else clean, shape).astype(np.float32)
    deviation = []
    for level in NOISE_LEVELS:
        result = apply_artefacts(clean, modality, level, np.random.default_rng(rng.integers(1 << 30)))
        assert result.shape == clean.shape and result.dtype == np.float32
        assert 0.0 <= result.min() and result.max() <= 1.0
        deviation.append(float(np.abs(result - clean).mean()))
    assert deviation[3] > deviation[0], deviation


def test_artefacts_reject_unknown_modality_and_level():
    image = np.zeros((16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="No artefact model for modality 'PET'"):
        apply_artefacts(image, "PET", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise level must be one of"):
        apply_artefacts(image, "CT", 9, np.random.default_rng(0))
