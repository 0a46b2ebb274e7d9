# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CoreSeg: MLLM + Semantic-Guided Prompt Adapter + MedSAM2 mask decoder (CORE-Seg paper, section 4.1).

``<seg>`` hidden-state convention
    The probe of a sample is the **final-layer, post-norm hidden state at the position of its ``<seg>`` token**,
    taken from a teacher-forced forward over prompt + completion (the paper's convention; LISA instead takes
    the state one position earlier, whose logits predict ``<seg>``). During generation the completion is first
    sampled with the KV cache, then one teacher-forced pass reads the state; nothing is read from ``generate``.

Whole-answer probe (paper Table 4)
    With ``semantic_probe="answer"`` the probe is instead the final-layer states of the whole answer, from its
    first token up to and including ``<seg>``: ``(B, N, D)`` with a padding mask, read by the adapter's
    cross-attention. The paper finds it slightly better after stage 1 and the ``<seg>`` token better after GRPO.
    ``"answer_text"`` leaves the ``<seg>`` state out: the Semantic-Guided adapter's attention then has to read
    the answer's words (it otherwise settles on ``<seg>``, ``docs/sft_learning.md`` point 15).

Zero or several ``<seg>`` tokens
    A sample whose answer holds zero or several ``<seg>`` tokens gets ``seg_valid=False``, its count in
    ``seg_counts``, a zero probe and an empty mask (all logits :data:`EMPTY_MASK_LOGIT`). It is never an error:
    metrics and rewards count it as a format failure. Only ``<seg>`` tokens of the answer count (label
    positions in training, generated positions in generation), so a ``<seg>`` typed into a question is ignored.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, ProcessorMixin
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .medsam2 import MedSAM2Segmenter, SamImageFeatures, SegmenterOutput
from .mllm import find_vision_tower

__all__ = [
    "EMPTY_MASK_LOGIT", "SEMANTIC_PROBES", "CoreSegOutput", "CoreSegSamples", "CoreSegGeneration", "CoreSeg",
    "locate_seg_tokens", "repeat_mm_encoder_outputs",
]

#: Mask logit given to every pixel of a sample without a usable ``<seg>`` token (sigmoid == 0).
EMPTY_MASK_LOGIT = -1.0e4
IGNORE_INDEX = -100
#: What the prompt adapter reads: the ``<seg>`` token's state (the paper's choice), or the whole answer's states with or
#: without the ``<seg>`` state.
SEMANTIC_PROBES = ("seg", "answer", "answer_text")
_GENERATION_CONFIG_FIELDS = frozenset(GenerationConfig().to_dict())


@dataclass
class CoreSegOutput:
    """Result of a teacher-forced :meth:`CoreSeg.forward`.

    Attributes:
        text_loss: mean next-token cross-entropy over label tokens (``None`` without labels).
        logits: ``(B, T, V)`` next-token logits (``T`` shrinks with ``logits_to_keep``).
        seg_hidden_states: ``(B, D)`` probe per sample (``(B, N, D)`` with the whole-answer probe); zeros where
            ``seg_valid`` is False.
        probe_padding_mask: ``(B, N)`` bool, True on padding of the whole-answer probe; ``None`` for ``<seg>``.
        seg_counts: ``(B,)`` number of ``<seg>`` tokens in each answer.
        seg_positions: ``(B,)`` sequence index of the ``<seg>`` token; -1 where ``seg_valid`` is False.
        seg_valid: ``(B,)`` True where the answer holds exactly one ``<seg>`` token.
        mask_logits: ``(B, 1, S, S)`` mask logits at the SAM input size (512 for MedSAM2); ``None`` from a pass
            with ``with_masks=False``.
        iou_predictions: ``(B, 1)`` SAM's predicted mask IoU (0 where invalid); ``None`` with ``with_masks=False``.
        object_score_logits: ``(B, 1)`` SAM2's object-presence logit (0 where invalid); ``None`` with
            ``with_masks=False``.
    """

    text_loss: torch.Tensor | None
    logits: torch.Tensor
    seg_hidden_states: torch.Tensor
    seg_counts: torch.Tensor
    seg_positions: torch.Tensor
    seg_valid: torch.Tensor
    mask_logits: torch.Tensor | None
    iou_predictions: torch.Tensor | None
    object_score_logits: torch.Tensor | None
    probe_padding_mask: torch.Tensor | None = None


