#!/usr/bin/env python3
"""Benchmark of ``compare`` itself (not a pass/fail test): what does it flag on this machine?

Runs one point several times, each in its own process, with the default stopping rule:
``--aa`` plain runs (the A/A set) and one run per slowdown in ``--slowdowns`` (real extra work,
``extra_work_matmuls`` 256x256 fp32 matmuls inside the vision stage, calibrated in this process
to that fraction of the first run's vision median). Then ``fastvlm-bench compare`` with default
settings on every A/A pair (false positives) and first-run-vs-slowdown (detections).

    python scripts/compare_sensitivity.py                       # fastvithd@256 + qwen2_0.5b, 5 A/A runs
    python scripts/compare_sensitivity.py --aa 6 --slowdowns 0.02,0.03,0.05,0.08 -- encoder=tiny_vit ...
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
POINT = ["sweep=none", "encoder=fastvithd", "resolution=256", "llm=qwen2_0.5b", "device=cpu", "report=false",
         "count_flops=false", "measure_peak=false"]


def sweep(out: Path, name: str, point, *extra) -> Path:
    p = subprocess.run([sys.executable, "-m", "bench", *point, f"name={name}", f"results_dir={out}", *extra],
                       cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{p.stderr[-3000:]}")
    return out / name


def compare(a: Path, b: Path, match_on=None) -> dict:
    js = a.parent / f"cmp-{a.name}-{b.name}.json"
    args = [sys.executable, "-m", "bench", "compare", str(a), str(b), "--json", str(js)]
    if match_on:
        args += ["--match-on", match_on]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise SystemExit(f"compare failed: {p.stderr[-2000:]}")
    return json.loads(js.read_text())["comparison"]




def main() -> int:
    from bench.measure.scenario import extra_work_ms

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aa", type=int, default=5, help="plain runs (A/A pairs = n*(n-1)/2)")
    ap.add_argument("--slowdowns", default="0.02,0.03,0.05,0.08", help="fractions of the vision stage")
    ap.add_argument("point", nargs="*", help="Hydra overrides replacing the default point")
    args = ap.parse_args()
    point = args.point or POINT
    out = Path(tempfile.mkdtemp(prefix="fastvlm-sensitivity-"))
    t0 = time.perf_counter()
    aa = [sweep(out, f"aa{i}", point) for i in range(args.aa)]
    import pandas as pd

    row = pd.read_csv(aa[0] / "results.csv").iloc[0]
    threads = int(row["threads"])
    per_mm = extra_work_ms(threads)
    rows = []
    for a, b in itertools.combinations(aa, 2):
        res = compare(a, b)
        flagged = [f"{c['metric']} {c['verdict']}" for c in res["comparisons"] if c["verdict"] in ("regression", "improvement")]
        vis = next(c for c in res["comparisons"] if c["metric"] == "vision_latency")
        rows.append({"pair": f"{a.name}/{b.name}", "vision_ratio": vis["ratio"], "flagged": flagged})
    det = []
    for frac in [float(x) for x in args.slowdowns.split(",")]:
        n = max(1, round(frac * float(row["vision_latency_ms"]) / per_mm))
        s = sweep(out, f"slow{frac:g}", point, "extra_work_stage=vision_latency", f"extra_work_matmuls={n}")
        res = compare(aa[0], s, match_on="encoder,resolution,llm,dtype")
        vis = next(c for c in res["comparisons"] if c["metric"] == "vision_latency")
        det.append({"slowdown": frac, "matmuls": n, "vision_ratio": vis["ratio"], "ci": [vis["ci_low"], vis["ci_high"]],
                    "verdict": vis["verdict"]})
    fp = sum(1 for r in rows if r["flagged"])
    print(f"point: {' '.join(point)}; {threads} threads; one 256x256 matmul {per_mm:.3f} ms; "
          f"vision median {row['vision_latency_ms']:.2f} ms, TTFT {row['ttft_ms']:.2f} ms")
    print(f"A/A: {len(rows)} comparisons, {fp} with anything flagged")
    for r in rows:
        print(f"  {r['pair']:12s} vision ratio {r['vision_ratio']:.3f}  {', '.join(r['flagged']) or 'nothing flagged'}")
    print("slowdowns of the vision stage (first A run as base):")
    for d in det:
        print(f"  {100 * d['slowdown']:4.1f}% ({d['matmuls']} matmuls): ratio {d['vision_ratio']:.3f} "
              f"CI [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}] -> {d['verdict']}")
    flagged = [d["slowdown"] for d in det if d["verdict"] == "regression"]
    print(f"smallest slowdown flagged: {100 * min(flagged):g}%" if flagged else "no slowdown flagged")
    print(f"{time.perf_counter() - t0:.0f} s; results in {out}")
    (out / "sensitivity.json").write_text(json.dumps({"aa": rows, "slowdowns": det}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
