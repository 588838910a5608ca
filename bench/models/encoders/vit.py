"""ViT encoders from timm: CLIP ViT-L/14 (LLaVA-1.5's tower), SigLIP SO400M/14, ViTamin-L, a tiny ViT.

Position embeddings are built for the requested resolution (timm ``img_size``); loading a
checkpoint trained at another size resamples them (see ``bench.models.checkpoint``). The
class token is dropped from the output. CLIP ViT-L/14 only takes multiples of 14 px (any other
size would silently drop border pixels); SigLIP's published 384 px input is not a multiple of
14 and its patch conv floors, so SigLIP keeps that behaviour (384 px -> 27x27 = 729 tokens).

ViTamin-L (Chen et al., CVPR 2024) is the hybrid the FastVLM paper's row R34 puts into LLaVA-1.5
at 384 px (576 tokens, 333 M parameters): a conv stem and two MbConv stages, then a stride-2
3x3 conv into 31 ViT blocks of width 1024 with GeGLU MLPs, no class token. Every down-sampling
layer is a 3x3/s2 conv padded by 1 (stem, the first block of each MbConv stage, the strided conv
before the ViT), so each rounds up: stride 16, 384 px -> 24x24. It is timm's ``vitamin_large_384``
with the position embeddings built for the requested resolution.
"""
from __future__ import annotations

from .base import ENCODERS, EncoderSpec, load_timm, register_encoder

SIGLIP_MEAN = (0.5, 0.5, 0.5)


def _timm_vit(timm_name: str, **kwargs):
    def build(resolution: int):
        return load_timm().create_model(timm_name, pretrained=False, num_classes=0, img_size=resolution, **kwargs)

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


def _vitamin_large(resolution: int):
    """timm's ``vitamin_large_384`` (timm 1.0.31, ``timm/models/vitamin.py``: ``vitamin_large_384``
    and ``_create_vitamin``), argument for argument, except that the ViT's token grid is given
    (``feature_size``) instead of found by a forward pass of zeros through the conv stages at
    build time (``HybridEmbed._init_backbone``: 2 s here, for a number the arithmetic gives).
    ``tests/test_tokens.py`` checks it against ``timm.create_model`` parameter for parameter."""
    from functools import partial

    load_timm()
    from timm.layers import HybridEmbed
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vitamin import GeGluMlp, MbConvStages, VitCfg, VitConvCfg

    embed_cfg = VitCfg(embed_dim=(160, 320, 1024), depths=(2, 4, 1), stem_width=160,
                       conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6), head_type="1d")
    backbone = MbConvStages(cfg=embed_cfg, in_chans=3)
    backbone.num_features = embed_cfg.embed_dim[-1]  # what HybridEmbed reads when given the grid
    grid = ENCODERS.get("vitamin_l").grid(resolution)
    return VisionTransformer(img_size=resolution, patch_size=1, embed_dim=1024, depth=31, num_heads=16,
                             mlp_layer=GeGluMlp, mlp_ratio=2.0, class_token=False, global_pool="avg",
                             num_classes=0,
                             embed_layer=partial(HybridEmbed, backbone=backbone, proj=False, feature_size=grid))


register_encoder(EncoderSpec(
    name="vitamin_l", description="ViTamin-L (timm vitamin_large_384: MbConv stem + 31 ViT blocks), stride 16",
    channels=1024, stride=16, kind="hybrid", builder=_vitamin_large, downsamples=[(3, 2, 1)] * 4,
    min_resolution=32, prefix_tokens=0, timm_name="vitamin_large_384", paper_resolutions=(384,),
))


def _tiny_vit(resolution: int):
    load_timm()
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=resolution, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                             num_classes=0)


register_encoder(EncoderSpec(
    name="tiny_vit", description="tiny ViT/16 for tests (64 channels, 2 blocks)", channels=64,
    stride=16, kind="vit", builder=_tiny_vit, min_resolution=32, strict_patch=True, prefix_tokens=1,
    tiny=True, native_resolution=64,
))
