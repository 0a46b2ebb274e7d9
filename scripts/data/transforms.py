# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MONAI dictionary transforms from a datalist record to a CoreSeg sample.

The chain (:func:`build_transforms`)::

    LoadImageAndLabeld         image (C, H, W) as stored, label (1, H, W) uint8 0/1, original_size
    ScaleIntensityByModalityd  image float32 in [0, 1]: CT window, MRI percentiles, 8-bit and RGB as is
    BoxesFromLabeld            boxes (original pixels) from the label's connected components, unless given
    MLLMViewd                  mllm_image uint8 (3, h, w), longer edge <= 512; mllm_view_size, mllm_input_size
    SAMViewd                   sam_image float32 (3, 512, 512) with SAM normalisation
    Resized + CastToTyped      label float32 (1, 512, 512), nearest-exact
    RenderTextd                question, reasoning, answer, completion, boxes_mllm (MLLM-input pixels)
    UseOwnAnswersd             optional: the language model's own question and completion (mask stage)
    DeleteItemsd               drops the full-size image (unless kept)

Every transform copies the dictionary it is given, and every error names the datalist row
(:func:`scripts.data.datalist.describe_record`). Samples keep the record's other keys (``modality``,
``anatomy``, ``disease``, ``source``, the synthetic generator's fields, ...).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensity,
    Randomizable,
    Resized,
    ScaleIntensityRange,
)
from monai.utils import convert_to_tensor

from scripts.networks.medsam2 import SAM_PIXEL_MEAN, SAM_PIXEL_STD

from .coordinates import (
    MASK_SIZE,
    MLLM_VIEW_MAX_EDGE,
    ProcessorGeometry,
    box_problems,
    boxes_from_mask,
    mllm_view_size,
    original_to_mllm_boxes,
    round_boxes,
)
from .datalist import describe_record
from .own_answers import OwnAnswers, UseOwnAnswersd
from .prompts import (
    clean_reasoning,
    parse_completion,
    render_completion,
    render_question,
    render_reasoning,
    resolve_answer,
)
from .readers import ImageLoader, dicom_display_settings, read_header

__all__ = [
    "DEFAULT_CT_WINDOW",
    "DEFAULT_CT_WINDOWS",
    "DEFAULT_PERCENTILES",
    "BoxesFromLabeld",
    "LoadImageAndLabeld",
    "MLLMViewd",
    "RenderTextd",
    "SAMViewd",
    "ScaleIntensityByModalityd",
    "build_transforms",
    "intensity_policy",
]

#: CT window ``(center, width)`` in HU by anatomy (lung window, brain window), and for everything else.
DEFAULT_CT_WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "head": (40.0, 80.0)}
DEFAULT_CT_WINDOW: tuple[float, float] = (40.0, 400.0)  # soft tissue
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
# Reader kinds whose CT values are Hounsfield units (DICOM after rescale, NIfTI/ITK by convention). PNG/JPG
# CTs were windowed (8-bit) or stored with an unknown offset (16-bit) and are never given an HU window.
_HOUNSFIELD_KINDS = frozenset({"dicom", "nibabel", "itk"})


