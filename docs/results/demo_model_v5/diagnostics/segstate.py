"""Throwaway: does the <seg> state (own answers) carry the asked finding? Nearest-class-mean accuracy (leave-one-out) and
centred cosine of the two questions' <seg> states on one image, vs the same for the mean of the answer_text states."""
import sys, torch
from monai.data import DataLoader
from own_answer_samples import OwnAnswerDataset, load_own_answers, usable
from scripts.inference import Predictor
from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
ckpt, csv_path = sys.argv[1:3]
rows = load_own_answers(csv_path)
recs = [r for r in load_datalist("data/synthetic_small/datalist.json", "test") if usable(r, rows)][:240]
for probe in ("seg", "answer_text"):
    net = Predictor.from_bundle(checkpoint=ckpt, device="cpu", semantic_probe=probe).network.eval()
    tf = build_transforms(ProcessorGeometry.from_processor(net.processor), random_text=False, mask_size=net.segmenter.image_size)
    col = CoreSegCollator(net.processor, mode="train")
    cap = {}
    def pre(m, args, kwargs): cap["probe"], cap["pad"] = args[0], kwargs.get("padding_mask")
    net.adapter.register_forward_pre_hook(pre, with_kwargs=True)
    feats = []
    with torch.no_grad():
        for b in DataLoader(OwnAnswerDataset(recs, tf, rows), batch_size=8, collate_fn=col):
            net(**model_inputs(b))
            p = cap["probe"]
            if p.ndim == 3:
                keep = (~cap["pad"]).float().unsqueeze(-1) if cap["pad"] is not None else torch.ones_like(p[..., :1])
                p = (p * keep).sum(1) / keep.sum(1)
            feats.append(p)
    X = torch.cat(feats); y = [r["disease"] for r in recs]
    classes = sorted(set(y)); Y = torch.tensor([classes.index(c) for c in y])
    correct = 0
    for i in range(len(X)):
        m = torch.ones(len(X), dtype=torch.bool); m[i] = False
        means = torch.stack([X[m & (Y == c)].mean(0) for c in range(len(classes))])
        correct += int(torch.cdist(X[i:i + 1], means).argmin() == Y[i])
    print(ckpt, probe, "finding nearest-class-mean accuracy %.3f over %d records, %d findings" % (correct / len(X), len(X), len(classes)))
