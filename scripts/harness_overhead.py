#!/usr/bin/env python3
"""Benchmark of the harness itself (not a pass/fail test): where does a sweep's wall time go?

Runs a sweep (default: the `default` sweep) into a fresh results folder through the real CLI,
then splits the total wall time into: time inside timed regions (the measurement loops),
model build time per point, the untimed FLOP-count/warm-up/compile passes, and what is left
(process start, imports, Hydra, writing records and tables).

    python scripts/harness_overhead.py                 # the default sweep
    python scripts/harness_overhead.py sweep=ci_baseline
    python scripts/harness_overhead.py sweep=none encoder=tiny_vit llm=qwen2_tiny resolution=64,96
    python scripts/harness_overhead.py --from results/default --wall 431   # a sweep already run, timed outside
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv):
    from bench.results.io import atomic_write_text
    from bench.results.store import load_table

    out_dir = Path(tempfile.mkdtemp(prefix="fastvlm-overhead-"))
    if argv[:1] == ["--from"]:
        if len(argv) != 4 or argv[2] != "--wall":
            print("usage: harness_overhead.py --from SWEEP_DIR --wall SECONDS", file=sys.stderr)
            return 2
        sweep_dirs, total = [Path(argv[1])], float(argv[3])
    else:
        args = [sys.executable, "-m", "bench", *argv, f"results_dir={out_dir}", "report=false", "force=true"]
        t0 = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return proc.returncode
        sweep_dirs = [p for p in out_dir.iterdir() if p.is_dir()]
    df = load_table(sweep_dirs[0])
    ok = df[df.status == "ok"]
    timed = float(ok.timed_s.sum())
    warmup = float(ok.warmup_s.fillna(0).sum())
    build = float(df.build_s.fillna(0).sum())
    compile_s = float(df.compile_s.fillna(0).sum()) if "compile_s" in df else 0.0
    point_wall = float(df.wall_s.fillna(0).sum())
    untimed_passes = point_wall - build - timed - warmup - compile_s
    rest = total - point_wall
    harness = total - timed - warmup  # the harness's own time: everything but measuring
    print(f"sweep {sweep_dirs[0].name}: {len(df)} points ({df.status.value_counts().to_dict()})")
    print(f"total wall time            {total:8.1f} s")
    print(f"inside timed regions       {timed:8.1f} s  ({100 * timed / total:5.1f} %)")
    print(f"warm-up iterations         {warmup:8.1f} s  ({100 * warmup / total:5.1f} %)")
    print(f"model build                {build:8.1f} s  ({100 * build / total:5.1f} %)")
    print(f"FLOP count, peak, GC    {untimed_passes:8.1f} s  ({100 * untimed_passes / total:5.1f} %)")
    if compile_s:
        print(f"torch.compile              {compile_s:8.1f} s  ({100 * compile_s / total:5.1f} %)")
    print(f"process/Hydra/store        {rest:8.1f} s  ({100 * rest / total:5.1f} %)")
    print(f"harness outside warm-up and timed iterations: {harness:.1f} s ({100 * harness / total:.1f} %)")
    reached = int((ok.stop_reason == "target").sum())
    print(f"stopping rule: {reached} of {len(ok)} points reached the target interval "
          f"({ok.stop_reason.value_counts().to_dict()}); median TTFT interval half-width "
          f"{100 * float(ok.ttft_ci_rel.median()):.2f} % (max {100 * float(ok.ttft_ci_rel.max()):.2f} %); "
          f"{int(ok.disturbed_iterations.sum())} disturbed iterations")
    print("\nper point:")
    cols = ["encoder", "resolution", "llm", "status", "build_s", "warmup_s", "timed_s", "wall_s", "ttft_ms", "ttft_n",
            "ttft_ci_rel", "stop_reason", "disturbed_iterations"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    summary = {"total_s": total, "timed_s": timed, "warmup_s": warmup, "build_s": build, "untimed_passes_s": untimed_passes,
               "harness_s": harness, "target_reached": reached, "ok_points": len(ok),
               "median_ttft_ci_rel": float(ok.ttft_ci_rel.median()),
               "compile_s": compile_s, "other_s": rest, "points": len(df),
               "build_s_per_point": df.set_index(["encoder", "resolution", "llm"]).build_s.to_dict()}
    atomic_write_text(out_dir / "overhead.json", json.dumps({k: (v if not isinstance(v, dict) else
                                                           {str(kk): vv for kk, vv in v.items()})
                                                       for k, v in summary.items()}, indent=1))
    print(f"\nrecords and overhead.json in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
