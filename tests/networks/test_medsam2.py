# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch
from sam2.build_sam import build_sam2

from scripts.networks.architectures import MEDSAM2_HYDRA_OVERRIDES, SAM2_BASE_CONFIG, TINY_SAM2_HYDRA_OVERRIDES
from scripts.networks.medsam2 import MedSAM2Segmenter


def _sam2_base(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam2(SAM2_BASE_CONFIG, None, device="cpu", hydra_overrides_extra=list(TINY_SAM2_HYDRA_OVERRIDES),
                      apply_postprocessing=False)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return MedSAM2Segmenter.from_config(hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES).eval()


def test_medsam2_geometry_is_512_with_32x32_embeddings(segmenter):
    assert segmenter.image_size == 512 and segmenter.prompt_dim == 256
    features = segmenter.encode_image(torch.randn(2, 3, 512, 512))
    assert features.image_embeddings.shape == (2, 256, 32, 32)
    assert [f.shape[-1] for f in features.high_res_features] == [128, 64]
    output = segmenter.decode(features, torch.randn(2, 1, 256))
    assert output.mask_logits.shape == (2, 1, 512, 512)
    assert output.low_res_logits.shape == (2, 1, 128, 128)
    assert output.iou_predictions.shape == (2, 1)


def test_encoders_are_frozen_and_the_mask_decoder_trains(segmenter):
    assert not any(p.requires_grad for p in segmenter.image_encoder.parameters())
    assert not any(p.requires_grad for p in segmenter.prompt_encoder.parameters())
    assert not segmenter.no_mem_embed.requires_grad
    assert all(p.requires_grad for p in segmenter.mask_decoder.parameters())
    assert not segmenter.mask_decoder.dynamic_multimask_via_stability


def test_decode_matches_sam2s_own_single_image_path():
    """Our encode/decode equals what SAM2Base does for one image and a sparse prompt (no patching)."""
    sam = _sam2_base(seed=3).eval()
    segmenter = MedSAM2Segmenter(sam)
    images, prompt = torch.randn(1, 3, 512, 512), torch.randn(1, 1, 256)
    with torch.no_grad():
        ours = segmenter(images, prompt)
        backbone = sam.forward_image(images)  # applies conv_s0/conv_s1 as SAM2 does
        _, feats, _, sizes = sam._prepare_backbone_features(backbone)
        feats[-1] = feats[-1] + sam.no_mem_embed
        maps = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats, sizes)]
        sparse, dense = sam.sam_prompt_encoder(points=None, boxes=None, masks=None)
        low_res, iou, _, _ = sam.sam_mask_decoder(
            image_embeddings=maps[-1], image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=torch.cat([sparse, prompt], dim=1), dense_prompt_embeddings=dense,
            multimask_output=False, repeat_image=False, high_res_features=maps[:-1],
        )
    torch.testing.assert_close(ours.low_res_logits, low_res)
    torch.testing.assert_close(ours.iou_predictions, iou)


def test_gradients_reach_the_decoder_including_high_res_projections(segmenter):
    segmenter.zero_grad()
    out = segmenter(torch.randn(1, 3, 512, 512), torch.randn(1, 1, 256, requires_grad=True))
    out.mask_logits.sigmoid().mean().backward()
    decoder = segmenter.mask_decoder
    for module in (decoder.conv_s0, decoder.conv_s1, decoder.transformer, decoder.output_upscaling):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in segmenter.image_encoder.parameters())
    segmenter.zero_grad()


def test_features_can_be_reused_and_repeated(segmenter):
    images = torch.randn(2, 3, 512, 512)
    features = segmenter.encode_image(images)
    repeated = features.repeat_interleave(3)
    assert len(repeated) == 6
    torch.testing.assert_close(repeated.image_embeddings[3], features.image_embeddings[1])
    prompts = torch.randn(6, 1, 256)
    with torch.no_grad():
        batched = segmenter.decode(repeated, prompts).mask_logits
        single = segmenter(images[1:2], prompts[4:5]).mask_logits
    torch.testing.assert_close(batched[4:5], single, rtol=1e-4, atol=1e-4)


def test_sam2_format_checkpoint_round_trip(tmp_path):
    source = _sam2_base(seed=1)
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": source.state_dict()}, path)
    loaded = MedSAM2Segmenter.from_config(hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES, checkpoint=path).eval()
    reference = MedSAM2Segmenter(source).eval()
    images, prompt = torch.randn(1, 3, 512, 512), torch.randn(1, 1, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, prompt).mask_logits, reference(images, prompt).mask_logits)


def test_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MedSAM2_latest.pt"):
        MedSAM2Segmenter.from_config(hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES, checkpoint=tmp_path / "missing.pt")
    flat = tmp_path / "flat.pt"
    torch.save(_sam2_base().state_dict(), flat)  # a bare state dict, not {"model": ...}
    with pytest.raises(ValueError, match="'model' state dict"):
        MedSAM2Segmenter.from_config(hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES, checkpoint=flat)
    other = tmp_path / "other_geometry.pt"
    torch.save({"model": _sam2_base().state_dict()}, other)  # tiny weights into the MedSAM2 (hiera-t) config
    with pytest.raises(ValueError, match="does not match the SAM2 config"):
        MedSAM2Segmenter.from_config(hydra_overrides=MEDSAM2_HYDRA_OVERRIDES, checkpoint=other)


def test_wrong_input_shapes_are_rejected(segmenter):
    with pytest.raises(ValueError, match=r"\(B, 3, 512, 512\)"):
        segmenter.encode_image(torch.randn(1, 3, 256, 256))
    features = segmenter.encode_image(torch.randn(1, 3, 512, 512))
    with pytest.raises(ValueError, match="sparse prompts"):
        segmenter.decode(features, torch.randn(1, 1, 128))


def test_image_encoder_can_train_when_asked():
    torch.manual_seed(0)
    segmenter = MedSAM2Segmenter.from_config(hydra_overrides=TINY_SAM2_HYDRA_OVERRIDES, train_image_encoder=True)
    assert segmenter.image_encoder_trainable and not any(p.requires_grad for p in segmenter.prompt_encoder.parameters())
    segmenter(torch.randn(1, 3, 512, 512), torch.randn(1, 1, 256)).mask_logits.mean().backward()
    assert all(p.grad is not None for p in segmenter.image_encoder.trunk.parameters())
    with torch.no_grad():
        assert not segmenter.encode_image(torch.randn(1, 3, 512, 512)).image_embeddings.requires_grad
