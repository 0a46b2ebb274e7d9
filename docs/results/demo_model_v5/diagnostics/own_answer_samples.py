"""Throwaway helper of routing.py and segstate.py: test records with the language model's own answers as their text."""
import csv
import gzip

from monai.data import Dataset


def load_own_answers(csv_path):
    """``(image, disease) -> row`` of an evaluation's per-sample ``metrics.csv`` (or ``metrics.csv.gz``)."""
    with (gzip.open(csv_path, "rt") if str(csv_path).endswith(".gz") else open(csv_path)) as handle:
        return {(r["image"], r["disease"]): r for r in csv.DictReader(handle)}


def usable(record, answers):
    """Whether the record's own answer holds exactly one ``<seg>`` (the collator needs it)."""
    return answers[(record["image"], record["disease"])]["completion"].count("<seg>") == 1


class OwnAnswerDataset(Dataset):
    """``records`` through ``transform``, with the question and completion replaced by the record's own answer."""

    def __init__(self, records, transform, answers):
        super().__init__(records, transform)
        self.answers = answers

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        row = self.answers[(self.data[index]["image"], self.data[index]["disease"])]
        sample["question"], sample["completion"] = row["question"], row["completion"]
        return sample
