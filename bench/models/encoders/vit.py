"""ViT encoders from timm: CLIP ViT-L/14 (LLaVA-1.5's tower), SigLIP SO400M/14, and a tiny ViT.

Position embeddings are built for the requested resolution (timm ``img_size``); loading a
checkpoint trained at another size resamples them (see ``bench.models.checkpoint``). The
class token is dropped from the output. CLIP ViT-L/14 only takes multiples of 14 px (any other
size would silently drop border pixels); SigLIP's published 384 px input is not a multiple of
14 and its patch conv floors, so SigLIP keeps that behaviour (384 px -> 27x27 = 729 tokens).
"""
from __future__ import annotations

import timm

from .base import EncoderSpec, register_encoder

SIGLIP_MEAN = (0.5, 0.5, 0.5)


def _timm_vit(timm_name: str, **kwargs):
    def build(resolution: int):
        return timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=resolution, **kwargs)

    return build


register_encoder(EncoderSpec(
    name="vit_l14", description="CLIP ViT-L/14 (OpenAI, quick-GELU), patch 14",
    channels=1024, stride=14, kind="vit", builder=_timm_vit("vit_large_patch14_clip_quickgelu_336"),
    min_resolution=28, strict_patch=True, prefix_tokens=1,
    timm_name="vit_large_patch14_clip_quickgelu_336", paper_resolutions=(336,), native_resolution=336,
))

register_encoder(EncoderSpec(
    name="siglip_so400m", description="SigLIP SO400M/14", channels=1152, stride=14, kind="vit",
    builder=_timm_vit("vit_so400m_patch14_siglip_384"), min_resolution=28, prefix_tokens=0,
    mean=SIGLIP_MEAN, std=SIGLIP_MEAN, timm_name="vit_so400m_patch14_siglip_384",
    paper_resolutions=(384,), native_resolution=384,
))


def _tiny_vit(resolution: int):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=resolution, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                             num_classes=0)


register_encoder(EncoderSpec(
    name="tiny_vit", description="tiny ViT/16 for tests (64 channels, 2 blocks)", channels=64,
    stride=16, kind="vit", builder=_tiny_vit, min_resolution=32, strict_patch=True, prefix_tokens=1,
    tiny=True, native_resolution=64,
))
