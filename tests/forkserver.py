"""Run the real CLI in a forked process whose imports are already done.

Most of the suite's time went on starting ``python -m bench``: each run imports torch, timm,
transformers, Hydra and pandas before it reads its arguments (5-10 s of one core, more than the
tiny sweep or the refused config it then runs). A fork server imports them once and forks a
child per run; the child is a real process running the real program (``bench.cli.entry``, what
``python -m bench`` and the console script call) with the run's arguments as ``sys.argv``, its
own working folder, environment, umask, stdin, stdout and stderr, signals and exit status.
What it does not repeat is the imports, which a fresh start still checks wherever that is the
point: every test that starts ``python -m bench`` with ``subprocess`` (the signal and kill tests,
the interleaved pairs, the launchers' jobs, the plugin), the installed wheel's console script
(tests/test_install.py), tests/test_registry.py's import check, and .ci/run's gate sweeps.

:func:`tests.conftest.run_cli` forks only where a fresh start would see the same thing: a run
with no extra environment, from a server started with this process's environment as it is now
(a library reads some variables when it is imported; the server starts again if it has
changed). ``FASTVLM_TESTS_FRESH_PROCESS=1`` turns it off.

``bench.app`` is not imported by the server: it draws the id of a run's Hydra folder from the
pid when imported, so each child imports it itself (milliseconds, its dependencies are loaded).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import atexit, json, os, sys, threading, traceback
import torch, torchvision, timm, transformers, pandas, pyarrow.parquet, numpy, hydra, omegaconf, yaml, psutil  # noqa
import hydra._internal.utils, hydra.core.plugins, hydra._internal.core_plugins.basic_launcher  # noqa
import hydra._internal.core_plugins.basic_sweeper  # noqa
from transformers import Qwen2ForCausalLM, Qwen2Config, LlamaForCausalLM, LlamaConfig  # noqa  (the tiny LLMs)
import bench.cli, bench.config, bench.models, bench.models.vlm, bench.models.encoders  # noqa
import bench.models.backends, bench.models.reduction, bench.models.tiling, bench.models.pipeline  # noqa
import bench.measure.scenario, bench.measure.callbacks, bench.measure.progress, bench.measure.runner  # noqa
import bench.analysis.claims, bench.results.store, bench.results.command, bench.regress.compare  # noqa
import bench.regress.gate, bench.measure.allocator, bench.report.render, bench.report.command  # noqa
assert "bench.app" not in sys.modules, "bench.app must be imported by each run (its run id)"
assert threading.active_count() == 1, "a thread would not survive the fork"
MAIN = os.path.join(os.path.dirname(bench.cli.__file__), "__main__.py")
print("ready", flush=True)
# Runs may overlap (two sweeps racing on one folder): a request is answered "pid N" at once, and
# "exit N CODE" is said when that child ends, reaped between requests; stdin is read unbuffered,
# so that select() sees every request a buffered reader could hold back.
import select
children, buf, open_ = set(), b"", True
while open_ or children:
    if select.select([0] if open_ else [], [], [], 0.05 if children else None)[0]:
        chunk = os.read(0, 65536)
        open_ = bool(chunk)
        buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(req["cwd"])
                os.umask(req["umask"])
                for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_TRUNC),
                                        (2, req["err"], os.O_WRONLY | os.O_TRUNC)):
                    f = os.open(path, flags)
                    os.dup2(f, fd)
                    os.close(f)
                os.environ.clear()
                # what a fresh start has once it has started itself again under the default allocator
                os.environ.update(bench.measure.allocator.child_env(bench.measure.allocator.DEFAULT, req["env"]))
                sys.argv = [MAIN, *req["args"]]
                sys.path[0] = os.getcwd()  # as `python -m` puts the working folder first
                try:
                    bench.cli.entry()  # ends the process itself (os._exit) on its normal path
                    code = 0
                except SystemExit as exc:  # what the interpreter does with it
                    if exc.code is None:
                        code = 0
                    elif isinstance(exc.code, int):
                        code = exc.code
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
                threading._shutdown()
                atexit._run_exitfuncs()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        children.add(pid)
        print("pid", pid, flush=True)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        children.discard(pid)
        print("exit", pid, os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """One server process; :meth:`start` forks a run, :meth:`run` forks one and waits for it."""

    def __init__(self):
        from bench.measure import allocator

        self.env = dict(os.environ)
        # Started as a sweep's process restarts itself (bench.measure.allocator.reexec_if_needed):
        # under the default allocator, whose settings glibc reads when a process starts. A forked
        # run of the default allocator is then under it already; a run asking for another one
        # starts itself again under that one, as a fresh start does.
        # unbuffered bytes: a line the server wrote is either still in the pipe, where select()
        # sees it, or read; a buffered reader could hold the exit status unseen by select()
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0,
                                     env=allocator.child_env(allocator.DEFAULT, self.env))
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"the fork server did not start (it said {line!r})")
        self.exits: Dict[int, int] = {}  # exit statuses said, by pid, not yet taken by their run

    def _next(self, timeout: Optional[float]) -> Optional[tuple]:
        """The server's next line as a tuple ("pid", N) or ("exit", N, CODE); None on a timeout.
        An exit line is also kept in :attr:`exits` for the run it belongs to."""
        out = self.proc.stdout
        if timeout is not None and not select.select([out], [], [], max(timeout, 0))[0]:
            return None
        line = out.readline()
        if not line:
            raise RuntimeError("the fork server ended")
        kind, *nums = line.split()
        said = (kind.decode(), *map(int, nums))
        if said[0] == "exit":
            self.exits[said[1]] = said[2]
        return said

    def start(self, args: Sequence[str], cwd, env: Dict[str, str], out: str, err: str) -> "ForkedRun":
        umask = os.umask(0o022)
        os.umask(umask)
        return ForkedRun(self, {"args": [str(a) for a in args], "cwd": str(cwd), "env": env, "out": out,
                                "err": err, "umask": umask})

    def run(self, args: Sequence[str], cwd, env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """Like ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)``."""
        with tempfile.TemporaryDirectory(prefix="fvb-fork-") as d:
            out, err = os.path.join(d, "out"), os.path.join(d, "err")
            Path(out).touch()
            Path(err).touch()
            run = self.start(args, cwd, env, out, err)
            try:
                rc = run.wait(timeout)
            except subprocess.TimeoutExpired:
                run.kill()
                raise subprocess.TimeoutExpired([sys.executable, "-m", "bench", *args], timeout,
                                                Path(out).read_text(errors="replace"),
                                                Path(err).read_text(errors="replace")) from None
            return subprocess.CompletedProcess([sys.executable, "-m", "bench", *args], rc,
                                               Path(out).read_text(errors="replace"),
                                               Path(err).read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ForkedRun:
    """One forked run: ``pid``, ``poll``, ``send_signal``, ``kill`` and ``wait`` like ``Popen``."""

    def __init__(self, server: ForkServer, request: dict):
        self.server, self.returncode = server, None
        data = (json.dumps(request) + "\n").encode()
        while data:  # a raw pipe may take part of it
            data = data[server.proc.stdin.write(data):]
        while True:  # the answer, after any other run's exit said meanwhile
            said = server._next(None)
            if said[0] == "pid":
                self.pid = said[1]
                break

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                state = "gone"
            if state in ("Z", "X", "gone"):  # it has ended: the server reaps it and says its status
                self.wait()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # it ended and was reaped meanwhile
                pass

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: Optional[float] = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if self.pid in self.server.exits:
                self.returncode = self.server.exits.pop(self.pid)
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or self.server._next(left) is None:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.returncode


_SERVER: Optional[ForkServer] = None

#: Variables a run's environment may differ in from the server's: ``PYTHONUNBUFFERED``, which a
#: fresh start reads and a forked child only keeps (its output goes to files, read once it has
#: ended), pytest's name of the current test, and ``HYDRA_FULL_ERROR``, which the CLI sets in its
#: own process (a test calling ``bench.cli.main`` leaves it in this one) and Hydra reads when it
#: fails, not when it is imported. The child's environment is the run's own, so they still count.
_ANY_VALUE = ("PYTHONUNBUFFERED", "PYTEST_CURRENT_TEST", "HYDRA_FULL_ERROR")

#: Variables no library reads on import, only a program run later: Slurm's commands read
#: ``SLURM_CONF`` when the launcher calls ``sbatch``; ``PYTHONPATH`` is read when an interpreter
#: starts, so the run's own child processes (submitit's jobs) get it from the child's
#: environment, and for the run itself a path holding only this checkout adds nothing: a forked
#: run, like ``python -m bench`` started here, has the checkout first on its path.
RUN_TIME = ("SLURM_CONF",)


def forkable(extra: Dict[str, str]) -> bool:
    """Whether a run given ``extra`` environment may be forked: it sets only :data:`RUN_TIME`
    variables and a ``PYTHONPATH`` that adds nothing but this checkout."""
    return all(k in RUN_TIME or (k == "PYTHONPATH" and _pythonpath(v) == _pythonpath(os.environ.get(k, "")))
               for k, v in extra.items())


def _pythonpath(value: str) -> list:
    return [p for p in value.split(os.pathsep) if p and Path(p).resolve() != ROOT]


def _normal(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` as a fresh start has it once under the default allocator (glibc_held's variables,
    which ``bench.cli.main`` called in this process adds to it, come out the same either way)."""
    from bench.measure import allocator

    out = {k: v for k, v in allocator.child_env(allocator.DEFAULT, env).items() if k not in _ANY_VALUE + RUN_TIME}
    path = _pythonpath(out.pop("PYTHONPATH", ""))  # this checkout is on a run's path either way
    if path:
        out["PYTHONPATH"] = os.pathsep.join(path)
    return out


def server(env: Optional[Dict[str, str]] = None) -> Optional[ForkServer]:
    """This process's fork server, started on first use; None when runs must start afresh
    (``FASTVLM_TESTS_FRESH_PROCESS=1``). Given the environment of a run: a server started with
    that environment, so started again when it has changed since (a library in this process may
    set a variable that libraries read when imported: a fresh start would see it too)."""
    global _SERVER
    if os.environ.get("FASTVLM_TESTS_FRESH_PROCESS") == "1":
        return None
    if _SERVER is not None and env is not None and _normal(env) != _normal(_SERVER.env):
        if os.environ.get("FASTVLM_TESTS_FORK_DEBUG"):
            old, new = _normal(_SERVER.env), _normal(env)
            print(f"forkserver: environment changed ({sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))}); "
                  "starting the server again", file=sys.stderr)
        _SERVER.close()
        _SERVER = None
    if _SERVER is None:
        import atexit

        _SERVER = ForkServer()
        atexit.register(_SERVER.close)
    return _SERVER
