# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Controlled vocabulary of the datalists: imaging modalities, anatomies and lesion types.

The 8 modalities and 9 anatomies are those of ComLesion-14K (CORE-Seg paper, section 3.4 and Table 1).
:data:`LESION_TYPES` lists the lesion types the synthetic benchmark renders, each with the modality and
anatomy it occurs in and a paired *distractor*: another finding that appears in the same kind of image with a
different look. A question may ask for either finding; the other one is then the distractor that the mask
must leave out, so that the question, not the image alone, decides what to segment.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODALITIES", "ANATOMIES", "LesionType", "LESION_TYPES", "lesion_types_for"]

MODALITIES: tuple[str, ...] = ("CT", "MRI", "X-ray", "ultrasound", "endoscopy", "dermoscopy", "fundus", "OCT")
ANATOMIES: tuple[str, ...] = ("head", "abdomen", "lung", "eye", "neck", "skin", "foot", "breast", "heart")


@dataclass(frozen=True)
class LesionType:
    """A lesion of one disease as it appears in one modality and anatomy.

    Attributes:
        disease: name used in questions and answers (``"The {disease} is located at ..."``).
        modality: one of :data:`MODALITIES`.
        anatomy: one of :data:`ANATOMIES`.
        distractor: the paired finding that can appear in the same image (and can be asked for in turn).
    """

    disease: str
    modality: str
    anatomy: str
    distractor: str


LESION_TYPES: tuple[LesionType, ...] = (
    LesionType("glioma", "MRI", "head", "cyst"),
    LesionType("intracranial hemorrhage", "CT", "head", "calcification"),
    LesionType("liver tumor", "CT", "abdomen", "liver cyst"),
    LesionType("kidney tumor", "CT", "abdomen", "kidney stone"),
    LesionType("pancreatic tumor", "MRI", "abdomen", "pseudocyst"),
    LesionType("lung nodule", "CT", "lung", "calcified granuloma"),
    LesionType("pneumonia", "X-ray", "lung", "pleural effusion"),
    LesionType("COVID-19 infection", "CT", "lung", "atelectasis"),
    LesionType("retinal hemorrhage", "fundus", "eye", "hard exudate"),
    LesionType("optic disc edema", "fundus", "eye", "drusen"),
    LesionType("macular edema", "OCT", "eye", "drusen"),
    LesionType("thyroid nodule", "ultrasound", "neck", "thyroid cyst"),
    LesionType("lymph node metastasis", "CT", "neck", "reactive lymph node"),
    LesionType("melanoma", "dermoscopy", "skin", "benign nevus"),
    LesionType("basal cell carcinoma", "dermoscopy", "skin", "seborrheic keratosis"),
    LesionType("diabetic foot ulcer", "dermoscopy", "foot", "callus"),
    LesionType("bone fracture", "X-ray", "foot", "bone island"),
    LesionType("breast tumor", "ultrasound", "breast", "breast cyst"),
    LesionType("breast cancer", "MRI", "breast", "fibroadenoma"),
    LesionType("myocardial scar", "MRI", "heart", "pericardial effusion"),
    LesionType("cardiac thrombus", "ultrasound", "heart", "papillary muscle"),
    LesionType("colorectal polyp", "endoscopy", "abdomen", "mucosal fold"),
    LesionType("gastric ulcer", "endoscopy", "abdomen", "erosion"),
)


def lesion_types_for(modality: str | None = None, anatomy: str | None = None) -> tuple[LesionType, ...]:
    """Lesion types matching a modality and/or anatomy (``None`` matches any)."""
    for value, known, field in ((modality, MODALITIES, "modality"), (anatomy, ANATOMIES, "anatomy")):
        if value is not None and value not in known:
            raise ValueError(f"Unknown {field} {value!r}; expected one of {', '.join(known)}.")
    return tuple(
        lesion for lesion in LESION_TYPES
        if (modality is None or lesion.modality == modality) and (anatomy is None or lesion.anatomy == anatomy)
    )
