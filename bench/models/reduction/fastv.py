"""``fastv``: after LLM layer K, keep the visual tokens the last token attends to most; drop R.

Follows pkunlp-icler/FastV at commit d1659729b5bf1be225e99ee15783deeea80f63b1,
``src/transformers/src/transformers/models/llama/modeling_llama.py`` (``LlamaModel.forward``,
``FASTV_INPLACE`` branch; README: "K=2 R=50%" is the headline):

- layers ``0 .. K-1`` run on every token; before layer ``K`` the attention weights of layer
  ``K-1`` (``layer_outputs[1]``) are averaged over heads, the last token's row is read at the
  image positions, and its ``topk(ATTENTION_RANK)`` image tokens are kept with every text token,
  in order; the position ids of the kept tokens are their original positions; layers ``K ..``
  run on the shorter sequence with a fresh causal mask. ATTENTION_RANK = round(N * (1 - R)).
- Only layer ``K-1`` is run with eager attention (it must return its weights, which fused SDPA
  does not: FastV issues #25, #31); every other layer keeps the point's attention. What the one
  eager layer and the top-k cost over that layer under SDPA is ``reduction_overhead_ms``.
- FastV ranks with the first sample of a batch for all (``[0]``); we rank each sample by its own
  attention (identical at batch 1). Here the visual tokens come first (SYS_LENGTH = 0).

Each layer keeps its own KV entries (layers below K all tokens, the others the kept ones), as
FastV's in-place variant. It is the LLM's forward written out layer by layer, so it cannot run
under torch.compile (refused). ``fastv_mask`` (its own file) is the ablation's mask-only variant.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import List, Optional

import torch

from .base import ReductionConf, ReductionMethod, median_ms, register_reduction


@dataclass
class FastVConf(ReductionConf):
    name: str = "fastv"
    k: int = 2  # the layer after which visual tokens are dropped (FastV's K)
    ratio: float = 0.5  # the fraction of visual tokens dropped (FastV's R)
    # tokens (from ReductionConf): > 0 keeps that many visual tokens from layer K on (replaces ratio)


def kept(n: int, conf: "FastVConf") -> int:
    """FastV's ATTENTION_RANK: visual tokens kept of ``n`` (``tokens``, else round(n * (1 - R)))."""
    return conf.tokens if conf.tokens > 0 else int(round(n * (1 - conf.ratio)))


def fastv_topk(weights: torch.Tensor, n_visual: int, keep: int, start: int = 0) -> torch.Tensor:
    """Layer K-1's attention (B, heads, L, L) -> the sorted positions of the ``keep`` visual
    tokens the last token attends to most (averaged over heads), visual tokens at ``start``."""
    last = weights.mean(dim=1)[:, -1, start:start + n_visual]
    return last.topk(keep, dim=-1).indices.sort(dim=-1).values + start


def causal_bias(n: int, dtype, device, drop: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An additive causal mask (1 or B, 1, n, n); ``drop`` (B, n) bool also hides those keys."""
    lo = torch.finfo(dtype).min
    bias = torch.full((n, n), lo, dtype=dtype, device=device).triu(1)[None, None]
    if drop is not None:
        bias = bias + torch.where(drop, lo, 0.0).to(dtype)[:, None, None, :]
        bias = bias.clamp(min=lo)
    return bias


class _Eager:
    """One attention module runs eager for a call, the LLM's shared config untouched."""

    def __init__(self, attn):
        self.attn = attn

    def __enter__(self):
        self.saved = self.attn.config
        cfg = copy.copy(self.saved)
        cfg._attn_implementation = "eager"
        self.attn.config = cfg
        return self

    def __exit__(self, *exc):
        self.attn.config = self.saved
        return False


def _layer(layer, h, mask, pe, pos, cache, weights: bool = False):
    """A decoder layer (Qwen2/Llama: pre-norm attention then MLP), optionally returning the
    attention weights of an eager run."""
    if not weights:
        return layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos, cache=cache,
                     use_cache=True), None
    res = h
    x = layer.input_layernorm(h)
    with _Eager(layer.self_attn):
        x, w = layer.self_attn(hidden_states=x, position_embeddings=pe, attention_mask=mask, cache=cache,
                               position_ids=pos)
    h = res + x
    return h + layer.mlp(layer.post_attention_layernorm(h)), w


