# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Measure a running CORE-Seg MONAI Label server: request latency, ``/info/`` during an inference, concurrency.

Prints the figures (docs/serving.md records them). The server must hold a 2D image and a volume in its datastore.

Example (from the bundle root, a server started as docs/serving.md says)::

    python bundle/benchmark_serving.py --url http://127.0.0.1:8000 --image ct2d --volume ct3d_long --concurrent 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "slicer" / "CoreSeg"))
from CoreSegLib import CoreSegClient, InferResult, ServerError  # noqa: E402 (the Slicer module's package, by its folder)

__all__ = ["benchmark", "info_latencies_during_inference", "main"]


def benchmark(url: str, image: str, volume: str, model: str = "coreseg", concurrent: int = 20,
              question: str = "Where is the liver tumor?") -> dict[str, float]:
    """Run the three measurements and print them.

    Args:
        url: server URL.
        image: datastore id of a 2D image (single requests and the concurrent burst).
        volume: datastore id of a volume, segmented slice by slice (``all_slices``) while ``/info/`` is polled.
        model: the reasoning model's name.
        concurrent: requests sent at once.
        question: the question asked.
    """
    client = CoreSegClient(url, timeout=1800)
    figures: dict[str, float] = {}
    client.infer(model, question, image_id=image)  # warm-up
    latencies = []
    for _ in range(5):
        start = time.perf_counter()
        client.infer(model, question, image_id=image)
        latencies.append(time.perf_counter() - start)
    figures["infer_2d_median_s"] = statistics.median(latencies)

    _, info, figures["volume_all_slices_s"] = info_latencies_during_inference(client, model, question, volume)
    figures["info_during_inference_n"] = len(info)
    figures["info_during_inference_median_s"] = statistics.median(info) if info else float("nan")
    figures["info_during_inference_max_s"] = max(info) if info else float("nan")

    def one(_: int) -> bool:
        try:
            return client.infer(model, question, image_id=image).label_path is not None
        except ServerError:
            return False

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        answered = sum(pool.map(one, range(concurrent)))
    figures["concurrent_requests"] = concurrent
    figures["concurrent_answered"] = answered
    figures["concurrent_wall_s"] = time.perf_counter() - start
    for key, value in figures.items():
        print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
    return figures


def info_latencies_during_inference(client: CoreSegClient, model: str, question: str, volume: str,
                                    pause: float = 0.1) -> tuple[InferResult, list[float], float]:
    """Segment every slice of ``volume`` while polling ``/info/``.

    Returns:
        The inference's result, the durations of the ``/info/`` calls answered while it was still running, and
        the inference's own duration (seconds).

    Raises:
        ServerError: the inference failed (raised once polling has stopped).
    """
    done = threading.Event()
    outcome: dict = {}

    def long_inference() -> None:
        start = time.perf_counter()
        try:
            outcome["result"] = client.infer(model, question, image_id=volume, all_slices=True)
        except Exception as error:  # re-raised in the caller's thread
            outcome["error"] = error
        finally:
            outcome["seconds"] = time.perf_counter() - start
            done.set()

    worker = threading.Thread(target=long_inference)
    worker.start()
    time.sleep(3 * pause)
    durations = []
    while not done.is_set():
        start = time.perf_counter()
        client.info()
        if not done.is_set():  # count only answers given while the inference was still running
            durations.append(time.perf_counter() - start)
        time.sleep(pause)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], durations, outcome["seconds"]


def main(argv: list[str] | None = None) -> None:
    """Command line. argparse rather than fire: fire turns image ids such as ``00000`` into the number 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--image", required=True, help="datastore id of a 2D image")
    parser.add_argument("--volume", required=True, help="datastore id of a volume")
    parser.add_argument("--model", default="coreseg")
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--question", default="Where is the liver tumor?")
    benchmark(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
