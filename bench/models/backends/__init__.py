"""Backends: how a point's stages run (eager PyTorch, torch.compile, ONNX Runtime, OpenVINO).

One module per backend in this folder, each registering a :class:`~.base.Backend` in
:data:`BACKENDS` (``backend=NAME`` is a Hydra group made from it). The axis registers itself in
:data:`bench.models.pipeline.AXES`: it replaces how the point's backend stages run, after
tiling and token reduction have decided what they compute.
"""
import importlib
import pkgutil

from ..pipeline import AXES
from .base import BACKENDS, Backend, BackendError

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "errors", "export_cache", "numerics"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)()


def apply_backend(pipe, vlm, point) -> None:
    """The AXES hook: the point's backend edits the pipeline (nothing exported yet)."""
    get_backend(getattr(point, "backend", "eager")).apply(pipe, vlm, point)


if apply_backend not in AXES:
    AXES.append(apply_backend)

__all__ = ["BACKENDS", "Backend", "BackendError", "apply_backend", "get_backend"]
