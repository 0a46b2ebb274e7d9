# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json

import pytest
import torch
from monai.bundle import ConfigParser
from peft import PeftModel
from sam2.build_sam import build_sam2

from scripts.networks import CoreSeg, build_coreseg, load_trainable_weights, save_trainable_weights
from scripts.networks.architectures import SAM2_BASE_CONFIG, TINY_SAM2_HYDRA_OVERRIDES, qwen2_5_vl_3b_config
from scripts.networks.presets import build_base_mllm
from tests.conftest import ANSWER, make_batch


def test_tiny_preset_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_coreseg("tiny", seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    second = build_coreseg("tiny", seed=7)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    other = build_coreseg("tiny", seed=8).state_dict()
    assert not all(torch.equal(first_state[k], other[k]) for k in first_state)


def test_tiny_preset_uses_the_same_classes_as_the_full_model():
    model = build_coreseg("tiny")
    assert isinstance(model, CoreSeg)
    assert type(model.base_mllm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(model.processor).__name__ == "Qwen2_5_VLProcessor"
    assert isinstance(model.mllm, PeftModel)
    assert model.segmenter.image_size == 512 and model.segmenter.prompt_dim == 256
    assert model.processor.image_processor.size["longest_edge"] == 224 * 224  # max_pixels


def test_full_preset_never_downloads_by_default(tmp_path):
    with pytest.raises(ValueError, match="mllm_path"):
        build_coreseg("full")
    with pytest.raises(ValueError, match="sam_checkpoint"):
        build_coreseg("full", mllm_path=tmp_path)
    with pytest.raises(FileNotFoundError, match="Download them first"):
        build_coreseg("full", mllm_path=tmp_path / "missing", sam_checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="Unknown preset"):
        build_coreseg("huge")


def test_hf_directory_and_sam2_checkpoint_load_through_the_full_preset_path(tmp_path):
    """A save_pretrained MLLM directory and a sam2-format file go through load_mllm/load_sam2_checkpoint."""
    base, processor = build_base_mllm("tiny", torch.float32, min_pixels=3136, max_pixels=224 * 224, seed=0)
    base.save_pretrained(tmp_path / "mllm")
    processor.save_pretrained(tmp_path / "mllm")
    torch.manual_seed(0)
    sam = build_sam2(SAM2_BASE_CONFIG, None, device="cpu", hydra_overrides_extra=list(TINY_SAM2_HYDRA_OVERRIDES),
                     apply_postprocessing=False)
    torch.save({"model": sam.state_dict()}, tmp_path / "sam2.pt")

    loaded = build_coreseg("full", mllm_path=tmp_path / "mllm", sam_checkpoint=tmp_path / "sam2.pt",
                           sam_hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES, dtype="float32", lora_r=8, lora_alpha=16)
    in_memory = build_coreseg("tiny", seed=0)
    in_memory.segmenter.load_state_dict(  # same SAM weights as the file
        {k.replace("sam_prompt_encoder", "prompt_encoder").replace("sam_mask_decoder", "mask_decoder"): v
         for k, v in sam.state_dict().items()
         if k.startswith(("image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "no_mem_embed"))})
    load_trainable_weights(loaded, save_trainable_weights(in_memory, tmp_path / "model.pt"))

    assert loaded.seg_token_id == in_memory.seg_token_id
    assert loaded.tokenizer.encode(ANSWER) == in_memory.tokenizer.encode(ANSWER)
    loaded.eval(), in_memory.eval()
    batch = make_batch(in_memory, [ANSWER])
    with torch.no_grad():
        expected, actual = in_memory(**batch), loaded(**batch)
    torch.testing.assert_close(actual.logits, expected.logits)
    torch.testing.assert_close(actual.mask_logits, expected.mask_logits)


def test_full_architecture_is_qwen2_5_vl_3b_plus_medsam2():
    """The random-weight build of the full preset has Qwen2.5-VL-3B's 3.75 B parameters (counted on meta)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_3b_config())
    count = sum(p.numel() for p in model.parameters())
    assert 3.70e9 < count < 3.80e9
    assert model.config.text_config.num_hidden_layers == 36 and model.config.vision_config.depth == 32


def test_presets_instantiate_from_bundle_json(tmp_path):
    config = {
        "imports": ["$import scripts"],
        "preset": "tiny",
        "network_def": {"_target_": "scripts.networks.build_coreseg", "preset": "@preset", "adapter": "linear"},
    }
    path = tmp_path / "network.json"
    path.write_text(json.dumps(config))
    parser = ConfigParser()
    parser.read_config(str(path))
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, CoreSeg)
    assert type(network.adapter).__name__ == "LinearPromptAdapter"


def test_bundle_network_configs_resolve(tmp_path):
    parser = ConfigParser()
    parser.read_config("configs/network.json")
    parser["bundle_root"] = "."
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, CoreSeg)
    full = ConfigParser()
    full.read_config(["configs/network.json", "configs/full.json"])
    full["bundle_root"] = "/weights"
    assert full.get_parsed_content("preset") == "full"
    assert full.get_parsed_content("mllm_path") == "/weights/models/Qwen2.5-VL-3B-Instruct"
    assert full.get_parsed_content("sam_checkpoint") == "/weights/models/MedSAM2_latest.pt"


def test_sam_image_size_sets_the_mask_geometry_and_keeps_parameter_shapes():
    small = build_coreseg("tiny", sam_image_size=256, seed=0)
    default = build_coreseg("tiny", seed=0)
    assert small.segmenter.image_size == 256 and default.segmenter.image_size == 512
    # Only the geometry changes: the same trainable tensors, so checkpoints move between sizes.
    assert {n: p.shape for n, p in small.named_parameters()} == {n: p.shape for n, p in default.named_parameters()}
    batch = make_batch(small, [ANSWER])
    batch["sam_images"] = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert small(**batch).mask_logits.shape == (1, 1, 256, 256)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_coreseg("tiny", sam_image_size=200)


def test_demo_preset_is_the_recipe_of_the_bundled_demo_model():
    demo = build_coreseg("demo", seed=0)
    text_config = demo.base_mllm.config.get_text_config()
    assert (text_config.hidden_size, text_config.num_hidden_layers) == (128, 4)
    assert demo.semantic_probe == "answer_text" and demo.segmenter.image_size == 256
    assert demo.base_mllm.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for p in demo.segmenter.image_encoder.parameters() if p.ndim > 1)
    # Any preset value can still be overridden.
    overridden = build_coreseg("demo", seed=0, semantic_probe="seg", sam_image_size=512)
    assert overridden.semantic_probe == "seg" and overridden.segmenter.image_size == 512
