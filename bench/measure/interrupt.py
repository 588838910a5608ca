"""SIGTERM, SIGINT and SIGHUP end a run the same way: one line, and the point in progress ends
with an ``error`` record naming the signal, its claim released; exit 128 + the signal number
(143, 130, 129), as a shell reports a process the signal killed. The same command resumes.

Why all three. SIGTERM is what ``kill``, ``timeout``, Slurm preemption and a cancelled CI job
send; SIGINT is Ctrl-C (it used to print a ``KeyboardInterrupt`` traceback, exit 1); SIGHUP is a
closed terminal or ssh session (it used to kill the run with no message and no error record,
and left a stale claim).

Two layers:

- :func:`interrupt_on_signals` (around the measurement of a point, in the main thread) makes
  a signal raise :class:`PointInterrupted`, an ``Exception`` so that a launcher's worker
  (submitit) still writes its result file, and the runner writes the error record;
- :func:`install_run_handlers` (the CLI, before anything heavy is imported) makes a signal
  anywhere else raise :class:`Interrupted`, a ``BaseException`` that no ``except Exception``
  on its way (Hydra's launcher catches those) can swallow, and that the CLI turns into the
  one line.

The lost-signal window. A Python signal handler runs between two bytecodes of whatever the
main thread is doing, including a ``__del__`` method or a weakref callback run by the garbage
collector (torch.multiprocessing's ``__del__`` is one). An exception raised there is printed as
"Exception ignored in ..." with a traceback and then dropped, and the run went on to exit 0.
Likewise an ``except Exception`` in a library can swallow it (torch's op registration and the
dynamo ONNX exporter do: a SIGTERM 1-3.5 s into an export once ended in an ``ok`` record, the
graph silently made by the fallback exporter). So the handler records the signal
(:func:`pending`) and it STAYS pending until the harness's own code has handled it: the
guarded block ends with it (a :class:`PointInterrupted` leaving the block clears it; any other
end of the block raises it), and the harness's checkpoints inside a library call's aftermath
(:func:`raise_if_pending`: the timed loop every iteration, after an export returns or fails,
before an export is cached) raise it again. A handler never raises inside a finaliser (it
defers).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

#: The signals that end a run, each with exit status 128 + its number.
SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s is not None)

_pending: Optional[int] = None


def exit_status(signum: int) -> int:
    """The shell's status of a process killed by ``signum`` (SIGTERM 143, SIGINT 130, SIGHUP 129)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class PointInterrupted(Exception):
    """A signal of :data:`SIGNALS` arrived while a point was being measured (preemption,
    ``scancel``, ``kill``, Ctrl-C, a closed terminal): the point stops at once, no ``ok`` record is
    written. An Exception (not a BaseException) so that submitit still writes its result file and
    the sweep's driver learns that the job ended; in the driver :func:`bench.app.run` ends the
    sweep with :func:`exit_status`."""

    #: Wrappers of errors (a backend naming its stage) let it through as it is: the point is
    #: interrupted, not failed (bench.models.backends.base).
    interrupts_point = True

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(signum)} while measuring (preempted, cancelled, "
                         "Ctrl-C or a closed terminal); re-measured on the next run")


class Interrupted(BaseException):
    """A signal of :data:`SIGNALS` outside a point's measurement; the CLI reports it in one line."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(signum)}")


def pending() -> Optional[int]:
    """The signal received but not yet raised (see the module docstring), or None."""
    return _pending


def _in_finaliser(frame) -> bool:
    """Whether the interrupted code is a ``__del__`` or a weakref/GC callback, where a raised
    exception would be printed and dropped."""
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith("weakref.py"):
            return True
        frame = frame.f_back
    return False


def _make_handler(exc_type):
    def handler(signum, frame):
        global _pending
        _pending = signum  # kept until the harness handles it (a library may swallow the raise)
        if _in_finaliser(frame):
            return  # deferred: raise_if_pending / the end of the guarded block raises it
        raise exc_type(signum)

    return handler


def raise_if_pending() -> None:
    """A harness checkpoint: raise the signal received but not yet handled (it landed in a
    finaliser, or a library's ``except Exception`` swallowed its exception) as
    :class:`PointInterrupted`. It stays pending until the guarded block ends with it."""
    if _pending is not None:
        raise PointInterrupted(_pending)


def clear() -> None:
    """The harness has handled the pending signal (it ends the point or the command)."""
    global _pending
    _pending = None


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """While measuring, a signal of :data:`SIGNALS` raises :class:`PointInterrupted` (the
    previous handlers are restored afterwards). A signal recorded but not raised (it landed in a
    finaliser, or an ``except Exception`` swallowed it) is raised when the block ends.

    submitit installs a handler that only logs SIGTERM (Slurm then kills the job after
    KillWait, possibly mid-point); ours ends the point cleanly instead. Writing the record
    after the measurement runs under the previous handlers: the atomic write finishes or
    leaves the old file.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _make_handler(PointInterrupted)
    previous = {s: signal.signal(s, handler) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        try:
            yield
        except PointInterrupted:
            clear()  # leaves the block: the runner ends the point with it
            raise
        except BaseException as exc:
            if _pending is not None:  # a library turned the signal into another error
                signum = _pending
                clear()
                raise PointInterrupted(signum) from exc
            raise
        if _pending is not None:  # swallowed on the way (or deferred): the point ends with it now
            signum = _pending
            clear()
            raise PointInterrupted(signum)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def install_run_handlers() -> None:
    """For the rest of the process, a signal of :data:`SIGNALS` raises :class:`Interrupted`
    (the CLI reports it in one line with :func:`exit_status`). Main thread only.

    A signal the process was started ignoring stays ignored: ``nohup fastvlm-bench ...`` (SIGHUP)
    and a background job of a non-interactive shell (SIGINT) mean to outlive those signals."""
    if threading.current_thread() is threading.main_thread():
        handler = _make_handler(Interrupted)
        for s in SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:
                signal.signal(s, handler)


def raise_if_pending_run() -> None:
    """At the end of a command: a signal that arrived where it could not be raised ends it now."""
    if _pending is not None:
        signum = _pending
        clear()
        raise Interrupted(signum)
