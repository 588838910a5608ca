"""Sweeps with one process per point: a real one-node Slurm cluster (``submitit_slurm``) and
``submitit_local``, through the real CLI.

The Slurm cases need a running cluster: ``bash scripts/slurm_local.sh start`` (root, Debian),
then ``python -m pytest -m slurm``. They are skipped, with the reason, where ``sinfo`` is
missing or the node is not idle. ``SLURM_CONF`` defaults to the script's
/tmp/fastvlm-slurm/slurm.conf when that file exists.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.results.records import Record
from conftest import ROOT, TINY, run_cli, start_cli

LOCAL_SLURM_CONF = Path(os.environ.get("FASTVLM_SLURM_DIR", "/tmp/fastvlm-slurm")) / "slurm.conf"
LAUNCHERS = [pytest.param("submitit_slurm", marks=pytest.mark.slurm, id="slurm"),
             pytest.param("submitit_local", id="local")]


def _slurm_env() -> dict:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if "SLURM_CONF" not in os.environ and LOCAL_SLURM_CONF.exists():
        env["SLURM_CONF"] = str(LOCAL_SLURM_CONF)
    return env


def _slurm(*args: str, check: bool = True) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=60, env={**os.environ, **_slurm_env()})
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _cluster_problem() -> str | None:
    """Why the Slurm tests cannot run here, or None."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "no Slurm client (sinfo/sbatch) on PATH; start one with `bash scripts/slurm_local.sh start`"
    # A node still "completing" the previous test's jobs becomes idle within seconds: wait for it.
    # (The sweep's driver exits as soon as its jobs' results are in, while slurmd may still be
    # ending the last job's step.)
    deadline = time.monotonic() + 60
    while True:
        try:
            p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20,
                               env={**os.environ, **_slurm_env()})
        except subprocess.TimeoutExpired:
            return "sinfo timed out: no slurmctld answers"
        states = p.stdout.split()
        if p.returncode != 0 or not states:
            return f"no Slurm cluster reachable (sinfo: {p.stderr.strip() or 'no nodes'}); " \
                   "start one with `bash scripts/slurm_local.sh start`"
        if {"idle", "mixed"} & set(states):
            return None
        if not {"completing"} & set(states) or time.monotonic() > deadline:
            return f"no idle Slurm node (sinfo states: {', '.join(states)})"
        time.sleep(0.5)


@pytest.fixture
def launcher(request):
    """Hydra overrides and environment for one launcher; Slurm jobs are cleaned up afterwards."""
    kind = request.param
    tag = f"fvb{os.getpid()}{request.node.name.split('[')[0][-12:]}"
    env = _slurm_env()
    if kind == "submitit_slurm":
        problem = _cluster_problem()
        if problem:
            pytest.skip(problem)
        args = ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=1", f"hydra.launcher.name={tag}"]
    else:
        args = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    yield kind, args, env
    if kind == "submitit_slurm":
        _slurm("scancel", "-n", tag, check=False)


def _args(name, results_dir, *extra):
    return ["-m", *TINY, "threads=1", "measure_peak=false", f"name={name}", f"results_dir={results_dir}", *extra]


def _records(root: Path):
    """Every record file parses (a half-written one would fail here); {point_id: Record}."""
    out = {}
    for path in sorted((root / "records").glob("*.json")):
        rec = Record.from_dict(json.loads(path.read_text()))
        assert path.stem == rec.point_id
        out[rec.point_id] = rec
    return out


def _submitit_jobs(root: Path):
    """Jobs that started (a log file in <sweep dir>/.submitit/<job>/): Slurm ``ARRAY_TASK`` ids or local pids."""
    return sorted({p.name for p in root.glob("hydra/*/.submitit/*") if p.is_dir() and any(p.glob("*_log.*"))})


def _wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _job_log(root: Path, job: str) -> str:
    return "".join(p.read_text(errors="replace") for p in root.glob(f"hydra/*/.submitit/{job}/*_log.*"))


def _wait_jobs_gone(kind, root, timeout=300):
    """All jobs of this sweep have ended (Slurm: not in squeue; local: processes gone)."""
    def gone():
        jobs = _submitit_jobs(root)
        if kind == "submitit_slurm":
            arrays = {j.split("_")[0] for j in jobs}
            return all(not _slurm("squeue", "-h", "-j", a, check=False).strip() for a in arrays)
        return all(not Path(f"/proc/{j}").exists() for j in jobs if j.isdigit())
    _wait_for(gone, timeout, "the sweep's jobs to end")


def _signal_job(kind, job, sig, full_cancel):
    """Slurm: scancel (TERM, then KILL after KillWait) or scancel --signal=TERM; local: the same by hand."""
    if kind == "submitit_slurm":
        if full_cancel:
            _slurm("scancel", job)
        else:
            _slurm("scancel", "--signal=TERM", job)
        return
    pid = int(job)
    os.kill(pid, sig)
    if full_cancel:
        deadline = time.time() + 5
        while time.time() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("launcher", LAUNCHERS, indirect=True)
