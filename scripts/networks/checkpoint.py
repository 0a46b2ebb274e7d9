# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Checkpoints that hold only the trainable tensors of a model.

The base weights (Qwen2.5-VL, MedSAM2 encoders) load from their own paths; ``models/model.pt`` holds the
LoRA matrices, the ``<seg>`` token rows, the prompt adapter and the mask decoder (and the running statistics of
any batch-norm layer, which training sets although they are not parameters) as a plain ``{name: tensor}``
state dict that ``torch.load(..., weights_only=True)`` reads. :class:`TrainableWeights` exposes that state
dict through ``state_dict``/``load_state_dict`` so MONAI's ``CheckpointSaver``/``CheckpointLoader`` and ignite's
``Checkpoint`` save and restore it like any module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "TrainableWeights",
    "trainable_state_dict",
    "running_statistics_names",
    "save_trainable_weights",
    "load_trainable_weights",
    "ParameterCount",
    "parameter_report",
    "format_parameter_report",
]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def running_statistics_names(module: nn.Module) -> list[str]:
    """Qualified names of the running-statistics buffers of ``module``'s batch-norm layers: state that training
    writes (in train mode) and evaluation reads, although it is not a parameter."""
    names = []
    for prefix, layer in module.named_modules():
        if isinstance(layer, _BATCH_NORMS) and layer.track_running_stats:
            names += [f"{prefix}.{buffer}" if prefix else buffer for buffer, value in layer.named_buffers(recurse=False)
                      if value is not None]
    return names


