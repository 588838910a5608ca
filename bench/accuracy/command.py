"""``fastvlm-bench accuracy import PATH... [--mapping FILE] [--out FILE.csv]`` and
``fastvlm-bench accuracy run [--out FILE.csv] -- LMMS_EVAL_ARGS...``.

Reads lmms-eval results JSON (files, or folders searched recursively for ``*_results.json``),
takes each task's primary metric in percent, keys it to (encoder, resolution, llm) -- from the
``fastvlm_bench`` plugin's model_args or from ``--mapping`` (YAML/CSV, see
:mod:`bench.accuracy.lmms_import`) -- and merges the rows into ``--out`` (default
``results/accuracy.csv``; rows of the same configuration, benchmark and source are replaced).

Every file or task that could not be used is reported on stderr. A PATH that holds no results
file at all is an error (exit 1, nothing written): that is what a failed lmms-eval evaluation
leaves behind. Exit 2 for usage errors.

``accuracy run`` runs ``python -m lmms_eval LMMS_EVAL_ARGS`` (which must include
``--output_path``), fails with lmms-eval's own error message when it wrote no results file
(lmms-eval itself exits 0 then), and imports the new results into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import InputError

DEFAULT_OUT = "results/accuracy.csv"
NAME = "accuracy"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="import lmms-eval accuracy results (import, run)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="accuracy_command", required=True, metavar="{import,run}")
    imp = sub.add_parser("import", help="import lmms-eval results JSON into the accuracy table")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="results JSON files or folders (searched recursively)")
    imp.add_argument("--mapping", metavar="FILE", help="YAML or CSV: file/model/model_args patterns -> "
                                                      "encoder, resolution, llm")
    imp.add_argument("--out", metavar="FILE.csv", default=DEFAULT_OUT,
                     help=f"accuracy table to create or merge into (default {DEFAULT_OUT})")
    imp.add_argument("--dry-run", action="store_true", help="print the rows, write nothing")
    run_p = sub.add_parser("run", help="run lmms-eval, fail loudly without results, import them")
    run_p.add_argument("--out", metavar="FILE.csv", default=DEFAULT_OUT,
                       help=f"accuracy table to create or merge into (default {DEFAULT_OUT})")
    run_p.add_argument("--mapping", metavar="FILE", help="as for import (needed for models other than fastvlm_bench)")
    run_p.add_argument("--no-import", action="store_true", help="only run and check lmms-eval")
    run_p.add_argument("lmms_args", nargs=argparse.REMAINDER, metavar="-- LMMS_EVAL_ARGS",
                       help="arguments for python -m lmms_eval (after --), including --output_path")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    return _import(args) if args.accuracy_command == "import" else _run(args)


def _run(args: argparse.Namespace) -> int:
    from .lmms_run import LmmsRunError, run_lmms_eval

    lmms_args = args.lmms_args[1:] if args.lmms_args[:1] == ["--"] else args.lmms_args
    try:
        files = run_lmms_eval(lmms_args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except LmmsRunError as exc:
        print(f"fastvlm-bench accuracy: error: {exc}", file=sys.stderr)
        return 1
    print(f"lmms-eval wrote {', '.join(map(str, files))}")
    if args.no_import:
        return 0
    return _import(argparse.Namespace(paths=[str(f) for f in files], mapping=args.mapping, out=args.out,
                                      dry_run=False))


def _import(args: argparse.Namespace) -> int:
    import pandas as pd

    from .schema import AccuracyFormatError, read_accuracy
    from .lmms_import import MappingError, import_results, merge_into

    try:
        report = import_results(args.paths, mapping=args.mapping)
    except MappingError as exc:
        raise InputError(str(exc)) from None
    for msg in report.problems:
        print(f"fastvlm-bench accuracy: could not use {msg}", file=sys.stderr)
    for msg in report.notes:
        print(f"fastvlm-bench accuracy: note: {msg}", file=sys.stderr)
    if report.empty_paths:
        for msg in report.empty_paths:
            print(f"fastvlm-bench accuracy: error: {msg}", file=sys.stderr)
        print("fastvlm-bench accuracy: nothing written", file=sys.stderr)
        return 1
    if not report.files_read:
        print("fastvlm-bench accuracy: error: no lmms-eval results could be read", file=sys.stderr)
        return 1
    rows = report.rows
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(rows.drop(columns=["origin"]).to_string(index=False) if not rows.empty else "(no rows)")
    if args.dry_run:
        return 0
    out = Path(args.out)
    if out.exists():
        try:
            merged = merge_into(read_accuracy(out), rows)
        except AccuracyFormatError as exc:
            raise InputError(f"cannot merge into {out}: {exc}") from None
    else:
        merged = rows
    from ..results.io import atomic_write_text

    atomic_write_text(out, merged.to_csv(index=False))  # a ResultsWriteError: the CLI says so, exit 1
    print(f"{len(rows)} row(s) from {len(report.files_read)} file(s) -> {out} ({len(merged)} rows in all)")
    return 0
