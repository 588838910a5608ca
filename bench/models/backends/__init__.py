"""Backends: how a point's stages run (eager PyTorch, torch.compile, ONNX Runtime, OpenVINO).

One module per backend in this folder, each registering a :class:`~.base.Backend` in
:data:`BACKENDS` (``backend=NAME`` is a Hydra group made from it). The axis registers itself in
:data:`bench.models.pipeline.AXES`: it replaces how the point's backend stages run, after
tiling and token reduction have decided what they compute.
"""
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Tuple

from ..pipeline import AXES
from .base import BACKENDS, Backend, BackendError

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "errors", "export_cache", "numerics"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)()


@dataclass(frozen=True)
class BackendPart:
    """The backend axis's part of a point's plan: the backend (one instance edits the pipeline,
    prepares and guards the timed loop) and the stages it runs (empty: all, eager/compile)."""

    backend: Backend
    stages: Tuple[str, ...]


def plan_part(point) -> BackendPart:
    """The axis's part of the plan (``bench.measure.plan``)."""
    return BackendPart(get_backend(point.backend), tuple(s for s in (point.backend_stages or "").split(",") if s))


def apply_backend(pipe, vlm, point) -> None:
    """The AXES hook: the point's backend edits the pipeline (nothing exported yet); the plan's
    backend (``pipe.extras["backend"]``) where a resolved plan built the pipeline."""
    part = pipe.extras.get("backend")
    (part.backend if part is not None else get_backend(getattr(point, "backend", "eager"))).apply(pipe, vlm, point)


if apply_backend not in AXES:
    AXES.append(apply_backend)

__all__ = ["BACKENDS", "Backend", "BackendError", "BackendPart", "apply_backend", "get_backend", "plan_part"]
