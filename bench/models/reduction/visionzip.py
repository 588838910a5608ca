"""``visionzip``: dominant tokens by class-token attention plus contextual tokens merged by
similarity (Yang et al., "VisionZip: Longer is Better but Not Necessary", CVPR 2025).

Follows dvlab-research/VisionZip at commit 3151f6df4fca36a4cd1c985e5956e725b1f9ad02,
``visionzip/clip_encoder.py`` (``CLIPVisionTower_VisionZip.forward``) and ``visionzip/utils.py``:

- the attention weights and keys (averaged over heads: the ``metric``) of the layer whose
  output is the feature map; its hidden states (there LLaVA's layer -2; here the encoder's output
  layer, the features this benchmark gives the projector);
- **dominant**: the class token's attention to every patch, summed over heads; the top
  ``dominant - 1`` patches plus the class token itself, in their original order. The off-by-one
  is VisionZip's: ``visionzip(model, dominant=54, contextual=10)`` passes ``dominant_num=53`` and
  keeps the class token among the dominant ones, 54 + 10 = 64 tokens;
- **contextual**: of the remaining tokens (metric normalised), every ``step = max(1, M //
  contextual)``-th is a target; every other token joins its most similar target (argmax of cosine
  similarity); a contextual token is the target's hidden state **plus** the mean of the tokens it
  absorbed (not a mean including the target: VisionZip's arithmetic).

The README's setting is 54 + 10 = 64 tokens; the paper's 128 and 192 are 108 + 20 and 162 + 30.
The attention weights need the explicit softmax in the last block (fused attention does not
return them, VisionZip issue #29): that block's eager attention and the selection are the
method's cost, inside ``vision_latency`` and measured apart as ``reduction_overhead_ms``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from .base import ReductionConf, ReductionMethod, median_ms, register_reduction
from .vit_blocks import attention, embed, mlp_branch


@dataclass
class VisionZipConf(ReductionConf):
    name: str = "visionzip"
    dominant: int = 54  # kept by class-token attention, the class token included
    contextual: int = 10  # merged by similarity
    # tokens (from ReductionConf): > 0 replaces both, split as the README's 54 : 10


def split(conf: VisionZipConf):
    """``(dominant, contextual)``: the conf's, or ``tokens`` split 54 : 10 (contextual =
    round(tokens * 10 / 64)) -- which gives the paper's 108 + 20 at 128 and 162 + 30 at 192."""
    if conf.tokens > 0:
        contextual = max(1, round(conf.tokens * 10 / 64))
        return conf.tokens - contextual, contextual
    return conf.dominant, conf.contextual


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


