"""Deliberate extra work inside one stage: a known slowdown, to prove that ``compare`` sees one.

``extra_work_stage`` + ``extra_work_matmuls`` run N real 256x256 fp32 matmuls inside a stage's
timed region; :func:`extra_work_ms` calibrates N against a stage's time. Never for numbers.
"""
from __future__ import annotations

import time

import torch

from ..results.records import PointConfig


def extra_operands(dev: torch.device):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=gen).to(dev), torch.randn(256, 256, generator=gen).to(dev)
    return a, b, torch.empty(256, 256, device=dev)


def extra_work(point: PointConfig, dev: torch.device):
    """``extra(stage)`` runs ``extra_work_matmuls`` real 256x256 fp32 matmuls when ``stage`` is
    ``extra_work_stage``: a fixed amount of work, so a slowdown of known size is measured, not
    edited into the numbers."""
    if not point.extra_work_stage or point.extra_work_matmuls <= 0:
        return lambda stage: None
    a, b, out = extra_operands(dev)

    def extra(stage: str) -> None:
        if stage == point.extra_work_stage:
            for _ in range(point.extra_work_matmuls):
                torch.mm(a, b, out=out)

    return extra


def extra_work_ms(threads: int, device: str = "cpu", n: int = 400) -> float:
    """Milliseconds of one unit of ``extra_work`` (one 256x256 fp32 matmul) with ``threads``
    CPU threads: to calibrate ``extra_work_matmuls`` to a wanted fraction of a stage."""
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    a, b, out = extra_operands(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(20):
        torch.mm(a, b, out=out)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        torch.mm(a, b, out=out)
    sync()
    return (time.perf_counter() - t) * 1e3 / n
