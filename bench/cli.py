"""``fastvlm-bench`` entry point: Hydra sweeps by default, plus a few subcommands.

    fastvlm-bench [hydra overrides]          run a sweep (default: the `default` sweep)
    fastvlm-bench list                       encoders and LLMs known to the registry
    fastvlm-bench report RESULTS_DIR         render reports/<sweep>/
    fastvlm-bench compare BASE CANDIDATE     regression check between two result sets
    fastvlm-bench gate RESULTS_DIR           the CI baseline gate
    fastvlm-bench claims RESULTS_DIR         the paper's headline ratios beside the measured ones
    fastvlm-bench accuracy import PATH...    read lmms-eval results JSON
    fastvlm-bench accuracy run -- ARGS...    run lmms-eval, then import its results
    fastvlm-bench collect RESULTS_DIR [--keep-going]
                                             rebuild results.csv/parquet from the records

Exit status: 0 on success, 1 for a failed check or a results file that could not be written
(the file is named), 2 for bad input; each failure is reported as one line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

PROG = "fastvlm-bench"
#: The subcommands; any other first argument starts a sweep (Hydra overrides).
COMMANDS = ("list", "collect", "report", "accuracy", "compare", "gate", "claims")


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, ``fastvlm-bench <command>: error: <message>``, exit 2
    (argparse's default prints the whole usage first). ``--help`` is unchanged."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """One parser; each command module adds its own subparser (``add_parser(subparsers)``,
    which sets ``func`` to the module's ``run(args) -> int``)."""
    from .accuracy import command as accuracy
    from .analysis import command as claims
    from .models import command as list_
    from .report import command as report
    from .results import command as collect

    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (list_, collect, report, accuracy, claims):
        module.add_parser(sub)
    _add_regress_parsers(sub)
    return parser


def _add_regress_parsers(sub) -> None:
    """``compare`` and ``gate`` (:mod:`bench.regress`), imported here only: nothing else in the
    CLI needs them."""
    from .regress import compare, gate

    compare.add_parser(sub)
    gate.add_parser(sub)


def entry() -> None:
    """The program (console script and ``python -m bench``): :func:`main`, then exit without
    the interpreter's teardown.

    After the work is done, Python's own shutdown unloads torch, transformers and timm module by
    module: 1.0 s after the default sweep here, as much as 12 points' CPU-use windows were.
    Exit handlers still run (they flush and close the log files) and output is flushed first.
    While another thread is alive, or when ``main`` raised (an error's exit), the normal exit
    runs. Tests call :func:`main` itself, which returns.
    """
    import atexit
    import threading

    rc = main()
    if threading.active_count() > 1:
        raise SystemExit(rc)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(rc)


_PY_FORMATWARNING = None
#: ``fastvlm-bench`` run as the program (``entry``), not ``main(argv)`` called by another program:
#: only the program may start itself again under another allocator (bench.measure.allocator).
_PROGRAM = True


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings (``bench/``) as one line, ``fastvlm-bench: warning: ...``: what happened and
    why is in the message, and the source line that raised it (``warnings.warn(...)``) is noise to a
    user. A library's warnings keep Python's format (during a backend's export they go to the
    library log, bench.models.backends)."""
    if str(filename).startswith(str(Path(__file__).resolve().parent)):
        return f"{PROG}: warning: {message}\n"
    return _PY_FORMATWARNING(message, category, filename, lineno, line)


def _one_line_warnings() -> None:
    import warnings

    global _PY_FORMATWARNING
    if _PY_FORMATWARNING is None:
        _PY_FORMATWARNING = warnings.formatwarning
        warnings.formatwarning = _format_warning


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; SIGTERM, SIGINT and SIGHUP end it with one line and exit 128 + the
    signal's number (:mod:`bench.measure.interrupt`), wherever they land."""
    from .measure.interrupt import Interrupted, exit_status, install_run_handlers, raise_if_pending_run

    global _PROGRAM
    _PROGRAM = argv is None
    if argv is None:  # the program itself, not a test calling main() in its own process
        install_run_handlers()
        _one_line_warnings()
    try:
        rc = _main(argv)
        raise_if_pending_run()
        return rc
    except Interrupted as exc:
        _say(f"{PROG}: error: {exc}; results finished before it are kept, the same command resumes")
        return exit_status(exc.signum)
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        _say(f"{PROG}: error: interrupted by SIGINT; results finished before it are kept, the same command resumes")
        return 130


def _say(line: str) -> None:
    """One line on stderr, if there still is one (after SIGHUP the terminal may be gone)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] not in COMMANDS:
        if len(args) == 1 and args[0] in ("-h", "--help"):
            print(__doc__)
            print("Hydra's own help: fastvlm-bench --hydra-help; config: fastvlm-bench --cfg job")
            return 0
        return _sweep(args)
    from .config import InputError
    from .results.io import ResultsWriteError

    ns, extra = build_parser().parse_known_args(args)
    if extra:  # argparse would name the top-level program, not the command
        print(f"{PROG} {ns.command}: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        return ns.func(ns) or 0
    except InputError as exc:
        print(f"{PROG} {ns.command}: error: {exc}", file=sys.stderr)
        return 2
    except ResultsWriteError as exc:
        print(f"{PROG} {ns.command}: error: {exc}", file=sys.stderr)
        return 1


def _written_file(exc: BaseException) -> str:
    """The file an OSError was about: its own filename, else the innermost frame's
    ``output_dir``/``filename`` (Hydra's config writer) or ``path`` local. A write error
    (ENOSPC) carries no filename, and the rule is that a failed write names the file."""
    if getattr(exc, "filename", None):
        return str(exc.filename)
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        loc = frame.f_locals
        if "output_dir" in loc and "filename" in loc:
            return str(Path(str(loc["output_dir"])) / str(loc["filename"]))
        for key in ("path", "filename", "f", "baseFilename"):  # f: OmegaConf.save (Hydra's multirun.yaml)
            if isinstance(loc.get(key), (str, Path)):
                return os.path.abspath(str(loc[key]))
    return "?"


def _drop_empty_hydra_file(path: str) -> None:
    """Remove the 0-byte file Hydra leaves when its write fails (a full disk), and the folders
    of this run under ``hydra/`` that are empty because of it: an empty multirun.yaml or
    hydra.yaml looks like a run that happened."""
    p = Path(path)
    try:
        if "hydra" not in p.parts or not p.is_file() or p.stat().st_size:
            return
        p.unlink()
        d = p.parent
        while d.name != "hydra" and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    except OSError:
        pass


def _sweep(args: List[str]) -> int:
    """Run the Hydra app, turning Hydra's and the OS's errors into one line each.

    Hydra prints tracebacks for any exception unless HYDRA_FULL_ERROR is set, in which case
    it re-raises: we set it (unless the user did) and report here. Bad config (unknown keys,
    missing config options, unparsable overrides) exits 2; a file that cannot be written
    (full disk) exits 1, naming the file.
    """
    import logging

    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from .measure.allocator import AllocatorError, reexec_if_needed

    try:  # the allocator is process state: start this process again under it (before torch loads)
        reexec_if_needed(args, restart=_PROGRAM)
    except AllocatorError as exc:
        print(f"fastvlm-bench: error: {exc}", file=sys.stderr)
        return 2
    user_full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # a log file on a full disk must not print a traceback per log line
    logging.raiseExceptions = False
    from . import app

    try:
        app.main(args)
    except (HydraException, OmegaConfBaseException) as exc:
        if user_full_error:
            raise
        text = str(exc).split("Config search path")[0]  # Hydra appends its search path: noise here
        lines = [ln.strip().rstrip(".:") for ln in text.strip().splitlines() if ln.strip()]
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
            lines.append(str(cause).strip().splitlines()[0])
        if isinstance(exc, OverrideParseException) or "LexerNoViableAlt" in text:
            lines = [ln.replace("LexerNoViableAltException", "cannot read the override") for ln in lines]
            lines.append("hint: a value with spaces or special characters must be quoted for the shell and "
                         "for Hydra, e.g. 'results_dir=\"/data/my runs\"'")
        print(f"fastvlm-bench: error: {'; '.join(lines) or type(exc).__name__}", file=sys.stderr)
        return 2
    except OSError as exc:
        if user_full_error:
            raise
        path = _written_file(exc)
        _drop_empty_hydra_file(path)
        print(f"fastvlm-bench: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
