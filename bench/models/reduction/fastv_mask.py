"""``fastv_mask``: FastV's mask-only variant, as its K/R ablation ran it, to show it saves nothing.

pkunlp-icler/FastV at commit d1659729b5bf1be225e99ee15783deeea80f63b1, README: the ablation
"masks out the discarded tokens (no speed up) in deep layers"; ``modeling_llama.py``, the
``elif USE_FAST_V`` branch: from layer K on, the discarded image tokens are hidden from every
query by the attention mask, but all tokens are still computed in every layer. The same
ranking as ``fastv`` (layer K-1 eager, last token's attention averaged over heads); the layers
from K on take an explicit mask (so SDPA cannot use its mask-free causal path).
"""
from __future__ import annotations

from .base import register_reduction
from .fastv import FastVBase


@register_reduction
class FastVMask(FastVBase):
    name = "fastv_mask"
    mask_only = True
