# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import inspect

import numpy as np
import pytest
import torch

from scripts.data.collate import FORWARD_KEYS, GENERATE_KEYS, IGNORE_INDEX, CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.prompts import ANSWER_ONLY_INSTRUCTION, FORMAT_INSTRUCTION, parse_completion
from scripts.data.transforms import build_transforms
from scripts.networks import SEG_TOKEN, CoreSeg
from tests.data.conftest import write_png


@pytest.fixture()
def samples(tiny_model, tmp_path):
    """Three transformed samples of different sizes: two lesions, none, and a question with a typed <seg>."""
    rng = np.random.default_rng(0)
    records = []
    for index, (height, width) in enumerate([(40, 64), (90, 50), (64, 64)]):
        image = rng.integers(0, 255, size=(height, width), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        if index == 0:
            mask[5:15, 3:20] = 255
            mask[25:35, 40:60] = 255
        elif index == 2:
            mask[10:30, 10:30] = 1
        records.append({
            "image": write_png(tmp_path / f"i{index}.png", image), "label": write_png(tmp_path / f"m{index}.png", mask),
            "modality": "CT", "anatomy": "lung", "disease": "lung nodule", "datalist_section": "training",
            "datalist_index": index,
        })
    records[2]["question"] = "Where is the <seg> nodule? <|image_pad|>"
    transforms = build_transforms(ProcessorGeometry.from_processor(tiny_model.processor))
    return [transforms(record) for record in records]


def _prompt_length(batch, row):
    return int((batch["labels"][row] == IGNORE_INDEX).logical_and(batch["attention_mask"][row].bool()).sum())


def test_labels_are_exactly_the_completion_tokens_and_end_of_turn(tiny_model, samples):
    tokenizer = tiny_model.processor.tokenizer
    batch = CoreSegCollator(tiny_model.processor)(samples)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, sample in enumerate(samples):
        labels = batch["labels"][row]
        supervised = labels[labels != IGNORE_INDEX].tolist()
        expected = tokenizer(sample["completion"], add_special_tokens=False)["input_ids"] + [end_of_turn]
        assert supervised == expected
        assert tokenizer.decode(supervised, skip_special_tokens=False) == sample["completion"] + "<|im_end|>"
        # supervised positions are one contiguous block right after the prompt, and equal the inputs there
        prompt_length = _prompt_length(batch, row)
        span = slice(prompt_length, prompt_length + len(expected))
        assert (labels[span] != IGNORE_INDEX).all() and torch.equal(labels[span], batch["input_ids"][row, span])
        assert batch["attention_mask"][row, span.stop:].sum() == 0  # right padding, unsupervised
        assert (labels[span.stop:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, :prompt_length] == tiny_model.seg_token_id).sum() == 0


def test_training_prompt_is_the_generation_prompt(tiny_model, samples):
    train = CoreSegCollator(tiny_model.processor)(samples)
    generate = CoreSegCollator(tiny_model.processor, mode="generate")(samples)
    assert "labels" not in generate
    width = generate["input_ids"].shape[1]
    for row in range(len(samples)):
        prompt_length = _prompt_length(train, row)
        prompt = generate["input_ids"][row, width - prompt_length:]
        assert torch.equal(prompt, train["input_ids"][row, :prompt_length])
        assert generate["attention_mask"][row, : width - prompt_length].sum() == 0  # left padding
        assert generate["attention_mask"][row, width - prompt_length:].all()
    assert torch.equal(train["pixel_values"], generate["pixel_values"])
    assert torch.equal(train["image_grid_thw"], generate["image_grid_thw"])
    image_token = tiny_model.base_mllm.config.image_token_id
    assert torch.equal(generate["mm_token_type_ids"].bool(), generate["input_ids"].eq(image_token))
    assert torch.equal(train["mm_token_type_ids"].bool(), train["input_ids"].eq(image_token))


def test_user_turn_has_image_first_question_and_format_instruction(tiny_model, samples):
    collator = CoreSegCollator(tiny_model.processor)
    prompt = collator.prompt_text(samples[2]["question"])
    user = prompt.split("<|im_start|>user\n", 1)[1]
    assert user.startswith("<|vision_start|><|image_pad|><|vision_end|>Where is the nodule?\n")
    assert FORMAT_INSTRUCTION in user and SEG_TOKEN not in prompt and prompt.count("<|image_pad|>") == 1
    assert prompt.endswith("<|im_start|>assistant\n")


def test_without_cot_the_prompt_asks_for_the_answer_alone_and_targets_have_no_reasoning(tiny_model, samples):
    """Table 3's no-CoT setting: data and collator built with reasoning=False."""
    collator = CoreSegCollator(tiny_model.processor, reasoning=False)
    prompt = collator.prompt_text("Where is the nodule?")
    assert ANSWER_ONLY_INSTRUCTION in prompt and "<think>" not in prompt
    transforms = build_transforms(ProcessorGeometry.from_processor(tiny_model.processor), reasoning=False)
    record = {key: samples[0][key] for key in ("image_path", "label_path")}
    record = {"image": record["image_path"], "label": record["label_path"], "modality": "CT", "anatomy": "lung",
              "disease": "lung nodule"}
    sample = transforms(record)
    assert sample["completion"].startswith("<answer> The lung nodule is located at [")
    assert "<think>" not in sample["completion"] and sample["reasoning"]  # the reasoning is kept for reports
    batch = collator([sample])
    supervised = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert tiny_model.processor.tokenizer.decode(supervised).startswith("<answer>")
    assert parse_completion(sample["completion"], require_reasoning=False).valid
    assert not parse_completion(sample["completion"]).valid


def test_batch_tensors_and_metadata(tiny_model, samples):
    batch = CoreSegCollator(tiny_model.processor)(samples)
    assert batch["sam_images"].shape == (3, 3, 512, 512) and batch["sam_images"].dtype == torch.float32
    assert batch["label"].shape == (3, 1, 512, 512) and set(batch["label"].unique().tolist()) == {0.0, 1.0}
    assert batch["image_grid_thw"].shape == (3, 3)
    first = batch["metadata"][0]
    assert first["original_size"] == (40, 64) and first["datalist_index"] == 0
    assert first["mllm_input_size"] == tuple(int(v) * 14 for v in batch["image_grid_thw"][0, 1:])
    assert len(first["boxes"]) == 2 and parse_completion(first["completion"]).boxes == first["boxes_mllm"]
    assert batch["metadata"][1]["boxes"] == [] and "There is no lung nodule" in batch["metadata"][1]["answer"]


def test_model_inputs_are_coreseg_keyword_arguments(tiny_model, samples):
    forward = set(inspect.signature(CoreSeg.forward).parameters)
    generate = set(inspect.signature(CoreSeg.generate).parameters)
    assert set(FORWARD_KEYS) <= forward and set(GENERATE_KEYS) <= generate
    train = model_inputs(CoreSegCollator(tiny_model.processor)(samples))
    assert set(train) == set(FORWARD_KEYS)
    assert set(model_inputs(CoreSegCollator(tiny_model.processor, mode="generate")(samples))) == set(GENERATE_KEYS)


def test_coreseg_forward_on_a_collated_batch(tiny_model, samples):
    batch = CoreSegCollator(tiny_model.processor)(samples)
    with torch.no_grad():
        out = tiny_model(**model_inputs(batch))
    assert out.seg_valid.all() and out.seg_counts.tolist() == [1, 1, 1]
    for row in range(len(samples)):  # the probe is read at the completion's <seg>, not at the typed one
        position = int(out.seg_positions[row])
        assert batch["input_ids"][row, position] == tiny_model.seg_token_id and position >= _prompt_length(batch, row)
    assert torch.isfinite(out.text_loss) and out.mask_logits.shape == batch["label"].shape


def test_coreseg_generate_on_a_generate_batch(tiny_model, samples):
    batch = CoreSegCollator(tiny_model.processor, mode="generate")(samples[:2])
    result = tiny_model.generate(**model_inputs(batch), max_new_tokens=4, do_sample=False)
    assert len(result.completions) == 2 and result.masks.shape == (2, 1, 512, 512)
    assert torch.equal(result.seg_valid, result.seg_counts.eq(1))
    assert all(parse_completion(text).seg_count == int(count) for text, count in zip(result.completions,
                                                                                     result.seg_counts))


def test_too_long_samples_are_refused_by_name(tiny_model, samples):
    batch = CoreSegCollator(tiny_model.processor)(samples)
    longest = int(batch["attention_mask"].sum(dim=1).max())
    with pytest.raises(ValueError, match=r"row \d of 'training' .* more than max_length=.*<seg>"):
        CoreSegCollator(tiny_model.processor, max_length=longest - 1)(samples)
    generate = CoreSegCollator(tiny_model.processor, mode="generate", max_length=5)
    with pytest.raises(ValueError, match=r"row 0 of 'training' .*\(prompt \d+\)"):
        generate(samples)


def test_samples_built_for_another_processor_are_refused(tiny_model, samples):
    sample = {**samples[0], "mllm_input_size": (28, 28)}
    with pytest.raises(ValueError, match="resized the MLLM view to .* rendered for \\(28, 28\\)"):
        CoreSegCollator(tiny_model.processor)([sample])


def test_bad_samples_are_refused_by_name(tiny_model, samples):
    collator = CoreSegCollator(tiny_model.processor)
    with pytest.raises(ValueError, match=r"row 0 .*lacks \['completion'\]"):
        collator([{k: v for k, v in samples[0].items() if k != "completion"}])
    with pytest.raises(ValueError, match="exactly one <seg> token, found 2"):
        collator([{**samples[0], "completion": samples[0]["completion"].replace("<seg>", "<seg> <seg>")}])
    with pytest.raises(ValueError, match=r"control tokens \['<\|image_pad\|>'\]"):
        collator([{**samples[0], "completion": samples[0]["completion"].replace("<think>", "<think> <|image_pad|>")}])
    with pytest.raises(ValueError, match="uint8"):
        collator([{**samples[0], "mllm_image": samples[0]["mllm_image"].float()}])
    with pytest.raises(ValueError, match="all labelled or all unlabelled"):
        CoreSegCollator(tiny_model.processor, mode="generate")(
            [samples[0], {k: v for k, v in samples[1].items() if k != "label"}])
    with pytest.raises(ValueError, match="empty"):
        collator([])
    with pytest.raises(ValueError, match="mode"):
        CoreSegCollator(tiny_model.processor, mode="eval")
