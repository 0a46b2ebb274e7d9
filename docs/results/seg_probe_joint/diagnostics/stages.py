"""Where does the Semantic-Guided adapter lose the sample-specific part of its probe? Spread (mean distance to the
mean over mean norm) of the states at each stage, over test records with their own answers."""
import ast, sys, collections, torch
from monai.data import DataLoader
sys.path.insert(0, "docs/results/demo_model_v5/diagnostics")
from own_answer_samples import OwnAnswerDataset, load_own_answers, usable
from scripts.inference import Predictor
from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
torch.manual_seed(0)
ckpt, adapter, csv_path, probe = sys.argv[1:5]
kw = ast.literal_eval(sys.argv[5]) if len(sys.argv) > 5 else {}
net = Predictor.from_bundle(checkpoint=ckpt, device="cpu", adapter=adapter, semantic_probe=probe, adapter_kwargs=kw).network.eval()
rows = load_own_answers(csv_path)
recs = [r for r in load_datalist("data/synthetic_small/datalist.json", "test") if usable(r, rows)][:96]
tf = build_transforms(ProcessorGeometry.from_processor(net.processor), random_text=False, mask_size=net.segmenter.image_size)
col = CoreSegCollator(net.processor, mode="train")
cap = {}
def pre(m, args, kwargs): cap.setdefault("probe", []).append(args[0].detach())
net.adapter.register_forward_pre_hook(pre, with_kwargs=True)
with torch.no_grad():
    for b in DataLoader(OwnAnswerDataset(recs, tf, rows), batch_size=8, collate_fn=col):
        net(**model_inputs(b))
P = torch.cat(cap["probe"])
if P.ndim == 2: P = P.unsqueeze(1)
a = net.adapter
def spread(x):
    x = x.reshape(x.shape[0], -1); c = x - x.mean(0); return float(c.norm(dim=1).mean() / x.norm(dim=1).mean())
stages = {"probe": P}
with torch.no_grad():
    x = P
    if getattr(a, "probe_norm", None) is not None:
        x = a.probe_norm(x); stages["after probe_norm"] = x
    if adapter == "semantic":
        for i, blk in enumerate(a.blocks):
            stages[f"block {i} LN"] = blk.norm(x)
            x = blk(x); stages[f"after block {i}"] = x
        q = a.query.expand(x.shape[0], -1, -1)
        att, _ = a.cross_attention(q, x, x); stages["attention out"] = att
        n = a.norm(att); stages["final LN"] = n
        stages["prompt"] = a.proj(n)
    else:
        stages["prompt"] = a(P)
for k, v in stages.items():
    print(f"{k:20s} spread/norm {spread(v):.3f}  norm {float(v.reshape(v.shape[0], -1).norm(dim=1).mean()):.2f}")
