"""LLaVA-1.5's ``mlp2x_gelu`` projector: Linear(enc -> hidden), GELU, Linear(hidden -> hidden).

Module names (``0`` and ``2`` inside a Sequential) match LLaVA/FastVLM checkpoints'
``model.mm_projector.{0,2}.*`` keys, so their weights load as they are.
"""
from __future__ import annotations

from torch import nn


def build_projector(kind: str, in_channels: int, hidden_size: int) -> nn.Sequential:
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_channels, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_channels, hidden_size))
    raise ValueError(f"unknown projector {kind!r}; valid: mlp2x_gelu, linear")