@dataclass
class CoreSegSamples:
    """Sampled completions of :meth:`CoreSeg.sample`, ``N = B * num_return_sequences`` rows grouped per prompt.

    Besides the completions it holds what a teacher-forced pass over prompt + completion needs
    (:meth:`forward_inputs`): GRPO's log-probability pass and :meth:`CoreSeg.generate`'s segmentation pass read
    the same tensors.

    Attributes:
        sequences: ``(N, P + L)`` prompt and completion ids as returned by ``generate``.
        prompt_length: ``P``, the (left-padded) prompt length.
        completion_ids: ``(N, L)`` generated ids, padding after the first end-of-sequence token.
        completion_mask: ``(N, L)`` 1 up to and including the first end-of-sequence token.
        completions: decoded completions (special tokens such as ``<seg>`` kept, end-of-sequence removed).
        truncated: ``(N,)`` True where generation hit ``max_new_tokens`` without an end-of-sequence token.
        num_return_sequences: completions per prompt.
        input_ids: ``(N, P + L)`` prompt + trimmed completion ids.
        attention_mask: ``(N, P + L)`` the prompt's mask followed by ``completion_mask``.
        answer_mask: ``(N, P + L)`` bool, True on completion tokens (where ``<seg>`` is looked for).
        image_grid_thw: the prompts' grids, repeated per completion (None without images).
        mm_token_type_ids: ``(N, P + L)`` token types (None when the model takes none).
    """

    sequences: torch.Tensor
    prompt_length: int
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list[str]
    truncated: torch.Tensor
    num_return_sequences: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor
    image_grid_thw: torch.Tensor | None = None
    mm_token_type_ids: torch.Tensor | None = None

    def forward_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of :meth:`CoreSeg.forward` for a teacher-forced pass over these completions
        (add the repeated ``sam_features`` and ``mm_encoder_outputs``)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "answer_mask": self.answer_mask}
        if self.image_grid_thw is not None:
            inputs["image_grid_thw"] = self.image_grid_thw
        if self.mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = self.mm_token_type_ids
        return inputs


@dataclass
class CoreSegGeneration:
    """Result of :meth:`CoreSeg.generate` for ``B * num_return_sequences`` completions (grouped per prompt).

    Attributes:
        sequences: ``(N, P + L)`` prompt and completion ids as returned by ``generate``.
        prompt_length: ``P``, the (left-padded) prompt length.
        completion_ids: ``(N, L)`` generated ids, padding after the first end-of-sequence token.
        completion_mask: ``(N, L)`` 1 up to and including the first end-of-sequence token.
        completions: decoded completions (special tokens such as ``<seg>`` kept, end-of-sequence removed).
        truncated: ``(N,)`` True where generation hit ``max_new_tokens`` without an end-of-sequence token.
        seg_counts, seg_positions, seg_valid, seg_hidden_states, probe_padding_mask: as in :class:`CoreSegOutput`.
        mask_logits: ``(N, 1, S, S)``; masks: ``(N, 1, S, S)`` bool, ``mask_logits > 0``.
    """

    sequences: torch.Tensor
    prompt_length: int
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list[str]
    truncated: torch.Tensor
    seg_counts: torch.Tensor
    seg_positions: torch.Tensor
    seg_valid: torch.Tensor
    seg_hidden_states: torch.Tensor
    mask_logits: torch.Tensor
    masks: torch.Tensor
    probe_padding_mask: torch.Tensor | None = None