def visionzip_select(hidden: torch.Tensor, attn: torch.Tensor, metric: torch.Tensor, dominant: int,
                     contextual: int) -> torch.Tensor:
    """``hidden`` (B, 1 + N, C) with the class token first, ``attn`` (B, heads, 1 + N, 1 + N),
    ``metric`` (B, 1 + N, d) -> (B, dominant + contextual, C)."""
    b, t, _ = hidden.shape
    cls_attention = attn[:, :, 0, 1:].sum(dim=1)  # (B, N)
    top = cls_attention.topk(dominant - 1, dim=1).indices + 1
    keep = torch.cat([torch.zeros(b, 1, dtype=top.dtype, device=top.device), top], dim=1).sort(dim=1).values
    dominant_tokens = _gather(hidden, keep)
    is_rest = torch.ones(b, t, dtype=torch.bool, device=hidden.device).scatter(1, keep, False)
    # the rest, in order: positions of True in is_rest (a stable sort puts them first)
    rest = torch.sort((~is_rest).to(torch.int8), dim=1, stable=True).indices[:, : t - dominant]
    metric_rest = _gather(metric, rest)
    hidden_rest = _gather(hidden, rest)
    metric_rest = metric_rest / metric_rest.norm(dim=-1, keepdim=True)
    m = metric_rest.shape[1]
    step = max(1, m // contextual)
    target_list = list(range(0, m, step))[:contextual]  # static shapes: indices, not boolean masks
    targets_set = set(target_list)
    target_idx = torch.tensor(target_list, device=hidden.device)
    other_idx = torch.tensor([i for i in range(m) if i not in targets_set], dtype=torch.long, device=hidden.device)
    targets = metric_rest[:, target_idx, :]
    to_merge = metric_rest[:, other_idx, :]
    similarity = torch.bmm(to_merge, targets.transpose(1, 2))
    assign = torch.zeros(b, to_merge.shape[1], contextual, dtype=hidden.dtype, device=hidden.device)
    assign.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
    counts = assign.sum(dim=1).clamp(min=1).unsqueeze(-1)
    aggregated = torch.bmm(assign.transpose(1, 2), hidden_rest[:, other_idx, :]) / counts
    contextual_tokens = hidden_rest[:, target_idx, :] + aggregated
    return torch.cat([dominant_tokens, contextual_tokens], dim=1)


class VisionZipEncoder(nn.Module):
    """The point's ViT encoder, its last block with explicit attention, then the selection."""

    def __init__(self, encoder, conf: VisionZipConf):
        super().__init__()
        self.inner, self.spec = encoder, encoder.spec
        self.dominant, self.contextual = split(conf)
        self.trace: Optional[list] = None

    def num_tokens(self, resolution=None) -> int:
        return self.dominant + self.contextual

    def last_block(self, x: torch.Tensor, weights: bool = True):
        blk = self.inner.backbone.blocks[-1]
        branch, k, w = attention(blk, blk.norm1(x), weights=weights)
        x = mlp_branch(blk, x + blk.drop_path1(blk.ls1(branch)))
        return self.inner.backbone.norm(x), k, w

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        bb = self.inner.backbone
        x = embed(bb, pixels)
        for blk in bb.blocks[:-1]:
            x = blk(x)
        if self.trace is not None:
            self.trace.append(x)
        hidden, k, w = self.last_block(x)
        return visionzip_select(hidden, w, k.mean(1), self.dominant, self.contextual)


@register_reduction
class VisionZip(ReductionMethod):
    name = "visionzip"
    Conf = VisionZipConf
    where = "vision_latency"
    needs = "vit_cls"

    def param_problems(self, conf: VisionZipConf, n: int, spec, llm: str) -> List[str]:
        dominant, contextual = split(conf)
        if dominant < 1 or contextual < 1 or dominant + contextual > n:
            return [f"reduction.dominant (>= 1, the class token included) and reduction.contextual (>= 1) "
                    f"must add up to at most {spec.name}'s {n} tokens, got {dominant} + {contextual}"]
        return []

    def tokens_to_llm(self, conf: VisionZipConf, n: int, spec) -> int:
        return sum(split(conf))

    def apply(self, conf: VisionZipConf, pipe, vlm, point) -> None:
        vlm.encoder = VisionZipEncoder(vlm.encoder, conf)  # this point's own encoder (never kept)
        pipe.replace("vision_latency", pipe.get("vision_latency").run, self.owner)

    def overhead_ms(self, conf, vlm, pixels, ids) -> Optional[float]:
        """The last block with explicit attention plus the selection, less that block under SDPA."""
        enc = vlm.encoder if isinstance(vlm.encoder, VisionZipEncoder) else getattr(vlm.encoder, "_orig_mod", None)
        if not isinstance(enc, VisionZipEncoder):
            return None
        enc.trace = []
        try:
            enc(pixels)
            x = enc.trace[0]
        finally:
            enc.trace = None

        def method() -> None:
            hidden, k, w = enc.last_block(x, weights=True)
            visionzip_select(hidden, w, k.mean(1), enc.dominant, enc.contextual)

        return median_ms(method, pixels.device, without=lambda: enc.last_block(x, weights=False))
