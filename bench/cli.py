"""``fastvlm-bench`` entry point: Hydra sweeps by default, plus a few subcommands.

    fastvlm-bench [hydra overrides]          run a sweep (default: the `default` sweep)
    fastvlm-bench list                       encoders and LLMs known to the registry
    fastvlm-bench report RESULTS_DIR         render reports/<sweep>/
    fastvlm-bench compare BASE CANDIDATE     regression check between two result sets
    fastvlm-bench gate RESULTS_DIR           the CI baseline gate
    fastvlm-bench accuracy import PATH...    read lmms-eval results JSON
    fastvlm-bench collect RESULTS_DIR        rebuild results.csv/parquet from the records
"""
from __future__ import annotations

import sys
from typing import List, Optional


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
    from .store import ResultsStore

    if len(argv) != 1:
        print("usage: fastvlm-bench collect RESULTS_DIR", file=sys.stderr)
        return 2
    df = ResultsStore(argv[0]).consolidate()
    print(f"{len(df)} records -> {argv[0]}/results.csv, results.parquet")
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
    from .app import run

    sys.argv = [sys.argv[0]] + args
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
