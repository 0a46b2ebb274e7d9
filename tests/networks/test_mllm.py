# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from scripts.networks.architectures import bind_special_token_ids, tiny_qwen2_5_vl_config
from scripts.networks.mllm import SEG_TOKEN, LoraSettings, add_seg_token, load_mllm, prepare_mllm
from scripts.networks.processor import build_offline_processor


def _base(vocab_padding: int = 0, tie: bool = True):
    processor = build_offline_processor(max_pixels=112 * 112)
    config = tiny_qwen2_5_vl_config(vocab_size=len(processor.tokenizer) + vocab_padding)
    config.tie_word_embeddings = tie
    config.text_config.tie_word_embeddings = tie
    bind_special_token_ids(config, processor.tokenizer)
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config), processor


def test_seg_is_one_special_token_with_a_mean_initialised_row():
    model, processor = _base()
    old = model.get_input_embeddings().weight.detach().clone()
    token_id, added = add_seg_token(model, processor)
    assert added and token_id == len(processor.tokenizer) - 1
    tokenizer = processor.tokenizer
    assert tokenizer.encode(f"located at [1,2,3,4].{SEG_TOKEN}</answer>").count(token_id) == 1
    assert SEG_TOKEN in tokenizer.all_special_tokens
    assert tokenizer.decode([token_id], skip_special_tokens=False) == SEG_TOKEN
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer)  # grown by one row
    torch.testing.assert_close(embeddings[token_id], old.mean(0))
    torch.testing.assert_close(embeddings[: old.shape[0]], old)  # existing rows untouched
    assert model.get_output_embeddings().weight is embeddings  # still tied


def test_spare_vocabulary_rows_are_used_not_shrunk():
    """Like Qwen2.5-VL (151936 rows, 151665 tokens): no resize, and never a shrink to len(tokenizer)."""
    model, processor = _base(vocab_padding=64)
    rows = model.get_input_embeddings().weight.shape[0]
    token_id, _ = add_seg_token(model, processor)
    assert model.get_input_embeddings().weight.shape[0] == rows
    assert token_id < rows


def test_existing_seg_token_is_reused_with_its_trained_row():
    model, processor = _base()
    token_id, _ = add_seg_token(model, processor)
    with torch.no_grad():
        model.get_input_embeddings().weight[token_id] = 7.0
    again, added = add_seg_token(model, processor)
    assert (again, added) == (token_id, False)
    assert torch.all(model.get_input_embeddings().weight[token_id] == 7.0)


def test_lora_covers_language_model_linears_only_and_vision_stays_frozen():
    model, processor = _base()
    prepared = prepare_mllm(model, processor, LoraSettings(r=4, alpha=8, dropout=0.0))
    names = [n for n, p in prepared.model.named_parameters() if p.requires_grad]
    lora = [n for n in names if ".lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    others = [n for n in names if ".lora_" not in n]
    assert others and all("trainable_tokens_delta" in n for n in others)
    assert not any(p.requires_grad for n, p in prepared.model.named_parameters() if ".visual." in n)
    lora_a = next(m for n, m in prepared.model.named_modules() if n.endswith("q_proj"))
    assert lora_a.r["default"] == 4 and lora_a.scaling["default"] == pytest.approx(2.0)


def test_paper_lora_defaults():
    assert (LoraSettings().r, LoraSettings().alpha, LoraSettings().dropout) == (64, 128, 0.05)


def test_seg_rows_train_in_embedding_and_untied_lm_head():
    model, processor = _base(tie=False)
    prepared = prepare_mllm(model, processor, LoraSettings(r=4, alpha=8, dropout=0.0))
    deltas = {n: p for n, p in prepared.model.named_parameters() if "trainable_tokens_delta" in n}
    assert any("embed_tokens" in n for n in deltas) and any("lm_head" in n for n in deltas)
    assert all(p.shape == (1, model.config.text_config.hidden_size) for p in deltas.values())
    ids = torch.tensor([[prepared.seg_token_id, 5, prepared.seg_token_id]])
    logits = prepared.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    logits[..., prepared.seg_token_id].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deltas.values())


def test_unknown_lora_targets_are_rejected():
    model, processor = _base()
    with pytest.raises(ValueError, match="not linear layers of the language model"):
        prepare_mllm(model, processor, LoraSettings(target_modules=["qkv"]))


def test_missing_local_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen2.5-VL-3B-Instruct"):
        load_mllm(tmp_path / "no-such-model")
