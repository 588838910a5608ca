"""``fastvlm-bench gate``: the CI baseline gate on one result set.

    fastvlm-bench gate RESULTS_DIR [--config sweeps/gate/ci_baseline.yaml] [--markdown F] [--json F]

Runs every registered check (:mod:`bench.regress.checks`) with the thresholds of a gate config
(:mod:`bench.regress.gate_config`, see ``sweeps/gate/ci_baseline.yaml``): measured visual tokens
against the architecture's formula, rows present and exact token factors at matched
resolutions, the target encoder's minimum speed-ups over baseline encoders (on the lower bound
of the 95 % interval), and the token-matched set.

Rows whose records call them disturbed, or that stopped on the budget far from their target
interval (:mod:`bench.regress.quality`), are listed by name before the verdict, and in the JSON
(``flagged_rows``); ``--strict`` refuses to gate them (exit 2). Rows measured under several
allocators (``allocator``, a different stack: :mod:`bench.measure.allocator`) are warned about,
and ``--strict`` refuses them; the gate's ``select`` can pick one (``allocator: tcmalloc``).

Exit status: 0 when every check passes, 1 when any fails, 2 for bad input (missing or malformed
results or config, or rows refused by ``--strict``), each reported as one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Dict, List

from ..config import InputError

from .checks import CHECKS, Check, GateContext, RowFinder, TokenCounter, registry_token_count
from .gate_config import DEFAULT_CONFIG, GateConfig, load_gate_config, resolve_config_path
from .quality import describe
from .quality import flags as quality_flags
from .rows import json_safe, load_results, ok_rows, write_output


def run_gate(df, config: GateConfig, count: TokenCounter = registry_token_count) -> Dict[str, Any]:
    """All registered checks of a validated config on one results table; a JSON-ready dict."""
    ctx = GateContext(df=df, config=config, finder=RowFinder(df, config.select), count=count)
    checks: List[Check] = []
    for name in ("visual_tokens", "matched_resolution", "token_matched") + tuple(
            n for n in CHECKS.names() if n not in ("visual_tokens", "matched_resolution", "token_matched")):
        checks += CHECKS.get(name)(ctx)
    if not checks:
        checks.append(Check("present", "results", "0 ok rows", "rows to check", False, "nothing to check"))
    failed = [c for c in checks if not c.passed]
    flagged = quality_flags(ok_rows(df), "results")
    return json_safe({"flagged_rows": flagged, "flagged": len(flagged), "passed": not failed, "n_checks": len(checks), "n_failed": len(failed), "target": config.target,
                      "select": dict(config.select), "checks": [asdict(c) for c in checks],
                      "token_matched": ctx.token_matched_info,
                      "token_matched_tokens": config.token_matched.visual_tokens if config.token_matched else None})


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gate", help="the CI baseline gate on one result set", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", metavar="RESULTS_DIR", help="results folder (results/<sweep>), .csv or .parquet")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"gate thresholds (default {DEFAULT_CONFIG})")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the gate report as Markdown")
    p.add_argument("--json", default=None, metavar="FILE", help="write the gate result as JSON")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2) results holding rows whose records call "
                   "them disturbed or stopped on the budget far from their target")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .render import render_gate_markdown, render_gate_text

    config = load_gate_config(args.config)
    df = load_results(args.results, "RESULTS")
    # a different allocator is a different stack (issue 33): gated rows from several are flagged
    allocators = sorted({str(r["allocator"]) for r in RowFinder(df, config.select).ok if r.get("allocator")})
    if len(allocators) > 1:
        msg = (f"the gated rows were measured under {len(allocators)} allocators ({', '.join(allocators)}): "
               "ratios between them mix a different stack; narrow the gate's 'select' (allocator: NAME)")
        if getattr(args, "strict", False):
            raise InputError(f"refusing to gate (--strict): {msg}")
        print(f"fastvlm-bench gate: warning: {msg}", file=sys.stderr)
    flagged = quality_flags(ok_rows(df), "results")
    if getattr(args, "strict", False) and flagged:  # before the checks: they would decide on these rows
        raise InputError(f"refusing to gate (--strict): {len(flagged)} row(s) are disturbed or stopped on the "
                         "budget far from their target: " + "; ".join(describe(f) for f in flagged[:3])
                         + (" ..." if len(flagged) > 3 else ""))
    result = run_gate(df, config)
    result.update(results=str(args.results), config=str(resolve_config_path(args.config)), allocators=allocators)
    print(render_gate_text(result, args.results))
    if args.markdown:
        write_output(args.markdown, render_gate_markdown(result, args.results))
    if args.json:
        write_output(args.json, json.dumps(result, indent=1) + "\n")
    return 0 if result["passed"] else 1
