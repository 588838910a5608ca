"""``tome``: Token Merging (Bolya et al., ICLR 2023) inside the encoder's ViT blocks.

Follows facebookresearch/ToMe at commit af95e4b1befa172dadccd8c81e223b10090f9579:

- ``tome/merge.py`` ``bipartite_soft_matching``: keys averaged over heads are the metric,
  normalised; tokens alternate into sets A (even) and B (odd); every A token's best B match by
  cosine similarity; the ``r`` A tokens with the most similar matches are merged into their B
  token, the class token never (its row set to -inf, so it stays first); at most half the
  tokens per block. ``merge_wavg``: merged tokens are size-weighted means, sizes summed.
- ``tome/patch/timm.py`` ``ToMeBlock``/``ToMeAttention``: the merge sits between the attention
  and the MLP of every block, and attention is proportional (``+ log(size)`` on the logits),
  which we pass to fused SDPA as an additive bias: the same softmax, without a materialised
  attention matrix.
- ``tome/utils.py`` ``parse_r``: a constant ``r`` merges ``r`` tokens in every block.

``reduction.tokens=T`` instead spreads ``N - T`` merges over the blocks as evenly as ToMe's list
schedule allows (the first blocks one more), to land exactly on a token budget. It shortens the
encoder and the LLM's input; its cost (the matching) is inside ``vision_latency`` and measured
apart as ``reduction_overhead_ms``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from .base import ReductionConf, ReductionMethod, median_ms, register_reduction
from .vit_blocks import attention, embed, mlp_branch, vit_depth


@dataclass
class ToMeConf(ReductionConf):
    name: str = "tome"
    r: int = 8  # tokens merged in every block (ToMe's constant schedule); tokens > 0 replaces it
    # tokens (from ReductionConf): > 0 merges N - tokens over the blocks instead of r per block
    prop_attn: bool = True  # proportional attention (ToMe's default for off-the-shelf models)


def _do_nothing(x, mode=None):
    return x


def bipartite_soft_matching(metric: torch.Tensor, r: int, class_token: bool = False) -> Callable:
    """ToMe's ``bipartite_soft_matching`` (tome/merge.py), returning its ``merge``."""
    protected = 1 if class_token else 0
    t = metric.shape[1]
    r = min(r, (t - protected) // 2)
    if r <= 0:
        return _do_nothing
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        if class_token:
            scores[..., 0, :] = -math.inf
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]  # unmerged A tokens
        src_idx = edge_idx[..., :r, :]  # merged A tokens
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        if class_token:
            unm_idx = unm_idx.sort(dim=1)[0]  # the class token first

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    return merge


def merge_wavg(merge: Callable, x: torch.Tensor, size: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """ToMe's ``merge_wavg``: size-weighted average, sizes summed."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def schedule(n_with_prefix: int, blocks: int, conf: ToMeConf, protected: int) -> List[int]:
    """Tokens merged per block; ``min(r, (t - protected) // 2)`` as bipartite_soft_matching caps it."""
    if conf.tokens:
        total = n_with_prefix - protected - conf.tokens
        base, extra = divmod(total, blocks)
        wanted = [base + 1] * extra + [base] * (blocks - extra)
    else:
        wanted = [conf.r] * blocks
    out, t = [], n_with_prefix
    for r in wanted:
        r = max(0, min(r, (t - protected) // 2))
        out.append(r)
        t -= r
    return out


class ToMeEncoder(nn.Module):
    """The point's ViT encoder with a merge in every block (same parameters, same output form)."""

    def __init__(self, encoder, conf: ToMeConf):
        super().__init__()
        self.inner = encoder
        self.spec = encoder.spec
        bb = encoder.backbone
        self.class_token = getattr(bb, "cls_token", None) is not None
        n = encoder.num_tokens() + encoder.spec.prefix_tokens
        self.schedule = schedule(n, len(bb.blocks), conf, 1 if self.class_token else 0)
        self.prop_attn = conf.prop_attn
        self.trace: Optional[list] = None  # set to a list to keep each block's (x, metric, size, r)

    def num_tokens(self, resolution=None) -> int:
        return self.inner.num_tokens() - sum(self.schedule)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        bb = self.inner.backbone
        x = embed(bb, pixels)
        size = None
        for blk, r in zip(bb.blocks, self.schedule):
            bias = size.log()[:, None, None, :, 0] if (size is not None and self.prop_attn) else None
            branch, k, _ = attention(blk, blk.norm1(x), bias)
            x = x + blk.drop_path1(blk.ls1(branch))
            if r > 0:
                metric = k.mean(1)
                if self.trace is not None:
                    self.trace.append((x, metric, size, r))
                x, size = merge_wavg(bipartite_soft_matching(metric, r, self.class_token), x, size)
            x = mlp_branch(blk, x)
        x = bb.norm(x)
        return x[:, self.spec.prefix_tokens:, :]


@register_reduction
class ToMe(ReductionMethod):
    name = "tome"
    Conf = ToMeConf
    where = "vision_latency"
    needs = "vit"

    def param_problems(self, conf: ToMeConf, n: int, spec, llm: str) -> List[str]:
        if conf.r < 0 or conf.tokens < 0:
            return [f"reduction.r and reduction.tokens must be >= 0 for tome, got {conf.r} and {conf.tokens}"]
        if conf.tokens and conf.tokens > n:
            return [f"reduction.tokens={conf.tokens} is more than {spec.name}'s {n} tokens"]
        if conf.tokens:
            depth = self._depth(spec)
            got = n - sum(schedule(n + spec.prefix_tokens, depth, conf, spec.prefix_tokens))
            if got != conf.tokens:
                return [f"reduction=tome: {depth} blocks merging at most half their tokens each reach {got} "
                        f"tokens, not {conf.tokens}"]
        return []

    @staticmethod
    def _depth(spec) -> int:
        return vit_depth(spec)

    def tokens_to_llm(self, conf: ToMeConf, n: int, spec) -> int:
        return n - sum(schedule(n + spec.prefix_tokens, self._depth(spec), conf, spec.prefix_tokens))

    def apply(self, conf: ToMeConf, pipe, vlm, point) -> None:
        vlm.encoder = ToMeEncoder(vlm.encoder, conf)  # this point's own encoder (never kept)
        run = pipe.get("vision_latency").run
        pipe.replace("vision_latency", run, self.owner)

    def overhead_ms(self, conf, vlm, pixels, ids) -> Optional[float]:
        """The matching and merging of every block, on the tensors a real forward gives them."""
        enc = vlm.encoder if isinstance(vlm.encoder, ToMeEncoder) else getattr(vlm.encoder, "_orig_mod", None)
        if not isinstance(enc, ToMeEncoder):
            return None
        enc.trace = []
        try:
            enc(pixels)
            steps = list(enc.trace)
        finally:
            enc.trace = None

        def merges() -> None:
            for x, metric, size, r in steps:
                merge_wavg(bipartite_soft_matching(metric, r, enc.class_token), x, size)

        return median_ms(merges, pixels.device)
