"""Vision encoder zoo. Importing this package registers every family."""
from . import convnext, fastvit, vit  # noqa: F401  (registration side effects)
from .base import ENCODERS, EncoderSpec, InvalidResolutionError, VisionEncoder


def get_encoder_spec(name: str) -> EncoderSpec:
    return ENCODERS.get(name)


def encoder_names(include_tiny: bool = True):
    return [n for n in ENCODERS.names() if include_tiny or not ENCODERS.get(n).tiny]


__all__ = ["ENCODERS", "EncoderSpec", "InvalidResolutionError", "VisionEncoder", "get_encoder_spec",
           "encoder_names"]
