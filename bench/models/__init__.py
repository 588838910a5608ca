"""Model zoo: encoder and LLM registries, projector, and the composed VLM."""
from .encoders import ENCODERS, InvalidResolutionError, get_encoder_spec
from .llms import LLMS, get_llm_spec
from .vlm import VLM, InsufficientMemoryError, build_vlm
from .backends import BACKENDS  # registers the backend axis in pipeline.AXES

__all__ = ["BACKENDS", "ENCODERS", "LLMS", "VLM", "InsufficientMemoryError", "InvalidResolutionError", "build_vlm",
           "get_encoder_spec", "get_llm_spec"]
