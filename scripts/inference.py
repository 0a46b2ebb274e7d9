# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The one Predictor of the bundle: image + question -> reasoning, answer, boxes, mask.

``configs/inference.json``, the command line (``python -m scripts.inference predict ...``) and the serving front
ends all use :class:`Predictor`; none of them re-implements pre- or post-processing. Outputs live in the
geometry of the input: boxes in original-image pixels (``[x1, y1, x2, y2]``, pixel edges), the mask at the
original image size, written as PNG for raster images and as NIfTI with the input's affine for NIfTI inputs
(a slice of a volume is written into a volume of the input's shape).

Examples::

    python -m scripts.inference predict --image sample_data/images/ct_0.png \\
        --question "Where is the liver tumor?" --output_dir eval/predictions
    python -m scripts.inference predict_datalist --datalist sample_data/datalist.json --section test
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from PIL import Image
from tqdm import tqdm

from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry, clip_boxes, mllm_to_original_boxes
from scripts.data.datalist import load_datalist
from scripts.data.prompts import parse_completion
from scripts.data.readers import reader_kind
from scripts.data.transforms import build_transforms
from scripts.engines.inferers import GenerationInferer
from scripts.networks.checkpoint import load_trainable_weights
from scripts.networks.coreseg import CoreSeg

__all__ = ["Prediction", "Predictor", "write_mask", "write_label_image", "predict", "predict_datalist"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
BUNDLE_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Prediction:
    """What the model said and segmented for one (image, question).

    Attributes:
        image: input image path.
        question: the question asked.
        completion: the raw generated text (special tokens kept).
        reasoning: text of the ``<think>`` block.
        answer: text of the ``<answer>`` block (without ``<seg>``).
        format_valid: the completion follows the CORE-Seg format; if not, ``format_error`` says why and the
            prediction counts as a failure (its mask is empty when the ``<seg>`` token is missing or repeated).
        format_error: why the format is invalid (empty when valid).
        seg_count: number of ``<seg>`` tokens generated.
        no_lesion: the answer says there is no such lesion.
        boxes: boxes of the answer in original-image pixels ``[x1, y1, x2, y2]``.
        mask: ``(H, W)`` uint8 mask (0/1) at the original image size.
        image_size: ``(H, W)`` of the original image (of the slice, for volumes).
        slice_index, slice_axis: the slice of a volume input.
    """

    image: str
    question: str
    completion: str
    reasoning: str
    answer: str
    format_valid: bool
    format_error: str
    seg_count: int
    no_lesion: bool
    boxes: list[list[float]]
    mask: np.ndarray = field(repr=False)
    image_size: tuple[int, int]
    slice_index: int | None = None
    slice_axis: int | None = None

    def to_json(self) -> dict:
        """JSON-serialisable fields (the mask is summarised by its pixel count)."""
        content = asdict(self)
        content.pop("mask")
        content["mask_pixels"] = int(self.mask.sum())
        content["image_size"] = list(self.image_size)
        return content


class Predictor:
    """Run CoreSeg on images and questions.

    Args:
        network: a :class:`~scripts.networks.coreseg.CoreSeg` with its trained weights loaded.
        device: where to run (default: CUDA if available, else CPU).
        max_new_tokens: longest completion.
        do_sample: sample instead of greedy decoding.
        amp: run under ``torch.autocast`` with ``amp_dtype`` (on CUDA).
        amp_dtype: autocast dtype.
        generation_kwargs: further arguments of ``CoreSeg.generate`` (``temperature``, ``top_p``, ...).
        reasoning: the model was trained to reason first (default); False for a no-CoT model (the prompt asks
            for the answer alone and an answer without ``<think>`` block is valid).
    """

    def __init__(
        self,
        network: CoreSeg,
        device: str | torch.device | None = None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.bfloat16,
        generation_kwargs: Mapping | None = None,
        reasoning: bool = True,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        self.geometry = ProcessorGeometry.from_processor(network.processor)
        self.preprocessing = build_transforms(self.geometry, mask_size=self.network.segmenter.image_size,
                                              reasoning=reasoning)
        self.collator = CoreSegCollator(network.processor, mode="generate", reasoning=reasoning)
        self.reasoning = reasoning
        self.inferer = GenerationInferer(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                         **dict(generation_kwargs or {}))
        self.amp, self.amp_dtype = amp, amp_dtype
        self.logger = logging.getLogger(__name__)

    # --------------------------------------------------------------------------------------------- predicting
    def predict(self, image: str | Path, question: str, **record: object) -> Prediction:
        """Predict for one image file and question.

        Args:
            image: PNG/JPG/BMP, NIfTI or DICOM file.
            question: the clinical question.
            record: optional datalist fields: ``modality``, ``anatomy`` (intensity handling), ``slice_index``
                and ``slice_axis`` (volumes), ``window`` ([center, width] for CT).
        """
        if not str(question).strip():
            raise ValueError("The question is empty: ask what to segment, e.g. 'Where is the liver tumor?'.")
        return self.predict_records([{**record, "image": str(image), "question": str(question)}])[0]

    def predict_records(self, records: Sequence[Mapping], batch_size: int = 1, progress: bool = False
                        ) -> list[Prediction]:
        """Predict for datalist-style records (``image``, ``question`` and optional fields), in order."""
        predictions: list[Prediction] = []
        batches = range(0, len(records), batch_size)
        for start in tqdm(batches, desc="predicting", disable=not progress):
            samples = [self.preprocess(record) for record in records[start:start + batch_size]]
            predictions.extend(self.predict_samples(samples))
        return predictions

    def preprocess(self, record: Mapping) -> dict:
        """Record -> sample (MLLM and SAM views, sizes); the labels of a record, if any, are ignored."""
        record = {k: v for k, v in record.items() if k not in ("label", "boxes", "answer", "reasoning")}
        try:
            return self.preprocessing(record)
        except RuntimeError as error:
            # MONAI's Compose wraps a transform's error in "applying transform ...": surface the error itself
            # (a missing or corrupt file, a bad slice index), whose message names the input and the problem.
            cause = error.__cause__
            if isinstance(cause, (ValueError, OSError)):
                raise type(cause)(str(cause)) from error
            raise

    @torch.no_grad()
    def predict_samples(self, samples: Sequence[Mapping]) -> list[Prediction]:
        """Predict for preprocessed samples (the output of :meth:`preprocess`)."""
        batch = self.collator(list(samples))
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in model_inputs(batch).items()}
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)
        with autocast:
            generation = self.inferer(inputs, self.network)
        return self.postprocess(generation.completions, generation.mask_logits, batch["metadata"])

    def postprocess(self, completions: Sequence[str], mask_logits: torch.Tensor,
                    metadata: Sequence[Mapping]) -> list[Prediction]:
        """Generations -> :class:`Prediction` in the input's geometry.

        Args:
            completions: generated texts.
            mask_logits: ``(B, 1, S, S)`` mask logits at the SAM resolution.
            metadata: the collator's per-sample metadata (``original_size``, ``mllm_input_size``, ...).
        """
        predictions = []
        for completion, logits, meta in zip(completions, mask_logits, metadata):
            parsed = parse_completion(completion, require_reasoning=self.reasoning)
            height, width = (int(v) for v in meta["original_size"])
            # Up-sample logits, then threshold: smoother borders than resizing a binary mask.
            mask = F.interpolate(logits[None].float(), size=(height, width), mode="bilinear", align_corners=False)
            boxes = []
            if parsed.boxes:
                boxes = clip_boxes(mllm_to_original_boxes(parsed.boxes, meta["mllm_input_size"], (height, width)),
                                   (height, width))
            predictions.append(Prediction(
                image=str(meta.get("image_path", "")),
                question=str(meta.get("question", "")),
                completion=completion,
                reasoning=parsed.reasoning,
                answer=parsed.answer,
                format_valid=parsed.valid,
                format_error=parsed.error,
                seg_count=parsed.seg_count,
                no_lesion=parsed.no_lesion,
                boxes=[[round(float(v), 2) for v in box] for box in boxes],
                mask=(mask[0, 0] > 0).to(torch.uint8).cpu().numpy(),
                image_size=(height, width),
                slice_index=meta.get("slice_index"),
                slice_axis=meta.get("slice_axis"),
            ))
        return predictions

    # --------------------------------------------------------------------------------------------- writing
    def save(
        self, prediction: Prediction, output_dir: str | Path, name: str | None = None, taken: set[str] | None = None
    ) -> dict:
        """Write the mask (PNG, or NIfTI for NIfTI inputs) and a JSON with the text.

        Args:
            prediction: what to write.
            output_dir: where.
            name: file stem (default: the image's, with the slice index for volumes).
            taken: stems already written in this run; a repeated stem (several questions about one image) gets
                ``_q1``, ``_q2``... so that no answer overwrites another. The stem used is added to it.

        Returns:
            An index entry: image, question, the two paths, format validity, boxes and mask size.
        """
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        stem = name or _stem(prediction.image)
        if prediction.slice_index is not None:
            stem = f"{stem}_slice{prediction.slice_index}"
        if taken is not None:
            base, repeat = stem, 0
            while stem in taken:
                repeat += 1
                stem = f"{base}_q{repeat}"
            taken.add(stem)
        nifti = prediction.image.lower().endswith(_NIFTI_SUFFIXES)
        mask_path = output_dir / f"{stem}_mask{'.nii.gz' if nifti else '.png'}"
        write_mask(prediction, mask_path)
        json_path = output_dir / f"{stem}_prediction.json"
        content = prediction.to_json()
        json_path.write_text(json.dumps({**content, "mask_file": mask_path.name}, indent=2))
        return {"image": prediction.image, "question": prediction.question, "mask": str(mask_path),
                "json": str(json_path), "format_valid": content["format_valid"], "boxes": content["boxes"],
                "mask_pixels": content["mask_pixels"]}

    @staticmethod
    def write_index(entries: Sequence[Mapping], output_dir: str | Path) -> Path:
        """Write ``predictions.json`` listing the entries returned by :meth:`save`."""
        path = Path(output_dir) / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(list(entries), indent=2))
        return path

    # --------------------------------------------------------------------------------------------- bundle
    @classmethod
    def from_bundle(
        cls,
        bundle_root: str | Path = BUNDLE_ROOT,
        config_file: str | Sequence[str] = "configs/inference.json",
        checkpoint: str | Path | None = None,
        allow_untrained: bool = False,
        **overrides: object,
    ) -> Predictor:
        """The ``predictor`` of the bundle's inference config, with the trained weights loaded.

        Args:
            bundle_root: the bundle directory.
            config_file: config file(s), relative to ``bundle_root``; later files override earlier ones (e.g.
                ``["configs/inference.json", "configs/full.json"]``).
            checkpoint: trainable weights to load (default: the config's ``checkpoint``, ``models/model.pt``).
            allow_untrained: run without a checkpoint instead of raising (smoke tests only).
            overrides: config overrides by id, e.g. ``max_new_tokens=256`` or ``device="cpu"``.

        Raises:
            FileNotFoundError: no checkpoint at the path and ``allow_untrained`` is False.
        """
        parser = ConfigParser()
        files = [config_file] if isinstance(config_file, (str, Path)) else list(config_file)
        parser.read_config([str(Path(bundle_root) / f) for f in files])
        parser["bundle_root"] = str(bundle_root)
        parser.update({k: v for k, v in overrides.items() if v is not None})
        predictor = parser.get_parsed_content("predictor")
        weights = Path(checkpoint or parser.get_parsed_content("checkpoint"))
        if weights.is_file():
            load_trainable_weights(predictor.network, weights)
        elif not allow_untrained:
            raise FileNotFoundError(f"No trained weights at {weights}: train with configs/train_sft.json or pass "
                                    "checkpoint=<path to a model.pt>.")
        else:
            logging.getLogger(__name__).warning(f"No weights at {weights}: predicting with an untrained network.")
        return predictor


