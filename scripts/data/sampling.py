# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Batch sampling that keeps the records of one image together.

A benchmark asked both ways (``paired_splits`` including ``training``) holds two records per image, one per
finding, whose masks differ. Put side by side in one batch, they make a mask drawn from the image alone wrong
for one of them, which is what teaches the mask decoder to follow its prompt (``docs/sft_learning.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["ImageGroupedBatchSampler"]


class ImageGroupedBatchSampler(Sampler[list[int]]):
    """Batches of record indices in which the records of an image are never split.

    Images are shuffled (deterministically per epoch) and their groups of records packed into batches of
    ``batch_size`` records; a group that does not fit the current batch starts the next one, so batches may hold
    fewer records when groups do not tile ``batch_size`` (e.g. an odd ``batch_size`` with pairs). The number of
    batches is the same every epoch when all images have the same number of records and it divides
    ``batch_size`` (both questions of every image, an even ``batch_size``); otherwise it may differ by one.

    Args:
        records: the dataset's records (datalist rows with an ``"image"`` key), in dataset order.
        batch_size: records per batch; at least the largest group.
        shuffle: shuffle the images every epoch (the records of an image keep their datalist order).
        seed: seed of the shuffling; epoch ``e`` uses ``seed + e``.
        drop_last: drop every batch smaller than ``batch_size`` (the last one, and any left short because the
            next image's records did not fit).

    Raises:
        ValueError: a record has no ``"image"``, or an image has more records than ``batch_size``.
    """

    def __init__(
        self,
        records: Sequence[Mapping],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        groups: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if "image" not in record:
                raise ValueError(f"Record {index} has no 'image' key, so it cannot be grouped by image: {dict(record)}.")
            groups.setdefault(str(record["image"]), []).append(index)
        largest = max((len(group) for group in groups.values()), default=0)
        if largest > batch_size:
            raise ValueError(f"An image has {largest} records, more than batch_size={batch_size}; raise batch_size "
                             "so that all records of an image fit one batch.")
        self.groups = list(groups.values())
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling of ``epoch`` for the next iteration (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def _batches(self, epoch: int) -> list[list[int]]:
        order = range(len(self.groups))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.groups), generator=generator).tolist()
        batches, current = [], []
        for group_index in order:
            group = self.groups[group_index]
            if len(current) + len(group) > self.batch_size:
                batches.append(current)
                current = []
            current = current + group
        if current:
            batches.append(current)
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        self.epoch += 1  # a fresh shuffle next epoch without the caller having to set it
        yield from batches

    def __len__(self) -> int:
        return len(self._batches(self.epoch))
