"""Shared test helpers: run the real CLI in a subprocess, tiny configs."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run_env(env):
    """A run's environment (this process's, unbuffered, plus ``env``) and the fork server to fork
    it from, or None where it must start afresh (see :func:`run_cli`)."""
    import forkserver

    e = dict(os.environ)
    e.setdefault("PYTHONUNBUFFERED", "1")
    e.update(env or {})
    return e, (forkserver.server(e) if forkserver.forkable(env or {}) else None)


def run_cli(args, cwd=None, timeout=600, env=None):
    """Run ``python -m bench ARGS`` for real; returns the CompletedProcess.

    Without extra ``env`` (or only variables read at run time: ``forkserver.forkable``), in a
    process forked from one that has done the imports (tests/forkserver.py: the same program,
    arguments, folder and environment, seconds sooner); otherwise, or with
    ``FASTVLM_TESTS_FRESH_PROCESS=1``, in a fresh interpreter."""
    e, server = _run_env(env)
    if server is not None:
        return server.run(args, cwd or ROOT, e, timeout)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


class StartedCli:
    """A ``python -m bench`` run started by :func:`start_cli`: ``pid``, ``poll``, ``send_signal``,
    ``kill``, ``wait``, ``returncode`` and ``communicate`` (text) like ``subprocess.Popen`` with
    both outputs piped. A forked run writes its output to two files, read once it has ended."""

    def __init__(self, run, out: Path, err: Path, tmp):
        self._run, self._out, self._err, self._tmp = run, out, err, tmp
        self.pid = run.pid

    @property
    def returncode(self):
        return self._run.returncode

    def poll(self):
        return self._run.poll()

    def send_signal(self, sig):
        self._run.send_signal(sig)

    def kill(self):
        self._run.kill()

    def wait(self, timeout=None):
        return self._run.wait(timeout)

    def communicate(self, timeout=None):
        try:
            self._run.wait(timeout)
        except subprocess.TimeoutExpired:
            raise subprocess.TimeoutExpired(f"bench pid {self.pid}", timeout,
                                            self._out.read_text(errors="replace"),
                                            self._err.read_text(errors="replace")) from None
        out, err = self._out.read_text(errors="replace"), self._err.read_text(errors="replace")
        self._tmp.cleanup()
        return out, err


def start_cli(args, cwd=None, env=None, quiet=False):
    """Start ``python -m bench ARGS`` without waiting for it; a ``Popen``-like object.

    For the tests that signal or race runs (SIGTERM during an export, two sweeps on one folder):
    what they test is the program's handling once it runs, not its start, so, as in
    :func:`run_cli`, the run is forked from the process that has done the imports when it is given
    no extra ``env`` (or only run-time variables); otherwise, or with
    ``FASTVLM_TESTS_FRESH_PROCESS=1``, a fresh interpreter. ``quiet``: its output is discarded
    (a run that is killed and never read; unread pipes could fill and stall it)."""
    e, server = _run_env(env)
    if server is not None:
        tmp = tempfile.TemporaryDirectory(prefix="fvb-start-")
        if quiet:
            out = err = Path(os.devnull)
        else:
            out, err = Path(tmp.name) / "out", Path(tmp.name) / "err"
            out.touch()
            err.touch()
        return StartedCli(server.start(args, cwd or ROOT, e, str(out), str(err)), out, err, tmp)
    pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, stdout=pipe, stderr=pipe,
                            text=True, env=e)


TINY = ["sweep=none", "llm=qwen2_tiny", "report=false", "timing=quick"]


#: The tiny sweep of tests/test_reliability.py and tests/test_read_checks.py: no FLOP count, no
#: matmul peak, 64 px.
FAST = ["sweep=none", "llm=qwen2_tiny", "report=false", "timing=quick",
        "count_flops=false", "measure_peak=false", "resolution=64"]


@pytest.fixture(scope="session")
def good(tmp_path_factory):
    """A real two-point sweep (tiny_vit, tiny_convnext at 64 px): the good data to protect.
    Shared by every test module that needs one (it is read-only: copy it before changing it)."""
    base = tmp_path_factory.mktemp("good")
    p = run_cli(["-m", *FAST, "name=good", f"results_dir={base}", "encoder=tiny_vit,tiny_convnext"], cwd=base)
    assert p.returncode == 0, p.stderr[-3000:]
    return base / "good"


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


#: Seconds each slow module took in a full run (2026-12-07: two workers, the Slurm tests in the
#: same run, a shared host). With two workers and ``--dist loadscope`` a module runs on one
#: worker, in collection order, so the longest go first (longest-processing-time scheduling): a
#: long module started last would leave the other worker idle at the end. test_slurm is the
#: longest and waits on the scheduler and on its jobs much of the time, which the other worker
#: fills. Unlisted modules count as short; the figures only order, never skip.
MODULE_SECONDS = {"test_slurm": 370, "test_reliability3": 220, "test_sweep_cli": 160, "test_hf": 130,
                  "test_install": 125, "test_resume_old_results": 115, "test_lmms_eval_run": 115, "test_tokens": 115,
                  "test_rigor": 100, "test_store": 100, "test_reliability": 65, "test_report": 65,
                  "test_allocator": 60, "test_decode": 60, "test_checkpoint": 55}


def pytest_collection_modifyitems(config, items):
    import torch

    items.sort(key=lambda it: -MODULE_SECONDS.get(it.module.__name__.rsplit(".", 1)[-1], 0))  # stable
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# --- sharing the machine between pytest-xdist workers -------------------------------------------
# The suite runs on two workers (pyproject.toml addopts: ``-n auto``; most tests wait on a
# ``python -m bench`` subprocess that spends its first seconds importing on one core). Tests
# marked ``serial`` assert on ratios of times measured in one run (stage sums, interleaved
# points, the timer's stopping rule), which a neighbour's work would distort, so each runs alone:
# every test holds a shared lock for its whole protocol (fixture set-up included), a serial test
# an exclusive one. A serial test that is waiting holds the gate, so no new test starts beside it
# (writer preference: it waits for the running neighbour only, never starves).

def _locks():
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not uid:
        return None
    d = Path(tempfile.gettempdir())
    return open(d / f"fastvlm-tests-{uid}.gate", "a+"), open(d / f"fastvlm-tests-{uid}.rw", "a+")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    locks = _locks()
    if locks is None:  # one process (``-n 0``, ``-p no:xdist``): nothing to share
        yield
        return
    gate, rw = locks
    serial = item.get_closest_marker("serial") is not None
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(rw, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
    finally:
        if not serial:
            fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(rw, fcntl.LOCK_UN)
        if serial:
            fcntl.flock(gate, fcntl.LOCK_UN)
        gate.close()
        rw.close()


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 and one per 6 GiB of memory (the largest tests
    build a 0.5 B LLM in fp32 in a subprocess, about 3 GiB with its activations)."""
    cores = len(os.sched_getaffinity(0))
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores, 4, int(mem_gib // 6)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """``FASTVLM_REQUIRE_SLURM=1`` (.ci/run, which starts the cluster): a ``slurm`` test that skips
    (no cluster, no idle node) fails instead, so that CI cannot pass without running them."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and item.get_closest_marker("slurm") and os.environ.get("FASTVLM_REQUIRE_SLURM") == "1":
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but FASTVLM_REQUIRE_SLURM=1 requires the Slurm tests to run: {reason}"


def pytest_runtest_setup(item):
    if item.get_closest_marker("benchmark") and os.environ.get("FASTVLM_BENCH_BENCHMARK_TESTS") != "1":
        pytest.skip("a measurement of an open problem, not a pass/fail check (docs/cpu-allocator.md); "
                    "run with FASTVLM_BENCH_BENCHMARK_TESTS=1")