def predict(
    image: str,
    question: str,
    output_dir: str = "eval/predictions",
    modality: str | None = None,
    anatomy: str | None = None,
    slice_index: int | None = None,
    slice_axis: int | None = None,
    config_file: str = "configs/inference.json",
    checkpoint: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
) -> None:
    """Predict for one image and question, print the answer and write the mask and JSON to ``output_dir``."""
    predictor = Predictor.from_bundle(config_file=config_file, checkpoint=checkpoint, device=device,
                                      max_new_tokens=max_new_tokens)
    fields = {"modality": modality, "anatomy": anatomy, "slice_index": slice_index, "slice_axis": slice_axis}
    prediction = predictor.predict(image, question, **{k: v for k, v in fields.items() if v is not None})
    entry = predictor.save(prediction, output_dir)
    print(f"reasoning: {prediction.reasoning}\nanswer:    {prediction.answer}\nboxes:     {prediction.boxes}")
    if not prediction.format_valid:
        print(f"invalid answer format: {prediction.format_error}")
    print(f"mask: {entry['mask']} ({entry['mask_pixels']} pixels)\njson: {entry['json']}")


def predict_datalist(
    datalist: str,
    section: str = "test",
    base_dir: str | None = None,
    output_dir: str = "eval/predictions",
    batch_size: int = 1,
    config_file: str = "configs/inference.json",
    checkpoint: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
) -> None:
    """Predict for every record of a datalist section (records need ``image`` and ``question``)."""
    predictor = Predictor.from_bundle(config_file=config_file, checkpoint=checkpoint, device=device,
                                      max_new_tokens=max_new_tokens)
    records = load_datalist(datalist, section=section, base_dir=base_dir)
    predictions = predictor.predict_records(records, batch_size=batch_size, progress=True)
    taken: set[str] = set()
    index = Predictor.write_index([predictor.save(p, output_dir, taken=taken) for p in predictions], output_dir)
    valid = sum(p.format_valid for p in predictions)
    print(f"{len(predictions)} predictions ({valid} with a valid answer format); index: {index}")


