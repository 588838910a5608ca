"""A stage timer that knows nothing about models.

A workload is a callable ``step(timer)`` that wraps its parts in ``timer.stage(name)``. Each
call of ``step`` is one iteration: every stage's duration and the end-to-end spans (e.g. TTFT
from the start of one stage to the end of another) are taken from the same marks in the same
iteration, so the stages and the end-to-end time always describe the same run.

On CUDA the marks are CUDA events recorded on the current stream (no synchronisation between
stages, so the end-to-end time is the real pipelined time) and the iteration synchronises
once at its end; on the CPU they are ``time.perf_counter`` readings.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from ..records import StageStats
from .stats import summarize


class _CpuClock:
    def mark(self):
        return time.perf_counter()

    def sync(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(a, b) -> float:
        return (b - a) * 1e3


class _CudaClock:
    def __init__(self, device: torch.device):
        self.device = device

    def mark(self):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def elapsed_ms(a, b) -> float:
        return a.elapsed_time(b)


@dataclass
class TimingResult:
    stages: Dict[str, StageStats]
    timed_s: float  # wall time spent inside timed iterations (measurement loop only)
    warmup_s: float
    iterations: int


@dataclass
class StageTimer:
    """Collects per-stage samples over iterations. ``spans`` maps a name to (first, last) stage."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    spans: Dict[str, Tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        self.device = torch.device(self.device)
        self.clock = _CudaClock(self.device) if self.device.type == "cuda" else _CpuClock()
        self.samples: Dict[str, List[float]] = {}
        self._marks: Optional[Dict[str, Tuple[object, object]]] = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._marks is None:  # called outside an iteration: run untimed
            yield
            return
        begin = self.clock.mark()
        yield
        self._marks[name] = (begin, self.clock.mark())

    @contextlib.contextmanager
    def iteration(self, record: bool = True) -> Iterator[None]:
        self._marks = {}
        try:
            yield
            self.clock.sync()
            if record:
                for name, (a, b) in self._marks.items():
                    self.samples.setdefault(name, []).append(self.clock.elapsed_ms(a, b))
                for span, (first, last) in self.spans.items():
                    if first in self._marks and last in self._marks:
                        ms = self.clock.elapsed_ms(self._marks[first][0], self._marks[last][1])
                        self.samples.setdefault(span, []).append(ms)
        finally:
            self._marks = None

    def run(self, step: Callable[["StageTimer"], object], warmup: int = 1, min_repeats: int = 5,
            min_seconds: float = 0.0, max_repeats: int = 10_000, max_seconds: Optional[float] = None,
            on_iteration: Optional[Callable[[int], None]] = None) -> TimingResult:
        """Warm up, then repeat until at least ``min_repeats`` AND ``min_seconds`` are reached.

        ``max_repeats``/``max_seconds`` cap the loop (never below ``min_repeats``).
        """
        if warmup < 0 or min_repeats < 1 or min_seconds < 0 or max_repeats < min_repeats:
            raise ValueError(f"bad timing knobs: warmup={warmup} min_repeats={min_repeats} "
                             f"min_seconds={min_seconds} max_repeats={max_repeats}")
        t0 = time.perf_counter()
        for _ in range(warmup):
            with self.iteration(record=False):
                step(self)
        t1 = time.perf_counter()
        n = 0
        while True:
            with self.iteration(record=True):
                step(self)
            n += 1
            if on_iteration:
                on_iteration(n)
            elapsed = time.perf_counter() - t1
            if n >= max_repeats or (max_seconds is not None and elapsed >= max_seconds and n >= min_repeats):
                break
            if n >= min_repeats and elapsed >= min_seconds:
                break
        t2 = time.perf_counter()
        stages = {name: summarize(vals) for name, vals in self.samples.items()}
        return TimingResult(stages=stages, timed_s=t2 - t1, warmup_s=t1 - t0, iterations=n)
