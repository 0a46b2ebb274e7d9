# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch

from scripts.networks.adapter import LinearPromptAdapter, ResMLPBlock, SemanticPromptAdapter, build_prompt_adapter


def test_semantic_adapter_maps_probe_to_one_prompt_token():
    adapter = SemanticPromptAdapter(input_dim=48, prompt_dim=256)
    probe = torch.randn(5, 48)
    assert adapter(probe).shape == (5, 1, 256)
    assert adapter(probe.unsqueeze(1)).shape == (5, 1, 256)


@pytest.mark.parametrize("num_blocks, mlp_ratio, attn_dim, num_heads, num_queries", [(0, 1.0, 32, 4, 1), (3, 2.0, 64, 8, 2)])
def test_semantic_adapter_widths_and_depth_are_configurable(num_blocks, mlp_ratio, attn_dim, num_heads, num_queries):
    adapter = SemanticPromptAdapter(48, 16, num_blocks=num_blocks, mlp_ratio=mlp_ratio, attn_dim=attn_dim,
                                    num_heads=num_heads, num_queries=num_queries)
    assert len(adapter.blocks) == num_blocks
    assert all(block.mlp[0].out_features == int(48 * mlp_ratio) for block in adapter.blocks)
    assert adapter.query.shape == (1, num_queries, attn_dim)
    assert adapter(torch.randn(2, 48)).shape == (2, num_queries, 16)


def test_resmlp_block_is_residual_around_a_pre_norm_mlp():
    block = ResMLPBlock(dim=8, hidden_dim=16)
    hidden = torch.randn(3, 1, 8)
    expected = hidden + block.mlp(block.norm(hidden))
    torch.testing.assert_close(block(hidden), expected)
    torch.nn.init.zeros_(block.mlp[3].weight)
    torch.nn.init.zeros_(block.mlp[3].bias)
    torch.testing.assert_close(block(hidden), hidden)  # zero MLP output leaves h unchanged (eq. 4)


def test_semantic_adapter_follows_equation_5():
    torch.manual_seed(0)
    adapter = SemanticPromptAdapter(input_dim=12, prompt_dim=6, num_blocks=1, attn_dim=8, num_heads=2).eval()
    probe = torch.randn(4, 3, 12)
    refined = adapter.blocks(probe)
    attended, _ = adapter.cross_attention(adapter.query.expand(4, -1, -1), refined, refined)
    torch.testing.assert_close(adapter(probe), adapter.proj(adapter.norm(attended)))


def test_semantic_adapter_ignores_padded_probe_tokens():
    torch.manual_seed(0)
    adapter = SemanticPromptAdapter(input_dim=12, prompt_dim=6, attn_dim=8, num_heads=2).eval()
    probe = torch.randn(1, 3, 12)
    padded = torch.cat([probe, torch.randn(1, 2, 12)], dim=1)
    mask = torch.tensor([[False, False, False, True, True]])
    torch.testing.assert_close(adapter(padded, padding_mask=mask), adapter(probe))


def test_linear_adapter_is_a_single_projection():
    adapter = build_prompt_adapter("linear", 48, 256)
    assert isinstance(adapter, LinearPromptAdapter)
    assert sum(p.numel() for p in adapter.parameters()) == 48 * 256 + 256
    probe = torch.randn(2, 48)
    torch.testing.assert_close(adapter(probe), adapter.proj(probe).unsqueeze(1))


def test_adapter_gradients_reach_every_parameter():
    torch.manual_seed(0)
    adapter = SemanticPromptAdapter(input_dim=16, prompt_dim=8, attn_dim=8, num_heads=2)
    # several probe tokens: over a single one (the <seg> probe) the softmax is 1 whatever the query and keys are,
    # so the query and the key projection get exactly zero gradient there
    adapter(torch.randn(3, 4, 16)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    adapter.zero_grad()
    adapter(torch.randn(3, 16)).square().sum().backward()
    grads = {n: float(p.grad.abs().max()) for n, p in adapter.named_parameters()}
    inert = {"query", "cross_attention.q_proj_weight", "cross_attention.k_proj_weight"}
    assert all(grads[n] < 1e-6 for n in inert) and all(grads[n] > 1e-6 for n in set(grads) - inert)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attn_dim": 10, "num_heads": 3}, "divisible"),
        ({"num_blocks": -1}, "num_blocks"),
        ({"num_queries": 0}, "num_queries"),
    ],
)
def test_semantic_adapter_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SemanticPromptAdapter(input_dim=16, **kwargs)


def test_adapters_reject_probes_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        SemanticPromptAdapter(input_dim=16, attn_dim=8, num_heads=2)(torch.randn(2, 15))
    with pytest.raises(ValueError, match="Unknown adapter kind"):
        build_prompt_adapter("mlp", 16)
    with pytest.raises(ValueError, match="no options"):
        build_prompt_adapter("linear", 16, num_blocks=2)


@pytest.mark.parametrize("kind", ["semantic", "linear"])
def test_probe_batch_norm_removes_what_every_sample_shares(kind):
    torch.manual_seed(0)
    options = {"attn_dim": 8, "num_heads": 2} if kind == "semantic" else {}
    adapter = build_prompt_adapter(kind, 16, 8, probe_norm="batch", **options)
    common = 50 * torch.randn(1, 16)
    probes = common + torch.randn(6, 16)
    # in training, the batch statistics take the shared component out: a shifted batch gives the same prompts
    torch.testing.assert_close(adapter(probes), adapter(probes + 10 * torch.randn(1, 16)), atol=1e-4, rtol=1e-4)
    normed = adapter.probe_norm(probes.unsqueeze(1))
    torch.testing.assert_close(normed.mean(dim=0), torch.zeros(1, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.std(dim=0, unbiased=False), torch.ones(1, 16), atol=1e-3, rtol=0)
    # in eval mode the running statistics are used, so one sample gets a prompt of its own
    for _ in range(200):
        adapter(common + torch.randn(6, 16))
    adapter.eval()
    single = adapter(probes[:1])
    assert single.shape == (1, 1, 8)
    torch.testing.assert_close(adapter(probes)[:1], single)  # no dependence on the rest of the batch
    unnormed = build_prompt_adapter(kind, 16, 8, **options)
    assert unnormed.probe_norm is None


def test_probe_batch_norm_skips_padding_and_survives_a_lone_sample():
    from scripts.networks.adapter import ProbeBatchNorm

    norm = ProbeBatchNorm(4)
    probe = torch.randn(2, 3, 4)
    padding = torch.tensor([[False, False, True], [False, True, True]])
    out = norm(probe, padding)
    assert torch.equal(out[padding], torch.zeros(3, 4))
    kept = out[~padding]
    torch.testing.assert_close(kept.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    # statistics over the three kept states only: padding (here large) does not move them
    probe[padding] = 1e3
    torch.testing.assert_close(norm(probe, padding)[~padding], kept)
    lone = norm(torch.randn(1, 1, 4))  # one state in training: the running statistics, not an error
    assert lone.shape == (1, 1, 4) and torch.isfinite(lone).all()
    with pytest.raises(ValueError, match="probe_norm"):
        build_prompt_adapter("semantic", 16, probe_norm="layer")
