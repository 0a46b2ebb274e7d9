"""Throwaway: does the adapter's prompt carry the asked finding? Own answers (from the evaluation CSV), test images
with distractors asked both ways; Dice with the own prompt and with the image's other question's prompt; the spread of
the prompts; the semantic adapter's attention.
usage: routing.py CHECKPOINT ADAPTER METRICS_CSV [PROBE [ADAPTER_KWARGS]], e.g. ... seg "{'probe_norm': 'batch'}"."""
import ast, sys, collections, torch
from monai.data import DataLoader
from own_answer_samples import OwnAnswerDataset, load_own_answers, usable
from scripts.inference import Predictor
from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
torch.manual_seed(0)
ckpt, adapter, csv_path = sys.argv[1:4]
probe = sys.argv[4] if len(sys.argv) > 4 else None
kw = ast.literal_eval(sys.argv[5]) if len(sys.argv) > 5 else {}
net = Predictor.from_bundle(checkpoint=ckpt, device="cpu", adapter=adapter, semantic_probe=probe, adapter_kwargs=kw).network.eval()
rows = load_own_answers(csv_path)
recs = load_datalist("data/synthetic_small/datalist.json", "test")
by_img = collections.defaultdict(list)
for r in recs:
    if r.get("num_distractors", 0): by_img[r["image"]].append(r)
pairs = [v for v in by_img.values() if len(v) == 2 and all(usable(r, rows) for r in v)][:48]
recs = [r for p in pairs for r in p]
tf = build_transforms(ProcessorGeometry.from_processor(net.processor), random_text=False, mask_size=net.segmenter.image_size)
col = CoreSegCollator(net.processor, mode="train")
cap = {}
net.adapter.register_forward_hook(lambda m, a, o: cap.__setitem__("prompt", o))
def pre(m, args, kwargs): cap["probe"], cap["pad"] = args[0], kwargs.get("padding_mask")
net.adapter.register_forward_pre_hook(pre, with_kwargs=True)
prompts, labels, attn = [], [], []
with torch.no_grad():
    for b in DataLoader(OwnAnswerDataset(recs, tf, rows), batch_size=8, collate_fn=col):
        inp = model_inputs(b)
        net(**inp)
        prompts.append(cap["prompt"]); labels.append(b["label"])
        if adapter == "semantic" and cap["probe"].ndim == 3:
            a = net.adapter; ref = a.blocks(cap["probe"]); q = a.query.expand(ref.shape[0], -1, -1)
            _, w = a.cross_attention(q, ref, ref, key_padding_mask=cap["pad"], need_weights=True)
            attn.extend(list(w[:, 0]))
prompts = torch.cat(prompts); labels = torch.cat(labels)
# Dice own prompt vs swapped (pair partner's prompt), via the segmenter with given prompts
seg = net.segmenter
def dice(p, g):
    p = p.float(); g = g.float(); s = p.sum() + g.sum(); return 1.0 if s == 0 else float(2 * (p * g).sum() / s)
own_d, swap_d = [], []
with torch.no_grad():
    for i in range(0, len(recs), 2):
        img = torch.stack([torch.as_tensor(tf(recs[i + t])["sam_image"], dtype=torch.float32) for t in (0, 1)])
        for j, k in ((0, 1), (1, 0)):
            for pr, store in ((prompts[i + j], own_d), (prompts[i + k], swap_d)):
                m = seg(img[j:j + 1], pr.unsqueeze(0)).mask_logits > 0
                m = torch.nn.functional.interpolate(m.float(), size=labels.shape[-2:], mode="nearest")
                store.append(dice(m[0], labels[i + j]))
print(ckpt, adapter)
print("dice own prompt %.3f  swapped prompt %.3f  (%d records)" % (sum(own_d) / len(own_d), sum(swap_d) / len(swap_d), len(own_d)))
P = prompts.reshape(len(recs), -1); Pc = P - P.mean(0)
cos = torch.nn.functional.cosine_similarity(Pc[0::2], Pc[1::2]).mean()
print("centred cosine between the two questions' prompts on one image: %.3f; prompt norm %.2f, spread/norm %.3f" % (cos, P.norm(dim=1).mean(), Pc.norm(dim=1).mean() / P.norm(dim=1).mean()))
if attn:
    print("attention entropy (normalised) %.3f, max weight %.3f" % (float(torch.stack([-(w[w > 0] * w[w > 0].log()).sum() / torch.log((w > 0).sum().float()) for w in attn]).mean()), sum(float(w.max()) for w in attn) / len(attn)))
