"""``fastvlm-bench`` entry point: Hydra sweeps by default, plus a few subcommands.

    fastvlm-bench [hydra overrides]          run a sweep (default: the `default` sweep)
    fastvlm-bench list                       encoders and LLMs known to the registry
    fastvlm-bench report RESULTS_DIR         render reports/<sweep>/
    fastvlm-bench compare BASE CANDIDATE     regression check between two result sets
    fastvlm-bench gate RESULTS_DIR           the CI baseline gate
    fastvlm-bench accuracy import PATH...    read lmms-eval results JSON
    fastvlm-bench collect RESULTS_DIR [--keep-going]
                                             rebuild results.csv/parquet from the records

Exit status: 0 on success, 1 for a failed check or a results file that could not be written
(the file is named), 2 for bad input; each failure is reported as one line.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

COLLECT_USAGE = "usage: fastvlm-bench collect RESULTS_DIR [--keep-going]"


def _list(argv: List[str]) -> int:
    from .models import ENCODERS, LLMS
    from .models.materialize import count_parameters, meta_parameters

    print("encoders (name: channels, stride/patch, paper resolutions):")
    for name in ENCODERS.names():
        s = ENCODERS.get(name)
        res = ",".join(map(str, s.paper_resolutions)) or "-"
        print(f"  {name:15s} {s.channels:5d} ch  {s.kind} /{s.stride:<3d} {res:16s} {s.description}")
    print("llms (name: hidden, layers, parameters):")
    for name in LLMS.names():
        s = LLMS.get(name)
        with meta_parameters():
            n = count_parameters(s.build())
        print(f"  {name:15s} {s.hidden_size:5d} hidden {s.config['num_hidden_layers']:3d} layers "
              f"{n / 1e9:6.2f} B  {s.description}")
    return 0


def _collect(argv: List[str]) -> int:
    """Rebuild the table from every good record.

    A corrupt record is named, moved to ``records/corrupt/`` and left out; the table of the
    good ones is still written. The exit status is then 1, so a script notices the loss,
    unless ``--keep-going`` says a partial table is fine.
    """
    from .store import ResultsStore, ResultsWriteError

    keep_going = "--keep-going" in argv
    args = [a for a in argv if a != "--keep-going"]
    if len(args) != 1 or args[0].startswith("-"):
        bad = next((a for a in args if a.startswith("-")), None)
        why = f"unknown option {bad}" if bad else "expected exactly one RESULTS_DIR"
        print(f"fastvlm-bench collect: error: {why} ({COLLECT_USAGE})", file=sys.stderr)
        return 2
    root = Path(args[0])
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        print(f"fastvlm-bench collect: error: {root} {what}", file=sys.stderr)
        return 2
    store = ResultsStore(root)
    try:
        df = store.consolidate()
    except ResultsWriteError as exc:
        print(f"fastvlm-bench collect: error: {exc}", file=sys.stderr)
        return 1
    for _, msg in store.corrupt:
        print(f"fastvlm-bench collect: warning: corrupt record {msg}", file=sys.stderr)
    print(f"{len(df)} records -> {root}/results.csv, results.parquet")
    if store.corrupt and not keep_going:
        print(f"fastvlm-bench collect: error: {len(store.corrupt)} corrupt record(s) left out of the table "
              "(--keep-going to accept that)", file=sys.stderr)
        return 1
    return 0


def _report(argv: List[str]) -> int:
    from .report.cli import main

    return main(argv)


def _compare(argv: List[str]) -> int:
    from .compare import main

    return main(argv)


def _gate(argv: List[str]) -> int:
    from .gate import main

    return main(argv)


def _accuracy(argv: List[str]) -> int:
    from .accuracy.cli import main

    return main(argv)


SUBCOMMANDS = {"list": _list, "collect": _collect, "report": _report, "compare": _compare, "gate": _gate,
               "accuracy": _accuracy}


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:]) or 0
    if args and args[0] in ("-h", "--help") and len(args) == 1:
        print(__doc__)
        print("Hydra's own help: fastvlm-bench --hydra-help; config: fastvlm-bench --cfg job")
        return 0
    return _sweep(args)


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

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    user_full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # a log file on a full disk must not print a traceback per log line
    logging.raiseExceptions = False
    from .app import run

    sys.argv = [sys.argv[0]] + args
    try:
        run()
    except (HydraException, OmegaConfBaseException) as exc:
        if user_full_error:
            raise
        text = str(exc).split("Config search path")[0]  # Hydra appends its search path: noise here
        lines = [ln.strip().rstrip(".:") for ln in text.strip().splitlines() if ln.strip()]
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
            lines.append(str(cause).strip().splitlines()[0])
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
