"""Model zoo: encoder, LLM and tiling registries, projector, and the composed VLM.

The names below are loaded on first use (PEP 562): importing a command module that lives here
(``bench.models.command``, for the CLI's parser) must not import torch and timm, which took
most of the start-up time of ``compare``, ``collect`` and every ``--help``.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import config_groups  # noqa: F401  (adds this stage's config groups and checks to bench.config)

_EXPORTS = {"ENCODERS": ".encoders", "InvalidResolutionError": ".encoders", "get_encoder_spec": ".encoders",
            "LLMS": ".llms", "get_llm_spec": ".llms",
            "VLM": ".vlm", "InsufficientMemoryError": ".vlm", "build_vlm": ".vlm", "TILINGS": ".tiling",
            "BACKENDS": ".backends"}

__all__ = ["BACKENDS", "ENCODERS", "LLMS", "TILINGS", "VLM", "InsufficientMemoryError", "InvalidResolutionError", "build_vlm",
           "get_encoder_spec", "get_llm_spec"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
