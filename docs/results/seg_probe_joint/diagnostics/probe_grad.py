"""At the start of the mask stage: how much of the mask loss's gradient reaches the <seg> state through each adapter?
Same language model (the shipped model's), same box-pretrained SAM, same batches; adapters freshly built."""
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.data import DataLoader, Dataset
from scripts.networks import build_coreseg, load_trainable_weights
from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
recs = load_datalist("data/synthetic_small_paired/datalist.json", "training")[:64]
for adapter, kw in (("semantic", {}), ("linear", {}), ("semantic", {"probe_norm": "batch"}), ("linear", {"probe_norm": "batch"})):
    net = build_coreseg("demo", sam_checkpoint="models/tiny_sam2_256.pt", adapter=adapter, adapter_kwargs=kw, semantic_probe="seg", seed=0)
    load_trainable_weights(net, "models/model.pt", components=["mllm"])
    net.train()
    tf = build_transforms(ProcessorGeometry.from_processor(net.processor), random_text=False, mask_size=net.segmenter.image_size)
    col = CoreSegCollator(net.processor, mode="train")
    mask_loss = DiceCELoss(sigmoid=True, batch=True)
    cap = {}
    def hook(m, args, kwargs):
        args[0].retain_grad(); cap["p"] = args[0]
    h = net.adapter.register_forward_pre_hook(hook, with_kwargs=True)
    ratios, gnorms, pnorms = [], [], []
    torch.manual_seed(0)
    for b in DataLoader(Dataset(recs, tf), batch_size=8, collate_fn=col):
        out = net(**model_inputs(b))
        l = mask_loss(out.mask_logits, b["label"])
        net.zero_grad(); l.backward()
        g = cap["p"].grad.reshape(cap["p"].shape[0], -1)
        p = cap["p"].detach().reshape(g.shape)
        gnorms.append(float(g.norm(dim=1).mean())); pnorms.append(float(p.norm(dim=1).mean()))
        # share of the gradient that would make the probes differ: its spread across samples over its mean norm
        gc = g - g.mean(0)
        ratios.append(float(gc.norm(dim=1).mean() / g.norm(dim=1).mean()))
    h.remove()
    print(f"{adapter:8s} {kw}: |dL/dprobe| {np.mean(gnorms):.2e}  (probe norm {np.mean(pnorms):.1f}), sample-specific share of the gradient {np.mean(ratios):.3f}")
