"""How much memory a point needs beyond its parameters, analytically, before anything is built.

The memory check of :func:`bench.models.vlm.build_vlm` used to count parameters only, so
``batch_size=100000000`` on the tiny models passed it, built, and then ran for minutes
allocating an input of terabytes. :func:`working_set_bytes` adds what one iteration of the
point holds at its peak, from the shapes alone (batch, visual and prompt tokens, dtype):

- the input image batch (``3 x R x R`` per image in the point's dtype, plus the fp32 copy that
  preprocessing makes);
- the visual tokens leaving the encoder (``T x C``) and the projector (``T x H``), and the
  LLM's input embeddings (``S x H`` with ``S = T + prompt_tokens``);
- the KV cache the prefill fills: ``2 x layers x kv_heads x head_dim x S`` per sequence (as
  transformers' DynamicCache holds it: keys and values of every layer, GQA-sized), and with
  ``decode_tokens`` N as it stands at the end of the answer, ``S + N - 1`` positions
  (bench.models.decode);
- one decoder layer's transient activations: the residual, the normed input and the attention
  output (``3 x S x H``), the MLP's gate and up projections (``2 x S x I``), and with eager
  attention the score matrix (``heads x S x S``); SDPA kernels do not materialise it;
- the last position's logits (``vocab`` per sequence, fp32: the prefill keeps one position).

The encoder's own intermediate feature maps are architecture-specific and not counted, so the
figure is a lower bound: a point it rejects cannot fit, and a point it passes may still fail
with an out-of-memory error (recorded as ``error``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass
class WorkingSet:
    """Bytes of one iteration's peak, by part (see the module docstring)."""

    input: int
    activations: int
    kv_cache: int

    @property
    def total(self) -> int:
        return self.input + self.activations + self.kv_cache

    def describe(self) -> Dict[str, int]:
        return {"input": self.input, "activations": self.activations, "kv_cache": self.kv_cache}


def _cfg(llm_config: Any, name: str, default: Optional[int] = None) -> Optional[int]:
    value = getattr(llm_config, name, None) if llm_config is not None else None
    return default if value is None else int(value)


def working_set_bytes(resolution: int, visual_tokens: int, encoder_channels: int, llm_config: Any,
                      batch_size: int, prompt_tokens: int, elem: int, attn_implementation: str = "sdpa",
                      encoder_inputs: int = 1, llm_tokens: Optional[int] = None,
                      decode_tokens: int = 0) -> WorkingSet:
    """The analytic peak of one iteration beyond the parameters (bytes); ``llm_config`` is the
    LLM's transformers config (None for a point without an LLM). A tiled point runs the encoder
    on ``encoder_inputs`` tiles of ``resolution`` px per image, ``visual_tokens`` each, and its
    LLM gets ``llm_tokens`` visual tokens (the merged count)."""
    n = int(batch_size) * int(encoder_inputs)  # encoder inputs of the batch
    b, r, t = int(batch_size), int(resolution), int(visual_tokens)
    image = n * 3 * r * r * (elem + 4)  # the model's input and preprocessing's fp32 copy
    vision_out = n * t * int(encoder_channels) * elem
    hidden = _cfg(llm_config, "hidden_size")
    if hidden is None:  # encoder only
        return WorkingSet(input=image, activations=vision_out, kv_cache=0)
    s = (t if llm_tokens is None else int(llm_tokens)) + int(prompt_tokens)
    layers = _cfg(llm_config, "num_hidden_layers", 0)
    heads = _cfg(llm_config, "num_attention_heads", 1)
    kv_heads = _cfg(llm_config, "num_key_value_heads", heads)
    head_dim = _cfg(llm_config, "head_dim", hidden // max(heads, 1))
    inter = _cfg(llm_config, "intermediate_size", 4 * hidden)
    vocab = _cfg(llm_config, "vocab_size", 0)
    kv = 2 * layers * kv_heads * head_dim * b * (s + max(int(decode_tokens) - 1, 0)) * elem
    act = vision_out + n * t * hidden * elem + b * s * hidden * elem  # projector out, embeddings
    layer = b * s * (3 * hidden + 2 * inter) * elem
    if attn_implementation == "eager":
        layer += b * heads * s * s * elem
    act += layer + b * vocab * 4
    return WorkingSet(input=image, activations=act, kv_cache=kv)


def plan_part(point, encoder_spec, llm_spec, element_size: int, tiling_plan=None) -> WorkingSet:
    """The memory estimate's part of a point's plan (``bench.measure.plan``): the working set of
    :func:`working_set_bytes` for the point's knobs, as ``build_vlm`` checks it. A tiled point's
    encoder runs on its tiles (``tile_size`` px each); its LLM gets the merged tokens."""
    size = point.tile_size or point.resolution
    llm_config = None if llm_spec is None else llm_spec.hf_config(point.attn_implementation)
    return working_set_bytes(size, encoder_spec.num_tokens(size), encoder_spec.channels, llm_config,
                             point.batch_size, point.prompt_tokens, element_size, point.attn_implementation,
                             encoder_inputs=tiling_plan.tiles if tiling_plan else 1,
                             llm_tokens=tiling_plan.tokens if tiling_plan else None,
                             decode_tokens=point.decode_tokens)
