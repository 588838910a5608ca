"""The Hydra application: one call of :func:`run` per sweep point.

``fastvlm-bench [overrides]`` composes ``sweeps/config.yaml`` (which defaults to a multirun of
the ``default`` sweep), and Hydra's launcher calls :func:`run` once per point, in-process or
through any launcher plugin (``hydra/launcher=submitit_local`` / ``submitit_slurm``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import BenchConfig, ConfigError, register_configs, validate
from .records import STATUS_OK
from .store import ResultsStore

log = logging.getLogger("fastvlm_bench")
SWEEPS_DIR = str(Path(__file__).resolve().parent.parent / "sweeps")

register_configs()


def _to_bench_config(cfg: DictConfig) -> BenchConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def run_point(cfg: BenchConfig) -> Dict[str, Any]:
    """Measure one point unless the store already has it; returns a small summary."""
    from .scenario import PointInterrupted, measure_point, resolve_point

    validate(cfg)
    point = resolve_point(cfg)
    store = ResultsStore(Path(cfg.results_dir) / cfg.name)
    pid = point.point_id()
    if not cfg.force and store.is_done(pid):
        rec = store.get(pid)
        log.info("already measured (%s, %s): %s; use force=true to re-measure", rec.status, pid, point.label())
        return {"point_id": pid, "status": rec.status, "resumed": True}
    try:
        with _interrupt_on_sigterm():
            rec = measure_point(cfg, point)
    except PointInterrupted as exc:
        _record_interruption(cfg, point, store, exc)
        raise
    _test_write_barrier()
    path = store.put(rec)
    store.consolidate()
    if rec.status == STATUS_OK:
        s = rec.stages
        log.info("%s: %d tokens | vision %.1f ms | projector %.2f ms | prefill %.1f ms | TTFT %.1f ms (n=%d) -> %s",
                 point.label(), rec.visual_tokens, s["vision_latency"].median, s["projector"].median,
                 s["prefill"].median, s["ttft"].median, s["ttft"].n, path)
    else:
        log.warning("%s: %s: %s", point.label(), rec.status, rec.message)
    return {"point_id": pid, "status": rec.status, "resumed": False}


@contextlib.contextmanager
def _interrupt_on_sigterm():
    """While measuring, SIGTERM raises ``PointInterrupted`` (the previous handler is restored).

    submitit installs a handler that only logs SIGTERM (Slurm then kills the job after
    KillWait, possibly mid-point); ours ends the point cleanly instead. Writing the record
    after the measurement runs under the previous handler: the atomic write finishes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    from .scenario import PointInterrupted

    def handler(signum, frame):
        raise PointInterrupted(f"interrupted by {signal.Signals(signum).name} while measuring "
                               "(preempted, cancelled or requeued); re-measured on the next run")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_interruption(cfg: BenchConfig, point, store: ResultsStore, exc: Exception) -> None:
    """An ``error`` record saying the point was interrupted, unless a finished record exists."""
    from .environment import environment
    from .records import STATUS_ERROR, Record
    from .scenario import _now

    log.warning("%s: %s", point.label(), exc)
    if store.is_done(point.point_id()):  # force=true re-measure: keep the finished record
        return
    rec = Record(sweep=cfg.name, config=point, status=STATUS_ERROR, message=str(exc), env=environment(),
                 timestamp=_now())
    store.put(rec)


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


@hydra.main(version_base="1.3", config_path=SWEEPS_DIR, config_name="config")
def run(cfg: DictConfig) -> Dict[str, Any]:
    try:
        return run_point(_to_bench_config(cfg))
    except ConfigError as exc:
        print(f"fastvlm-bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2)


class FinishCallback(Callback):
    """At the end of a multirun: consolidate the table, print a summary, render the report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.results_dir) / config.name
        store = ResultsStore(root)
        df = store.consolidate()
        if df.empty:
            print(f"fastvlm-bench: no records in {root}", file=sys.stderr)
            return
        counts = df["status"].value_counts().to_dict()
        print(f"\nfastvlm-bench: {len(df)} records in {root}/results.csv ({counts})", file=sys.stderr)
        cols = ["encoder", "resolution", "llm", "dtype", "visual_tokens", "vision_latency_ms", "projector_ms",
                "prefill_ms", "ttft_ms", "status"]
        with_cols = [c for c in cols if c in df]
        print(df[with_cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=sys.stderr)
        for _, row in df[df["status"] != STATUS_OK].iterrows():
            print(f"  {row['status']}: {row['encoder']}@{row['resolution']} {row['llm']}: {row['message']}",
                  file=sys.stderr)
        if config.get("report", False):
            try:
                from .report.render import render_report

                out = render_report(root, Path(config.reports_dir) / config.name)
                print(f"fastvlm-bench: report written to {out}", file=sys.stderr)
            except Exception as exc:  # a report problem must not lose the measurements
                print(f"fastvlm-bench: report not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
