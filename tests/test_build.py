"""Building models: the LLM kept from one point to the next is the model a fresh build makes."""
import torch

from bench.models import build_vlm


def setup_function():
    from bench.models import vlm

    vlm._KEPT_LLM.clear()  # another test's build may have been kept


def _build(encoder="tiny_vit", **kw):
    kw.setdefault("keep_llm", True)
    return build_vlm(encoder, "qwen2_tiny", 64, "cpu", kw.pop("dtype", "fp32"), **kw)


@torch.inference_mode()
def _first_logits(vlm):
    """The LLM's last logits over fixed embeddings (encoders and projectors differ between
    builds: their bias vectors keep their modules' random initial values)."""
    embeds = torch.randn(1, 12, vlm.llm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    return vlm._llm_prefill(embeds).logits[:, -1]


def test_the_next_point_gets_the_kept_llm_and_it_equals_a_fresh_build():
    first, info1 = _build()
    with torch.inference_mode():  # a point ran on it
        first.prefill(first.project(first.encode(torch.rand(1, 3, 64, 64))), first.prompt_ids(1, 8))
    second, info2 = _build("tiny_convnext")
    assert not info1.llm_kept and info2.llm_kept and second.llm is first.llm
    fresh, info3 = _build("tiny_convnext", keep_llm=False)
    assert fresh.llm is not first.llm and not info3.llm_kept
    kept_state, fresh_state = second.llm.state_dict(), fresh.llm.state_dict()
    assert kept_state.keys() == fresh_state.keys()
    assert all(torch.equal(kept_state[k], fresh_state[k]) for k in kept_state)
    assert torch.equal(_first_logits(second), _first_logits(fresh))


def test_another_dtype_or_attention_builds_its_own_llm():
    a, _ = _build()
    b, info = _build(dtype="bf16")
    assert b.llm is not a.llm and not info.llm_kept and b.dtype == torch.bfloat16
    c, info = _build(attn_implementation="eager")
    assert c.llm is not b.llm and not info.llm_kept
    d, info = _build(attn_implementation="eager")
    assert d.llm is c.llm and info.llm_kept


def _llama3_8b_params() -> int:
    """Meta-Llama-3-8B's parameters from its config.json by hand: embeddings and an untied head
    (128 256 x 4096 each), 32 layers of q/o (4096^2), k/v (4096 x 8 heads x 128), the SwiGLU MLP
    (3 x 4096 x 14 336) and two RMSNorms, and the final norm. 8 030 261 248, the published count."""
    h, inter, kv, layers, vocab = 4096, 14336, 8 * 128, 32, 128256
    layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    return 2 * vocab * h + layers * layer + h


def test_llama3_8b_from_its_config_and_the_memory_check_before_allocation():
    """Its shape on the meta device; fp32 (32 GB) does not fit this 24 GiB machine and is refused
    before anything is allocated, bf16 is counted at 2 bytes a parameter (a headroom that no
    machine meets makes the check refuse it too, so the test never allocates 16 GB)."""
    import re

    import psutil
    import pytest

    from bench.models import InsufficientMemoryError, get_llm_spec
    from bench.models.materialize import count_parameters, meta_parameters

    with meta_parameters():
        lm = get_llm_spec("llama3_8b").build()
    assert count_parameters(lm) == _llama3_8b_params() == 8_030_261_248
    assert lm.config.num_key_value_heads == 8 and lm.config.rope_parameters["rope_theta"] == 500000.0
    with meta_parameters():
        vision = count_parameters(build_vlm.__globals__["get_encoder_spec"]("tiny_vit").build(64))
    need = _llama3_8b_params() + vision + (64 * 4096 + 4096) + (4096 * 4096 + 4096)  # + mlp2x_gelu
    rss = psutil.Process().memory_info().rss
    for dtype, elem, headroom in (("fp32", 4, 1.15), ("bf16", 2, 1e3)):
        if dtype == "fp32" and need * elem * headroom <= psutil.virtual_memory().available:
            continue  # a machine this large would really build it
        with pytest.raises(InsufficientMemoryError) as exc:
            build_vlm("tiny_vit", "llama3_8b", 64, "cpu", dtype, memory_headroom=headroom)
        got = float(re.search(r"\(parameters ([\d.]+) \+", str(exc.value)).group(1))
        assert got == pytest.approx(need * elem / 2**30, abs=0.06) and dtype in str(exc.value)
    assert psutil.Process().memory_info().rss - rss < 2**30  # nothing of the 8B model was allocated
