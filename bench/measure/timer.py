"""A stage timer that knows nothing about models, with a stopping rule worth its name.

A workload is a callable ``step(timer)`` that wraps its parts in ``timer.stage(name)``. Each
call of ``step`` is one iteration: every stage's duration and the end-to-end spans (e.g. TTFT
from the start of one stage to the end of another) are taken from the same marks in the same
iteration, so the stages and the end-to-end time always describe the same run.

Clocks. On CUDA the marks are CUDA events recorded on the *target* device's current stream
(not whatever device happens to be current), and the iteration synchronises that device once
at its end; on the CPU they are ``time.perf_counter`` readings. Two modes:

- ``pipelined`` (default): no synchronisation between stages, so the end-to-end time is the
  real pipelined time a user sees;
- ``isolated``: the device is synchronised before and after every stage, so each stage's time
  is its standalone latency, as the FastVLM paper reports vision-encoder latency.

Stopping rule (:class:`bench.config.TimingConf`, the ``timing.*`` knobs), after MLPerf LoadGen's minimum duration / minimum count and
early stopping:

1. Warm up for at least ``warmup`` iterations and ``warmup_seconds``, then until the median of
   the last ``stable_window`` iterations is within ``stable_tol`` of the median of the window
   before it (caches, allocator, thread pools and clocks have settled), or
   ``warmup_max_seconds`` has passed.
2. Time at least ``min_repeats`` iterations and ``min_seconds``; then stop as soon as the 95 %
   interval of the median of ``target_stage`` is within +-``target`` of the median
   (``stop_reason="target"``), or when ``max_seconds`` (the per-point budget) or
   ``max_repeats`` is reached (``"budget"``, ``"max_repeats"``).

Turns (``pass_turn``, see :mod:`bench.measure.turns`): between blocks of about
``turn_seconds`` (warm-up and timed alike) the timer lets other processes have the machine,
then runs one untimed iteration (the caches are cold); neither is part of any duration or
budget. The timed loop spans at least ``turn_blocks`` turns, so that it overlaps the other
process's and shares its drift. When a partner that had taken turns stops taking them (it has
finished: its own target was reached first), the loop stops too, at its target if reached, else
with ``stop_reason="partner_left"``: iterations timed alone after that do not share the
partner's drift, yet ``compare`` would pair them with its iterations. (An A/A pair in
``tests/test_rigor.py`` read a 20 % "regression" that way: the side that went on alone for 2 s
more read 4.3 ms while paired and 5-7 ms alone.)

Steps inside a stage (:meth:`StageTimer.step`): a stage that repeats one unit of work (the
decode stage's tokens) marks the end of each unit; the iteration then also yields the
durations between consecutive marks (the first from the stage's begin), kept raw per
iteration in ``TimingResult.steps``, and a span may end at a step (``("decode", 0)``: the end
of the first step, for the time to second token). The marks are the same clock's, in the same
iteration, as the stage's own begin and end, so the steps sum to the stage.

The garbage collector is collected and disabled around the timed loop (a collection inside
an iteration is noise that has nothing to do with the model). An optional per-iteration
``probe`` (``begin()`` / ``end() -> dict``) runs outside the marks, e.g. CPU time against wall
time, or GPU clocks and throttle reasons.
"""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union

import numpy as np
import torch

from ..config import TimingConf as StopRule
from ..results.records import StageStats
from .interrupt import raise_if_pending
from .stats import summarize

TIMING_MODES = ("pipelined", "isolated")