def locate_seg_tokens(
    input_ids: torch.Tensor, seg_token_id: int, search_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count ``<seg>`` tokens per row and return the position of the single one.

    Args:
        input_ids: ``(B, T)`` token ids.
        seg_token_id: id of ``<seg>``.
        search_mask: ``(B, T)`` bool, where to look (e.g. answer tokens only); everywhere if None.

    Returns:
        ``(counts, positions)``: ``counts`` ``(B,)``; ``positions`` ``(B,)`` index of the ``<seg>`` token
        where ``counts == 1`` and -1 elsewhere.
    """
    is_seg = input_ids.eq(seg_token_id)
    if search_mask is not None:
        is_seg = is_seg & search_mask.bool()
    counts = is_seg.sum(dim=1)
    first = is_seg.int().argmax(dim=1)
    positions = torch.where(counts.eq(1), first, torch.full_like(first, -1))
    return counts, positions


class CoreSeg(nn.Module):
    """End-to-end reasoning segmentation model.

    Args:
        mllm: a peft-wrapped image-text-to-text model (see :func:`scripts.networks.mllm.prepare_mllm`).
        processor: its processor (tokenizer with ``<seg>``, image processor, chat template).
        seg_token_id: id of the ``<seg>`` token.
        adapter: maps ``(B, D)`` probes (or ``(B, N, D)`` with a padding mask) to ``(B, Q, prompt_dim)`` SAM prompts.
        segmenter: the MedSAM2 segmenter.
        semantic_probe: ``"seg"`` (the ``<seg>`` token's state), ``"answer"`` (the whole answer's states, ``<seg>``
            included) or ``"answer_text"`` (the answer's states before ``<seg>``).
    """

    def __init__(
        self,
        mllm: nn.Module,
        processor: ProcessorMixin,
        seg_token_id: int,
        adapter: nn.Module,
        segmenter: MedSAM2Segmenter,
        semantic_probe: str = "seg",
    ) -> None:
        super().__init__()
        if semantic_probe not in SEMANTIC_PROBES:
            raise ValueError(f"Unknown semantic_probe {semantic_probe!r}; expected one of {SEMANTIC_PROBES}.")
        self.semantic_probe = semantic_probe
        self.mllm = mllm
        self.adapter = adapter
        self.segmenter = segmenter
        self.processor = processor
        self.seg_token_id = int(seg_token_id)
        base = self.base_mllm
        _, vision = find_vision_tower(base)
        self._vision_tower = [vision]  # a list keeps it out of the module tree (it is already inside mllm)
        self._accepts_mm_token_type_ids = "mm_token_type_ids" in inspect.signature(base.forward).parameters

    @property
    def base_mllm(self) -> nn.Module:
        """The transformers model under the peft wrapper."""
        return self.mllm.get_base_model() if hasattr(self.mllm, "get_base_model") else self.mllm

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ------------------------------------------------------------------ encoders (run once per image)
    def encode_vision(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor
    ) -> dict[str, BaseModelOutputWithPooling]:
        """Vision-tower features in the form transformers' ``mm_encoder_outputs`` takes.

        Runs without autograd while the vision tower is frozen, so its activations are not kept for backward.
        """
        frozen = not any(p.requires_grad for p in self._vision_tower[0].parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            features = self.base_mllm.get_image_features(
                pixel_values=pixel_values, image_grid_thw=image_grid_thw, return_dict=True
            )
        return {"image": BaseModelOutputWithPooling(pooler_output=tuple(features.pooler_output))}

    def encode_sam(self, sam_images: torch.Tensor) -> SamImageFeatures:
        """SAM image-encoder features (see :meth:`MedSAM2Segmenter.encode_image`)."""
        return self.segmenter.encode_image(sam_images)

    # ------------------------------------------------------------------ segmentation head
    def segment(
        self,
        seg_hidden_states: torch.Tensor,
        sam_features: SamImageFeatures,
        seg_valid: torch.Tensor | None = None,
        probe_padding_mask: torch.Tensor | None = None,
    ) -> SegmenterOutput:
        """Adapter + mask decoder for the samples with a valid probe; empty masks for the others.

        Args:
            seg_hidden_states: ``(B, D)`` or ``(B, N, D)`` probes.
            sam_features: one SAM feature map per probe.
            seg_valid: ``(B,)`` bool, samples to decode (default: all).
            probe_padding_mask: ``(B, N)`` bool, True on padding of ``(B, N, D)`` probes.
        """
        batch = seg_hidden_states.shape[0]
        if len(sam_features) != batch:
            raise ValueError(f"Got {len(sam_features)} SAM feature maps for {batch} probes; they must pair up.")
        if seg_valid is None:
            seg_valid = torch.ones(batch, dtype=torch.bool, device=seg_hidden_states.device)
        adapter_dtype = next(self.adapter.parameters()).dtype
        if bool(seg_valid.all()):
            prompts = self.adapter(seg_hidden_states.to(adapter_dtype), padding_mask=probe_padding_mask)
            return self.segmenter.decode(sam_features, prompts)
        size = self.segmenter.image_size
        device = seg_hidden_states.device
        output = SegmenterOutput(
            mask_logits=torch.full((batch, 1, size, size), EMPTY_MASK_LOGIT, device=device),
            low_res_logits=torch.full((batch, 1, size // 4, size // 4), EMPTY_MASK_LOGIT, device=device),
            iou_predictions=torch.zeros(batch, 1, device=device),
            object_score_logits=torch.zeros(batch, 1, device=device),
        )
        index = seg_valid.nonzero().squeeze(1)
        if index.numel() == 0:
            return output
        padding = None if probe_padding_mask is None else probe_padding_mask[index]
        decoded = self.segmenter.decode(
            sam_features.index_select(index),
            self.adapter(seg_hidden_states[index].to(adapter_dtype), padding_mask=padding),
        )
        # index_copy is differentiable w.r.t. the decoded rows, so valid samples still train.
        return SegmenterOutput(
            mask_logits=output.mask_logits.index_copy(0, index, decoded.mask_logits.float()),
            low_res_logits=output.low_res_logits.index_copy(0, index, decoded.low_res_logits.float()),
            iou_predictions=output.iou_predictions.index_copy(0, index, decoded.iou_predictions.float()),
            object_score_logits=output.object_score_logits.index_copy(0, index, decoded.object_score_logits.float()),
        )

    # ------------------------------------------------------------------ teacher-forced pass
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        sam_images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        sam_features: SamImageFeatures | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        logits_to_keep: int = 0,
        answer_mask: torch.Tensor | None = None,
        with_masks: bool = True,
    ) -> CoreSegOutput:
        """Teacher-forced pass: text loss, ``<seg>`` probes and masks.

        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids: processor outputs for
                prompt + answer. ``mm_token_type_ids`` is derived from ``input_ids`` when omitted (Qwen2.5-VL
                needs it for its 3-D rotary positions of image tokens).
            sam_images: ``(B, 3, S, S)`` SAM-normalised images (or pass ``sam_features``).
            labels: ``(B, T)`` ids with -100 on prompt and padding; enables ``text_loss`` and restricts the
                ``<seg>`` search to answer tokens.
            sam_features: precomputed :meth:`encode_sam` output, instead of ``sam_images``.
            mm_encoder_outputs: precomputed :meth:`encode_vision` output, instead of ``pixel_values``.
            logits_to_keep: keep only the last ``k`` positions' logits (0 keeps all).
            answer_mask: ``(B, T)`` bool, the answer tokens, where ``<seg>`` is looked for (default: the label
                positions with ``labels``, else every attended token). Lets a pass without labels (the
                log-probabilities of sampled completions) ignore the prompt.
            with_masks: False skips the SAM image encoder, the adapter and the mask decoder, and returns ``None``
                mask fields: a text-only training stage (mask loss weight 0) needs no masks, and the segmenter
                would cost about as much as the language model there.
        """
        if with_masks and sam_features is None:
            if sam_images is None:
                raise ValueError("CoreSeg.forward needs sam_images or precomputed sam_features (or with_masks=False).")
            sam_features = self.encode_sam(sam_images)
        out = self._mllm_forward(
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, mm_encoder_outputs,
            labels=labels, logits_to_keep=logits_to_keep,
        )
        if answer_mask is not None:
            search = answer_mask.bool()
        else:
            search = labels.ne(IGNORE_INDEX) if labels is not None else attention_mask.bool()
        counts, positions, valid, probes, padding = self._read_probes(input_ids, out.hidden_states[-1], search)
        seg = self.segment(probes, sam_features, valid, padding) if with_masks else None
        return CoreSegOutput(
            text_loss=out.loss,
            logits=out.logits,
            seg_hidden_states=probes,
            seg_counts=counts,
            seg_positions=positions,
            seg_valid=valid,
            mask_logits=None if seg is None else seg.mask_logits,
            iou_predictions=None if seg is None else seg.iou_predictions,
            object_score_logits=None if seg is None else seg.object_score_logits,
            probe_padding_mask=padding,
        )

    def language_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        pixel_values: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Next-token logits of the language model alone (no probe, no mask): e.g. a reference policy's pass.

        Args: as in :meth:`forward`.

        Returns:
            ``(B, T, V)`` logits (``T`` shrinks with ``logits_to_keep``).
        """
        out = self._mllm_forward(
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, mm_encoder_outputs,
            logits_to_keep=logits_to_keep,
        )
        return out.logits

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        generation_config: GenerationConfig | None = None,
        **generate_kwargs,
    ) -> CoreSegSamples:
        """Sample completions with the KV cache (text only; :meth:`generate` adds the masks).

        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids: processor outputs for
                the prompts, **left-padded**.
            mm_encoder_outputs: precomputed :meth:`encode_vision` output, instead of ``pixel_values`` (one
                feature map per prompt; it is shared by every completion of the prompt).
            generation_config: base settings (default: the model's).
            generate_kwargs: generation settings that override the config (``max_new_tokens``, ``do_sample``,
                ``temperature``, ``num_return_sequences``, ...) and objects passed on to ``generate``
                (``logits_processor``, ``stopping_criteria``, ``streamer``, ...).
        """
        _require_left_padding(attention_mask)
        if mm_encoder_outputs is None and pixel_values is not None:
            mm_encoder_outputs = self.encode_vision(pixel_values, image_grid_thw)
        mm_token_type_ids = self._mm_token_type_ids(input_ids, mm_token_type_ids)

        # Generation settings go into the config; objects such as logits_processor or streamer go to generate().
        settings = {k: v for k, v in generate_kwargs.items() if k in _GENERATION_CONFIG_FIELDS}
        passthrough = {k: v for k, v in generate_kwargs.items() if k not in _GENERATION_CONFIG_FIELDS}
        config = GenerationConfig.from_dict(
            {**(generation_config or self.base_mllm.generation_config).to_dict(), **settings}
        )
        config.use_cache = True
        config.return_dict_in_generate = False
        # A sampled image placeholder would make the teacher-forced pass over the completion expect an image
        # that is not there ("Image features and image tokens do not match"): the model may never write one.
        config.suppress_tokens = sorted(set(config.suppress_tokens or []) | set(self._placeholder_token_ids()))
        repeats = config.num_return_sequences or 1
        mm_kwargs = {"mm_token_type_ids": mm_token_type_ids} if mm_token_type_ids is not None else {}
        sequences = self.mllm.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_grid_thw=image_grid_thw,
            # generate() expands the features per returned sequence in place: give it its own copy
            mm_encoder_outputs=repeat_mm_encoder_outputs(mm_encoder_outputs, 1, input_ids.shape[0], copy=True),
            generation_config=config,
            **mm_kwargs,
            **passthrough,
        )

        prompt_length = input_ids.shape[1]
        completion_ids, completion_mask, truncated = self._trim_completions(sequences[:, prompt_length:], config)
        prompt_mask = attention_mask.repeat_interleave(repeats, dim=0)
        full_types = None
        if mm_token_type_ids is not None:
            full_types = torch.cat(
                [mm_token_type_ids.repeat_interleave(repeats, dim=0), torch.zeros_like(completion_ids)], dim=1
            )
        return CoreSegSamples(
            sequences=sequences,
            prompt_length=prompt_length,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            completions=self._decode(completion_ids, completion_mask, truncated),
            truncated=truncated,
            num_return_sequences=repeats,
            input_ids=torch.cat([sequences[:, :prompt_length], completion_ids], dim=1),
            attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
            answer_mask=torch.cat([torch.zeros_like(prompt_mask), completion_mask], dim=1).bool(),
            image_grid_thw=None if image_grid_thw is None else image_grid_thw.repeat_interleave(repeats, dim=0),
            mm_token_type_ids=full_types,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        sam_images: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        sam_features: SamImageFeatures | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        generation_config: GenerationConfig | None = None,
        **generate_kwargs,
    ) -> CoreSegGeneration:
        """Sample completions with the KV cache, then segment from a teacher-forced pass over them.

        Each image is encoded once (vision tower and SAM encoder) whatever ``num_return_sequences`` is.

        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids: processor outputs for
                the prompts, **left-padded**.
            sam_images / sam_features: as in :meth:`forward`, one per prompt.
            mm_encoder_outputs: precomputed :meth:`encode_vision` output, instead of ``pixel_values``.
            generation_config, generate_kwargs: as in :meth:`sample`.
        """
        _require_left_padding(attention_mask)
        if mm_encoder_outputs is None and pixel_values is not None:
            mm_encoder_outputs = self.encode_vision(pixel_values, image_grid_thw)
        if sam_features is None:
            if sam_images is None:
                raise ValueError("CoreSeg.generate needs sam_images or precomputed sam_features.")
            sam_features = self.encode_sam(sam_images)
        samples = self.sample(
            input_ids, attention_mask, image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
            mm_encoder_outputs=mm_encoder_outputs, generation_config=generation_config, **generate_kwargs,
        )
        repeats = samples.num_return_sequences
        out = self.forward(
            **samples.forward_inputs(),
            sam_features=sam_features.repeat_interleave(repeats),
            mm_encoder_outputs=repeat_mm_encoder_outputs(mm_encoder_outputs, repeats, input_ids.shape[0]),
            logits_to_keep=1,  # only the hidden states are needed here
        )
        return CoreSegGeneration(
            sequences=samples.sequences,
            prompt_length=samples.prompt_length,
            completion_ids=samples.completion_ids,
            completion_mask=samples.completion_mask,
            completions=samples.completions,
            truncated=samples.truncated,
            seg_counts=out.seg_counts,
            seg_positions=out.seg_positions,
            seg_valid=out.seg_valid,
            seg_hidden_states=out.seg_hidden_states,
            mask_logits=out.mask_logits,
            masks=out.mask_logits > 0,
            probe_padding_mask=out.probe_padding_mask,
        )

    # ------------------------------------------------------------------ helpers
    def _mllm_forward(
        self, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, mm_encoder_outputs,
        labels=None, logits_to_keep: int = 0,
    ):
        if mm_encoder_outputs is None and pixel_values is not None:
            mm_encoder_outputs = self.encode_vision(pixel_values, image_grid_thw)
        kwargs = {}
        mm_token_type_ids = self._mm_token_type_ids(input_ids, mm_token_type_ids)
        if mm_token_type_ids is not None:
            kwargs["mm_token_type_ids"] = mm_token_type_ids
        return self.mllm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_grid_thw=image_grid_thw,
            mm_encoder_outputs=mm_encoder_outputs,
            labels=labels,
            use_cache=False,
            output_hidden_states=[-1],  # only the final (post-norm) layer is kept
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _placeholder_token_ids(self) -> list[int]:
        """Ids of the tokens that stand for images or videos (and their delimiters) in the prompt."""
        config = self.base_mllm.config
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return [int(value) for value in (getattr(config, name, None) for name in names) if value is not None]

    def _mm_token_type_ids(self, input_ids: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor | None:
        if given is not None or not self._accepts_mm_token_type_ids:
            return given
        config = self.base_mllm.config
        types = torch.zeros_like(input_ids)
        types[input_ids.eq(config.image_token_id)] = 1
        video_token_id = getattr(config, "video_token_id", None)
        if video_token_id is not None:
            types[input_ids.eq(video_token_id)] = 2
        return types

    def _read_probes(self, input_ids, last_hidden, search):
        """``(counts, positions, valid, probes, padding_mask)`` of the answers marked by ``search``."""
        counts, positions = locate_seg_tokens(input_ids, self.seg_token_id, search)
        valid = counts.eq(1)
        if self.semantic_probe in ("answer", "answer_text"):
            probes, padding = _answer_states(last_hidden, search.bool(), positions, valid,
                                             include_seg=self.semantic_probe == "answer")
            return counts, positions, valid, probes, padding
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        probes = last_hidden[rows, positions.clamp(min=0)] * valid.unsqueeze(-1).to(last_hidden.dtype)
        return counts, positions, valid, probes, None

    def _trim_completions(self, generated: torch.Tensor, config: GenerationConfig):
        eos_ids = config.eos_token_id
        eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
        if not eos_ids:
            eos_ids = [self.tokenizer.eos_token_id]
        is_eos = torch.isin(generated, torch.tensor(eos_ids, device=generated.device))
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, generated.shape[1], dtype=torch.long))
        steps = torch.arange(generated.shape[1], device=generated.device).unsqueeze(0)
        mask = steps.le(first_eos.unsqueeze(1)).long()
        pad = config.pad_token_id if config.pad_token_id is not None else self.tokenizer.pad_token_id
        return generated.masked_fill(mask.eq(0), pad), mask, ~has_eos

    def _decode(self, completion_ids, completion_mask, truncated) -> list[str]:
        texts = []
        for ids, mask, cut in zip(completion_ids, completion_mask, truncated):
            length = int(mask.sum()) - (0 if bool(cut) else 1)  # drop the end-of-sequence token itself
            texts.append(self.tokenizer.decode(ids[:length], skip_special_tokens=False))
        return texts