def write_mask(prediction: Prediction, path: str | Path) -> Path:
    """Write a prediction's mask in its input's geometry.

    PNG: 8-bit, 255 on the lesion, at the image size. NIfTI (for NIfTI inputs): the input's shape and affine,
    with the mask in the predicted slice (axes as the readers use them: a slice's rows run along its second
    voxel axis, its columns along the first).
    """
    path = Path(path)
    if path.name.lower().endswith(_NIFTI_SUFFIXES):
        reference = nib.load(prediction.image)
        volume = np.zeros(reference.shape[:3], dtype=np.uint8)
        _fill_slices(volume, [prediction], prediction.image, label_value=1)
        nib.save(nib.Nifti1Image(volume, reference.affine, reference.header), path)
    else:
        Image.fromarray(prediction.mask.astype(np.uint8) * 255).save(path)
    return path


def write_label_image(
    predictions: Sequence[Prediction], reference: str | Path, path: str | Path, label_value: int = 1
) -> Path:
    """Write the masks of one input as a label image in that input's geometry (MONAI Label's label convention).

    A 2D raster input (PNG/JPG/BMP) gives an 8-bit PNG of its size. Any other input (NIfTI, NRRD, MHA, a DICOM
    file) gives a label volume with the reference's size, spacing, origin and direction, read and written with
    ITK, in the format of ``path``'s suffix (``.nii.gz``, ``.nrrd``, ...). Each prediction fills its own slice,
    so the predictions of every slice of a volume make one label volume.

    Args:
        predictions: predictions for ``reference`` (one for a 2D image; one per predicted slice of a volume).
        reference: the image the predictions were made on.
        path: where to write.
        label_value: the value of lesion pixels (1: the ``lesion`` label of the MONAI Label app).
    """
    import itk

    path, reference = Path(path), str(reference)
    if not predictions:
        raise ValueError("No predictions to write: expected at least one.")
    if reader_kind(reference) == "pil":
        if len(predictions) != 1:
            raise ValueError(f"A 2D image has one mask, got {len(predictions)} predictions for {reference}.")
        Image.fromarray(predictions[0].mask.astype(np.uint8) * label_value).save(path)
        return path
    image = itk.imread(reference)
    volume = np.zeros(tuple(itk.size(image))[::-1], dtype=np.uint8)  # ITK arrays are (z, y, x)
    _fill_slices(volume.T, predictions, reference, label_value)  # .T: a view in voxel order (x, y[, z])
    label = itk.image_from_array(np.ascontiguousarray(volume))
    label.CopyInformation(image)
    itk.imwrite(label, str(path), compression=True)
    return path


