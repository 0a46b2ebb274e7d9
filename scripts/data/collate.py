# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Batch collation through the MLLM processor, into the keyword arguments of ``CoreSeg.forward``/``generate``.

A sample (from :func:`scripts.data.transforms.build_transforms`) holds ``mllm_image``, ``sam_image``, ``question``,
optionally ``label`` and, for training, ``completion``. The collator

* builds the user turn (image first, then the question with control tokens removed and the format
  instruction) and renders it with the processor's chat template (``add_generation_prompt=True``);
* runs the processor on the prompts and images (``input_ids``, ``attention_mask``, ``pixel_values``,
  ``image_grid_thw``, ``mm_token_type_ids``);
* in ``"train"`` mode appends the completion tokens and the end-of-turn token to each prompt, and sets
  ``labels`` to -100 on every prompt and padding token, so exactly the completion and ``<|im_end|>`` are
  supervised. Prompt and completion are tokenised separately and concatenated (as trl does), so the
  boundary between them is exact and the prompt is the very one ``generate`` sees;
* pads right for training and left for generation (``CoreSeg.generate`` refuses right padding);
* stacks ``sam_images`` and, when every sample has one, the ground-truth mask as ``label``;
* adds ``metadata``: one dict per sample with what evaluators and predictors need to map boxes and masks back
  (sizes, paths, modality, anatomy, disease, reference texts and boxes, ...).

Use :func:`model_inputs` to pass a batch to the model: it keeps only the model's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from scripts.networks.mllm import SEG_TOKEN

from .datalist import describe_record
from .prompts import build_user_prompt

__all__ = ["FORWARD_KEYS", "GENERATE_KEYS", "IGNORE_INDEX", "METADATA_KEYS", "CoreSegCollator", "model_inputs"]

IGNORE_INDEX = -100
#: Keyword arguments of ``CoreSeg.forward`` that a training batch provides.
FORWARD_KEYS: tuple[str, ...] = (
    "input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids", "sam_images", "labels",
)
#: Keyword arguments of ``CoreSeg.generate`` that a generation batch provides.
GENERATE_KEYS: tuple[str, ...] = tuple(k for k in FORWARD_KEYS if k != "labels")
#: Sample fields copied into ``batch["metadata"]`` when present.
METADATA_KEYS: tuple[str, ...] = (
    "image_path", "label_path", "datalist_section", "datalist_index", "modality", "anatomy", "disease", "source",
    "original_size", "mllm_view_size", "mllm_input_size", "boxes", "boxes_mllm", "question", "reasoning", "answer",
    "completion", "slice_index", "slice_axis", "intensity_scaling", "distractor", "num_targets", "num_distractors",
    "noise_level", "target_appearance", "distractor_appearance",
)


def model_inputs(batch: Mapping[str, object]) -> dict[str, object]:
    """The model's keyword arguments of a collated batch (``labels`` only when present)."""
    keys = FORWARD_KEYS if "labels" in batch else GENERATE_KEYS
    return {key: batch[key] for key in keys if key in batch}


