"""``fastvlm-bench report RESULTS_DIR [--out DIR] [--accuracy FILE ...] [--benchmarks a,b]
[--x ttft_ms|vision_latency_ms|visual_tokens] [--no-paper]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..accuracy.schema import AccuracyFormatError
from ..analysis.pareto import AVG5
from ..config import InputError
from ..results.io import ResultsWriteError

NAME = "report"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="render reports/<sweep>/ (HTML, Markdown, figures)",
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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .render import render_report

    results = Path(args.results_dir)
    out = Path(args.out) if args.out else None  # render_report: reports/<sweep name>
    benchmarks = tuple(b.strip().lower() for b in args.benchmarks.split(",") if b.strip())
    if not benchmarks:
        raise InputError("--benchmarks is empty")
    try:
        index = render_report(results, out, accuracy_files=args.accuracy, benchmarks=benchmarks, x=args.x,
                              include_paper=not args.no_paper)
    except ResultsWriteError:
        raise  # one line naming the file, exit 1 (the CLI)
    except (FileNotFoundError, AccuracyFormatError, ValueError) as exc:
        raise InputError(str(exc)) from None
    except KeyError as exc:  # a column the checks did not foresee: still one line, naming the input
        raise InputError(f"{results}: missing column {exc}") from None
    except OSError as exc:
        raise ResultsWriteError(exc.errno or 5, f"cannot write the report: {exc.strerror or exc}"
                                + (f" ({exc.filename})" if exc.filename else "")) from None
    print(f"report written: {index}")
    print(f"markdown: {index.parent / 'report.md'}")
    return 0
