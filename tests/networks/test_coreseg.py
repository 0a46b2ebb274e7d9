# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from scripts.networks import build_coreseg
from scripts.networks.coreseg import EMPTY_MASK_LOGIT, CoreSeg, locate_seg_tokens
from tests.conftest import ANSWER, make_batch

NO_SEG = ANSWER.replace(" <seg>", "")
TWO_SEG = ANSWER.replace("<seg>", "<seg> <seg>")


def _off_path(name: str) -> bool:
    """Decoder parts a single-mask prediction does not use: multimask tokens 1-3, IoU and object-score heads."""
    return any(part in name for part in (".output_hypernetworks_mlps.1.", ".output_hypernetworks_mlps.2.",
                                         ".output_hypernetworks_mlps.3.", ".iou_prediction_head.",
                                         ".pred_obj_score_head."))


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_forward_shapes(tiny_model):
    batch = make_batch(tiny_model, [ANSWER, ANSWER, ANSWER])
    with torch.no_grad():
        out = tiny_model(**batch)
    batch_size, length = batch["input_ids"].shape
    hidden = tiny_model.base_mllm.config.text_config.hidden_size
    assert out.logits.shape == (batch_size, length, tiny_model.base_mllm.config.text_config.vocab_size)
    assert out.seg_hidden_states.shape == (batch_size, hidden)
    assert out.mask_logits.shape == (batch_size, 1, 512, 512)
    assert out.iou_predictions.shape == out.object_score_logits.shape == (batch_size, 1)
    assert out.seg_counts.tolist() == [1, 1, 1] and out.seg_valid.all()
    assert torch.isfinite(out.text_loss)


def test_backward_reaches_trainable_parts_and_nothing_frozen(fresh_tiny_model):
    model = fresh_tiny_model
    batch = make_batch(model, [ANSWER, ANSWER])
    trainable = _trainable(model)
    optimizer = torch.optim.SGD(trainable.values(), lr=0.1)
    for _ in range(2):  # LoRA B starts at zero, so A only gets a gradient after one step
        optimizer.zero_grad()
        out = model(**batch)
        (out.text_loss + torch.nn.functional.binary_cross_entropy_with_logits(
            out.mask_logits, torch.zeros_like(out.mask_logits))).backward()
        optimizer.step()
    groups = {
        "LoRA": [n for n in trainable if ".lora_" in n],
        "<seg> rows": [n for n in trainable if "trainable_tokens_delta" in n],
        "adapter": [n for n in trainable if n.startswith("adapter.")],
        "mask decoder": [n for n in trainable if n.startswith("segmenter.mask_decoder.") and not _off_path(n)],
    }
    for group, names in groups.items():
        assert names, group
        assert all(trainable[n].grad is not None and trainable[n].grad.abs().sum() > 0 for n in names), group
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    for prefix in ("mllm.base_model.model.model.language_model.", "mllm.base_model.model.model.visual.",
                   "segmenter.image_encoder.", "segmenter.prompt_encoder."):
        members = [n for n in frozen if n.startswith(prefix)]
        assert members, prefix
        assert all(frozen[n].grad is None for n in members), prefix
    # every trainable parameter belongs to one of the four groups
    assert set(trainable) - {n for names in groups.values() for n in names} == {n for n in trainable if _off_path(n)}


def test_only_the_seg_row_of_the_embedding_changes_after_a_step(fresh_tiny_model):
    model = fresh_tiny_model
    embedding = model.base_mllm.get_input_embeddings()
    before = embedding(torch.arange(model.seg_token_id + 1)).detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    out = model(**make_batch(model, [ANSWER]))
    (out.text_loss + out.mask_logits.mean()).backward()
    optimizer.step()
    after = embedding(torch.arange(model.seg_token_id + 1)).detach()
    changed = (after - before).abs().sum(-1).gt(0).nonzero().flatten().tolist()
    assert changed == [model.seg_token_id]


def _forward_with_final_states(model, batch):
    """The model's output and the language model's final post-norm states of the same pass."""
    captured = {}
    norm = model.base_mllm.model.language_model.norm
    handle = norm.register_forward_hook(lambda module, inputs, output: captured.setdefault("states", output))
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        handle.remove()
    return out, captured["states"]


def test_probe_is_the_final_post_norm_state_at_the_seg_token(tiny_model):
    """The convention: final layer, after the last norm, AT the <seg> position (not the one before)."""
    batch = make_batch(tiny_model, [ANSWER, ANSWER])
    out, states = _forward_with_final_states(tiny_model, batch)
    for row in range(2):
        position = int(out.seg_positions[row])
        assert batch["input_ids"][row, position] == tiny_model.seg_token_id
        torch.testing.assert_close(out.seg_hidden_states[row], states[row, position])
        assert not torch.allclose(out.seg_hidden_states[row], states[row, position - 1])


