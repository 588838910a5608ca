"""ConvNeXt encoders from timm: ConvNeXt-Large, ConvNeXt-XXL, ConvLLaVA's stride-64 ConvNeXt-Large, a tiny one.

ConvNeXt down-samples with a 4x4/s4 stem and 2x2/s2 convs without padding, so each layer
floors (336 px -> 84 -> 42 -> 21 -> 10: 100 tokens). ConvLLaVA (Ge et al., 2024) appends a
fifth stage to ConvNeXt-L: a LayerNorm + 2x2/s2 down-sampling to 3072 channels and six
ConvNeXt blocks (its release trains with ``vision_add_five_stage 6``,
``vision_five_stage_width 3072``), giving stride 64.

ConvNeXt-XXL is timm's ``convnext_xxlarge`` (depths 3/4/30/3, widths 384/768/1536/3072: 846 M
parameters with its classifier, 843 M as a tower; the LAION CLIP tower the FastVLM paper's Table 4
compares at 256 and 512 px), with the same unpadded down-sampling (stride 32).
"""
from __future__ import annotations

from torch import nn

from .base import EncoderSpec, load_timm, register_encoder

CLIP_CONVNEXT_MEAN = (0.48145466, 0.4578275, 0.40821073)


class ConvNeXtWithExtraStage(nn.Module):
    """A timm ConvNeXt with one more down-sampling stage appended (ConvLLaVA)."""

    def __init__(self, base: nn.Module, width: int, depth: int):
        super().__init__()
        load_timm()
        from timm.layers import LayerNorm, LayerNorm2d
        from timm.models.convnext import ConvNeXtStage

        self.base = base
        self.stage5 = ConvNeXtStage(base.num_features, width, stride=2, depth=depth, conv_mlp=False,
                                    ls_init_value=1e-6, norm_layer=LayerNorm2d, norm_layer_cl=LayerNorm)
        self.num_features = width

    def forward_features(self, x):
        return self.stage5(self.base.forward_features(x))


def _convnext_large(resolution: int):
    return load_timm().create_model("convnext_large", pretrained=False, num_classes=0)


def _convnext_xxlarge(resolution: int):
    return load_timm().create_model("convnext_xxlarge", pretrained=False, num_classes=0)


def _convllava_large(resolution: int):
    return ConvNeXtWithExtraStage(_convnext_large(resolution), width=3072, depth=6)


def _tiny_convnext(resolution: int):
    load_timm()
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=0)


STEM_AND_3 = [(4, 4, 0)] + [(2, 2, 0)] * 3

register_encoder(EncoderSpec(
    name="convnext_l", description="ConvNeXt-Large, stride 32", channels=1536, stride=32, kind="conv",
    builder=_convnext_large, downsamples=STEM_AND_3, min_resolution=32, timm_name="convnext_large",
    paper_resolutions=(320, 512),
))

register_encoder(EncoderSpec(
    name="convnext_xxl", description="ConvNeXt-XXL (timm convnext_xxlarge), stride 32", channels=3072,
    stride=32, kind="conv", builder=_convnext_xxlarge, downsamples=STEM_AND_3, min_resolution=32,
    timm_name="convnext_xxlarge", paper_resolutions=(256, 512),
))

register_encoder(EncoderSpec(
    name="convllava_l", description="ConvLLaVA ConvNeXt-Large + fifth stage (3072 ch, 6 blocks), stride 64",
    channels=3072, stride=64, kind="conv", builder=_convllava_large,
    downsamples=STEM_AND_3 + [(2, 2, 0)], min_resolution=64, timm_name="convnext_large",
    paper_resolutions=(768, 1024, 1536),
))

register_encoder(EncoderSpec(
    name="tiny_convnext", description="tiny ConvNeXt for tests (128 channels), stride 32", channels=128,
    stride=32, kind="conv", builder=_tiny_convnext, downsamples=STEM_AND_3, min_resolution=32, tiny=True,
    native_resolution=64,
))
