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
import uuid
from pathlib import Path
from typing import Any, Dict, List

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import BenchConfig, ConfigError, register_configs, validate
from .records import STATUS_OK, STATUS_SKIPPED
from .resources import sweeps_dir
from .store import ResultsStore, ResultsWriteError

log = logging.getLogger("fastvlm_bench")
SWEEPS_DIR = str(sweeps_dir())  # the checkout's sweeps/, or the copy bundled in the wheel

register_configs()

#: ``${fvb_run_id:}`` in sweeps/config.yaml: makes each run's hydra/ folder unique, so two
#: sweeps started in the same second on one results folder (or Slurm arrays submitted from
#: two hosts) never write into the same hydra/<timestamp>/ folder. Cached like Hydra's
#: ``now``, so every job of a multirun (and submitit's pickled jobs) sees the same value.
_RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
OmegaConf.register_new_resolver("fvb_run_id", lambda: _RUN_ID, use_cache=True, replace=True)

#: Summary statuses of points that leave no record of this run.
STATUS_CLAIMED = "claimed"  # another process was measuring it
STATUS_UNAVAILABLE = "unavailable"  # its device does not exist on this machine


def _to_bench_config(cfg: DictConfig) -> BenchConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


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
    from .scenario import DeviceUnavailableError, PointInterrupted, measure_point, resolve_point

    validate(cfg)
    check_results_dir(cfg)
    try:
        point = resolve_point(cfg)
    except DeviceUnavailableError as exc:
        if not in_grid:
            raise
        # not recorded: another machine sharing this folder may have the device
        log.warning("skipped (not recorded): %s@%spx + %s: %s", cfg.encoder.name, cfg.resolution, cfg.llm.name, exc)
        return {"point_id": None, "status": STATUS_UNAVAILABLE, "resumed": False, "message": str(exc)}
    store = ResultsStore(Path(cfg.results_dir) / cfg.name)
    pid = point.point_id()
    if not cfg.force and store.is_done(pid):
        rec = store.get(pid)
        log.info("already measured (%s, %s): %s; use force=true to re-measure", rec.status, pid, point.label())
        return {"point_id": pid, "status": rec.status, "resumed": True}
    claimed, owner = store.claim(pid)
    if not claimed:
        who = owner.describe() if owner else "another process"
        log.warning("skipped: %s (%s) is being measured by %s; re-run when it ends", point.label(), pid, who)
        return {"point_id": pid, "status": STATUS_CLAIMED, "resumed": False, "message": f"claimed by {who}"}
    try:
        if not cfg.force and store.is_done(pid):  # finished by another process since the check above
            rec = store.get(pid)
            log.info("already measured (%s, %s): %s", rec.status, pid, point.label())
            return {"point_id": pid, "status": rec.status, "resumed": True}
        try:
            with _interrupt_on_sigterm():
                rec = measure_point(cfg, point)
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
        log.info("%s: %d tokens | vision %.1f ms | projector %.2f ms | prefill %.1f ms | TTFT %.1f ms (n=%d) -> %s",
                 point.label(), rec.visual_tokens, s["vision_latency"].median, s["projector"].median,
                 s["prefill"].median, s["ttft"].median, s["ttft"].n, path)
    else:
        log.warning("%s: %s: %s", point.label(), rec.status, rec.message)
    return {"point_id": pid, "status": rec.status, "resumed": False}


def _grid_size(config: DictConfig) -> int:
    """How many points this Hydra run has (1 for a single run); 2 when it cannot tell."""
    from hydra.types import RunMode

    from .progress import count_jobs

    try:
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return 1
        params = hc.sweeper.get("params") or {}
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=False)
        return count_jobs(params, list(hc.overrides.task))
    except Exception:  # unknown sweeper: treat as a grid (never abort other points)
        return 2


#: Points in this process's Hydra run, set by ValidateCallback when the run starts (a job's
#: own config only holds its own overrides). None in a launcher's worker process.
_GRID_SIZE = None


def _in_grid() -> bool:
    """True when this job is one of several points of a run; unknown (a submitit worker)
    counts as a grid, so one point's problem never aborts the others."""
    return _GRID_SIZE is None or _GRID_SIZE > 1


def fail(message: str, code: int) -> None:
    """The one-line error of every sweep failure: ``fastvlm-bench: error: ...``, exit ``code``."""
    print(f"fastvlm-bench: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


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
        return run_point(_to_bench_config(cfg), in_grid=_in_grid())
    except ConfigError as exc:
        fail(str(exc), 2)
    except ResultsWriteError as exc:
        fail(str(exc), 1)
    return {}  # unreachable: fail() exits


class ValidateCallback(Callback):
    """Before Hydra makes any folder: reject a bad name or results folder and a missing
    checkpoint, so a rejected run leaves nothing behind (``name=../x`` would otherwise get
    its hydra/ folder outside results_dir before the job's own validation)."""

    def _check(self, config: DictConfig) -> None:
        global _GRID_SIZE
        _GRID_SIZE = _grid_size(config)
        params = config.hydra.sweeper.get("params") or {}
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=False)
        swept = set(params or {})
        for ov in config.hydra.overrides.task:
            key, _, value = str(ov).partition("=")
            if "," in value:
                swept.add(key.lstrip("+~"))
        try:
            # the composed config holds every value but the swept ones (those keep their valid
            # config-file values), so this rejects a bad non-swept value before any folder exists
            base = config.copy()
            with open_dict(base):
                del base["hydra"]
            validate(_to_bench_config(base))
            name, results_dir = str(config.name), str(config.results_dir)
            if "name" not in swept and "results_dir" not in swept:
                cfg = BenchConfig(name=name, results_dir=results_dir)
                check_results_dir(cfg)
            ckpt = config.get("checkpoint")
            if ckpt and "checkpoint" not in swept:
                from .scenario import checkpoint_identity

                checkpoint_identity(str(ckpt))
            if "device" not in swept and _GRID_SIZE == 1:
                from .scenario import DeviceUnavailableError
                from .models.vlm import resolve_device

                try:
                    resolve_device(str(config.device))
                except ValueError as exc:
                    raise DeviceUnavailableError(str(exc)) from None
        except ConfigError as exc:
            fail(str(exc), 2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


class FinishCallback(Callback):
    """At the end of a multirun: consolidate the table, print a summary, render the report."""

    def __init__(self) -> None:
        self.unrecorded: List[str] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        rv = getattr(job_return, "_return_value", None)
        if isinstance(rv, dict) and rv.get("status") in (STATUS_CLAIMED, STATUS_UNAVAILABLE):
            self.unrecorded.append(f"  {rv['status']}: {config.encoder.name}@{config.resolution} "
                                   f"{config.llm.name}: {rv.get('message', '')}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.results_dir) / config.name
        store = ResultsStore(root)
        try:
            df = store.consolidate()
        except ResultsWriteError as exc:
            fail(str(exc), 1)
        for path, msg in store.corrupt:
            print(f"fastvlm-bench: warning: corrupt record {msg}", file=sys.stderr)
        if self.unrecorded:
            print(f"fastvlm-bench: {len(self.unrecorded)} point(s) not measured by this run:", file=sys.stderr)
            for line in self.unrecorded:
                print(line, file=sys.stderr)
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
