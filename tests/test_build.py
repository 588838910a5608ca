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