def fastv_prefill(vlm, visual: torch.Tensor, ids: torch.Tensor, conf: FastVConf, mask_only: bool = False,
                  trace: Optional[dict] = None):
    """The LLM's prefill over [visual, text] with FastV at layer ``conf.k``: ``(token, cache, logits)``."""
    from transformers import DynamicCache

    llm = vlm.llm
    model = llm.model
    text = llm.get_input_embeddings()(ids)
    h = torch.cat([visual.to(text.dtype), text], dim=1)
    b, length, _ = h.shape
    n = visual.shape[1]
    keep = kept(n, conf)
    eager_everywhere = llm.config._attn_implementation == "eager"
    cache = DynamicCache(config=llm.config)
    pos = torch.arange(length, device=h.device)[None].expand(b, length)
    pe = model.rotary_emb(h, pos)
    full = causal_bias(length, h.dtype, h.device)
    mask = full if eager_everywhere else None  # SDPA: causal from is_causal, no mask tensor
    w = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
        for i, layer in enumerate(model.layers):
            if i == conf.k:
                top = fastv_topk(w, n, keep)
                if trace is not None:
                    trace.update(layer=conf.k - 1, top=top)
                if mask_only:  # the ablation: every token still computed, dropped keys masked out
                    drop = torch.ones(b, length, dtype=torch.bool, device=h.device)
                    drop[:, n:] = False
                    drop.scatter_(1, top, False)
                    mask = causal_bias(length, h.dtype, h.device, drop)
                else:
                    text_pos = torch.arange(n, length, device=h.device)[None].expand(b, -1)
                    pos = torch.cat([top, text_pos], dim=1)
                    h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))
                    pe = model.rotary_emb(h, pos)
                    mask = causal_bias(pos.shape[1], h.dtype, h.device) if eager_everywhere else None
            eager_here = i == conf.k - 1
            if eager_here and trace is not None:
                trace.update(h_in=h, mask=full, pe=pe, pos=pos)
            h, wi = _layer(layer, h, full if eager_here else mask, pe, pos, cache, weights=eager_here)
            if eager_here:
                w = wi
    logits = llm.lm_head(model.norm(h[:, -1:, :]))[:, -1, :]
    return logits.argmax(dim=-1), cache, logits


class FastVBase(ReductionMethod):
    Conf = FastVConf
    where = "prefill"
    compiles = False
    why_no_compile = "it runs the LLM layer by layer to take layer K-1's attention weights"
    mask_only = False

    def param_problems(self, conf: FastVConf, n: int, spec, llm: str) -> List[str]:
        from ..llms import get_llm_spec

        layers = int(get_llm_spec(llm).config["num_hidden_layers"])
        out = []
        if not 1 <= conf.k < layers:
            out.append(f"reduction.k must be in 1..{layers - 1} ({llm} has {layers} layers; FastV needs the "
                       f"attention weights of layer K-1), got {conf.k}")
        if not 0 <= conf.ratio < 1 or not 1 <= kept(n, conf) <= n:
            out.append(f"reduction.ratio (dropped fraction) must be in [0, 1) and reduction.tokens in 0..{n}, "
                       f"keeping a token of {n}; got {conf.ratio} and {conf.tokens}")
        return out

    def llm_tokens_per_layer(self, conf: FastVConf, n: int, layers: int) -> Optional[List[int]]:
        if self.mask_only:
            return [n] * layers  # every token is still computed in every layer
        return [n] * conf.k + [kept(n, conf)] * (layers - conf.k)

    def apply(self, conf: FastVConf, pipe, vlm, point) -> None:
        def prefill(f) -> None:
            f.token, f.past, f.logits = fastv_prefill(vlm, f.embeds, f.ids, conf, self.mask_only)
            f.token.cpu()

        pipe.replace("prefill", prefill, self.owner)

    def overhead_ms(self, conf, vlm, pixels, ids) -> Optional[float]:
        """Layer K-1 eager plus the top-k, less the same layer with the point's attention."""
        from transformers import DynamicCache

        trace: dict = {}
        embeds = vlm.project(vlm.encode(pixels))
        fastv_prefill(vlm, embeds, ids, conf, self.mask_only, trace=trace)
        layer = vlm.llm.model.layers[trace["layer"]]
        n, keep = embeds.shape[1], kept(embeds.shape[1], conf)
        sdpa_mask = trace["mask"] if vlm.llm.config._attn_implementation == "eager" else None

        def eager() -> None:
            _, w = _layer(layer, trace["h_in"], trace["mask"], trace["pe"], trace["pos"], DynamicCache(config=vlm.llm.config),
                          weights=True)
            fastv_topk(w, n, keep)

        def plain() -> None:
            _layer(layer, trace["h_in"], sdpa_mask, trace["pe"], trace["pos"], DynamicCache(config=vlm.llm.config))

        return median_ms(eager, pixels.device, without=plain)


@register_reduction
class FastV(FastVBase):
    name = "fastv"
