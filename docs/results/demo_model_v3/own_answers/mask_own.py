"""Throwaway: the demo mask stage trained on the held language model's own answers instead of the references."""
import json, sys
from pathlib import Path
import scripts.data.transforms as T

own = {}
for part in (0, 1):
    own.update(json.load(open(f"/tmp/s14/own_{part}.json")))
used = {"own": 0, "reference": 0}
_call = T.RenderTextd.__call__


def _usable(text: str) -> bool:
    return text.count("<seg>") == 1 and text.count("<answer>") == 1 and text.index("<answer>") < text.index("<seg>")


def patched(self, data):
    d = _call(self, data)
    if not self.random_text or "completion" not in d:
        return d  # validation keeps the references
    entry = own.get(f"{Path(str(d.get('image_path'))).name}|{d.get('disease')}")
    if entry is not None:
        completion = entry["completion"].replace("<|im_end|>", "").replace("<|endoftext|>", "").strip()
        if _usable(completion):
            d["question"], d["completion"] = entry["question"], completion
            used["own"] += 1
            return d
    used["reference"] += 1
    return d


T.RenderTextd.__call__ = patched
from monai.bundle import run  # noqa: E402

adapter, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run(config_file=["configs/train_sft.json", "configs/train_sft_demo.json"], meta_file="configs/metadata.json",
    logging_file="configs/logging.conf", num_workers=0, seed=seed, adapter=adapter, output_dir=out,
    init_checkpoint="/work/main/eval/train_sft_demo_text/checkpoints/checkpoint_final.pt")
print("completions used:", used)