def _answer_probe_view(model, probe: str = "answer") -> CoreSeg:
    """The same weights, reading the whole answer instead of the <seg> token (paper Table 4)."""
    return CoreSeg(model.mllm, model.processor, model.seg_token_id, model.adapter, model.segmenter,
                   semantic_probe=probe).eval()


def test_answer_probe_is_every_answer_state_up_to_seg(tiny_model):
    model = _answer_probe_view(tiny_model)
    short = ANSWER.replace("A round region with blurred margins differs from the lung tissue.", "Round.")
    batch = make_batch(model, [ANSWER, short, NO_SEG])
    out, states = _forward_with_final_states(model, batch)
    answer_positions = [batch["labels"][row].ne(-100).nonzero().flatten() for row in range(2)]
    lengths = [int((positions <= out.seg_positions[row]).sum()) for row, positions in enumerate(answer_positions)]
    assert lengths[0] > lengths[1] > 1
    assert out.seg_hidden_states.shape == (3, lengths[0], states.shape[-1])
    assert out.probe_padding_mask.sum(1).tolist() == [0, lengths[0] - lengths[1], lengths[0] - 1]
    for row in range(2):
        expected = states[row, answer_positions[row][: lengths[row]]]
        torch.testing.assert_close(out.seg_hidden_states[row, : lengths[row]], expected)
        assert expected[-1].equal(states[row, out.seg_positions[row]])  # the span ends at <seg>
        assert torch.all(out.seg_hidden_states[row, lengths[row]:] == 0)
    # an answer without <seg> is a format failure: zero probe, empty mask, no error
    assert not out.seg_valid[2] and torch.all(out.seg_hidden_states[2] == 0)
    assert torch.all(out.mask_logits[2] == EMPTY_MASK_LOGIT) and torch.isfinite(out.mask_logits[:2]).all()


def test_answer_text_probe_leaves_the_seg_state_out_unless_it_is_alone(tiny_model):
    whole, text = _answer_probe_view(tiny_model), _answer_probe_view(tiny_model, "answer_text")
    seg_only = "<seg>"  # an answer with no token before <seg>
    batch = make_batch(whole, [ANSWER, seg_only, NO_SEG])
    with torch.no_grad():
        with_seg, without_seg = whole(**batch), text(**batch)
    lengths = (~with_seg.probe_padding_mask).sum(1)
    text_lengths = (~without_seg.probe_padding_mask).sum(1)
    assert int(text_lengths[0]) == int(lengths[0]) - 1 > 1
    torch.testing.assert_close(without_seg.seg_hidden_states[0, : text_lengths[0]],
                               with_seg.seg_hidden_states[0, : text_lengths[0]])
    seg_state = with_seg.seg_hidden_states[0, int(lengths[0]) - 1]
    assert not any(torch.equal(state, seg_state) for state in without_seg.seg_hidden_states[0])
    # an answer that is <seg> alone keeps its <seg> state rather than an empty probe
    assert int(lengths[1]) == int(text_lengths[1]) == 1 and bool(without_seg.seg_valid[1])
    torch.testing.assert_close(without_seg.seg_hidden_states[1, 0], with_seg.seg_hidden_states[1, 0])
    assert not without_seg.seg_valid[2] and torch.all(without_seg.seg_hidden_states[2] == 0)


def test_answer_probe_masks_do_not_depend_on_padding(tiny_model):
    """The shorter answer's mask is what its unpadded states give: the padding is masked out."""
    model = _answer_probe_view(tiny_model)
    short = ANSWER.replace("A round region with blurred margins differs from the lung tissue.", "Round.")
    batch = make_batch(model, [ANSWER, short])
    with torch.no_grad():
        out = model(**batch)
        length = int((~out.probe_padding_mask[1]).sum())
        assert length < out.seg_hidden_states.shape[1]
        alone = model.segment(out.seg_hidden_states[1:2, :length], model.encode_sam(batch["sam_images"][1:2]))
    torch.testing.assert_close(out.mask_logits[1:2], alone.mask_logits, rtol=1e-4, atol=1e-4)


def test_answer_probe_generation_reads_the_generated_answer(tiny_model):
    model = _answer_probe_view(tiny_model)
    batch = make_batch(model, [None, None], padding_side="left")
    with torch.no_grad():
        result = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert result.seg_hidden_states.ndim == 3 and result.probe_padding_mask.shape == result.seg_hidden_states.shape[:2]
    assert result.masks.shape[0] == 2


