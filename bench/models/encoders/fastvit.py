"""FastViT family from timm: FastViTHD (``fastvit_mci3``) and FastViT (``fastvit_mci2``).

Both are the MobileCLIP image towers. Their visual tokens are the feature map after the
final conv expansion (``final_conv``, part of timm's ``forward_features``). Every
down-sampling layer is a stride-2 conv with "same" padding (stem 3x3/p1, stage patch
embeddings 7x7/p3), i.e. ceil(n/2) per layer: FastViTHD has six (stride 64), FastViT five.
The models are re-parameterised (branches fused) once their weights are in place, before
timing, as they are deployed (``VisionEncoder.prepare_for_inference``).
"""
from __future__ import annotations

from .base import EncoderSpec, load_timm, register_encoder


def _fastvit_builder(timm_name: str):
    def build(resolution: int):
        return load_timm().create_model(timm_name, pretrained=False, num_classes=0)

    return build


register_encoder(EncoderSpec(
    name="fastvithd", description="FastViTHD (MobileCLIP MCi3, timm fastvit_mci3), stride 64",
    channels=3072, stride=64, kind="conv", builder=_fastvit_builder("fastvit_mci3"),
    downsamples=[(3, 2, 1)] + [(7, 2, 3)] * 5, min_resolution=64, timm_name="fastvit_mci3", reparameterize=True,
    paper_resolutions=(256, 512, 768, 1024),
))

register_encoder(EncoderSpec(
    name="fastvit", description="FastViT (MobileCLIP MCi2, timm fastvit_mci2), stride 32",
    channels=1280, stride=32, kind="conv", builder=_fastvit_builder("fastvit_mci2"),
    downsamples=[(3, 2, 1)] + [(7, 2, 3)] * 4, min_resolution=32, timm_name="fastvit_mci2", reparameterize=True,
    paper_resolutions=(256, 768),
))
