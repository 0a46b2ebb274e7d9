# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command line of the bundle (``python -m scripts.cli <command>``).

Commands:
    demo        build the network from ``configs/network.json`` and run it on a generated image.
    parameters  print the trainable/frozen parameter report of a preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from PIL import Image

from scripts.networks import CoreSeg, format_parameter_report, parameter_report
from scripts.networks.medsam2 import SAM_PIXEL_MEAN, SAM_PIXEL_STD

__all__ = ["demo", "parameters", "phantom_image"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def phantom_image(size: int = 256, seed: int = 0) -> Image.Image:
    """A grey CT-like phantom: body outline, an organ, and one dark lesion with a blurred margin."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    body = ((rows - 0.5) / 0.45) ** 2 + ((cols - 0.5) / 0.40) ** 2 < 1
    organ = ((rows - 0.45) / 0.22) ** 2 + ((cols - 0.4) / 0.18) ** 2 < 1
    lesion = np.exp(-(((rows - 0.47) / 0.06) ** 2 + ((cols - 0.43) / 0.05) ** 2))
    image = 0.15 + 0.35 * body + 0.25 * organ - 0.2 * lesion * organ + rng.normal(0, 0.03, (size, size))
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).convert("RGB")


def _build_network(config_file: str | Path, overrides: dict) -> CoreSeg:
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser.update(overrides)
    return parser.get_parsed_content("network_def")


def _sam_view(image: Image.Image, size: int) -> torch.Tensor:
    array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def demo(
    question: str = "Please segment the liver tumor in this CT image of the abdomen.",
    output_dir: str = "eval/demo",
    config_file: str = str(BUNDLE_ROOT / "configs" / "network.json"),
    max_new_tokens: int = 48,
    seed: int = 0,
    preset: str = "tiny",
) -> None:
    """Run the network of the bundle config on a generated phantom and write its outputs.

    The network is built untrained from ``preset`` (random weights, no checkpoint); the bundled demo model runs
    through ``configs/inference.json`` instead (``make demo``).

    This is a smoke run of the *untrained* tiny preset: it shows the whole path (processor, generation with the
    KV cache, ``<seg>`` probe, adapter, MedSAM2 decoder) working end to end, not a meaningful answer.
    """
    network = _build_network(config_file, {"seed": seed, "preset": preset, "sam_checkpoint": None})
    network.eval()
    processor = network.processor
    image = phantom_image(seed=seed)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    processor.tokenizer.padding_side = "left"
    batch = dict(processor(text=[prompt], images=[image], return_tensors="pt"))
    result = network.generate(
        **batch, sam_images=_sam_view(image, network.segmenter.image_size), max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    mask = result.masks[0, 0].numpy()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    image.save(out / "image.png")
    Image.fromarray((mask * 255).astype(np.uint8)).resize(image.size, Image.NEAREST).save(out / "mask.png")
    summary = {
        "question": question,
        "completion": result.completions[0],
        "seg_count": int(result.seg_counts[0]),
        "format_valid": bool(result.seg_valid[0]),
        "truncated": bool(result.truncated[0]),
        "mask_pixels": int(mask.sum()),
        "note": "untrained tiny preset: a smoke run of the full inference path, not a meaningful answer",
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'image.png'}, {out / 'mask.png'}, {out / 'result.json'}")


def parameters(preset: str = "tiny", **build_kwargs) -> None:
    """Print the trainable/frozen parameter counts per component of a preset.

    ``build_kwargs`` go to :func:`scripts.networks.build_coreseg` (e.g. ``--random_weights`` for ``full``).
    """
    from scripts.networks import build_coreseg

    print(format_parameter_report(parameter_report(build_coreseg(preset, **build_kwargs))))


if __name__ == "__main__":
    import fire

    fire.Fire({"demo": demo, "parameters": parameters})
