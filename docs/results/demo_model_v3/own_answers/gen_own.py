"""Throwaway: the held text-stage language model's own greedy answers to the paired training split."""
import json, random, sys
from pathlib import Path
from scripts.inference import Predictor
from scripts.data.datalist import load_datalist
from scripts.data.prompts import render_question
part, parts = int(sys.argv[1]), int(sys.argv[2])
p = Predictor.from_bundle(checkpoint="/tmp/s14/text_s0_final.pt", max_new_tokens=128)
recs = load_datalist("data/synthetic_small_paired/datalist.json", "training")[part::parts]
for i, r in enumerate(recs):
    r["question"] = render_question(r, random.Random(i * parts + part))
preds = p.predict_records(recs, batch_size=8, progress=True)
out = {f"{Path(str(r['image'])).name}|{r['disease']}": {"question": r["question"], "completion": pr.completion}
       for r, pr in zip(recs, preds)}
json.dump(out, open(f"/tmp/s14/own_{part}.json", "w"))
print(len(out), sum("<seg>" in v["completion"] for v in out.values()))
