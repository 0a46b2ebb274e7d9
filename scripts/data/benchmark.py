# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Throughput of the data pipeline on this machine: per-sample transforms and per-batch collation.

Writes random grey PNGs and CT DICOMs (with masks) to a temporary folder, runs
:func:`scripts.data.transforms.build_transforms` and :class:`scripts.data.collate.CoreSegCollator` with an
offline Qwen2.5-VL processor of the chosen pixel budget, and prints milliseconds per sample and per batch::

    python -m scripts.data.benchmark --num_samples 32 --image_size 1024 --batch_size 8 --max_pixels 12845056
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = ["benchmark", "main"]


def _write_samples(folder: Path, num_samples: int, image_size: int, rng: np.random.Generator) -> list[dict]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from .dicom_files import save_dicom

    records = []
    for index in range(num_samples):
        height, width = image_size, int(image_size * 0.75)
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4:height // 3, width // 5:width // 2] = 255
        label = folder / f"mask_{index}.png"
        Image.fromarray(mask).save(label)
        if index % 2 == 0:
            image = folder / f"image_{index}.png"
            Image.fromarray(rng.integers(0, 256, size=(height, width), dtype=np.uint8)).save(image)
            modality = "MRI"
        else:
            image = folder / f"image_{index}.dcm"
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, CTImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Rows, ds.Columns, ds.Modality = height, width, "CT"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelData = rng.integers(0, 2000, size=(height, width), dtype=np.uint16).tobytes()
            save_dicom(ds, image)
            modality = "CT"
        records.append({"image": str(image), "label": str(label), "modality": modality, "anatomy": "abdomen",
                        "disease": "liver tumor", "datalist_section": "benchmark", "datalist_index": index})
    return records


def benchmark(
    num_samples: int = 32, image_size: int = 1024, batch_size: int = 8, max_pixels: int = 12845056, seed: int = 0
) -> dict[str, float]:
    """Time the transforms and the collation; print and return milliseconds per sample and per batch.

    Args:
        num_samples: samples to time (half PNG/MRI, half DICOM/CT).
        image_size: height of the images (width is 3/4 of it).
        batch_size: samples per collated batch.
        max_pixels: the processor's pixel budget (12845056 is Qwen2.5-VL's; 50176 the tiny preset's).
        seed: seed of the random images.
    """
    from scripts.networks import SEG_TOKEN, build_offline_processor, build_offline_tokenizer

    from .collate import CoreSegCollator
    from .coordinates import ProcessorGeometry
    from .transforms import build_transforms

    tokenizer = build_offline_tokenizer(extra_special_tokens=[SEG_TOKEN])
    processor = build_offline_processor(tokenizer, min_pixels=3136, max_pixels=max_pixels)
    transforms = build_transforms(ProcessorGeometry.from_processor(processor), random_text=True)
    collator = CoreSegCollator(processor)
    with tempfile.TemporaryDirectory() as folder:
        records = _write_samples(Path(folder), num_samples, image_size, np.random.default_rng(seed))
        transforms(records[0])  # warm-up: first-call imports and caches
        start = time.perf_counter()
        samples = [transforms(record) for record in tqdm(records, desc="transforms", unit="sample")]
        transform_ms = (time.perf_counter() - start) * 1000 / num_samples
    batches = [samples[i:i + batch_size] for i in range(0, num_samples, batch_size)]
    collator(batches[0])
    start = time.perf_counter()
    for batch in tqdm(batches, desc="collation", unit="batch"):
        collated = collator(batch)
    collate_ms = (time.perf_counter() - start) * 1000 / len(batches)
    figures = {
        "transform_ms_per_sample": transform_ms,
        "collate_ms_per_batch": collate_ms,
        "tokens_per_sequence": float(collated["attention_mask"].sum(dim=1).float().mean()),
        "image_tokens_per_sample": float(collated["image_grid_thw"].prod(dim=1).float().mean()) / 4,
    }
    print(f"{num_samples} samples of {image_size}x{int(image_size * 0.75)} (PNG/MRI and DICOM/CT), "
          f"max_pixels={max_pixels}, batch_size={batch_size}:")
    for name, value in figures.items():
        print(f"  {name}: {value:.1f}")
    return figures


def main(
    num_samples: int = 32, image_size: int = 1024, batch_size: int = 8, max_pixels: int = 12845056, seed: int = 0
) -> None:
    """Command line: print the figures of :func:`benchmark`."""
    benchmark(num_samples, image_size, batch_size, max_pixels, seed)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
