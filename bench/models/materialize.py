"""Build models without paying for random initialisation, then put real memory under them.

A 7B model initialised on the CPU with the usual ``reset_parameters`` takes minutes. Latency
does not depend on weight values, so we construct every model with its *parameters* on the
meta device (buffers such as rotary frequencies and BatchNorm statistics stay real, they are
small and must be correct), count parameters and FLOPs there for free, and only then allocate
parameters directly on the target device and fill them with cheap placeholder values.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Dict, Iterator

import torch
from torch import nn


#: The patch of ``nn.Module.register_parameter`` below is process-wide (PyTorch offers no
#: per-thread hook for parameter creation), so it is installed while any thread is inside
#: :func:`meta_parameters` and acts only for the threads that are (a thread-local depth):
#: another thread building a real model meanwhile gets real parameters. The lock guards the
#: install/uninstall and the count of threads inside.
_lock = threading.Lock()
_inside = threading.local()
_users = 0
_saved_register_parameter = None


def _register_parameter(module: nn.Module, name: str, param) -> None:
    _saved_register_parameter(module, name, param)
    if getattr(_inside, "depth", 0) and param is not None and param.device.type != "meta" and _is_matrix(param):
        p = module._parameters[name]
        module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Inside this context, every matrix-shaped ``nn.Parameter`` is created on the meta device.

    Vectors (norm scales, biases, layer-scale gammas) are tiny and keep the values their
    module initialised them with, so residual branches keep their intended scale (e.g.
    FastViT's layer scale of 1e-5) and placeholder activations stay finite. Thread-safe: only
    the calling thread's parameters go to meta (see ``_register_parameter``); it nests.
    """
    global _users, _saved_register_parameter
    with _lock:
        if _users == 0:
            _saved_register_parameter = nn.Module.register_parameter
            nn.Module.register_parameter = _register_parameter
        _users += 1
    _inside.depth = getattr(_inside, "depth", 0) + 1
    try:
        yield
    finally:
        _inside.depth -= 1
        with _lock:
            _users -= 1
            if _users == 0:
                nn.Module.register_parameter = _saved_register_parameter


def _is_matrix(p: torch.Tensor) -> bool:
    """At least two dimensions larger than one (a (C, 1, 1) layer-scale is a vector)."""
    return sum(d > 1 for d in p.shape) >= 2


def count_parameters(model: nn.Module) -> int:
    """Parameters, counting tied tensors once."""
    seen = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """Allocate meta parameters on ``device`` in ``dtype`` with placeholder values.

    Matrices get values drawn from N(0, 1/fan_in) (keeps activations O(1) through deep stacks,
    so neither fp16 overflow nor CPU denormals distort timings), tiled
    from one random block so that filling 7B parameters costs a memory copy rather than
    billions of random draws. Vectors were kept real by :func:`meta_parameters` and are only
    moved; a vector that is still on meta gets 1 (scales) or 0 (biases) by name. Tied parameters stay tied. Floating buffers are cast to
    ``dtype`` except those a module keeps in fp32 on purpose (``inv_freq``).
    """
    pattern = _placeholder_pattern(device, dtype, seed)
    made: Dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) in made:
                module._parameters[name] = made[id(p)]
                continue
            if p.device.type == "meta":
                t = torch.empty(p.shape, device=device, dtype=dtype if p.is_floating_point() else p.dtype)
                if _is_matrix(p):
                    _fill_from_pattern(t, pattern)
                    t.mul_(1.0 / math.sqrt(max(1, p[0].numel())))  # 1/sqrt(fan_in)
                elif "bias" in name:
                    t.zero_()
                else:
                    t.fill_(1.0)
            else:
                t = p.detach().to(device=device, dtype=dtype if p.is_floating_point() else p.dtype)
            new = nn.Parameter(t, requires_grad=False)
            made[id(p)] = new
            module._parameters[name] = new
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            keep_fp32 = "inv_freq" in name or not b.is_floating_point()
            module._buffers[name] = b.to(device=device, dtype=None if keep_fp32 else dtype)
    return model


_PATTERN_NUMEL = 1 << 20


def _placeholder_pattern(device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # an odd length, so that rows of power-of-two widths do not repeat column-aligned
    return torch.randn(_PATTERN_NUMEL + 7, generator=gen).to(device=device, dtype=dtype)


def _fill_from_pattern(t: torch.Tensor, pattern: torch.Tensor) -> None:
    flat = t.view(-1)
    n, k = flat.numel(), pattern.numel()
    for start in range(0, n, k):
        stop = min(n, start + k)
        flat[start:stop].copy_(pattern[: stop - start])