def test_unknown_semantic_probe_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="semantic_probe"):
        CoreSeg(tiny_model.mllm, tiny_model.processor, tiny_model.seg_token_id, tiny_model.adapter,
                tiny_model.segmenter, semantic_probe="question")


def test_train_embeddings_trains_the_whole_tied_embedding():
    model = build_coreseg("tiny", seed=0, train_embeddings=True)
    embedding = model.base_mllm.get_input_embeddings().weight
    assert embedding.requires_grad and model.base_mllm.get_output_embeddings().weight is embedding
    assert not [n for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    before = embedding.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    out = model(**make_batch(model, [ANSWER]))
    out.text_loss.backward()
    optimizer.step()
    changed = (embedding.detach() - before).abs().sum(-1).gt(0)
    # the output layer's gradient reaches every row, not only <seg> and the answer's tokens
    assert changed[model.seg_token_id] and changed.float().mean() > 0.9


def test_zero_and_several_seg_tokens_are_reported_not_raised(tiny_model):
    batch = make_batch(tiny_model, [NO_SEG, ANSWER, TWO_SEG])
    with torch.no_grad():
        out = tiny_model(**batch)
        all_valid = tiny_model(**make_batch(tiny_model, [ANSWER, ANSWER, ANSWER]))
    assert out.seg_counts.tolist() == [0, 1, 2]
    assert out.seg_valid.tolist() == [False, True, False]
    assert out.seg_positions[0] == -1 and out.seg_positions[2] == -1
    assert torch.all(out.seg_hidden_states[[0, 2]] == 0)
    assert torch.all(out.mask_logits[[0, 2]] == EMPTY_MASK_LOGIT)
    # the valid sample's mask is unaffected by its invalid neighbours
    torch.testing.assert_close(out.mask_logits[1], all_valid.mask_logits[1], rtol=1e-4, atol=1e-4)


def test_all_invalid_batch_gives_empty_masks(tiny_model):
    with torch.no_grad():
        out = tiny_model(**make_batch(tiny_model, [NO_SEG, NO_SEG]))
    assert not out.seg_valid.any() and torch.all(out.mask_logits == EMPTY_MASK_LOGIT)


def test_seg_typed_in_the_question_is_not_counted(tiny_model):
    batch = make_batch(tiny_model, [ANSWER], questions=["Segment <seg> the nodule in this lung CT."])
    assert (batch["input_ids"] == tiny_model.seg_token_id).sum() == 2
    with torch.no_grad():
        out = tiny_model(**batch)
    assert out.seg_counts.tolist() == [1]
    assert batch["labels"][0, out.seg_positions[0]] == tiny_model.seg_token_id


def test_locate_seg_tokens():
    ids = torch.tensor([[1, 9, 2, 9], [1, 2, 3, 9], [9, 1, 2, 3], [1, 2, 3, 4]])
    counts, positions = locate_seg_tokens(ids, 9)
    assert counts.tolist() == [2, 1, 1, 0] and positions.tolist() == [-1, 3, 0, -1]
    search = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    counts, positions = locate_seg_tokens(ids, 9, search)
    assert counts.tolist() == [1, 1, 0, 0] and positions.tolist() == [3, 3, -1, -1]


def test_mm_token_type_ids_are_derived_when_missing(tiny_model):
    batch = make_batch(tiny_model, [ANSWER])
    without = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(**without).logits, tiny_model(**batch).logits)


def test_greedy_generation_matches_teacher_forcing(tiny_model):
    """The KV-cached generation and a full teacher-forced pass pick the same tokens."""
    batch = make_batch(tiny_model, [None], padding_side="left")
    with torch.no_grad():
        generation = tiny_model.generate(**batch, max_new_tokens=8, do_sample=False)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for _ in range(8):
            logits = tiny_model.mllm(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                                     image_grid_thw=batch["image_grid_thw"],
                                     mm_token_type_ids=torch.cat([batch["mm_token_type_ids"],
                                                                  torch.zeros_like(ids[:, batch["input_ids"].shape[1]:])], 1),
                                     use_cache=False).logits
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, next_token], 1), torch.cat([mask, torch.ones_like(next_token)], 1)
    generated = generation.sequences[:, generation.prompt_length:]
    assert generated[0].tolist() == ids[0, batch["input_ids"].shape[1]:][: generated.shape[1]].tolist()


class ForceTokens(LogitsProcessor):
    """Makes generate emit exactly ``token_ids`` after a prompt of ``prompt_length`` tokens."""

    def __init__(self, token_ids: list[int], prompt_length: int) -> None:
        self.token_ids, self.prompt_length = token_ids, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = min(input_ids.shape[1] - self.prompt_length, len(self.token_ids) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_ids[step]] = 0.0
        return forced


