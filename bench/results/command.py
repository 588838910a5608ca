"""``fastvlm-bench collect RESULTS_DIR [--keep-going]``: rebuild results.csv/parquet from the records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import InputError

NAME = "collect"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="rebuild results.csv/parquet from the records",
                              description="Rebuild a sweep folder's results.csv and results.parquet from its "
                                          "record files.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="sweep folder, e.g. results/<sweep>")
    p.add_argument("--keep-going", action="store_true",
                   help="exit 0 even when corrupt records were left out of the table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Rebuild the table from every good record.

    A corrupt record is named, moved to ``records/corrupt/`` and left out; the table of the
    good ones is still written. The exit status is then 1, so a script notices the loss,
    unless ``--keep-going`` says a partial table is fine.
    """
    from .store import ResultsStore

    root = Path(args.results_dir)
    if not root.is_dir():
        raise InputError(f"{root} {'does not exist' if not root.exists() else 'is not a folder'}")
    store = ResultsStore(root)
    df = store.consolidate()  # a ResultsWriteError is reported by the CLI (exit 1)
    for _, msg in store.corrupt:
        print(f"fastvlm-bench collect: warning: corrupt record {msg}", file=sys.stderr)
    print(f"{len(df)} records -> {root}/results.csv, results.parquet")
    if store.corrupt and not args.keep_going:
        print(f"fastvlm-bench collect: error: {len(store.corrupt)} corrupt record(s) left out of the table "
              "(--keep-going to accept that)", file=sys.stderr)
        return 1
    return 0
