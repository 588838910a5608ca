"""A llama-server the harness starts itself (``endpoint.launch=llama_cpp``), and always stops.

Why the harness starts it: a server started by hand has unknown threads, slots and context,
its log (the only place llama.cpp says how long the image encode took) is somewhere else, and
it is easily left running. Here the server:

- listens on a free loopback port (127.0.0.1 only: nothing outside the machine reaches it);
- runs pinned to ``endpoint.server_threads`` of this process's CPUs (``-t`` as many), or all;
- logs with timestamps at verbosity 4 into ``<results>/<sweep>/endpoint/`` beside the records;
- is reused by every point of the sweep that launches the same files with the same knobs (a
  load takes a second even for the tiny model), and replaced when a point asks for others;
- is stopped (SIGTERM, then SIGKILL after 10 s) when the sweep ends, when this process exits
  (atexit), and by SIGTERM/SIGINT/SIGHUP, which end the run through the harness's own handling
  (:mod:`bench.measure.interrupt`: the point's ``PointInterrupted`` or the CLI's exit).
  A SIGKILL of this process cannot run any of that, so the server is started with
  ``PR_SET_PDEATHSIG``: the kernel sends it SIGTERM when its parent dies. No orphan either way.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

from ..models.endpoints import EndpointPart
from ..models.endpoints.client import EndpointError
from .interrupt import raise_if_pending
from .turns import allowed_cpus

log = logging.getLogger("fastvlm_bench")

READY_TIMEOUT_S = 300.0
#: llama-server's log (``--log-timestamps``: ``M.SS.mmm.uuu`` at the start of a line, colour codes
#: optional): the slot's "encoding mtmd batch" (tools/server/server-context.cpp, verbosity 4) and
#: mtmd-helper's next "decoding image batch 1/" (tools/mtmd/mtmd-helper.cpp) bracket the image
#: encode; the server runs one batch at a time, so the next decode line is the same image's.
#: Other builds say "image slice encoded in N ms" (mtmd_helper_eval_chunk_single): read as well.
_STAMP = re.compile(rb"^(?:\x1b\[[0-9;]*m)?(\d+)\.(\d+)\.(\d+)\.(\d+)")
_ENCODED_IN = re.compile(rb"image slice encoded in (\d+) ms")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup(cpus: List[int]) -> None:
    """In the child before exec: die with the parent (PR_SET_PDEATHSIG = 1) and run on ``cpus``."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


class LaunchedServer:
    """One llama-server process on a loopback port; :meth:`stop` ends it for good."""

    def __init__(self, part: EndpointPart, log_dir: Path):
        cpus = sorted(allowed_cpus())
        n = min(part.server_threads or len(cpus), len(cpus))
        self.cpus = cpus[:n]
        self.port = _free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"llama-server-{time.strftime('%Y%m%d-%H%M%S')}-{self.port}.log"
        self.args = [part.server_bin, "-m", part.gguf, "--mmproj", part.mmproj, "--host", "127.0.0.1",
                     "--port", str(self.port), "-t", str(n), "-tb", str(n), "-c", str(part.ctx),
                     "-np", str(part.slots), "-lv", "4", "--log-timestamps", "--no-webui"]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: _child_setup(self.cpus), close_fds=True)
        log.info("started llama-server (pid %d, %s, %d threads on CPUs %s); log: %s", self.proc.pid, self.url, n,
                 self.cpus, self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Until ``GET /health`` says 200 (503 while the model loads); the process ending or the
        deadline passing is an :class:`EndpointError` with the log's last line."""
        import http.client

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            raise_if_pending()  # a signal while waiting ends the point (and the finally stops the server)
            if self.proc.poll() is not None:
                raise EndpointError(f"llama-server exited with status {self.proc.returncode} before it was ready: "
                                    f"{self.last_log_line()} (log: {self.log_path})")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EndpointError(f"llama-server was not ready after {READY_TIMEOUT_S:g} s (log: {self.log_path})")
            time.sleep(0.05)

    def last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_bytes().splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].decode("utf-8", "replace").strip() if lines else ""

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def encode_ms(self, since: int) -> List[float]:
        """The image encode times (ms) the log has said since byte ``since``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read()
        except OSError:
            return []
        return encode_times(text)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            log.info("stopped llama-server (pid %d)", self.proc.pid)
        if not self._log.closed:
            self._log.close()


def encode_times(log: bytes) -> List[float]:
    """Image encode times (ms, microsecond resolution) in a llama-server log (see ``_STAMP``)."""
    out: List[float] = []
    start = None
    for line in log.splitlines():
        m = _ENCODED_IN.search(line)
        if m:
            out.append(float(m.group(1)))
            continue
        ts = _STAMP.match(line)
        if ts is None:
            continue
        minutes, sec, ms, us = (int(x) for x in ts.groups())
        t_us = ((minutes * 60 + sec) * 1000 + ms) * 1000 + us
        if b"encoding mtmd batch" in line:
            start = t_us
        elif b"decoding image batch 1/" in line and start is not None:
            out.append((t_us - start) / 1e3)
            start = None
    return out


_LOCK = threading.Lock()
_SERVERS: Dict[Tuple, LaunchedServer] = {}


def _key(part: EndpointPart, log_dir: Path) -> Tuple:
    return (part.server_bin, part.gguf, part.mmproj, part.server_threads, part.slots, part.ctx, str(log_dir))


def server_for(part: EndpointPart, log_dir: Path) -> LaunchedServer:
    """The running server for ``part``: the one the previous point started when it matches and
    still runs, else a new one (any other is stopped first: one server at a time)."""
    key = _key(part, log_dir)
    with _LOCK:
        srv = _SERVERS.get(key)
        if srv is not None and srv.alive():
            return srv
        stop_all()
        srv = LaunchedServer(part, log_dir)
        _SERVERS[key] = srv
        return srv


def stop_all() -> None:
    """Stop every server this process started (sweep end, exit, an interrupted point)."""
    for key in list(_SERVERS):
        srv = _SERVERS.pop(key)
        srv.stop()


atexit.register(stop_all)