class LoadImageAndLabeld(MapTransform):
    """Read a record's image and mask into the ``(C, H, W)`` image convention.

    * The reader is chosen per file (see :mod:`scripts.data.readers`); pixel values keep their stored type.
    * A volume gives the slice ``record["slice_index"]`` across ``record["slice_axis"]`` (default 2); the
      label may be the matching volume or a 2D mask of the slice's size.
    * MONAI's reader order ``(x, y)`` becomes ``(H, W)``: rows are ``y``, as in every box.
    * The mask must be single-channel and of the image's size; it becomes ``uint8`` with 1 where it is > 0.

    Adds ``image_path``, ``label_path`` (``None`` without label), ``original_size`` ``(H, W)``,
    ``image_format`` (the reader kind) and, for DICOM, ``dicom_window`` and ``monochrome1``.

    Raises:
        ValueError: the file is missing, unsupported or corrupt, the slice is missing or out of range, the
            mask has several channels or another size; the message names the row.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        slice_index_key: str = "slice_index",
        slice_axis_key: str = "slice_axis",
    ) -> None:
        super().__init__(keys=[image_key, label_key], allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.slice_index_key, self.slice_axis_key = slice_index_key, slice_axis_key
        self._loader = ImageLoader()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        where = describe_record(d)
        image_path = d.get(self.image_key)
        if not isinstance(image_path, str):
            raise ValueError(f"{where}: {self.image_key!r} must be an image path, got {type(image_path).__name__}.")
        header = self._header(image_path, where, mask=False)
        slice_axis, slice_index = self._slice(d, header, where)
        image = self._read(image_path, header, where, mask=False)
        window, monochrome1 = dicom_display_settings(image.meta) if header.kind == "dicom" else (None, False)
        image = self._to_plane(image, slice_axis, slice_index)
        d["image_path"], d[self.image_key] = image_path, image
        d["original_size"] = (int(image.shape[-2]), int(image.shape[-1]))
        d["image_format"] = header.kind
        if window is not None:
            d["dicom_window"] = list(window)
        d["monochrome1"] = monochrome1

        label_path = d.get(self.label_key)
        d["label_path"] = label_path
        if label_path is None:
            d.pop(self.label_key, None)
            return d
        if not isinstance(label_path, str):
            raise ValueError(f"{where}: {self.label_key!r} must be a mask path, got {type(label_path).__name__}.")
        label_header = self._header(label_path, where, mask=True)
        if label_header.channels != 1:
            raise ValueError(f"{where}: the mask {label_path} has {label_header.channels} channels; a mask must be "
                             "a single-channel image (convert it to grey, e.g. with PIL's Image.convert('L')).")
        if label_header.is_volume and not header.is_volume:
            raise ValueError(f"{where}: the mask {label_path} is a volume of shape {label_header.spatial_shape} but "
                             "the image is 2D; give a 2D mask.")
        label = self._read(label_path, label_header, where, mask=True)
        label = self._to_plane(label, *((slice_axis, slice_index) if label_header.is_volume else (None, None)))
        if tuple(label.shape[-2:]) != d["original_size"]:
            raise ValueError(f"{where}: the mask {label_path} has size {tuple(label.shape[-2:])} (height, width) "
                             f"but the image has size {d['original_size']}; they must match pixel for pixel.")
        d[self.label_key] = (label > 0).to(torch.uint8)
        return d

    @staticmethod
    def _header(path: str, where: str, mask: bool):
        try:
            return read_header(path, mask=mask)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from error

    def _read(self, path: str, header, where: str, mask: bool):
        try:
            return self._loader(path, mask=mask, header=header)
        except (OSError, ValueError, RuntimeError, IndexError, KeyError) as error:
            kind = "mask" if mask else "image"
            raise ValueError(f"{where}: cannot read the {kind} {path} ({type(error).__name__}: {error}).") from error

    def _slice(self, d: dict, header, where: str) -> tuple[int | None, int | None]:
        if not header.is_volume:
            return None, None
        axis = d.get(self.slice_axis_key)
        axis = 2 if axis is None else axis
        index = d.get(self.slice_index_key)
        if axis not in (0, 1, 2) or isinstance(axis, bool):
            raise ValueError(f"{where}: {self.slice_axis_key!r} must be 0, 1 or 2, got {axis!r}.")
        if index is None:
            raise ValueError(f"{where}: the image is a volume of shape {header.spatial_shape}; give "
                             f"{self.slice_index_key!r} (and {self.slice_axis_key!r}, default 2) to choose a slice.")
        size = header.spatial_shape[axis]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
            raise ValueError(f"{where}: {self.slice_index_key!r} must be an integer in [0, {size - 1}] for axis "
                             f"{axis} of the volume of shape {header.spatial_shape}, got {index!r}.")
        return axis, index

    @staticmethod
    def _to_plane(image, axis: int | None, index: int | None) -> torch.Tensor:
        array = convert_to_tensor(image, track_meta=False)
        if array.ndim == 4:
            if axis is None:
                raise ValueError(f"Got a volume of shape {tuple(array.shape[1:])} where a 2D image was expected.")
            array = array.select(axis + 1, index)
        return array.transpose(-1, -2).contiguous()  # (C, x, y) -> (C, H, W)


def intensity_policy(
    modality: str,
    dtype: torch.dtype,
    image_format: str | None = None,
    window: Sequence[float] | None = None,
    dicom_window: Sequence[float] | None = None,
    anatomy: str | None = None,
    ct_windows: Mapping[str, tuple[float, float]] = DEFAULT_CT_WINDOWS,
    default_ct_window: tuple[float, float] = DEFAULT_CT_WINDOW,
) -> tuple[str, tuple[float, float] | None]:
    """Decide how to bring an image to [0, 1]: ``("window", (center, width))``, ``("percentiles", None)`` or
    ``("as_is", None)`` (8-bit divided by 255).

    In order: an explicit record ``window``; MRI always by percentiles (intensities have no absolute unit);
    8-bit images as they are (they were windowed when written); a DICOM's own window; a CT in HU gets the
    default window of its anatomy; anything else by percentiles.
    """
    if window is not None:
        return "window", (float(window[0]), float(window[1]))
    if modality == "MRI":
        return "percentiles", None
    if dtype == torch.uint8:
        return "as_is", None
    if dicom_window is not None:
        return "window", (float(dicom_window[0]), float(dicom_window[1]))
    if modality == "CT" and image_format in _HOUNSFIELD_KINDS:
        return "window", tuple(ct_windows.get(anatomy or "", default_ct_window))
    return "percentiles", None


class ScaleIntensityByModalityd(MapTransform):
    """Bring the image to float32 in [0, 1] the way its modality needs (see :func:`intensity_policy`).

    Windows and percentile ranges go through MONAI's ``ScaleIntensityRange`` (clipped); percentiles are taken
    over all channels together, so that colour balance is kept. MONOCHROME1 DICOMs are inverted afterwards. The
    choice is recorded in ``intensity_scaling`` (e.g. ``"window(40,400)"``).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        anatomy_key: str = "anatomy",
        window_key: str = "window",
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        ct_windows: Mapping[str, tuple[float, float]] | None = None,
        default_ct_window: tuple[float, float] = DEFAULT_CT_WINDOW,
    ) -> None:
        super().__init__(keys)
        self.modality_key, self.anatomy_key, self.window_key = modality_key, anatomy_key, window_key
        self.percentiles = percentiles
        self.ct_windows = dict(DEFAULT_CT_WINDOWS if ct_windows is None else ct_windows)
        self.default_ct_window = default_ct_window

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            window = d.get(self.window_key)
            if window is not None and (not isinstance(window, (list, tuple)) or len(window) != 2 or window[1] <= 0):
                raise ValueError(f"{describe_record(d)}: {self.window_key!r} must be [center, width] with width > 0, "
                                 f"got {window!r}.")
            method, params = intensity_policy(
                str(d.get(self.modality_key)), image.dtype, d.get("image_format"), window, d.get("dicom_window"),
                d.get(self.anatomy_key), self.ct_windows, self.default_ct_window,
            )
            scaled = self._scale(image, method, params)
            if d.get("monochrome1"):
                scaled = 1.0 - scaled
            d[key] = scaled
            d["intensity_scaling"] = method if params is None else f"{method}({params[0]:g},{params[1]:g})"
        return d

    def _scale(self, image: torch.Tensor, method: str, params) -> torch.Tensor:
        image = image.float()
        if method == "as_is":
            return image / 255.0
        if method == "window":
            center, width = params
            scaled = ScaleIntensityRange(center - width / 2, center + width / 2, 0.0, 1.0, clip=True)(image)
            return convert_to_tensor(scaled, track_meta=False).float()
        # Both percentiles in one numpy call: MONAI's ScaleIntensityRangePercentiles computes the same range
        # (over all channels) but takes ~5x longer on a 1024-pixel image.
        low, high = (float(v) for v in np.percentile(image.cpu().numpy(), self.percentiles))
        if high <= low:
            return torch.zeros_like(image)  # a (nearly) constant image stays blank
        scaled = ScaleIntensityRange(low, high, 0.0, 1.0, clip=True)(image)
        return convert_to_tensor(scaled, track_meta=False).float()