def trainable_state_dict(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """``{name: tensor}`` of the parameters that require grad (and of the batch-norm running statistics),
    detached and on the CPU."""
    return TrainableWeights(module).state_dict()


class TrainableWeights:
    """State-dict view of a module's trainable parameters, for checkpoint handlers.

    The parameters are the ones that require grad when the view is made: a handler that holds some of them for a
    while (:class:`scripts.engines.FreezeForIterations`) does not change what checkpoints contain, so every
    checkpoint of a run loads into the model as built. The running statistics of batch-norm layers
    (:func:`running_statistics_names`) are covered too: training sets them and evaluation needs them.

    Args:
        module: the model (e.g. :class:`scripts.networks.coreseg.CoreSeg`).
        names: the parameters (or batch-norm buffers) to cover (default: the parameters that require grad now
            and every batch-norm running statistic).
    """

    def __init__(self, module: nn.Module, names: Sequence[str] | None = None) -> None:
        self.module = module
        if names is None:
            names = [name for name, param in module.named_parameters() if param.requires_grad]
            names += running_statistics_names(module)
        self._names = list(names)

    @property
    def names(self) -> list[str]:
        """Qualified names of the tensors the view covers."""
        return list(self._names)

    def _parameters(self) -> dict[str, torch.Tensor]:
        tensors = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        return {name: tensors[name] for name in self._names}

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((name, param.detach().cpu().clone()) for name, param in self._parameters().items())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Copy ``state_dict`` into the trainable parameters.

        Raises:
            KeyError: a key names no trainable parameter, or (``strict``) a trainable parameter is missing.
            ValueError: a tensor's shape differs from its parameter's.
        """
        params = self._parameters()
        unexpected = sorted(set(state_dict) - set(params))
        missing = sorted(set(params) - set(state_dict))
        if unexpected or (strict and missing):
            raise KeyError(
                f"Checkpoint does not fit the model's trainable parameters: {len(unexpected)} unexpected keys "
                f"{unexpected[:3]}, {len(missing)} missing keys {missing[:3]}. Was it saved from a model with the "
                "same preset, adapter, adapter_kwargs and LoRA settings?"
            )
        # Check every shape before copying anything, so a bad checkpoint leaves the model untouched.
        for name, value in state_dict.items():
            if params[name].shape != value.shape:
                raise ValueError(f"Shape of {name} is {tuple(value.shape)} in the checkpoint, "
                                 f"{tuple(params[name].shape)} in the model.")
        with torch.no_grad():
            for name, value in state_dict.items():
                params[name].copy_(value)


def save_trainable_weights(module: nn.Module | TrainableWeights, path: str | Path) -> Path:
    """Save the trainable parameters of ``module`` as a plain state dict at ``path``.

    Pass a :class:`TrainableWeights` view to save the parameter set it was made with (e.g. while
    :class:`scripts.engines.FreezeForIterations` holds some of them).
    """
    weights = module if isinstance(module, TrainableWeights) else TrainableWeights(module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights.state_dict(), path)
    return path


def load_trainable_weights(
    module: nn.Module, path: str | Path, strict: bool = True, components: Sequence[str] | None = None
) -> None:
    """Load a file written by :func:`save_trainable_weights` (or MONAI's ``CheckpointSaver``).

    A checkpoint saved by a handler as ``{"model": state_dict, ...}`` is accepted too: the ``"model"`` entry
    is used.

    Args:
        module: the model.
        path: the checkpoint.
        strict: every trainable parameter (of the chosen components) must be in the checkpoint.
        components: top-level submodules to load, e.g. ``["mllm"]`` to take a trained language model and keep
            the adapter and SAM as built; ``None`` loads everything.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(content, Mapping) and "model" in content and isinstance(content["model"], Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise ValueError(f"{path} is not a state dict of tensors (nor a dict with a 'model' state dict).")
    weights = TrainableWeights(module)
    if components is not None:
        prefixes = tuple(f"{name}." for name in components)
        known = {name.split(".", 1)[0] for name in weights.names}
        if unknown := sorted(set(components) - known):
            raise ValueError(f"Unknown components {unknown}; the model's trainable components are {sorted(known)}.")
        content = {name: value for name, value in content.items() if name.startswith(prefixes)}
        weights = TrainableWeights(module, names=[name for name in weights.names if name.startswith(prefixes)])
    weights.load_state_dict(content, strict=strict)


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of one component."""

    component: str
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


# (component label, predicate on the qualified parameter name), first match wins.
_COMPONENTS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("mllm: LoRA", lambda n: n.startswith("mllm.") and ".lora_" in n),
    ("mllm: <seg> token rows", lambda n: n.startswith("mllm.") and "trainable_tokens" in n),
    ("mllm: vision tower", lambda n: n.startswith("mllm.") and any(f".{v}." in n for v in ("visual", "vision_tower", "vision_model"))),
    ("mllm: language model (base)", lambda n: n.startswith("mllm.")),
    ("adapter", lambda n: n.startswith("adapter.")),
    ("segmenter: mask decoder", lambda n: n.startswith("segmenter.mask_decoder.")),
    ("segmenter: image encoder", lambda n: n.startswith("segmenter.image_encoder.") or n == "segmenter.no_mem_embed"),
    ("segmenter: prompt encoder", lambda n: n.startswith("segmenter.prompt_encoder.")),
)


def parameter_report(module: nn.Module) -> list[ParameterCount]:
    """Trainable and frozen parameter counts per CoreSeg component (shared tensors counted once)."""
    counts: dict[str, list[int]] = {label: [0, 0] for label, _ in _COMPONENTS}
    for name, param in module.named_parameters():
        label = next((lab for lab, match in _COMPONENTS if match(name)), "other")
        counts.setdefault(label, [0, 0])[0 if param.requires_grad else 1] += param.numel()
    return [ParameterCount(label, trainable, frozen) for label, (trainable, frozen) in counts.items()
            if trainable or frozen]


def format_parameter_report(rows: list[ParameterCount]) -> str:
    """Render :func:`parameter_report` as a markdown table with a total line."""
    lines = ["| component | trainable | frozen | total |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.component} | {row.trainable:,} | {row.frozen:,} | {row.total:,} |")
    trainable = sum(r.trainable for r in rows)
    frozen = sum(r.frozen for r in rows)
    lines.append(f"| **all** | **{trainable:,}** | **{frozen:,}** | **{trainable + frozen:,}** |")
    return "\n".join(lines)
