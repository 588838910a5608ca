"""Measure one sweep point: claim it, time it, write its record, release it.

:func:`run_point` is what the Hydra app (:mod:`bench.app`) calls once per point. Around the
measurement (:mod:`bench.measure.scenario`) it handles what a shared results folder and a
cluster need: a point claimed by another live process is skipped, SIGTERM (preemption),
SIGINT (Ctrl-C) and SIGHUP (a closed terminal) end the point with an ``error`` record naming the
signal instead of a half-written one (:mod:`bench.measure.interrupt`), and a test-only
barrier lets N processes write their records at the same moment.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict

from ..config import BenchConfig, ConfigError, unusual, validate
from ..results.records import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, Record
from ..results.store import ResultsStore
from .allocator import current as current_allocator
from . import allocator
from .allocator import now_installed
from .interrupt import PointInterrupted, interrupt_on_signals

log = logging.getLogger("fastvlm_bench")


#: Summary statuses of points that leave no record of this run.
STATUS_CLAIMED = "claimed"  # another process was measuring it
STATUS_UNAVAILABLE = "unavailable"  # its device does not exist on this machine
STATUS_OVER_BUDGET = "over_budget"  # batch ladder: the half batch already took most of the budget


def ladder_over_budget(cfg: BenchConfig, point, store: ResultsStore) -> str:
    """Why a batch-ladder point (``batch_ladder=true``) is not worth measuring, or ``""``.

    The ladder doubles the batch; the nearest smaller batch of the same point in the store
    (half, a quarter, ...: a skipped rung leaves no record) tells what one iteration costs, and
    this batch's iteration is predicted from it in proportion to the batch (batched work grows
    at most linearly). When ``timing.min_repeats`` such iterations
    exceed the per-point budget (``timing.max_seconds``), the stopping rule could not time the
    repeats it needs within the budget: the budget ends the ladder. So does a half batch that
    was itself skipped (out of memory, checked before allocation). Not recorded: a later run
    with a larger budget measures it.
    """
    import dataclasses

    smaller = point.batch_size // 2
    while smaller >= 1:  # the nearest smaller batch of the ladder in the store (1, 2, 4, ...)
        rec = store.get(dataclasses.replace(point, batch_size=smaller).point_id())
        if rec is not None:
            break
        smaller //= 2
    else:
        return ""  # nothing smaller measured (yet): nothing known, measure this one
    if rec.status != STATUS_OK:
        return f"batch {smaller} was {rec.status}: {rec.message}"
    stage = rec.stages.get(cfg.timing.target_stage) or rec.stages.get("e2e") or rec.stages.get("ttft")
    if stage is None:
        return ""
    predicted = stage.median / 1e3 * point.batch_size / smaller * cfg.timing.min_repeats
    if predicted > cfg.timing.max_seconds:
        return (f"batch {smaller} took {stage.median / 1e3:.2f} s an iteration: {cfg.timing.min_repeats} "
                f"iterations of batch {point.batch_size} would take about {predicted:.1f} s, over the budget "
                f"timing.max_seconds={cfg.timing.max_seconds:g}")
    return ""


def check_results_dir(cfg: BenchConfig) -> None:
    """Bad places to write results, as config errors (before Hydra makes any folder)."""
    if not cfg.name or cfg.name in (".", "..") or "/" in cfg.name or os.sep in cfg.name or cfg.name.startswith("."):
        raise ConfigError(f"name must be a plain folder name, got {cfg.name!r}")
    root = Path(cfg.results_dir)
    for p in (root, root / cfg.name):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"results folder {p} exists and is not a folder")


def run_point(cfg: BenchConfig, in_grid: bool = True) -> Dict[str, Any]:
    """Measure one point unless the store already has it; returns a small summary.

    The point is claimed (``records/<id>.claim``) before it is measured: a second sweep on
    the same folder skips a point another live process is measuring, rather than timing it
    at the same time on a shared machine and overwriting the first one's record.
    """
    from .plan import DeviceUnavailableError, resolve_plan
    from .scenario import measure_point

    validate(cfg)
    check_results_dir(cfg)
    for text in unusual(cfg):
        log.warning("unusual setting: %s", text)
    try:
        plan = resolve_plan(cfg)  # the config's one reading: the measurement reads the plan
    except DeviceUnavailableError as exc:
        if not in_grid:
            raise
        # not recorded: another machine sharing this folder may have the device
        log.warning("skipped (not recorded): %s@%spx + %s: %s", cfg.encoder.name, cfg.resolution, cfg.llm.name, exc)
        return {"point_id": None, "status": STATUS_UNAVAILABLE, "resumed": False, "message": str(exc)}
    point = plan.point
    store = ResultsStore(Path(cfg.results_dir) / cfg.name)
    pid = point.point_id()
    if not cfg.force and store.is_done(pid) and not now_installed(store.get(pid)):
        rec = store.get(pid)
        log.info("already measured (%s, %s): %s; use force=true to re-measure", rec.status, pid, point.label())
        return {"point_id": pid, "status": rec.status, "resumed": True}
    over = ladder_over_budget(cfg, point, store) if cfg.batch_ladder else None
    if over:
        log.warning("skipped (not recorded): %s: %s", point.label(), over)
        return {"point_id": pid, "status": STATUS_OVER_BUDGET, "resumed": False, "message": over}
    if plan.hf is not None:
        # the processor is loaded only here, so a point measured already never loads it; its checks
        # (pixel bounds) still come before anything is claimed or built: one line, exit 2
        plan.hf.processor  # noqa: B018
    if point.allocator != current_allocator():  # measured by a process under its allocator (issue 33)
        return run_under_allocator(cfg, point, store, in_grid)
    claimed, owner = store.claim(pid)
    if not claimed:
        who = owner.describe() if owner else "another process"
        log.warning("skipped: %s (%s) is being measured by %s; re-run when it ends", point.label(), pid, who)
        return {"point_id": pid, "status": STATUS_CLAIMED, "resumed": False, "message": f"claimed by {who}"}
    try:
        if not cfg.force and store.is_done(pid) and not now_installed(store.get(pid)):  # finished since the check above
            rec = store.get(pid)
            log.info("already measured (%s, %s): %s", rec.status, pid, point.label())
            return {"point_id": pid, "status": rec.status, "resumed": True}
        try:
            with interrupt_on_signals():
                rec = measure_point(plan)
        except PointInterrupted as exc:
            _record_interruption(cfg, point, store, exc)
            raise
        _test_write_barrier()
        path = store.put(rec)
    finally:
        store.release(pid)
    store.consolidate()
    if rec.status == STATUS_OK:
        s = rec.stages
        if point.endpoint:
            from .endpoint_point import log_summary

            log.info("%s: %s -> %s", point.label(), log_summary(rec), path)
        elif "ttft" in s:
            log.info("%s: %d tokens | vision %.1f ms | projector %.2f ms | prefill %.1f ms | TTFT %.1f ms (n=%d) -> %s",
                     point.label(), rec.visual_tokens, s["vision_latency"].median, s["projector"].median,
                     s["prefill"].median, s["ttft"].median, s["ttft"].n, path)
        else:  # encoder only (llm=none)
            log.info("%s: %d tokens | vision %.1f ms (n=%d), encoder only -> %s", point.label(), rec.visual_tokens,
                     s["vision_latency"].median, s["vision_latency"].n, path)
    else:
        log.warning("%s: %s: %s", point.label(), rec.status, rec.message)
    return {"point_id": pid, "status": rec.status, "resumed": False}


def fail(message: str, code: int) -> None:
    """The one-line error of every sweep failure: ``fastvlm-bench: error: ...``, exit ``code``."""
    try:
        print(f"fastvlm-bench: error: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # SIGHUP: the terminal is gone; the exit status still says it
        pass
    raise SystemExit(code)


def _record_interruption(cfg: BenchConfig, point, store: ResultsStore, exc: Exception) -> None:
    """An ``error`` record saying the point was interrupted, unless a finished record exists."""
    from .environment import environment
    from .scenario import _now

    log.warning("%s: %s", point.label(), exc)
    if store.is_done(point.point_id()):  # force=true re-measure: keep the finished record
        return
    rec = Record(sweep=cfg.name, config=point, status=STATUS_ERROR, message=str(exc), env=environment(),
                 timestamp=_now())
    store.put(rec)
    store.consolidate()  # the sweep may end here: its table must list what it has


#: Test-only knob: ``DIR:N`` makes each point, just before it writes its record, touch a file in
#: DIR and wait until N points have arrived, so that N processes write at the same moment.
TEST_WRITE_BARRIER_ENV = "FASTVLM_BENCH_TEST_WRITE_BARRIER"


def _test_write_barrier(timeout_s: float = 300.0) -> None:
    spec = os.environ.get(TEST_WRITE_BARRIER_ENV)
    if not spec:
        return
    folder, n = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{socket.gethostname()}-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(Path(folder).iterdir())) < int(n):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{TEST_WRITE_BARRIER_ENV}: fewer than {n} points arrived in {timeout_s:.0f} s")
        time.sleep(0.01)


def run_under_allocator(cfg, point, store, in_grid: bool) -> Dict[str, object]:
    """Measure ``point`` in a child process started under its allocator, through the real CLI
    (``python -m bench sweep=none hydra.mode=RUN`` + every field of ``cfg``), which claims,
    measures and writes the record as any process does; returns the runner's summary.

    Every launcher gets the same: the basic launcher's driver (a sweep over allocators), a
    ``timing.turns`` party, a submitit/Slurm worker (started by submitit, not by our CLI). An
    allocator that is not installed gives a ``skipped`` record naming it (in a grid) or the
    one-line error (a single point)."""
    import logging
    import subprocess


    log = logging.getLogger("fastvlm_bench")
    pid = point.point_id()
    try:
        env = allocator.child_env(point.allocator)
    except allocator.AllocatorError as exc:
        if not in_grid:
            raise ConfigError(str(exc)) from None
        from .environment import environment
        from .scenario import _now

        log.warning("skipped: %s: %s", point.label(), exc)
        store.put(Record(sweep=cfg.name, config=point, status=STATUS_SKIPPED, message=allocator.ABSENT + str(exc),
                         env=environment(), timestamp=_now()))
        store.consolidate()
        return {"point_id": pid, "status": STATUS_SKIPPED, "resumed": False, "message": str(exc)}
    args = [sys.executable, "-m", "bench", "sweep=none", "hydra.mode=RUN", *allocator.cli_overrides(cfg)]
    log.info("%s: measured by a process under allocator=%s (this one runs under %s)", point.label(),
             point.allocator, allocator.current())
    env.pop(allocator.REEXEC_MARK, None)
    proc = subprocess.Popen(args, env=env)
    try:
        rc = proc.wait()
    except BaseException:  # a signal ended this process's wait: end the child the same way
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    rec = store.get(pid)
    if rc != 0:
        msg = f"the process measuring {point.label()} under allocator={point.allocator} exited with status {rc}"
        if not in_grid:
            fail(msg, rc)
        log.warning("%s", msg)
    return {"point_id": pid, "status": rec.status if rec else "error", "resumed": False}
