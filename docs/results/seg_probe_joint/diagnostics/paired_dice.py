"""Paired bootstrap of the test Dice difference between two evaluations, on the records with distractors.

usage: python paired_dice.py EVAL_A EVAL_B   (directories holding metrics.csv or metrics.csv.gz)

Records are paired by image and asked finding (runs of other seeds phrase the questions differently); 5000
resamples of the records, seed 0. Prints both means, A - B and its 95 % interval.
"""
import pathlib, sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "demo_model_v5" / "diagnostics"))
from own_answer_samples import load_own_answers  # noqa: E402


def load(directory):
    path = pathlib.Path(directory) / "metrics.csv"
    return load_own_answers(path if path.exists() else f"{path}.gz")


a, b = load(sys.argv[1]), load(sys.argv[2])
keys = [k for k in a if k in b and int(a[k]["num_distractors"] or 0) > 0]
dice_a = np.array([float(a[k]["dice"]) for k in keys])
dice_b = np.array([float(b[k]["dice"]) for k in keys])
diff = dice_a - dice_b
rng = np.random.default_rng(0)
boots = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(5000)])
print(f"{len(keys)} records with distractors: A {dice_a.mean():.3f}  B {dice_b.mean():.3f}  A - B {diff.mean():+.3f}"
      f"  95% interval [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}]")
