"""A timm ViT's forward taken apart, for methods that work inside its blocks (ToMe, VisionZip).

timm's ``Block``/``Attention`` return neither the keys nor the attention weights the methods
need, so these helpers recompute a block from its own modules (``norm1``, ``attn.qkv``,
``attn.q_norm``/``k_norm``, ``attn.proj``, ``ls1``, ``mlp``...) with the same arithmetic as
``timm.models.vision_transformer.Block.forward`` (timm 1.0.x). Not a method: registers nothing.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def embed(backbone, pixels: torch.Tensor) -> torch.Tensor:
    """``VisionTransformer.forward_features`` up to the blocks."""
    x = backbone.patch_embed(pixels)
    x = backbone._pos_embed(x)
    x = backbone.patch_drop(x)
    return backbone.norm_pre(x)


def qkv(attn, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attn_out(attn, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, head_dim) attention output -> the block's attention branch."""
    b, n, _ = x.shape
    o = o.transpose(1, 2).reshape(b, n, -1)
    o = getattr(attn, "norm", torch.nn.Identity())(o)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        o = o * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(o))


def attention(blk, x: torch.Tensor, bias: Optional[torch.Tensor] = None, weights: bool = False):
    """The attention branch of ``blk`` on ``x`` (already ``norm1``-ed): ``(branch, keys, weights)``.

    Fused SDPA (with an additive ``bias``) unless ``weights`` is asked for: then the explicit
    softmax, whose probabilities a method reads (the cost the method adds to the block).
    """
    q, k, v = qkv(blk.attn, x)
    if weights:
        w = ((q * blk.attn.scale) @ k.transpose(-2, -1))
        if bias is not None:
            w = w + bias
        w = w.softmax(dim=-1)
        o = w @ v
    else:
        w = None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return attn_out(blk.attn, o, x), k, w


def mlp_branch(blk, x: torch.Tensor) -> torch.Tensor:
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


@functools.lru_cache(maxsize=None)
def _depth_of(name: str) -> int:
    from ..encoders import get_encoder_spec

    spec = get_encoder_spec(name)
    with torch.device("meta"):
        return len(spec.builder(spec.stride * 4).blocks)


def vit_depth(spec) -> int:
    """Blocks of a ViT encoder (built once on the meta device: no memory, no arithmetic)."""
    return _depth_of(spec.name)
