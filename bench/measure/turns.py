"""Interleaved runs: processes that share a turn file take turns on the machine.

Why. On a shared machine (a cloud VM) the speed of the very same process drifts by several
percent over tens of seconds (other tenants of the host, not our process: two builds of one
model timed alternately in one process move together, step for step). Two runs made one after
the other therefore differ by that drift, and no statistic of either run can see it. Runs made
*at the same time, in turns* see the same drift: the vision-latency ratio of two processes
of one configuration that alternate blocks stayed within 0.961-1.024 (sd 1.8 %, 18 pairs),
where runs one after the other read 0.925-1.069 (README, "What compare can see"). This is the
interleaved A/B design of performance bots (e.g. Chromium's Pinpoint), done with a lock
instead of a scheduler.

How. ``timing.turns=FILE`` (the same path in every process, e.g. the base checkout's sweep
and the candidate's, started together). From its first point on, a process holds an exclusive
``flock`` on the file while it does anything at all (building, counting, warming up, timing,
writing results); it lets go only when the timer passes the turn, between blocks of about
``timing.turn_seconds``, and when it exits. Passing waits, briefly, until another process has
taken the turn (a counter in the file), so that the unlocking process does not simply take
the lock again; alone, it goes on after ``ALONE_S``. After getting the turn back, the timer
runs one untimed iteration: the other process has evicted the caches.

Arriving together. Processes started together are not ready together: the one that wins the
first turn used to build, warm up and time its first blocks while its partner was still
importing, unpinned, on the same cores, and it then read slower for its whole run. So no
process takes its first turn until ``timing.turn_parties`` processes (default 2) have arrived
at the file (:func:`arrive`; measured there).

Same cores. On a CPU, a process whose threads do not fill the machine runs on whichever cores
the scheduler gives it, and on a VM the cores are not equally fast: two processes of one
configuration at 1 thread, taking turns, read vision ratios with an sd of 3.0 % over 12 pairs
unpinned, 2.2 % over 10 pairs both pinned to one core with ``taskset`` and 1.8 % over 12 pairs
pinned by this module (tiny models, this 2-core VM, 2026-11-25). So processes that take
turns are pinned (:func:`pin_to_first_cpus`) to the first ``threads`` CPUs they may use: the
same CPUs in every process of the pair. A run alone (no turn file) is left to the scheduler.

No file (the default): every method is a no-op.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional

from ..config import ConfigError

#: How long a process that passed its turn waits for another to take it before going on alone.
ALONE_S = 0.05

#: How long a process waits for its partners to arrive (``timing.turn_parties``) before going on.
ARRIVAL_TIMEOUT_S = 120.0
#: Test-only: seconds to wait for partners instead of ARRIVAL_TIMEOUT_S (a test of a partner
#: that never arrives cannot wait two minutes).
TEST_ARRIVAL_TIMEOUT_ENV = "FASTVLM_BENCH_TEST_ARRIVAL_TIMEOUT"


def _open(path: str) -> int:
    """The turn file or its side file, made if missing; a path that cannot be opened is a
    config error naming it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(f"timing.turns: cannot open {path}: {exc.strerror}") from None


class Turns:
    """One turn file, opened and taken on ``__enter__``; see :func:`held`."""

    def __init__(self, path: Optional[str]):
        self.path = str(Path(path).expanduser()) if path else None
        self.fd: Optional[int] = None
        self.held = False
        self.waited_s = 0.0  # time spent waiting for other processes' turns
        self.taken_by_others = 0  # passes another process took: 0 means it ran alone

    def __enter__(self) -> "Turns":
        if self.path:
            self.fd = _open(self.path)
            self._take()
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            if self.held:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                self.held = False
            os.close(self.fd)
            self.fd = None
        return False

    def _counter(self) -> int:
        try:
            return int(os.pread(self.fd, 32, 0).split(b"\n")[0] or 0)
        except ValueError:
            return 0

    def _take(self) -> None:
        t0 = time.perf_counter()
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.waited_s += time.perf_counter() - t0
        self.held = True
        data = f"{self._counter() + 1}\n{os.getpid()}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def pass_turn(self) -> Optional[bool]:
        """Let another process have the machine for one of its blocks, then take it back.
        Returns whether another process took the turn (None without a file).

        A process holds the lock whenever it does anything, so a pass that nobody takes within
        ``ALONE_S`` means that no partner is waiting for the machine: alone from the start, or
        the partner has finished (the timer stops there, see ``StageTimer.run``)."""
        if self.fd is None:
            return None
        mine = self._counter()
        t0 = time.perf_counter()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.held = False
        while self._counter() == mine and time.perf_counter() - t0 < ALONE_S:
            time.sleep(0.002)
        taken = self._counter() != mine
        if taken:
            self.taken_by_others += 1
        self.waited_s += time.perf_counter() - t0
        self._take()
        return taken


