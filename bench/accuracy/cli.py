"""``fastvlm-bench accuracy import PATH... [--mapping FILE] [--out FILE.csv]``.

Reads lmms-eval results JSON (files, or folders searched recursively for ``*_results.json``),
takes each task's primary metric in percent, keys it to (encoder, resolution, llm) -- from the
``fastvlm_bench`` plugin's model_args or from ``--mapping`` (YAML/CSV, see
:mod:`bench.accuracy.lmms_import`) -- and merges the rows into ``--out`` (default
``results/accuracy.csv``; rows of the same configuration, benchmark and source are replaced).

Every file or task that could not be used is reported on stderr. The exit status is 1 only
when nothing at all could be read (2 for usage errors).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

DEFAULT_OUT = "results/accuracy.csv"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastvlm-bench accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import lmms-eval results JSON into the accuracy table")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="results JSON files or folders (searched recursively)")
    imp.add_argument("--mapping", metavar="FILE", help="YAML or CSV: file/model/model_args patterns -> "
                                                      "encoder, resolution, llm")
    imp.add_argument("--out", metavar="FILE.csv", default=DEFAULT_OUT,
                     help=f"accuracy table to create or merge into (default {DEFAULT_OUT})")
    imp.add_argument("--dry-run", action="store_true", help="print the rows, write nothing")
    return p


def _import(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..accuracy_table import AccuracyFormatError, read_accuracy
    from .lmms_import import MappingError, import_results, merge_into

    try:
        report = import_results(args.paths, mapping=args.mapping)
    except MappingError as exc:
        print(f"fastvlm-bench accuracy: error: {exc}", file=sys.stderr)
        return 2
    for msg in report.problems:
        print(f"fastvlm-bench accuracy: could not use {msg}", file=sys.stderr)
    for msg in report.notes:
        print(f"fastvlm-bench accuracy: note: {msg}", file=sys.stderr)
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
            print(f"fastvlm-bench accuracy: error: cannot merge into {out}: {exc}", file=sys.stderr)
            return 2
    else:
        merged = rows
    from ..store import ResultsWriteError, atomic_write_text

    try:
        atomic_write_text(out, merged.to_csv(index=False))
    except ResultsWriteError as exc:
        print(f"fastvlm-bench accuracy: error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(rows)} row(s) from {len(report.files_read)} file(s) -> {out} ({len(merged)} rows in all)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "import":
        return _import(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    raise SystemExit(main())
