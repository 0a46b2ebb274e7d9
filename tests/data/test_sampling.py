# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
from monai.data import DataLoader, Dataset

from scripts.data.sampling import ImageGroupedBatchSampler


def _paired_records(num_images: int) -> list[dict]:
    return [{"image": f"img{i}.png", "disease": d} for i in range(num_images) for d in ("a", "b")]


def test_records_of_an_image_share_a_batch_and_every_record_comes_once():
    records = _paired_records(10)
    sampler = ImageGroupedBatchSampler(records, batch_size=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 and all(len(b) == 4 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(20))
    for batch in batches:
        images = [records[i]["image"] for i in batch]
        assert all(images.count(image) == 2 for image in images)


def test_shuffling_is_seeded_and_changes_between_epochs():
    records = _paired_records(12)
    first, again = ImageGroupedBatchSampler(records, 4, seed=1), ImageGroupedBatchSampler(records, 4, seed=1)
    epoch0, epoch1 = list(first), list(first)
    assert epoch0 == list(again) and epoch0 != epoch1
    first.set_epoch(0)
    assert list(first) == epoch0
    assert list(ImageGroupedBatchSampler(records, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                                                       [12, 13, 14, 15], [16, 17, 18, 19],
                                                                       [20, 21, 22, 23]]


def test_groups_are_not_split_and_drop_last():
    records = [{"image": "x"}, {"image": "y"}, {"image": "y"}, {"image": "z"}, {"image": "z"}]
    batches = list(ImageGroupedBatchSampler(records, batch_size=2, shuffle=False))
    assert batches == [[0], [1, 2], [3, 4]]
    assert list(ImageGroupedBatchSampler(records, batch_size=2, shuffle=False, drop_last=True)) == [[1, 2], [3, 4]]


def test_works_as_a_monai_dataloader_batch_sampler():
    records = _paired_records(6)
    loader = DataLoader(Dataset(records), batch_sampler=ImageGroupedBatchSampler(records, 4, seed=0),
                        collate_fn=lambda items: items)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert all(len({r["image"] for r in b}) == 2 for b in batches)


@pytest.mark.parametrize(
    "records, batch_size, match",
    [([{"label": "m.png"}], 2, "no 'image' key"), (_paired_records(2), 1, "more than batch_size"),
     (_paired_records(2), 0, "batch_size must be")],
)
def test_bad_input_is_explained(records, batch_size, match):
    with pytest.raises(ValueError, match=match):
        ImageGroupedBatchSampler(records, batch_size)
