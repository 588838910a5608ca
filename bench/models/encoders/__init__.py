"""Vision encoder zoo: one module per family, each registering its encoders with
:func:`~.base.register_encoder`.

Importing this package imports every module in this folder, so adding an encoder family is
one new file here and nothing else: its ``register_encoder(EncoderSpec(...))`` calls make it a
``fastvlm-bench list`` entry and an ``encoder=NAME`` Hydra option.
"""
import importlib
import pkgutil

from .base import ENCODERS, EncoderSpec, InvalidResolutionError, VisionEncoder, register_encoder

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def get_encoder_spec(name: str) -> EncoderSpec:
    return ENCODERS.get(name)


__all__ = ["ENCODERS", "EncoderSpec", "InvalidResolutionError", "VisionEncoder", "get_encoder_spec",
           "register_encoder"]
