# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MedSAM2 (SAM2.1 hiera-tiny at 512x512) as a promptable mask decoder, built with the `sam2` package."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .architectures import MEDSAM2_HYDRA_OVERRIDES, SAM2_BASE_CONFIG

__all__ = [
    "SAM_PIXEL_MEAN", "SAM_PIXEL_STD", "SamImageFeatures", "SegmenterOutput", "MedSAM2Segmenter", "load_sam2_checkpoint",
    "save_sam2_checkpoint",
]

# SAM2's image normalisation (ImageNet statistics on [0, 1] RGB), as in sam2.utils.transforms.SAM2Transforms.
SAM_PIXEL_MEAN = (0.485, 0.456, 0.406)
SAM_PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass
class SamImageFeatures:
    """Output of the frozen SAM2 image encoder, reusable by any number of prompts of the same image.

    Attributes:
        image_embeddings: ``(B, C, h, w)`` lowest-resolution FPN level plus SAM2's ``no_mem_embed``
            (what SAM2's image predictor feeds the decoder for a single image).
        high_res_features: the two higher-resolution FPN levels ``(B, C, 4h, 4w)`` and ``(B, C, 2h, 2w)``,
            *before* the mask decoder's ``conv_s0``/``conv_s1``: those convolutions belong to the trainable
            mask decoder and are applied in :meth:`MedSAM2Segmenter.decode`.
    """

    image_embeddings: torch.Tensor
    high_res_features: tuple[torch.Tensor, torch.Tensor]

    def __len__(self) -> int:
        return self.image_embeddings.shape[0]

    def index_select(self, index: torch.Tensor) -> SamImageFeatures:
        """Features of the images at ``index`` (a 1-D long tensor; repeats allowed)."""
        index = index.to(self.image_embeddings.device)
        return SamImageFeatures(
            image_embeddings=self.image_embeddings.index_select(0, index),
            high_res_features=tuple(f.index_select(0, index) for f in self.high_res_features),  # type: ignore[arg-type]
        )

    def repeat_interleave(self, repeats: int) -> SamImageFeatures:
        """Repeat each image's features ``repeats`` times (e.g. once per sampled completion)."""
        index = torch.arange(len(self), device=self.image_embeddings.device).repeat_interleave(repeats)
        return self.index_select(index)


@dataclass
class SegmenterOutput:
    """Mask decoder outputs for one prompt per image.

    Attributes:
        mask_logits: ``(B, 1, image_size, image_size)`` logits, bilinearly up-sampled from the decoder.
        low_res_logits: ``(B, 1, image_size/4, image_size/4)`` logits as the decoder produced them.
        iou_predictions: ``(B, 1)`` predicted IoU of the mask.
        object_score_logits: ``(B, 1)`` SAM2's object-presence logit.
    """

    mask_logits: torch.Tensor
    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    object_score_logits: torch.Tensor