def _require_left_padding(attention_mask: torch.Tensor) -> None:
    if attention_mask.shape[1] and bool(attention_mask[:, -1].eq(0).any()):
        raise ValueError("CoreSeg.generate needs left-padded prompts: set processor.tokenizer.padding_side='left'.")


def _answer_states(
    last_hidden: torch.Tensor, search: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
    include_seg: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack each answer's states from its first token to its ``<seg>`` into ``(B, N, D)`` plus a padding mask.

    Without ``include_seg`` the ``<seg>`` state is left out, unless the answer has no other token. Rows without a
    valid ``<seg>`` get one all-zero state, unmasked so that attention over it stays defined.
    """
    steps = torch.arange(search.shape[1], device=search.device)
    span = search & steps.le(positions.unsqueeze(1)) & valid.unsqueeze(1)
    if not include_seg:
        before = span & steps.lt(positions.unsqueeze(1))
        span = torch.where(before.any(dim=1, keepdim=True), before, span)
    lengths = span.sum(dim=1)
    width = max(int(lengths.max()) if lengths.numel() else 0, 1)
    # A stable descending sort of the span flags lists each row's span positions first, in sequence order.
    order = span.int().sort(dim=1, descending=True, stable=True).indices[:, :width]
    states = last_hidden.gather(1, order.unsqueeze(-1).expand(-1, -1, last_hidden.shape[-1]))
    padding = steps[:width].unsqueeze(0).ge(lengths.clamp(min=1).unsqueeze(1))
    keep = (~padding & valid.unsqueeze(1)).unsqueeze(-1).to(states.dtype)
    return states * keep, padding


def repeat_mm_encoder_outputs(
    outputs: dict[str, BaseModelOutputWithPooling] | None, repeats: int, num_prompts: int, copy: bool = False
) -> dict[str, BaseModelOutputWithPooling] | None:
    """Repeat per-image vision features (:meth:`CoreSeg.encode_vision`) for ``repeats`` completions of each prompt.

    Needs one image per prompt when ``repeats > 1``.

    Returns new output objects when ``repeats > 1`` or ``copy``; the tensors themselves are shared.
    """
    if outputs is None or (repeats == 1 and not copy):
        return outputs
    for modality, value in outputs.items():
        if repeats > 1 and len(value.pooler_output) != num_prompts:
            raise NotImplementedError(
                f"Sampling several completions needs exactly one {modality} per prompt; got "
                f"{len(value.pooler_output)} {modality} feature maps for {num_prompts} prompts."
            )
    return {
        modality: BaseModelOutputWithPooling(
            pooler_output=tuple(feature for feature in value.pooler_output for _ in range(repeats))
        )
        for modality, value in outputs.items()
    }