class _CpuClock:
    def mark(self):
        return time.perf_counter()

    def sync(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(a, b) -> float:
        return (b - a) * 1e3


class _CudaClock:
    """Events on the target device's current stream; ``torch.cuda.Event.record()`` without a
    stream would use the *current device's* stream, which is wrong for ``cuda:N``."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def elapsed_ms(a, b) -> float:
        return a.elapsed_time(b)


class IterationProbe(Protocol):
    def begin(self) -> None: ...

    def end(self) -> Dict[str, Any]: ...


@dataclass
class TimingResult:
    stages: Dict[str, StageStats]
    timed_s: float  # wall time spent inside timed iterations (measurement loop only)
    warmup_s: float
    iterations: int
    warmup_iterations: int = 0
    warmup_reason: str = ""  # stable | max_seconds
    stop_reason: str = ""  # target | budget | max_repeats
    mode: str = "pipelined"
    probes: List[Dict[str, Any]] = field(default_factory=list)  # one per timed iteration
    #: stage -> one list per timed iteration of its step durations (ms), for stages that mark steps
    steps: Dict[str, List[List[float]]] = field(default_factory=dict)

    def fill_run_fields(self, rec: Any) -> None:
        """Copy how the run went onto a record (``bench.results.records.Record``): its timed and
        warm-up seconds, why it stopped and how it warmed up. Every kind of point (composed,
        ``hf=``, ``endpoint=``) records the same five fields from its timer."""
        rec.timed_s, rec.warmup_s = self.timed_s, self.warmup_s
        rec.stop_reason, rec.warmup_iterations, rec.warmup_reason = (self.stop_reason, self.warmup_iterations,
                                                                     self.warmup_reason)


_frozen = False


def freeze_long_lived_objects() -> None:
    """Move every object alive now into the collector's permanent generation, once a process.

    Called before the first point builds anything: what exists then (torch, transformers,
    timm and Hydra, about 430 000 objects) lives as long as the process, and the collection
    before each timed loop (:meth:`StageTimer.run`) then scans only what came after, 0.02 s
    instead of 0.11 s here. Frozen objects freed by reference counting are still freed; only
    a reference cycle among them would outlive its use, and models are built after this.
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def _stable(times: List[float], window: int, tol: float) -> bool:
    if len(times) < 2 * window:
        return False
    last = float(np.median(times[-window:]))
    prev = float(np.median(times[-2 * window:-window]))
    return abs(last - prev) <= tol * prev


#: A span's end: a stage's end, or ``(stage, k)``: the end of that stage's step ``k`` (0-based).
SpanEnd = Union[str, Tuple[str, int]]


@dataclass
class StageTimer:
    """Collects per-stage samples over iterations. ``spans`` maps a name to (first stage, end):
    from the first stage's begin to the end stage's end (or to the end of one of its steps)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    spans: Dict[str, Tuple[str, SpanEnd]] = field(default_factory=dict)
    mode: str = "pipelined"

    def __post_init__(self):
        if self.mode not in TIMING_MODES:
            raise ValueError(f"timing mode must be one of {', '.join(TIMING_MODES)}, got {self.mode!r}")
        self.device = torch.device(self.device)
        self.clock = _CudaClock(self.device) if self.device.type == "cuda" else _CpuClock()
        self.samples: Dict[str, List[float]] = {}
        self.step_samples: Dict[str, List[List[float]]] = {}  # stage -> per recorded iteration, step ms
        self.last_steps: Dict[str, List[float]] = {}  # the latest iteration's step durations (ms)
        self._marks: Optional[Dict[str, Tuple[object, object]]] = None
        self._steps: Dict[str, List[object]] = {}
        self._open: List[str] = []  # stages entered and not yet left (innermost last)
        self._begins: Dict[str, object] = {}  # this iteration's first begin mark per stage
        self._given: Dict[str, float] = {}  # this iteration's durations given by :meth:`record`
        self._given_steps: Dict[str, List[float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._marks is None:  # called outside an iteration: run untimed
            yield
            return
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def begin(self, name: str) -> None:
        """Open stage ``name`` (no-op outside an iteration): :meth:`stage` without a ``with``
        block, for marks that come from module hooks inside a model's own ``forward``
        (``bench.models.hf.stages``). A stage opened twice in one iteration (a tower called per
        image) keeps its first begin, so it spans from its first call to its last end."""
        if self._marks is None:
            return
        if self.mode == "isolated":
            self.clock.sync()
        mark = self.clock.mark()
        self._open.append(name)
        self._begins.setdefault(name, mark)

    def end(self, name: str) -> None:
        """Close stage ``name`` opened by :meth:`begin` (no-op outside an iteration)."""
        if self._marks is None or name not in self._open:
            return
        mark = self.clock.mark()
        if self.mode == "isolated":
            self.clock.sync()
        self._open.remove(name)
        self._marks[name] = (self._begins[name], mark)

    def step(self) -> None:
        """Mark the end of one step of the innermost open stage (no-op outside an iteration).

        No synchronisation, even in ``isolated`` mode: a step is part of its stage's work, and
        on CUDA the event is recorded on the stream after the step's kernels. A step that copies
        its result to the host (a decoded token, as a server streams it) has synchronised anyway.
        """
        if self._marks is None or not self._open:
            return
        self._steps.setdefault(self._open[-1], []).append(self.clock.mark())

    def record(self, name: str, ms: float, steps: Optional[List[float]] = None) -> None:
        """Give stage ``name``'s duration in this iteration (and its steps), measured by the
        workload itself (no-op outside an iteration).

        For work that is not one sequence of marks in this thread: a server's streamed answers,
        several in flight at once, each timed by its own thread on ``time.perf_counter``
        (:mod:`bench.measure.endpoint_point`); CPU clock only. The iteration keeps these values
        as it keeps the marks' durations, so the stopping rule and the statistics are the same."""
        if self._marks is None:
            return
        self._given[name] = float(ms)
        if steps is not None:
            self._given_steps[name] = [float(x) for x in steps]

    @contextlib.contextmanager
    def iteration(self, record: bool = True) -> Iterator[Dict[str, float]]:
        """One iteration; yields a dict that holds this iteration's stage times after it ends."""
        self._marks, self._steps, self._open, self._begins = {}, {}, [], {}
        self._given, self._given_steps = {}, {}
        times: Dict[str, float] = {}
        try:
            yield times
            self.clock.sync()
            for name, (a, b) in self._marks.items():
                times[name] = self.clock.elapsed_ms(a, b)
            steps: Dict[str, List[float]] = {}
            for name, marks in self._steps.items():
                edges = [self._marks[name][0], *marks]
                steps[name] = [self.clock.elapsed_ms(a, b) for a, b in zip(edges, edges[1:])]
            for span, (first, last) in self.spans.items():
                end = self._span_end(last)
                if first in self._marks and end is not None:
                    times[span] = self.clock.elapsed_ms(self._marks[first][0], end)
            times.update(self._given)
            steps.update(self._given_steps)
            self.last_steps = steps
            if record:
                for name, ms in times.items():
                    self.samples.setdefault(name, []).append(ms)
                for name, ms in steps.items():
                    self.step_samples.setdefault(name, []).append(ms)
        finally:
            self._marks, self._steps, self._open = None, {}, []

    def _span_end(self, last: SpanEnd):
        if isinstance(last, str):
            return self._marks[last][1] if last in self._marks else None
        name, k = last
        marks = self._steps.get(name, [])
        return marks[k] if -len(marks) <= k < len(marks) else None

    def run(self, step: Callable[["StageTimer"], object], rule: Optional[StopRule] = None,
            probe: Optional[IterationProbe] = None,
            on_iteration: Optional[Callable[[int], None]] = None,
            pass_turn: Optional[Callable[[], Optional[bool]]] = None) -> TimingResult:
        """Warm up until stable, then time until the target interval, the budget or the cap."""
        rule = rule or StopRule()
        bad = rule.problems()
        if bad:
            raise ValueError("bad timing rule: " + "; ".join(bad))
        paused = 0.0  # seconds spent in other processes' turns: excluded from every duration
        block_start = time.perf_counter()
        blocks = 0  # turns passed while timing
        partnered = partner_left = False  # another process took a turn; then stopped taking them

        def maybe_pass(timing: bool) -> None:
            nonlocal paused, block_start, blocks, partnered, partner_left
            if pass_turn is None or partner_left or time.perf_counter() - block_start < rule.turn_seconds:
                return
            t = time.perf_counter()
            taken = pass_turn()
            if taken:
                partnered = True
            elif taken is False and partnered:
                partner_left = True
            step(self)  # untimed: the other process has evicted the caches
            block_start = time.perf_counter()
            paused += block_start - t
            blocks += timing

        def target_ms(times: Dict[str, float]) -> float:
            return times.get(rule.target_stage, sum(times.values()))

        t0 = time.perf_counter()
        warm_times: List[float] = []
        warmup_reason = "stable"
        while True:
            with self.iteration(record=False) as times:
                step(self)
            warm_times.append(target_ms(times))
            raise_if_pending()  # a signal that landed where it could not be raised (bench.measure.interrupt)
            maybe_pass(False)
            spent = time.perf_counter() - t0 - paused
            if len(warm_times) >= rule.warmup and spent >= rule.warmup_seconds and \
                    (rule.stable_window <= 1 or _stable(warm_times, rule.stable_window, rule.stable_tol)):
                break
            if spent >= rule.warmup_max_seconds and len(warm_times) >= rule.warmup:
                warmup_reason = "max_seconds"
                break

        probes: List[Dict[str, Any]] = []
        warmup_s = time.perf_counter() - t0 - paused  # the collection below is the harness's, not warm-up
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        paused = 0.0
        t1 = time.perf_counter()
        n = 0
        try:
            while True:
                if probe is not None:
                    probe.begin()
                with self.iteration(record=True):
                    step(self)
                if probe is not None:
                    probes.append(probe.end())
                n += 1
                raise_if_pending()
                if on_iteration:
                    on_iteration(n)
                maybe_pass(True)
                elapsed = time.perf_counter() - t1 - paused
                if n >= rule.max_repeats:
                    stop_reason = "max_repeats"
                    break
                if n < rule.min_repeats or elapsed < rule.min_seconds:
                    continue
                if pass_turn is not None and not partner_left and blocks < rule.turn_blocks \
                        and elapsed < rule.max_seconds:
                    continue  # interleaved: span enough turns to share the machine's drift
                key = rule.target_stage if rule.target_stage in self.samples else next(iter(self.samples))
                ci_rel = summarize(self.samples[key], rule.confidence).ci_rel
                if ci_rel is not None and ci_rel <= rule.target:
                    stop_reason = "target"
                    break
                if partner_left:
                    stop_reason = "partner_left"
                    break
                if elapsed >= rule.max_seconds:
                    stop_reason = "budget"
                    break
        finally:
            if gc_was_enabled:
                gc.enable()
        t2 = time.perf_counter()
        stages = {name: summarize(vals, rule.confidence) for name, vals in self.samples.items()}
        return TimingResult(stages=stages, timed_s=t2 - t1 - paused, warmup_s=warmup_s, iterations=n,
                            warmup_iterations=len(warm_times), warmup_reason=warmup_reason,
                            stop_reason=stop_reason, mode=self.mode, probes=probes,
                            steps={k: [list(v) for v in vals] for k, vals in self.step_samples.items()})