def _as_rgb(image: torch.Tensor, where: str) -> torch.Tensor:
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    if image.shape[0] == 3:
        return image
    raise ValueError(f"{where}: expected a grey (1 channel) or RGB (3 channels) image, got {image.shape[0]} channels.")


def _resize(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a ``(C, H, W)`` float image with antialiasing, clamped to [0, 1].

    torch's antialiased filter is the one torchvision (and so the Qwen2-VL processor) applies when
    down-sampling; MONAI's ``Resize(anti_aliasing=True)`` gets a similar result with a Gaussian pre-filter,
    but was about four times slower on a 1024-pixel image.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    resized = F.interpolate(image[None].float(), size=tuple(size), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    return resized.clamp(0.0, 1.0)


class MLLMViewd(MapTransform):
    """The MLLM's view: RGB ``uint8`` ``(3, h, w)``, longer edge at most ``max_edge`` (aspect kept).

    Grey images are repeated to three channels. The processor resizes this view once more; with a
    :class:`~scripts.data.coordinates.ProcessorGeometry`, the size it will resize to is stored as
    ``mllm_input_size`` (the space of the answer's boxes), next to ``mllm_view_size``.
    """

    def __init__(
        self,
        image_key: str = "image",
        output_key: str = "mllm_image",
        max_edge: int = MLLM_VIEW_MAX_EDGE,
        geometry: ProcessorGeometry | None = None,
    ) -> None:
        super().__init__(keys=image_key)
        self.image_key, self.output_key, self.max_edge, self.geometry = image_key, output_key, max_edge, geometry

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        _as_rgb(image, describe_record(d))  # check the channels before any work
        size = mllm_view_size(image.shape[-2:], self.max_edge)
        # resize grey images before repeating them to RGB: a third of the work
        d[self.output_key] = _as_rgb((_resize(image, size) * 255.0).round().to(torch.uint8), "")
        d["mllm_view_size"] = size
        if self.geometry is not None:
            try:
                d["mllm_input_size"] = self.geometry.input_size(size)
            except ValueError as error:  # e.g. an aspect ratio beyond 200:1
                raise ValueError(f"{describe_record(d)}: {error}") from error
        return d


class SAMViewd(MapTransform):
    """SAM's view: float32 ``(3, size, size)``, resized without keeping the aspect (as MedSAM2 does), with
    SAM normalisation (:data:`scripts.networks.SAM_PIXEL_MEAN`/``SAM_PIXEL_STD`` on [0, 1] RGB)."""

    def __init__(
        self,
        image_key: str = "image",
        output_key: str = "sam_image",
        size: int = MASK_SIZE[0],
        mean: Sequence[float] = SAM_PIXEL_MEAN,
        std: Sequence[float] = SAM_PIXEL_STD,
    ) -> None:
        super().__init__(keys=image_key)
        self.image_key, self.output_key, self.size = image_key, output_key, size
        self._normalize = NormalizeIntensity(subtrahend=list(mean), divisor=list(std), channel_wise=True)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        _as_rgb(image, describe_record(d))
        image = _as_rgb(_resize(image, (self.size, self.size)), "")
        d[self.output_key] = convert_to_tensor(self._normalize(image.contiguous()), track_meta=False).float()
        return d


class BoxesFromLabeld(MapTransform):
    """Boxes of the record: given ones are checked against the image, missing ones come from the label.

    Runs on the original-size label (before it is resized to 512 x 512). Without label and without boxes
    (inference) nothing is added.
    """

    def __init__(self, label_key: str = "label", boxes_key: str = "boxes", min_pixels: int = 1) -> None:
        super().__init__(keys=label_key, allow_missing_keys=True)
        self.label_key, self.boxes_key, self.min_pixels = label_key, boxes_key, min_pixels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        boxes = d.get(self.boxes_key)
        if boxes is not None:
            problems = box_problems(boxes, d["original_size"])
            if problems:
                raise ValueError(f"{describe_record(d)}: {'; '.join(problems)}.")
            d[self.boxes_key] = [[float(v) for v in box] for box in boxes]
        elif self.label_key in d:
            d[self.boxes_key] = [list(map(float, box)) for box in boxes_from_mask(d[self.label_key], self.min_pixels)]
        return d


class RenderTextd(Randomizable, MapTransform):
    """Question, reasoning, answer and completion of a sample, with boxes in MLLM-input pixels.

    Fields the record provides are used (reasoning cleaned of coordinates and tags; answer placeholders filled,
    see :func:`scripts.data.prompts.resolve_answer`); missing ones come from the templates. Samples with
    boxes (training and evaluation) get ``boxes_mllm``, ``answer`` and ``completion``; the rendered completion
    is checked with :func:`scripts.data.prompts.parse_completion`, so every training target is valid.

    Args:
        random_text: draw templates from this transform's random state (training: new phrasing every epoch);
            otherwise from a seed derived from the image path and ``seed`` (the same text every time).
        seed: seed of the deterministic choice.
        reasoning: the completion starts with the reasoning (default); False renders the answer alone (the
            paper's no-CoT ablation; ``reasoning`` is still filled, for reports).
    """

    def __init__(self, random_text: bool = False, seed: int = 0, reasoning: bool = True) -> None:
        MapTransform.__init__(self, keys=("question", "reasoning", "answer"), allow_missing_keys=True)
        self.random_text, self.seed, self.with_reasoning = random_text, seed, reasoning
        self._rng_seed = 0

    def randomize(self, data: object = None) -> None:
        self._rng_seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        where = describe_record(d)
        if self.random_text:
            self.randomize()
            rng = random.Random(self._rng_seed)
        else:
            rng = random.Random(zlib.crc32(f"{self.seed}|{d.get('image_path', d.get('image'))}|{d.get('disease')}"
                                           f"|{d.get('slice_index')}".encode()))
        disease = d.get("disease")
        has_disease = isinstance(disease, str) and bool(disease.strip())
        if not (isinstance(d.get("question"), str) and d["question"].strip()):
            if not has_disease:
                raise ValueError(f"{where}: needs a 'disease' (or a 'question') to build the question.")
            d["question"] = render_question(d, rng)
        boxes = d.get("boxes")
        if boxes is None:
            return d
        if not has_disease:
            raise ValueError(f"{where}: needs a 'disease' to render the answer.")
        if "mllm_input_size" not in d:
            raise ValueError(f"{where}: 'mllm_input_size' is missing; run MLLMViewd with the processor's "
                             "ProcessorGeometry before RenderTextd.")
        mllm_size = d["mllm_input_size"]
        boxes_mllm = round_boxes(original_to_mllm_boxes(boxes, d["original_size"], mllm_size), mllm_size)
        given = d.get("reasoning")
        reasoning = clean_reasoning(given) if isinstance(given, str) and given.strip() else ""
        reasoning = reasoning or render_reasoning(d, boxes, rng, d["original_size"])
        try:
            answer = resolve_answer(d.get("answer"), disease.strip(), boxes_mllm)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        completion = render_completion(reasoning if self.with_reasoning else None, answer)
        parsed = parse_completion(completion, require_reasoning=self.with_reasoning)
        if not parsed.valid or parsed.boxes != [[float(v) for v in box] for box in boxes_mllm]:
            raise ValueError(f"{where}: the rendered completion does not follow the format "
                             f"({parsed.error or 'its boxes differ from the rendered ones'}): {completion!r}.")
        d.update(reasoning=reasoning, answer=answer, completion=completion, boxes_mllm=boxes_mllm)
        return d


def build_transforms(
    geometry: ProcessorGeometry,
    random_text: bool = False,
    seed: int = 0,
    max_edge: int = MLLM_VIEW_MAX_EDGE,
    mask_size: int = MASK_SIZE[0],
    keep_original: bool = False,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    ct_windows: Mapping[str, tuple[float, float]] | None = None,
    reasoning: bool = True,
    own_answers: OwnAnswers | Mapping[str, Mapping[str, str]] | None = None,
) -> Compose:
    """The whole record -> sample chain (see the module docstring).

    Args:
        geometry: the MLLM processor's geometry (``ProcessorGeometry.from_processor(processor)``); answers are
            rendered in its pixel space.
        random_text: new template choices on every call (training) instead of fixed ones (evaluation).
        seed: seed of the fixed template choices.
        max_edge: longer edge of the MLLM view.
        mask_size: side of the SAM view and of the label.
        keep_original: keep the intensity-scaled full-size ``image`` (for overlays); dropped by default to
            keep batches small.
        percentiles: percentiles for MRI and other non-HU scaling.
        ct_windows: CT windows by anatomy, instead of :data:`DEFAULT_CT_WINDOWS`.
        reasoning: completions with reasoning (default) or the answer alone (Table 3's no-CoT ablation).
        own_answers: a language model's own answers to the records (:mod:`scripts.data.own_answers`): they
            replace the rendered question and completion (:class:`~scripts.data.own_answers.UseOwnAnswersd`),
            for a mask stage trained on the text the model really writes.
    """
    transforms = [
        LoadImageAndLabeld(),
        ScaleIntensityByModalityd(percentiles=percentiles, ct_windows=ct_windows),
        BoxesFromLabeld(),
        MLLMViewd(max_edge=max_edge, geometry=geometry),
        SAMViewd(size=mask_size),
        CastToTyped(keys="label", dtype=torch.float32, allow_missing_keys=True),
        Resized(keys="label", spatial_size=(mask_size, mask_size), mode="nearest-exact", allow_missing_keys=True),
        RenderTextd(random_text=random_text, seed=seed, reasoning=reasoning),
        *([UseOwnAnswersd(own_answers)] if own_answers is not None else []),
        # plain tensors from here on: batches need no MONAI metadata, and collation stays a torch.stack
        EnsureTyped(keys=["image", "label", "mllm_image", "sam_image"], track_meta=False, allow_missing_keys=True),
    ]
    if not keep_original:
        transforms.append(DeleteItemsd(keys="image"))
    return Compose(transforms)

