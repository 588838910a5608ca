"""Server kinds of the endpoint mode (``endpoint=KIND``): one module per kind, each a
:class:`~.base.EndpointKind` registered in :data:`ENDPOINTS` (the Hydra group ``endpoint`` is
made from it). The kind says what a request adds for that server (a fixed answer length, no
prompt cache) and how its own timings are read; the HTTP client (:mod:`.client`) is shared.

The endpoint's part of a point's plan is :func:`plan_part` (``bench.measure.plan``).
"""
import importlib
import pkgutil

from .base import ENDPOINTS, EndpointKind, EndpointPart, get_kind, plan_part  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "client", "llama_server"):
        importlib.import_module(f"{__name__}.{_module.name}")