def _fill_slices(planes: np.ndarray, predictions: Sequence[Prediction], reference: str, label_value: int) -> None:
    """Put each prediction's mask into its slice of ``planes``, a 2D or 3D array in voxel order ``(x, y[, z])``.

    Axes as the readers use them: a slice's rows run along its second voxel axis, its columns along the first.
    A prediction without slice index fills a 2D array, or a volume one slice deep.
    """
    for prediction in predictions:
        plane = prediction.mask.T.astype(np.uint8) * label_value  # (H, W) -> voxel order (first axis = columns)
        if prediction.slice_index is None:
            if planes.ndim == 3 and planes.shape[2] != 1:
                raise ValueError(f"A prediction without slice index cannot fill the volume {reference}.")
            target = planes if planes.ndim == 2 else planes[..., 0]
        else:
            axis = 2 if prediction.slice_axis is None else int(prediction.slice_axis)
            target = np.moveaxis(planes, axis, 0)[int(prediction.slice_index)]
        if target.shape != plane.shape:
            raise ValueError(f"Mask {prediction.mask.shape} (height, width) does not fit the image {reference} "
                             f"({target.shape[::-1]} in height, width).")
        target[...] = plane


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".bmp", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


if __name__ == "__main__":
    import fire

    fire.Fire({"predict": predict, "predict_datalist": predict_datalist})
