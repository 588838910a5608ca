"""``fastvlm-bench claims RESULTS_DIR [--claims FILE] [--out DIR]``: the paper's comparisons,
measured here (:mod:`bench.analysis.claims`), as Markdown, JSON and CSV."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..config import InputError

NAME = "claims"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="the paper's headline ratios beside the ones measured here",
                              description="Evaluate the FastVLM paper's claims (paper ratio, M1 Max, against "
                                          "the ratio measured here with its 95 % interval) on a results "
                                          "folder, e.g. the one `fastvlm-bench sweep=paper_claims` wrote.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="sweep folder, e.g. results/paper_claims")
    p.add_argument("--claims", default=None, metavar="FILE",
                   help="claims YAML (default: the paper's, bench/data/claims/fastvlm_paper.yaml)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where claims.md, claims.json and claims.csv go (default: RESULTS_DIR)")
    p.set_defaults(func=run)
    return p


def _clean(key, v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if key.startswith("n_") and isinstance(v, float):
        return int(v)  # sample counts (pandas made them floats beside the skipped rows' nulls)
    return v


def run(args: argparse.Namespace) -> int:
    from ..report.tables import markdown_table
    from ..results.io import atomic_write_text
    from .. import models  # noqa: F401  (the config groups the claims' sides are checked against)
    from .claims import PAPER_SETUP, claims_table, display_table

    results = Path(args.results_dir)
    if not results.is_dir():
        raise InputError(f"{results} {'does not exist' if not results.exists() else 'is not a folder'}")
    table = claims_table(results, args.claims)
    out = Path(args.out) if args.out else results
    shown = display_table(table)
    n_measured = int((table["status"] == "measured").sum())
    md = (f"# Paper claims measured here: {results}\n\n"
          f"Paper ratios are the FastVLM paper's ({PAPER_SETUP}), never measured here; measured ratios are "
          "baseline / FastVLM medians on this machine with a 95 % hierarchical-bootstrap interval.\n"
          f"{n_measured} of {len(table)} claims measured.\n\n"
          + markdown_table(list(shown.columns), shown.values.tolist()) + "\n")
    records = [{k: _clean(k, v) for k, v in r.items()} for r in table.to_dict(orient="records")]
    atomic_write_text(out / "claims.md", md)
    atomic_write_text(out / "claims.json", json.dumps({"results_dir": str(results), "paper_setup": PAPER_SETUP,
                                                       "claims": records}, indent=1, default=str) + "\n")
    atomic_write_text(out / "claims.csv", table.to_csv(index=False))
    print(md)
    print(f"written: {out / 'claims.md'}, {out / 'claims.json'}, {out / 'claims.csv'}")
    return 0