@pytest.mark.parametrize("answer, count", [(ANSWER, 1), (NO_SEG, 0), (TWO_SEG, 2)])
def test_generation_counts_seg_and_segments_from_the_teacher_forced_state(tiny_model, answer, count):
    tokenizer = tiny_model.tokenizer
    batch = make_batch(tiny_model, [None], padding_side="left")
    target = tokenizer.encode(answer) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    forcing = LogitsProcessorList([ForceTokens(target, batch["input_ids"].shape[1])])
    generation = tiny_model.generate(**batch, max_new_tokens=len(target) + 5, do_sample=False,
                                     logits_processor=forcing)
    assert generation.completions == [tokenizer.decode(target[:-1], skip_special_tokens=False)]
    assert generation.seg_counts.tolist() == [count] and generation.seg_valid.tolist() == [count == 1]
    assert not generation.truncated.any()
    assert generation.completion_mask.sum() == len(target)
    if count == 1:
        full = make_batch(tiny_model, [answer])
        with torch.no_grad():
            teacher = tiny_model(**{k: v for k, v in full.items() if k not in ("labels", "sam_images")},
                                 sam_images=batch["sam_images"])
        torch.testing.assert_close(generation.seg_hidden_states, teacher.seg_hidden_states, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(generation.mask_logits, teacher.mask_logits, rtol=1e-3, atol=1e-3)
    else:
        assert not generation.masks.any()


def test_sampling_several_completions_encodes_each_image_once(tiny_model):
    batch = make_batch(tiny_model, [None, None], padding_side="left")
    calls = {"vision": 0, "sam": 0}
    vision = tiny_model.base_mllm.model.visual
    handles = [
        vision.register_forward_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1)),
        tiny_model.segmenter.image_encoder.register_forward_hook(lambda *_: calls.__setitem__("sam", calls["sam"] + 1)),
    ]
    try:
        generation = tiny_model.generate(**batch, max_new_tokens=6, do_sample=True, num_return_sequences=4)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"vision": 1, "sam": 1}
    assert generation.sequences.shape[0] == len(generation.completions) == 8
    assert generation.mask_logits.shape == (8, 1, 512, 512)
    assert generation.truncated.all() and generation.completion_mask.sum(1).eq(6).all()


def test_sampling_never_writes_image_placeholders(tiny_model):
    # At a high temperature an untrained model would write <|image_pad|> and break the pass over its completion.
    batch = make_batch(tiny_model, [None, None], padding_side="left")
    torch.manual_seed(0)
    generation = tiny_model.generate(**batch, max_new_tokens=40, do_sample=True, temperature=50.0,
                                     num_return_sequences=4)
    placeholders = torch.tensor(tiny_model._placeholder_token_ids())
    assert len(placeholders) == 4
    assert not torch.isin(generation.completion_ids, placeholders).any()
    assert generation.mask_logits.shape[0] == 8


def test_generation_needs_left_padding(tiny_model):
    batch = make_batch(tiny_model, [None, None], questions=["Short?", "A much longer question about the lesion?"],
                       padding_side="right")
    with pytest.raises(ValueError, match="left-padded"):
        tiny_model.generate(**batch, max_new_tokens=2)


def test_forward_without_masks_skips_the_segmenter_and_keeps_the_text_pass(tiny_model, monkeypatch):
    batch = make_batch(tiny_model, [ANSWER, ANSWER])
    with torch.no_grad():
        full = tiny_model(**batch)
        batch.pop("sam_images")  # not needed without masks
        monkeypatch.setattr(tiny_model, "encode_sam", lambda *a, **k: pytest.fail("the SAM encoder ran"))
        monkeypatch.setattr(tiny_model, "segment", lambda *a, **k: pytest.fail("the mask decoder ran"))
        text_only = tiny_model(**batch, with_masks=False)
    assert text_only.mask_logits is None and text_only.iou_predictions is None
    assert text_only.object_score_logits is None
    torch.testing.assert_close(text_only.text_loss, full.text_loss)
    torch.testing.assert_close(text_only.seg_hidden_states, full.seg_hidden_states)
    assert text_only.seg_valid.tolist() == full.seg_valid.tolist() == [True, True]


def test_missing_sam_inputs_are_reported(tiny_model):
    batch = make_batch(tiny_model, [ANSWER])
    batch.pop("sam_images")
    with pytest.raises(ValueError, match="sam_images"):
        tiny_model(**batch)
