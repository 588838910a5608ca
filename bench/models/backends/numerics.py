"""The numerics check of a backend stage: its first output against eager PyTorch's, same input.

Placeholder weights make this a real check of the exported graph (random matrices, real
norms and biases): a dropped op, a wrong layout or a mis-folded constant changes the output by
O(1), while fusion and re-association in fp32 change it by ~1e-6 of its scale.

The error is measured relative to the scale of the reference, ``max|backend - eager| /
max|eager|`` (``max_rel_err``), because elementwise relative errors explode where eager's
output crosses zero. Tolerances per dtype (:data:`TOLERANCE`) are that error's ceiling; a
point above it is an ``error`` naming the stage, never a result.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .errors import BackendError

#: max |backend - eager| / max |eager| allowed, per dtype: fp32 leaves room for reordered sums
#: over ~1e3-1e4 terms through 24-40 layers (measured: <= 1e-5 here), the half types for their
#: 8 (bf16) and 11 (fp16) significand bits.
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2}


def compare(out: torch.Tensor, ref: torch.Tensor, dtype: str, backend: str, stage: str,
            atol: Optional[float] = None) -> Dict[str, float]:
    tol = float(atol) if atol is not None else TOLERANCE[dtype]
    if tuple(out.shape) != tuple(ref.shape):
        raise BackendError(f"{backend} {stage}: output shape {tuple(out.shape)} differs from eager's {tuple(ref.shape)}")
    o, r = out.detach().double(), ref.detach().double()
    if not torch.isfinite(o).all():
        raise BackendError(f"{backend} {stage}: non-finite values in the output on the first call")
    diff = (o - r).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(r.abs().max()) if r.numel() else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if rel > tol:
        raise BackendError(f"{backend} {stage}: output disagrees with eager PyTorch: max abs error {max_abs:.3g} "
                           f"= {rel:.3g} of the output's scale {scale:.3g}, tolerance {tol:g} ({dtype})")
    return {"max_abs_err": max_abs, "max_rel_err": rel, "tolerance": tol, "ref_scale": scale}
