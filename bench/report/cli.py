"""``fastvlm-bench report RESULTS_DIR [--out DIR] [--accuracy FILE ...] [--benchmarks a,b]
[--x ttft_ms|vision_latency_ms|visual_tokens] [--no-paper]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..accuracy_table import AccuracyFormatError
from ..pareto import AVG5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastvlm-bench report",
                                description="Render the HTML/Markdown report of one sweep folder.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="sweep folder, e.g. results/<sweep>")
    p.add_argument("--out", default=None, help="output folder (default: reports/<sweep name>)")
    p.add_argument("--accuracy", nargs="+", action="extend", default=[], metavar="FILE",
                   help="accuracy CSV(s) in the long format (default: RESULTS_DIR/accuracy.csv if present)")
    p.add_argument("--benchmarks", default=",".join(AVG5),
                   help="comma-separated benchmarks to average (default: the paper's Avg-5: %(default)s)")
    p.add_argument("--x", default="ttft_ms", choices=("ttft_ms", "vision_latency_ms", "visual_tokens"),
                   help="x axis of the accuracy plots (default: %(default)s)")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper-reported layer")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .render import render_report

    results = Path(args.results_dir)
    out = Path(args.out) if args.out else None  # render_report: reports/<sweep name>
    benchmarks = tuple(b.strip().lower() for b in args.benchmarks.split(",") if b.strip())
    if not benchmarks:
        print("fastvlm-bench report: error: --benchmarks is empty", file=sys.stderr)
        return 2
    try:
        index = render_report(results, out, accuracy_files=args.accuracy, benchmarks=benchmarks, x=args.x,
                              include_paper=not args.no_paper)
    except (FileNotFoundError, AccuracyFormatError, ValueError) as exc:
        print(f"fastvlm-bench report: error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # a column the checks did not foresee: still one line, naming the input
        print(f"fastvlm-bench report: error: {results}: missing column {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fastvlm-bench report: error: cannot write the report: {exc.strerror or exc}"
              + (f" ({exc.filename})" if exc.filename else ""), file=sys.stderr)
        return 1
    print(f"report written: {index}")
    print(f"markdown: {index.parent / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