class MedSAM2Segmenter(nn.Module):
    """SAM2 image encoder, prompt encoder and mask decoder driven by arbitrary sparse prompt embeddings.

    The image encoder and prompt encoder are frozen; the mask decoder (including the ``conv_s0``/``conv_s1``
    projections of the high-resolution features, which live in it) trains. A prompt enters the decoder as
    ``sparse_prompt_embeddings`` with the prompt encoder's ``no_mask_embed`` as the dense prompt and
    ``multimask_output=False``: the public SAM2 decoder interface, with no change to sam2's code. The
    memory modules of SAM2 (video tracking) are not kept.

    Args:
        sam_model: a ``sam2.modeling.sam2_base.SAM2Base`` (e.g. from :meth:`from_config`).
        train_image_encoder: also train the image encoder. Off for MedSAM2, whose pretrained encoder the paper
            freezes; a randomly initialised encoder (the ``tiny`` preset trained from scratch) needs it, since
            random frozen features cannot delineate low-contrast lesions.
    """

    def __init__(self, sam_model: nn.Module, train_image_encoder: bool = False) -> None:
        super().__init__()
        if not getattr(sam_model, "use_high_res_features_in_sam", False):
            raise ValueError("MedSAM2Segmenter expects a SAM2 model with use_high_res_features_in_sam=True.")
        self.image_encoder = sam_model.image_encoder
        self.prompt_encoder = sam_model.sam_prompt_encoder
        self.mask_decoder = sam_model.sam_mask_decoder
        self.no_mem_embed = sam_model.no_mem_embed
        self.image_size = int(sam_model.image_size)
        self.prompt_dim = int(sam_model.sam_prompt_embed_dim)
        self.mask_decoder.dynamic_multimask_via_stability = False  # same output in train and eval mode
        self.prompt_encoder.requires_grad_(False)
        self.image_encoder.requires_grad_(train_image_encoder)
        self.no_mem_embed.requires_grad_(False)
        self.mask_decoder.requires_grad_(True)

    @classmethod
    def from_config(
        cls,
        config_name: str = SAM2_BASE_CONFIG,
        hydra_overrides: Sequence[str] = MEDSAM2_HYDRA_OVERRIDES,
        checkpoint: str | Path | None = None,
        train_image_encoder: bool = False,
    ) -> MedSAM2Segmenter:
        """Build through ``sam2.build_sam.build_sam2`` and optionally load a sam2-format checkpoint.

        Args:
            config_name: a config of the installed ``sam2`` package.
            hydra_overrides: hydra overrides applied to it (default: MedSAM2's 512x512 geometry).
            checkpoint: path to a sam2 checkpoint, a ``torch.save``-d dict with a ``"model"`` state dict
                (e.g. ``MedSAM2_latest.pt``). ``None`` keeps the random initialisation.
            train_image_encoder: see the class docstring.

        Raises:
            FileNotFoundError: the checkpoint path does not exist.
            ValueError: the file is not a sam2 checkpoint, or its keys/shapes do not match the config.
        """
        from sam2.build_sam import build_sam2  # imported lazily: it initialises hydra's global state

        sam_model = build_sam2(
            config_file=config_name,
            ckpt_path=None,
            device="cpu",
            mode="eval",
            hydra_overrides_extra=list(hydra_overrides),
            apply_postprocessing=False,
        )
        if checkpoint is not None:
            load_sam2_checkpoint(sam_model, checkpoint)
        segmenter = cls(sam_model, train_image_encoder=train_image_encoder)
        segmenter.sam2_config = (config_name, tuple(hydra_overrides))  # to write sam2 checkpoints again
        return segmenter

    @property
    def image_encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.image_encoder.parameters())

    def encode_image(self, images: torch.Tensor) -> SamImageFeatures:
        """Run the image encoder once; the result can serve many prompts.

        A frozen encoder runs without autograd (no activations kept for backward).

        Args:
            images: ``(B, 3, image_size, image_size)`` float images with SAM normalisation applied.
        """
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"Expected SAM images of shape (B, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(images.shape)}.")
        dtype = next(self.image_encoder.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.image_encoder_trainable):
            fpn = self.image_encoder(images.to(dtype))["backbone_fpn"]
        embeddings = fpn[-1] + self.no_mem_embed.view(1, -1, 1, 1)
        return SamImageFeatures(image_embeddings=embeddings, high_res_features=(fpn[0], fpn[1]))

    def decode(self, features: SamImageFeatures, sparse_prompt_embeddings: torch.Tensor) -> SegmenterOutput:
        """Decode one mask per image from its features and a ``(B, N, prompt_dim)`` sparse prompt."""
        batch = len(features)
        if sparse_prompt_embeddings.ndim != 3 or sparse_prompt_embeddings.shape[0] != batch \
                or sparse_prompt_embeddings.shape[-1] != self.prompt_dim:
            raise ValueError(f"Expected sparse prompts of shape ({batch}, N, {self.prompt_dim}), "
                             f"got {tuple(sparse_prompt_embeddings.shape)}.")
        decoder_dtype = next(self.mask_decoder.parameters()).dtype
        image_embeddings = features.image_embeddings.to(decoder_dtype)
        high_res = [
            self.mask_decoder.conv_s0(features.high_res_features[0].to(decoder_dtype)),
            self.mask_decoder.conv_s1(features.high_res_features[1].to(decoder_dtype)),
        ]
        height, width = image_embeddings.shape[-2:]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
        low_res, iou_predictions, _, object_score_logits = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_prompt_embeddings.to(decoder_dtype),
            dense_prompt_embeddings=dense.to(decoder_dtype),
            multimask_output=False,
            repeat_image=False,
            high_res_features=high_res,
        )
        mask_logits = F.interpolate(
            low_res.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return SegmenterOutput(
            mask_logits=mask_logits,
            low_res_logits=low_res,
            iou_predictions=iou_predictions,
            object_score_logits=object_score_logits,
        )

    def forward(self, images: torch.Tensor, sparse_prompt_embeddings: torch.Tensor) -> SegmenterOutput:
        """Encode ``images`` and decode one mask per image from its sparse prompt."""
        return self.decode(self.encode_image(images), sparse_prompt_embeddings)


def save_sam2_checkpoint(segmenter: MedSAM2Segmenter, path: str | Path) -> Path:
    """Write a segmenter's weights as a sam2-format checkpoint (``{"model": state_dict}``).

    The file loads strictly into the SAM2 model the segmenter was built from (:meth:`MedSAM2Segmenter.from_config`),
    e.g. through ``build_coreseg(sam_checkpoint=...)``, ``sam2.build_sam.build_sam2`` or MedSAM2's own tools. SAM2's
    video-memory modules, which the segmenter does not keep, are written freshly initialised (seed 0).

    Raises:
        ValueError: the segmenter was not built by :meth:`MedSAM2Segmenter.from_config`, so its SAM2 config is
            unknown.
    """
    from sam2.build_sam import build_sam2

    config = getattr(segmenter, "sam2_config", None)
    if config is None:
        raise ValueError("The segmenter's SAM2 config is unknown: build it with MedSAM2Segmenter.from_config.")
    config_name, overrides = config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sam_model = build_sam2(config_file=config_name, ckpt_path=None, device="cpu", mode="eval",
                               hydra_overrides_extra=list(overrides), apply_postprocessing=False)
    state = sam_model.state_dict()
    kept = {"image_encoder": segmenter.image_encoder, "sam_prompt_encoder": segmenter.prompt_encoder,
            "sam_mask_decoder": segmenter.mask_decoder}
    for prefix, module in kept.items():
        state.update({f"{prefix}.{name}": value.detach().cpu() for name, value in module.state_dict().items()})
    state["no_mem_embed"] = segmenter.no_mem_embed.detach().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def load_sam2_checkpoint(sam_model: nn.Module, checkpoint: str | Path) -> None:
    """Load a sam2-format checkpoint (``{"model": state_dict}``) strictly, with errors that say what is wrong."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM2 checkpoint not found at {path}. For MedSAM2 download MedSAM2_latest.pt "
            "(https://huggingface.co/wanglab/MedSAM2) and pass its local path."
        )
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
        keys = sorted(content)[:5] if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path} is not a sam2 checkpoint: expected a dict with a 'model' state dict, got {keys}.")
    state = content["model"]
    expected = sam_model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not match the SAM2 config: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(mismatched)} shape mismatches "
            f"{mismatched[:3]}. Check that the checkpoint and the hydra overrides describe the same model."
        )
    sam_model.load_state_dict(state, strict=True)