class CoreSegCollator:
    """Turn a list of transformed samples into a CoreSeg batch.

    Args:
        processor: the model's processor (``model.processor``), with ``<seg>`` in its tokenizer.
        mode: ``"train"`` (prompt + completion, labels, right padding) or ``"generate"`` (prompt only, left
            padding, no labels).
        max_length: longest sequence allowed (prompt + completion in training, prompt in generation);
            a longer sample raises a ``ValueError`` naming it, never a silent cut. ``None``: no limit.
        end_of_turn_token: token that closes the assistant turn and is supervised after the completion.
        seg_token: the segmentation token; every training completion must hold exactly one.
        reasoning: the user turn asks for the reasoning first (default); False asks for the answer alone (the
            no-CoT ablation; pair it with ``build_transforms(reasoning=False)``).
    """

    def __init__(
        self,
        processor,
        mode: str = "train",
        max_length: int | None = None,
        end_of_turn_token: str = "<|im_end|>",
        seg_token: str = SEG_TOKEN,
        reasoning: bool = True,
    ) -> None:
        if mode not in ("train", "generate"):
            raise ValueError(f"mode must be 'train' or 'generate', got {mode!r}.")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive or None, got {max_length}.")
        self.processor, self.mode, self.max_length = processor, mode, max_length
        self.reasoning = reasoning
        tokenizer = processor.tokenizer
        vocab = tokenizer.get_vocab()
        for name, token in (("end_of_turn_token", end_of_turn_token), ("seg_token", seg_token)):
            if token not in vocab:
                raise ValueError(f"{name} {token!r} is not in the tokenizer's vocabulary; for <seg>, build the "
                                 "processor through scripts.networks (add_seg_token).")
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(end_of_turn_token)
        self.seg_token, self.seg_token_id = seg_token, tokenizer.convert_tokens_to_ids(seg_token)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        special = set(tokenizer.all_special_tokens)
        special.update(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
        self.protected_tokens = tuple(sorted(special | {seg_token}))
        self._control_ids = {tokenizer.convert_tokens_to_ids(t) for t in special} - {self.seg_token_id}
        image_processor = processor.image_processor
        self.patch_size = int(image_processor.patch_size)

    # ------------------------------------------------------------------------------------------ prompts
    def prompt_text(self, question: str) -> str:
        """The chat-templated prompt for a question (image first, then text), ending with the assistant header."""
        messages = [{"role": "user", "content": [
            {"type": "image"},
            {"type": "text", "text": build_user_prompt(question, self.protected_tokens, self.reasoning)},
        ]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ------------------------------------------------------------------------------------------ collation
    def __call__(self, samples: Sequence[Mapping[str, object]]) -> dict[str, object]:
        if not samples:
            raise ValueError("Cannot collate an empty list of samples.")
        for sample in samples:
            self._check_sample(sample)
        prompts = [self.prompt_text(str(sample["question"])) for sample in samples]
        images = [sample["mllm_image"] for sample in samples]
        encoded = self.processor(text=prompts, images=images, return_tensors="pt", padding=True, padding_side="right")
        self._check_processor_sizes(samples, encoded["image_grid_thw"])
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        prompt_ids = [encoded["input_ids"][row, :length] for row, length in enumerate(lengths)]
        prompt_types = [encoded["mm_token_type_ids"][row, :length] for row, length in enumerate(lengths)] \
            if "mm_token_type_ids" in encoded else None

        if self.mode == "train":
            completion_ids = [self._completion_ids(sample) for sample in samples]
        else:
            completion_ids = [prompt_ids[row].new_empty(0) for row in range(len(samples))]
        for sample, prompt, completion in zip(samples, prompt_ids, completion_ids):
            self._check_length(sample, len(prompt), len(completion))

        batch = self._pad(prompt_ids, prompt_types, completion_ids)
        batch["pixel_values"] = encoded["pixel_values"]
        batch["image_grid_thw"] = encoded["image_grid_thw"]
        batch["sam_images"] = torch.stack([torch.as_tensor(s["sam_image"], dtype=torch.float32) for s in samples])
        with_label = ["label" in sample for sample in samples]
        if all(with_label):
            batch["label"] = torch.stack([torch.as_tensor(s["label"], dtype=torch.float32) for s in samples])
        elif any(with_label):
            missing = [describe_record(s) for s in samples if "label" not in s]
            raise ValueError(f"Some samples of the batch have a mask and others do not (without: {missing}); "
                             "a batch must be all labelled or all unlabelled.")
        batch["metadata"] = [{k: sample[k] for k in METADATA_KEYS if k in sample} for sample in samples]
        return batch

    def _check_sample(self, sample: Mapping[str, object]) -> None:
        where = describe_record(sample)
        needed = ["mllm_image", "sam_image", "question"] + (["completion"] if self.mode == "train" else [])
        missing = [key for key in needed if key not in sample]
        if missing:
            raise ValueError(f"{where}: sample lacks {missing}; build samples with "
                             "scripts.data.transforms.build_transforms (training samples need a mask or boxes).")
        image = sample["mllm_image"]
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3
                and image.shape[0] == 3):
            raise ValueError(f"{where}: 'mllm_image' must be a uint8 (3, H, W) tensor, got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {tuple(getattr(image, 'shape', ()))}.")
        sam = sample["sam_image"]
        if not (isinstance(sam, torch.Tensor) and sam.ndim == 3 and sam.shape[0] == 3 and sam.shape[1] == sam.shape[2]):
            raise ValueError(f"{where}: 'sam_image' must be a (3, S, S) tensor, got {tuple(getattr(sam, 'shape', ()))}.")
        if "label" in sample and tuple(torch.as_tensor(sample["label"]).shape) != (1, *sam.shape[1:]):
            raise ValueError(f"{where}: 'label' must be (1, {sam.shape[1]}, {sam.shape[2]}), "
                             f"got {tuple(torch.as_tensor(sample['label']).shape)}.")

    def _check_processor_sizes(self, samples, grids: torch.Tensor) -> None:
        for sample, grid in zip(samples, grids):
            expected = sample.get("mllm_input_size")
            actual = (int(grid[1]) * self.patch_size, int(grid[2]) * self.patch_size)
            if expected is not None and tuple(expected) != actual:
                raise ValueError(
                    f"{describe_record(sample)}: the processor resized the MLLM view to {actual} but the sample's "
                    f"boxes were rendered for {tuple(expected)}; build the transforms with "
                    "ProcessorGeometry.from_processor(<this processor>)."
                )

    def _completion_ids(self, sample: Mapping[str, object]) -> torch.Tensor:
        completion = str(sample["completion"])
        ids = self.processor.tokenizer(completion, add_special_tokens=False)["input_ids"]
        seg_count = sum(1 for token in ids if token == self.seg_token_id)
        if seg_count != 1:
            raise ValueError(f"{describe_record(sample)}: the completion must hold exactly one {self.seg_token} "
                             f"token, found {seg_count}: {completion!r:.200}.")
        control = sorted({self.processor.tokenizer.convert_ids_to_tokens(t) for t in ids if t in self._control_ids})
        if control:  # e.g. an <|image_pad|> in a datalist's reasoning would be read as an image placeholder
            raise ValueError(f"{describe_record(sample)}: the completion holds control tokens {control}; remove them "
                             "from the datalist's text fields.")
        return torch.tensor([*ids, self.end_of_turn_id], dtype=torch.long)

    def _check_length(self, sample: Mapping[str, object], prompt_length: int, completion_length: int) -> None:
        total = prompt_length + completion_length
        if self.max_length is not None and total > self.max_length:
            detail = f"prompt {prompt_length} + completion {completion_length}" if completion_length else \
                f"prompt {prompt_length}"
            raise ValueError(f"{describe_record(sample)}: the sequence has {total} tokens ({detail}), more than "
                             f"max_length={self.max_length}; cutting it would lose the <seg> token. Raise max_length, "
                             "shorten the text, or lower the processor's max_pixels.")

    def _pad(self, prompt_ids, prompt_types, completion_ids) -> dict[str, torch.Tensor]:
        sequences = [torch.cat([p, c]) for p, c in zip(prompt_ids, completion_ids)]
        width = max(len(s) for s in sequences)
        batch_size = len(sequences)
        input_ids = torch.full((batch_size, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        types = torch.zeros((batch_size, width), dtype=torch.long) if prompt_types is not None else None
        for row, (sequence, prompt) in enumerate(zip(sequences, prompt_ids)):
            start = 0 if self.mode == "train" else width - len(sequence)
            span = slice(start, start + len(sequence))
            input_ids[row, span] = sequence
            attention_mask[row, span] = 1
            labels[row, start + len(prompt):start + len(sequence)] = sequence[len(prompt):]
            if types is not None:
                types[row, start:start + len(prompt)] = prompt_types[row]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if types is not None:
            batch["mm_token_type_ids"] = types
        if self.mode == "train":
            batch["labels"] = labels
        return batch