def test_sweep_one_process_per_point(launcher, results_dir):
    kind, largs, env = launcher
    # four points: two rounds of two processes at a time (the local launcher's batch, the node's
    # two CPUs); a third round of the same (resolution=96 once) checked nothing more, 20 s a launcher
    grid = ["encoder=tiny_vit,tiny_convnext", "resolution=32,64"]
    extra = ["hydra.sweeper.max_batch_size=2"] if kind == "submitit_local" else []
    p = run_cli(_args("grid", results_dir, *grid, *largs, *extra), env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    root = results_dir / "grid"
    c = run_cli(["collect", str(root)], env=env)
    assert c.returncode == 0 and "4 records" in c.stdout, c.stdout + c.stderr
    import pandas as pd

    df = pd.read_csv(root / "results.csv")
    assert len(df) == 4 and set(df.status) == {"ok"}, df[["encoder", "resolution", "status", "message"]]
    recs = _records(root)
    assert len(recs) == 4
    assert len({r.env["host"] for r in recs.values()}) == 1  # one machine
    if kind == "submitit_slurm":
        assert df.slurm_array_job_id.nunique() == 1 and df.slurm_job_id.nunique() == 4
        assert sorted(df.slurm_array_task_id.astype(int)) == list(range(4))
        assert set(df.slurm_node) == {socket.gethostname().split(".")[0]}
        jobs = _submitit_jobs(root)
        assert len(jobs) == 4 and all(j.startswith(f"{int(df.slurm_array_job_id.iloc[0])}_") for j in jobs)
    else:
        assert df.slurm_job_id.isna().all() and df.slurm_node.isna().all()
        assert len(_submitit_jobs(root)) == 4  # four processes, one per point


def _start_sweep(args, env):
    """The sweep's driver, forked once the imports are done (tests/forkserver.py): its jobs are
    fresh processes, started by submitit or Slurm."""
    return start_cli(args, env=env)


def _interrupt_one_point_while_timing(kind, largs, env, results_dir, name, full_cancel):
    """Start a 3-point sweep, signal one job while it is timing; returns (root, args, job, driver output)."""
    args = _args(name, results_dir, "encoder=tiny_vit", "resolution=32,48,64", "timing.min_seconds=6", "timing.max_repeats=100000", *largs)
    root = results_dir / name
    proc = _start_sweep(args, env)
    try:
        # a job is timing once its log says the model is built (the FLOP pass takes milliseconds)
        job = _wait_for(lambda: next((j for j in _submitit_jobs(root) if "built tiny_vit" in _job_log(root, j)),
                                     None), 300, "a point to start timing")
        time.sleep(1.5)
        _signal_job(kind, job, signal.SIGTERM, full_cancel)
        out = "".join(proc.communicate(timeout=300))  # the driver's output and its log lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _wait_jobs_gone(kind, root)
    return root, args, job, out


def _check_interrupted_then_resumed(kind, largs, env, root, args, job, out):
    assert not list((root / "records").glob(".*.tmp")), "a half-written record was left"
    recs = _records(root)  # every file parses
    ok = {pid for pid, r in recs.items() if r.status == "ok"}
    assert len(ok) == 2, (out[-3000:], {pid: (r.status, r.message) for pid, r in recs.items()})
    bad = {pid: r for pid, r in recs.items() if r.status != "ok"}
    for r in bad.values():  # an interrupted point leaves no record, or an error record that says so
        assert r.status == "error" and "interrupted by SIGTERM" in r.message and not r.stages, r.message
    assert "Traceback" not in _job_log(root, job) or "PointInterrupted" in _job_log(root, job)
    c = run_cli(["collect", str(root)], env=env)
    assert c.returncode == 0 and f"{len(recs)} records" in c.stdout
    before = {pid: (root / "records" / f"{pid}.json").stat().st_mtime_ns for pid in ok}
    # the next run measures only the interrupted point
    p = run_cli([a for a in args if not a.startswith("timing.min_seconds")], env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    logs = "".join(_job_log(root, j) for j in _submitit_jobs(root))  # every job of both runs
    assert logs.count("already measured") == 2, logs[-3000:]
    recs = _records(root)
    assert len(recs) == 3 and {r.status for r in recs.values()} == {"ok"}
    assert all((root / "records" / f"{pid}.json").stat().st_mtime_ns == t for pid, t in before.items())
    import pandas as pd

    df = pd.read_csv(root / "results.csv")
    assert len(df) == 3 and set(df.status) == {"ok"} and sorted(df.resolution) == [32, 48, 64]
    return recs


#: Slurm only: without Slurm, "TERM, then KILL 5 s later" is a SIGTERM that the point answers
#: at once (test_preemption_sigterm_ends_the_point_cleanly[local] checks that, and everything
#: this test checks afterwards), so the KILL is never sent and a [local] case would repeat that
#: test's run (40 s of CI) without checking anything more.
@pytest.mark.parametrize("launcher", [p for p in LAUNCHERS if p.id == "slurm"], indirect=True)
def test_cancel_one_point_while_timing(launcher, results_dir):
    """scancel (TERM, then KILL after KillWait) of one array task: the others finish, no half record."""
    kind, largs, env = launcher
    root, args, job, out = _interrupt_one_point_while_timing(kind, largs, env, results_dir, "cancel",
                                                             full_cancel=True)
    _check_interrupted_then_resumed(kind, largs, env, root, args, job, out)


@pytest.mark.parametrize("launcher", LAUNCHERS, indirect=True)
def test_preemption_sigterm_ends_the_point_cleanly(launcher, results_dir):
    """SIGTERM alone (Slurm's preemption signal; submitit only logs it): the point must end at once,
    with no ok record, although nothing kills the process afterwards; the next run re-measures it."""
    kind, largs, env = launcher
    t0 = time.time()
    root, args, job, out = _interrupt_one_point_while_timing(kind, largs, env, results_dir, "preempt",
                                                             full_cancel=False)
    recs = _records(root)
    interrupted = [r for r in recs.values() if r.status == "error"]
    assert len(interrupted) == 1, {pid: (r.status, r.message) for pid, r in recs.items()}
    if kind == "submitit_slurm":
        assert interrupted[0].env["slurm_job_id"] is not None
    assert "interrupted by SIGTERM" in out  # the driver reports the failed job
    _check_interrupted_then_resumed(kind, largs, env, root, args, job, out)
    print(f"preemption test ({kind}): {time.time() - t0:.1f} s")


@pytest.mark.parametrize("launcher", LAUNCHERS, indirect=True)
def test_concurrent_writers_same_results_folder(launcher, results_dir, tmp_path):
    """Two points write their records into one folder at the same moment (a barrier holds each
    until both have arrived): both records intact, collect sees both."""
    kind, largs, env = launcher
    barrier = tmp_path / "barrier"
    env = {**env, "FASTVLM_BENCH_TEST_WRITE_BARRIER": f"{barrier}:2"}
    p = run_cli(_args("conc", results_dir, "encoder=tiny_vit,tiny_convnext", "resolution=32", *largs),
                env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list(barrier.iterdir())) == 2  # two processes met at the barrier
    root = results_dir / "conc"
    recs = _records(root)
    assert len(recs) == 2 and {r.status for r in recs.values()} == {"ok"}
    assert {r.config.encoder for r in recs.values()} == {"tiny_vit", "tiny_convnext"}
    if kind == "submitit_slurm":
        assert len({r.env["slurm_job_id"] for r in recs.values()}) == 2
    c = run_cli(["collect", str(root)], env=env)
    assert c.returncode == 0 and "2 records" in c.stdout
    import pandas as pd

    assert len(pd.read_parquet(root / "results.parquet")) == 2


def _start_requeued_now(job_id: str, timeout: float = 90) -> None:
    """Slurm holds a requeued batch job for two minutes before it may start again (two of this
    test's three minutes in CI: slurmctld.log "Requeuing JobId=42" at 02:40:42, "Allocate JobId=42"
    at 02:42:43). While it is pending, set its start time to now, as an operator may (``scontrol
    update StartTime=now``), until it runs: it still runs again as a requeued job
    (SLURM_RESTART_COUNT=1), which is what the test checks. Best effort: if Slurm refuses, the
    job starts after its two minutes, and the test waits for it as before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _slurm("squeue", "-h", "-j", job_id, "-o", "%T", check=False).split()
        if not state or "RUNNING" in state:  # started again (or already ended)
            return
        if "PENDING" in state:
            _slurm("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
        time.sleep(1.0)


@pytest.mark.slurm
def test_scontrol_requeue_remeasures_the_point(results_dir):
    """`scontrol requeue` of a running array task (what preemption with PreemptMode=REQUEUE does):
    the first run ends on SIGTERM without an ok record, the requeued run measures the point."""
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    tag = f"fvbrq{os.getpid()}"
    env = _slurm_env()
    args = _args("requeue", results_dir, "encoder=tiny_vit", "resolution=32", "timing.min_seconds=6", "timing.max_repeats=100000",
                 "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
                 "hydra.launcher.mem_gb=1", f"hydra.launcher.name={tag}")
    root = results_dir / "requeue"
    proc = _start_sweep(args, env)
    try:
        job = _wait_for(lambda: next((j for j in _submitit_jobs(root) if "built tiny_vit" in _job_log(root, j)),
                                     None), 300, "the point to start timing")
        time.sleep(1.5)
        _slurm("scontrol", "requeue", job.split("_")[0])
        _start_requeued_now(job.split("_")[0])
        # the requeued job runs again (SLURM_RESTART_COUNT=1) and measures the point
        rec = _wait_for(lambda: next((r for r in _records(root).values() if r.status == "ok"), None), 420,
                        "the requeued job's ok record")
        assert rec.env["slurm_restart_count"] == "1"
        assert "interrupted by SIGTERM" in _job_log(root, job)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _slurm("scancel", "-n", tag, check=False)
