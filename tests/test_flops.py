"""FLOP counts against the analytic formulas of the architectures, fused attention included.

Conventions (those of torch.utils.flop_counter): 2 FLOPs per multiply-accumulate, forward only,
attention as two full ``s x s`` products (a causal mask is not discounted). The counts run on
fake tensors, so these full-size models cost no arithmetic.
"""
from __future__ import annotations

import torch

from bench.models.vlm import build_vlm
from bench.measure.flops import count_flops


def _vlm(encoder, llm, res):
    vlm, _ = build_vlm(encoder, llm, res, device="cpu", dtype="fp32")
    return vlm


def vit_flops(tokens_with_cls: int, width: int, layers: int, mlp: int, patch: int, grid_tokens: int) -> float:
    """ViT encoder: qkv + out projection + 2-layer MLP + the two attention products, + patch embed."""
    n, d = tokens_with_cls, width
    per_layer = 2 * n * d * (3 * d + d + 2 * mlp) + 4 * n * n * d
    return layers * per_layer + 2 * grid_tokens * (3 * patch * patch) * d


def qwen2_prefill_flops(seq: int, hidden: int, kv_dim: int, inter: int, layers: int, vocab: int) -> float:
    """Qwen2 prefill: q/o projections, GQA k/v projections, SwiGLU MLP, attention products, and
    the LM head for the last position only (the prefill keeps one position's logits)."""
    per_layer = 2 * seq * hidden * hidden * 2 + 2 * seq * hidden * kv_dim * 2 + 2 * seq * hidden * inter * 3 \
        + 4 * seq * seq * hidden
    return layers * per_layer + 2 * hidden * vocab


def test_vit_l14_336_counts_fused_attention_within_1pct():
    vlm = _vlm("vit_l14", "qwen2_tiny", 336)
    px = torch.zeros(1, 3, 336, 336)
    with torch.inference_mode():
        vis, counted = count_flops(lambda: vlm.encode(px))
    assert tuple(vis.shape) == (1, 576, 1024)
    analytic = vit_flops(577, 1024, 24, 4096, 14, 576)
    assert abs(counted / analytic - 1) < 0.01, (counted, analytic)
    # the attention products alone are ~8.6 % of the total: a count without them fails above
    assert 24 * 4 * 577 * 577 * 1024 / analytic > 0.08


def test_qwen2_05b_prefill_within_1pct():
    vlm = _vlm("tiny_vit", "qwen2_0.5b", 64)
    vis_tokens, prompt = 576, 32
    embeds = torch.zeros(1, vis_tokens, vlm.llm.config.hidden_size)
    ids = vlm.prompt_ids(1, prompt)
    with torch.inference_mode():
        _, counted = count_flops(lambda: vlm.prefill(embeds, ids))
    c = vlm.llm.config
    kv_dim = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    analytic = qwen2_prefill_flops(vis_tokens + prompt, c.hidden_size, kv_dim, c.intermediate_size,
                                   c.num_hidden_layers, c.vocab_size)
    assert abs(counted / analytic - 1) < 0.01, (counted, analytic)


def test_fake_count_equals_real_count_and_computes_nothing():
    vlm = _vlm("tiny_vit", "qwen2_tiny", 64)
    px = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        real_out, real = count_flops(lambda: vlm.encode(px), fake=False)
        fake_out, fake = count_flops(lambda: vlm.encode(px))
    assert real == fake > 0
    assert type(fake_out).__name__ == "FakeTensor" and fake_out.shape == real_out.shape


def test_points_in_one_process_share_a_prefill_count_only_for_equal_shapes(tmp_path):
    """``measure_point`` counts a prefill once per LLM, attention and input shapes: tiny_vit at
    64 px and tiny_convnext at 128 px both give 16 tokens and share it; another prompt length or LLM
    is counted anew (the formula's sequence length is tokens + prompt)."""
    from bench.config import BenchConfig, EncoderConf, LLMConf, QUICK_TIMING
    from bench.measure.scenario import measure_point, resolve_plan

    def prefill_flops(encoder, llm="qwen2_tiny", prompt=32, res=64):
        cfg = BenchConfig(name="f", encoder=EncoderConf(encoder), llm=LLMConf(llm), resolution=res, device="cpu",
                          prompt_tokens=prompt, timing=QUICK_TIMING, measure_peak=False, results_dir=str(tmp_path))
        rec = measure_point(resolve_plan(cfg))
        assert rec.status == "ok", rec.message
        assert rec.visual_tokens == 16
        return rec.flops["prefill"]

    def direct(llm, prompt):
        vlm = _vlm("tiny_vit", llm, 64)
        with torch.inference_mode():
            return count_flops(lambda: vlm.prefill(torch.zeros(1, 16, vlm.llm.config.hidden_size),
                                                   vlm.prompt_ids(1, prompt)))[1]

    vit, convnext = prefill_flops("tiny_vit"), prefill_flops("tiny_convnext", res=128)
    longer, llama = prefill_flops("tiny_vit", prompt=48), prefill_flops("tiny_vit", llm="llama_tiny")
    assert vit == convnext == direct("qwen2_tiny", 32)
    assert longer == direct("qwen2_tiny", 48) > vit
    assert llama == direct("llama_tiny", 32) != vit
