"""Model zoo: encoder and LLM registries, projector, and the composed VLM."""
from .encoders import ENCODERS, InvalidResolutionError, get_encoder_spec
from .llms import LLMS, get_llm_spec
from .vlm import VLM, InsufficientMemoryError, build_vlm
from . import tiling  # noqa: E402,F401  (registers the tiling axis in pipeline.AXES)
from .tiling import TILINGS  # noqa: E402

__all__ = ["ENCODERS", "LLMS", "TILINGS", "VLM", "InsufficientMemoryError", "InvalidResolutionError", "build_vlm",
           "get_encoder_spec", "get_llm_spec"]
