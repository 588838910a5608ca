"""``random``: keep ``tokens`` visual tokens chosen at random with a fixed seed.

UniPruneBench (Peng et al., 2025, "Unified pruning benchmark") finds random pruning a strong
baseline. The kept indices are drawn with ``torch.randperm`` from a generator seeded with
``reduction.seed`` on every call (so every iteration keeps the same tokens) and sorted, so the
kept tokens keep their spatial order. Its own ``reduce`` stage after the projector (after
tiling's ``merge``): drawing and gathering is the method's whole cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from ..pipeline import Stage
from .base import ReductionConf, ReductionMethod, after_projection, register_reduction


@dataclass
class RandomConf(ReductionConf):
    name: str = "random"
    tokens: int = 144  # visual tokens kept
    seed: int = 0


def random_keep(n: int, tokens: int, seed: int) -> torch.Tensor:
    """The sorted indices of the ``tokens`` kept of ``n`` (same seed, same indices)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:tokens].sort().values


@register_reduction
class RandomKeep(ReductionMethod):
    name = "random"
    Conf = RandomConf
    where = "reduce"

    def param_problems(self, conf: RandomConf, n: int, spec, llm: str) -> List[str]:
        if not 0 < conf.tokens <= n:
            return [f"reduction.tokens must be in 1..{n} ({spec.name}'s tokens) for random, got {conf.tokens}"]
        return []

    def tokens_to_llm(self, conf: RandomConf, n: int, spec) -> int:
        return conf.tokens

    def apply(self, conf: RandomConf, pipe, vlm, point) -> None:
        def reduce(f) -> None:
            idx = random_keep(f.embeds.shape[1], conf.tokens, conf.seed).to(f.embeds.device)
            f.embeds = f.embeds.index_select(1, idx)

        pipe.insert_after(after_projection(pipe), Stage("reduce", reduce, self.owner))