_HELD: Dict[str, Turns] = {}
_ALLOWED: Optional[FrozenSet[int]] = None


def allowed_cpus() -> FrozenSet[int]:
    """The CPUs this process could run on when it started (before any pinning), so that a later
    point's thread count is resolved against the machine, not against an earlier pin."""
    global _ALLOWED
    if _ALLOWED is None:
        try:
            _ALLOWED = frozenset(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            _ALLOWED = frozenset(range(os.cpu_count() or 1))
    return _ALLOWED


def pin_to_first_cpus(threads: int) -> Optional[List[int]]:
    """Pin every thread of this process (the compute pool included, which a previous point may
    have started) to the first ``threads`` allowed CPUs; returns them, or None where the OS
    has no affinity call."""
    cpus = sorted(allowed_cpus())[:max(1, int(threads))]
    if not hasattr(os, "sched_setaffinity"):
        return None
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that ended meanwhile
            pass
    return cpus


def held(path: Optional[str], parties: int = 1) -> Turns:
    """The process's turn on ``path``, taken on first use and kept until the process exits (the
    kernel drops the lock then): between points too, so that this process's own bookkeeping
    never runs during another's timed block. ``None``: a no-op Turns.

    Before the first turn, the process waits until ``parties`` processes (itself included) have
    arrived at the turn file (:func:`arrive`), so that no process builds its model while a
    partner is still starting up on the same cores."""
    if not path:
        return Turns(None)
    key = str(Path(path).expanduser().resolve())
    if key not in _HELD:
        arrive(key, parties)
        _HELD[key] = Turns(key).__enter__()
    return _HELD[key]


def _start_time(pid: int) -> Optional[float]:
    """The process's start time (psutil), or None when there is no such process."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # gone, or not ours to see
        return None


def _arrivals(fd: int) -> List[str]:
    """The live arrivals in an arrivals file, one ``"<pid> <start time>"`` line each.

    A line counts only when its pid is alive *and* was started at the time the line says
    (within a second), as claim files are checked (:func:`bench.results.store.claim_is_stale`):
    a stale file naming a pid since reused by an unrelated process (pid 1, a long-lived daemon)
    used to count as a partner, and the run started at once, alone. Lines without a start time
    (written by an older version, or garbage) cannot be checked and do not count."""
    raw = os.pread(fd, 1 << 16, 0).decode(errors="replace").splitlines()
    live = []
    for line in dict.fromkeys(ln.strip() for ln in raw if ln.strip()):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            started = float(parts[1])
        except ValueError:
            continue
        now = _start_time(int(parts[0]))
        if now is not None and abs(now - started) <= 1.0:
            live.append(line)
    return live


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid()) or 0.0:.3f}"


def arrive(path: str, parties: int, timeout_s: Optional[float] = None) -> int:
    """Register this process in ``<path>.arrivals`` and wait until ``parties`` live processes
    are registered there, or ``timeout_s`` (default ``ARRIVAL_TIMEOUT_S``) has passed (then it
    goes on, with a warning). Returns how many had arrived.

    Why. Two processes started together are not ready together: the one that wins the turn
    used to build, warm up and time its first blocks while its partner was still importing
    and composing its config, unpinned, on the same cores. In 36 such pairs (FastViTHD 256 px
    + Qwen2-0.5B, 2 threads, this 2-core VM, 2026-12-01) the process that built first read a
    vision latency 3.3 % higher than its partner on average (27 of 36 pairs), and all four
    pairs that differed by 19-22 % had the first builder as the slow one. With this wait, in 36
    pairs of the same point on the same machine: 0.6 % (19 of 36), one pair past 10 %. The first
    builder still builds faster (about 2 s against 5.5 s for the second; not understood).
    """
    import logging

    if timeout_s is None:
        timeout_s = float(os.environ.get(TEST_ARRIVAL_TIMEOUT_ENV) or ARRIVAL_TIMEOUT_S)
    fd = _open(f"{path}.arrivals")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            live = [a for a in _arrivals(fd) if a != _me()] + [_me()]
            os.ftruncate(fd, 0)
            os.pwrite(fd, "".join(f"{a}\n" for a in live).encode(), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        deadline = time.monotonic() + timeout_s
        while True:
            n = len(_arrivals(fd))
            if n >= parties:
                return n
            if time.monotonic() > deadline:
                logging.getLogger("fastvlm_bench").warning(
                    "timing.turns: only %d of timing.turn_parties=%d processes arrived at %s in %.0f s; going on",
                    n, parties, path, timeout_s)
                return n
            time.sleep(0.05)
    finally:
        os.close(fd)
