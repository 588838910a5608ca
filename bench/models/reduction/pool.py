"""``pool``: average pooling of the visual-token grid, the cheap baseline.

The default is 2x2 average pooling with stride 2 (``F.avg_pool2d(x, 2)``, as LLaVA-OneVision's
``get_2dPool`` does to video frames: LLaVA-NeXT ``llava/model/llava_arch.py``), which keeps a
quarter of the tokens (576 -> 144 for ViT-L/14 at 336 px). ``pool.tokens=T`` pools to a
sqrt(T) x sqrt(T) grid instead with adaptive average pooling (``F.adaptive_avg_pool2d``: window
``floor(i*g/s) .. ceil((i+1)*g/s)``), so that any square budget (64, 256 of 576) is reachable.
It runs in its own ``reduce`` stage after the projector (after tiling's ``merge``), on the
embeddings the LLM would see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F

from ..pipeline import Stage
from .base import ReductionConf, ReductionMethod, after_projection, register_reduction


@dataclass
class PoolConf(ReductionConf):
    name: str = "pool"  # tokens: 0 -> 2x2 average pooling, stride 2; else a square number to pool to


def pool_grid(x: torch.Tensor, tokens: int) -> torch.Tensor:
    """(batch, g*g, C) -> (batch, s*s, C): 2x2/stride-2 average pooling (tokens=0) or adaptive to s*s."""
    b, n, c = x.shape
    g = math.isqrt(n)
    grid = x.transpose(1, 2).reshape(b, c, g, g)
    out = F.avg_pool2d(grid, 2) if tokens == 0 else F.adaptive_avg_pool2d(grid, math.isqrt(tokens))
    return out.flatten(2).transpose(1, 2)


@register_reduction
class Pool(ReductionMethod):
    name = "pool"
    Conf = PoolConf
    where = "reduce"

    def param_problems(self, conf: PoolConf, n: int, spec, llm: str) -> List[str]:
        if math.isqrt(n) ** 2 != n:
            return [f"reduction=pool needs a square token grid; {spec.name} gives {n} tokens"]
        if conf.tokens < 0 or (conf.tokens and (math.isqrt(conf.tokens) ** 2 != conf.tokens or conf.tokens > n)):
            return [f"reduction.tokens must be 0 (2x2 pooling) or a square number <= {n} for pool, got {conf.tokens}"]
        if conf.tokens == 0 and n < 4:
            return [f"reduction=pool: {n} tokens cannot be pooled 2x2"]
        return []

    def tokens_to_llm(self, conf: PoolConf, n: int, spec) -> int:
        return (math.isqrt(n) // 2) ** 2 if conf.tokens == 0 else conf.tokens

    def apply(self, conf: PoolConf, pipe, vlm, point) -> None:
        def reduce(f) -> None:
            f.embeds = pool_grid(f.embeds, conf.tokens)

        pipe.insert_after(after_projection(pipe), Stage("reduce", reduce, self.owner))
