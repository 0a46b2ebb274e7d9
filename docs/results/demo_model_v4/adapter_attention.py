"""Throwaway: where the semantic adapter's cross-attention looks in the answer (teacher-forced references)."""
import sys, collections, torch
from monai.data import DataLoader, Dataset
from scripts.inference import Predictor
from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
from scripts.data.vocabulary import LESION_TYPES
ckpt = sys.argv[1]
probe = sys.argv[2] if len(sys.argv) > 2 else "answer"
from monai.bundle import ConfigParser
net = Predictor.from_bundle(checkpoint=ckpt, device="cpu", semantic_probe=probe).network.eval() if probe != "answer" else Predictor.from_bundle(checkpoint=ckpt, device="cpu").network.eval()
tok = net.processor.tokenizer
recs = [r for r in load_datalist("data/synthetic_small/datalist.json", "test") if r.get("num_distractors", 0)][:48]
tf = build_transforms(ProcessorGeometry.from_processor(net.processor), random_text=False, mask_size=net.segmenter.image_size)
col = CoreSegCollator(net.processor, mode="train")
cap = {}
def hook(mod, args, kwargs):
    cap["probe"], cap["pad"] = args[0], kwargs.get("padding_mask", args[1] if len(args) > 1 else None)
net.adapter.register_forward_pre_hook(hook, with_kwargs=True)
names = set()
for name in {l.disease for l in LESION_TYPES}:
    names.update(tok.tokenize(" " + name)); names.update(tok.tokenize(name))
mass = collections.Counter(); count = collections.Counter(); ent = []
top = collections.Counter()
with torch.no_grad():
    for b in DataLoader(Dataset(recs, tf), batch_size=8, collate_fn=col):
        inputs = model_inputs(b)
        net(**inputs)
        a = net.adapter
        refined = a.blocks(cap["probe"])
        q = a.query.expand(refined.shape[0], -1, -1)
        _, w = a.cross_attention(q, refined, refined, key_padding_mask=cap["pad"], need_weights=True)
        w = w[:, 0]  # (B, N)
        ids = inputs["input_ids"]; labels = inputs["labels"]
        for row in range(ids.shape[0]):
            comp = ids[row][labels[row] != -100].tolist()
            seg = comp.index(net.seg_token_id)
            toks = tok.convert_ids_to_tokens(comp[:seg + 1])
            ww = w[row, :len(toks)]
            ent.append(float(-(ww.clamp_min(1e-12) * ww.clamp_min(1e-12).log()).sum()) / torch.log(torch.tensor(float(len(toks)))).item())
            for t, x in zip(toks, ww.tolist()):
                kind = "<seg>" if t == "<seg>" else "finding name" if t in names else "digit" if t.strip("Ġ").isdigit() else "[,]" if t.strip("Ġ") in "[,]" else "other"
                mass[kind] += x; count[kind] += 1
            for i in ww.topk(3).indices.tolist():
                top[toks[i]] += 1
n = len(ent)
print("records", n, "normalised attention entropy", sum(ent) / n)
for k in mass: print(f"{k:14s} attention {mass[k]/n:.3f}  share of tokens {count[k]/sum(count.values()):.3f}")
print("top-3 tokens:", top.most_common(12))
# norms of the refined states: <seg> vs the rest
with torch.no_grad():
    b = next(iter(DataLoader(Dataset(recs[:8], tf), batch_size=8, collate_fn=col)))
    net(**model_inputs(b))
    refined = net.adapter.blocks(cap["probe"])
    pad = cap["pad"]
    lengths = (~pad).sum(1)
    seg_norm = torch.stack([refined[i, lengths[i] - 1].norm() for i in range(8)])
    raw_seg = torch.stack([cap["probe"][i, lengths[i] - 1].norm() for i in range(8)])
    other = torch.cat([refined[i, :lengths[i] - 1].norm(dim=-1) for i in range(8)])
    raw_other = torch.cat([cap["probe"][i, :lengths[i] - 1].norm(dim=-1) for i in range(8)])
    print("refined norm <seg>", seg_norm.mean().item(), "others", other.mean().item(), "| raw <seg>", raw_seg.mean().item(), "others", raw_other.mean().item())
