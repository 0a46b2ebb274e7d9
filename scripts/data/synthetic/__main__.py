# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command line of the synthetic benchmark (fire).

Examples::

    python -m scripts.data.synthetic generate --out_dir data/synthetic --size demo --seed 0
    python -m scripts.data.synthetic generate --out_dir data/synthetic-small --size small --num_workers 2
    python -m scripts.data.synthetic generate --out_dir data/s --size demo --text_fn scripts.data.prompts.text_for
    python -m scripts.data.synthetic figure --out_path docs/images/synthetic_phantoms.png
"""

from __future__ import annotations

import time
from pydoc import locate

import fire

from .benchmark import PAIRED_SPLITS, generate_benchmark
from .figure import plot_phantom_grid


def generate(
    out_dir: str,
    size: str | dict[str, int] = "demo",
    seed: int = 0,
    text_fn: str | None = None,
    num_workers: int = 0,
    overwrite: bool = False,
    paired_splits: str | tuple[str, ...] = PAIRED_SPLITS,
) -> str:
    """Generate the benchmark under ``out_dir`` and print where the datalist went.

    Args:
        out_dir: output folder.
        size: demo, small or large, or images per split such as ``"{'training': 46, 'test': 23}"``.
        seed: benchmark seed.
        text_fn: dotted path of a ``text_fn(record, rng) -> dict`` adding question, reasoning and answer.
        num_workers: worker processes for rendering.
        overwrite: write into a folder that already has a datalist.
        paired_splits: splits asked for both findings of every image, e.g. ``training,validation,test``.
    """
    hook = None
    if text_fn is not None:
        hook = locate(text_fn)
        if not callable(hook):
            raise ValueError(f"text_fn {text_fn!r} is not a callable; expected a dotted path such as "
                             "'package.module.function'.")
    start = time.perf_counter()
    path = generate_benchmark(out_dir, size=size, seed=seed, text_fn=hook, num_workers=num_workers,
                              overwrite=overwrite, paired_splits=paired_splits)
    return f"wrote {path} in {time.perf_counter() - start:.1f} s"


def figure(out_path: str = "docs/images/synthetic_phantoms.png", seed: int = 0, columns: int = 4) -> str:
    """Save the phantom grid figure (one row per modality)."""
    return f"wrote {plot_phantom_grid(out_path, seed=seed, columns=columns)}"


def main(argv: list[str] | None = None) -> None:
    """Run the command line; ``argv`` defaults to ``sys.argv[1:]``."""
    fire.Fire({"generate": generate, "figure": figure}, command=argv)


if __name__ == "__main__":
    main()
