#!/usr/bin/env python3
"""Benchmark of ``compare`` itself (not a pass/fail test): what does it flag on this machine?

Runs one point many times, each run in its own process with the default stopping rule: plain
runs (A/A) and runs with a real slowdown (``extra_work_matmuls`` 256x256 fp32 matmuls inside
the vision stage, calibrated in this process to ``--slowdown`` of the first run's vision
median). Then ``fastvlm-bench compare`` with its default settings. Two designs:

``--mode interleaved`` (default): per cycle, two pairs of processes run at the same time in
turns (``timing.turns``): ``A || A'`` (A/A) and ``C || S`` (detection, C plain). Compared with
one pair per side and with ``--runs-per-side`` pairs (consecutive groups of cycles).

``--mode sequential``: cycles ``A, A', S`` one process after the other, compared with one run
per side (``A_i`` vs ``A'_i``, ``A_i`` vs ``S_i``) and with ``--runs-per-side`` runs per side
(consecutive groups of cycles: A vs A', A' vs the next group's A, A vs the next group's A';
A vs S, A' vs S).

    python scripts/compare_sensitivity.py                           # fastvithd@256 + qwen2_0.5b, 10 cycles
    python scripts/compare_sensitivity.py --mode sequential --cycles 16
    python scripts/compare_sensitivity.py --cycles 6 -- encoder=tiny_vit llm=qwen2_tiny resolution=64
    python scripts/compare_sensitivity.py --analyse /tmp/fastvlm-sensitivity-X /tmp/fastvlm-sensitivity-Y
"""
from __future__ import annotations

import argparse
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
MATCH = "encoder,resolution,llm,dtype"  # the slow side has one knob more (the extra work)


def sweep(out: Path, name: str, point, *extra) -> Path:
    p = subprocess.run([sys.executable, "-m", "bench", *point, f"name={name}", f"results_dir={out}", *extra],
                       cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{p.stderr[-3000:]}")
    return out / name


def sweep_pair(out: Path, names, point, extras) -> None:
    """Two runs at the same time, taking turns on the machine (``timing.turns``)."""
    turn = out / f"{names[0]}-{names[1]}.turn"
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *point, f"name={n}", f"results_dir={out}",
                               f"timing.turns={turn}", *x], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for n, x in zip(names, extras)]
    for n, p in zip(names, procs):
        err = p.communicate()[1]
        if p.returncode != 0:
            raise SystemExit(f"sweep {n} failed:\n{err[-3000:]}")


def compare(base, cand) -> dict:
    """The real CLI with its defaults; returns the vision verdict, ratio, interval and whether
    anything at all was flagged."""
    side = lambda runs: ",".join(str(r) for r in runs)  # noqa: E731
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        p = subprocess.run([sys.executable, "-m", "bench", "compare", side(base), side(cand), "--match-on", MATCH,
                            "--json", fh.name], cwd=ROOT, capture_output=True, text=True)
        if p.returncode not in (0, 1):
            raise SystemExit(f"compare failed: {p.stderr[-2000:]}")
        res = json.loads(Path(fh.name).read_text())["comparison"]
    vis = next(c for c in res["comparisons"] if c["metric"] == "vision_latency")
    flagged = [f"{c['metric']} {c['verdict']}" for c in res["comparisons"] if c["verdict"] in ("regression", "improvement")]
    return {"base": [Path(r).name for r in base], "candidate": [Path(r).name for r in cand], "ratio": vis["ratio"],
            "ci": [vis["ci_low"], vis["ci_high"]], "verdict": vis["verdict"], "flagged": flagged}


def analyse(folders, k: int) -> dict:
    """Run the comparisons on one or more finished folders (their cycles are pooled)."""
    metas = [json.loads((out / "runs.json").read_text()) for out in folders]
    meta = dict(metas[0])
    for key in ("a", "a2", "s", "c"):
        meta[key] = [str(out / n) for out, m in zip(folders, metas) for n in m.get(key, [])]
    meta["seconds"] = sum(m["seconds"] for m in metas)
    a, a2, s, c = ([Path(x) for x in meta[key]] for key in ("a", "a2", "s", "c"))
    n = len(a)
    g = n // k
    grp = lambda runs, j: runs[j * k:(j + 1) * k]  # noqa: E731
    if meta.get("mode") == "interleaved":  # pairs a_i || a2_i and c_i || s_i
        single = {"aa": [compare([a[i]], [a2[i]]) for i in range(n)],
                  "detect": [compare([c[i]], [s[i]]) for i in range(n)]}
        multi = {"aa": [compare(grp(a, j), grp(a2, j)) for j in range(g)],
                 "detect": [compare(grp(c, j), grp(s, j)) for j in range(g)]}
        return {"meta": meta, "runs_per_side": k, "single": single, "multi": multi}
    single = {"aa": [compare([a[i]], [a2[i]]) for i in range(n)], "detect": [compare([a[i]], [s[i]]) for i in range(n)]}
    multi_aa = [compare(grp(a, j), grp(a2, j)) for j in range(g)]
    multi_aa += [compare(grp(a2, j), grp(a, j + 1)) for j in range(g - 1)]
    multi_aa += [compare(grp(a, j), grp(a2, j + 1)) for j in range(g - 1)]
    multi_det = [compare(grp(a, j), grp(s, j)) for j in range(g)] + [compare(grp(a2, j), grp(s, j)) for j in range(g)]
    return {"meta": meta, "runs_per_side": k, "single": single, "multi": {"aa": multi_aa, "detect": multi_det}}


def summary(res: dict) -> str:
    meta = res["meta"]
    lines = [f"point: {' '.join(meta['point'])}; {meta['threads']} threads; slowdown {100 * meta['slowdown']:g}% of "
             f"the vision stage = {meta['matmuls']} matmuls of {meta['per_mm_ms']:.3f} ms; vision median "
             f"{meta['vision_ms']:.2f} ms; {len(meta['a'])} cycles ({meta.get('mode', 'sequential')}) in "
             f"{meta['seconds']:.0f} s"]
    how = "interleaved pairs" if meta.get("mode") == "interleaved" else "runs made one after the other"
    for label, part in ((f"{how}, 1 run per side", res["single"]),
                        (f"{how}, {res['runs_per_side']} runs per side", res["multi"])):
        if not part["aa"]:
            continue
        aa, det = part["aa"], part["detect"]
        fp = sum(1 for c in aa if c["flagged"])
        hit = sum(1 for c in det if c["verdict"] == "regression")
        r_aa = sorted(c["ratio"] for c in aa)
        r_det = sorted(c["ratio"] for c in det)
        lines.append(f"{label}: A/A {fp} of {len(aa)} comparisons flagged anything (vision ratios "
                     f"{r_aa[0]:.3f}-{r_aa[-1]:.3f}); the {100 * meta['slowdown']:g}% slowdown flagged in {hit} of "
                     f"{len(det)} (vision ratios {r_det[0]:.3f}-{r_det[-1]:.3f})")
        for c in aa + det:
            lines.append(f"    {'+'.join(c['base']):>14s} vs {'+'.join(c['candidate']):<14s} ratio {c['ratio']:.3f} "
                         f"CI [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] {c['verdict']:10s} {', '.join(c['flagged'])}")
    return "\n".join(lines)


def main() -> int:
    from bench.measure.extra_work import extra_work_ms

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("interleaved", "sequential"), default="interleaved")
    ap.add_argument("--cycles", type=int, default=10, help="cycles (default 10)")
    ap.add_argument("--slowdown", type=float, default=0.05, help="fraction of the vision stage (default 0.05)")
    ap.add_argument("--runs-per-side", type=int, default=6,
                    help="runs (pairs) per side of the multi-run comparisons (default 6)")
    ap.add_argument("--analyse", type=Path, nargs="+", default=None,
                    help="only run the comparisons, on finished folders (their cycles pooled)")
    ap.add_argument("point", nargs="*", help="Hydra overrides replacing the default point")
    args = ap.parse_args()
    if args.analyse:
        folders = args.analyse
        out = folders[0]
    else:
        import pandas as pd

        point = args.point or POINT
        out = Path(tempfile.mkdtemp(prefix="fastvlm-sensitivity-"))
        t0 = time.perf_counter()
        first = sweep(out, "calibration", point) if args.mode == "interleaved" else sweep(out, "a0", point)
        row = pd.read_csv(first / "results.csv").iloc[0]
        threads = int(row["threads"])
        per_mm = extra_work_ms(threads)
        n = max(1, round(args.slowdown * float(row["vision_latency_ms"]) / per_mm))
        meta = {"point": point, "threads": threads, "per_mm_ms": per_mm, "matmuls": n, "slowdown": args.slowdown,
                "vision_ms": float(row["vision_latency_ms"]), "a": [], "a2": [], "s": [], "c": [], "mode": args.mode}
        slow = ["extra_work_stage=vision_latency", f"extra_work_matmuls={n}"]
        for i in range(args.cycles if args.mode == "interleaved" else 0):
            sweep_pair(out, (f"a{i}", f"b{i}"), point, ([], []))
            sweep_pair(out, (f"c{i}", f"s{i}"), point, ([], slow))
            for key, name in (("a", f"a{i}"), ("a2", f"b{i}"), ("c", f"c{i}"), ("s", f"s{i}")):
                meta[key].append(name)
            print(f"cycle {i + 1}/{args.cycles} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        for i in range(args.cycles if args.mode == "sequential" else 0):
            meta["a"].append((first if i == 0 else sweep(out, f"a{i}", point)).name)
            meta["a2"].append(sweep(out, f"b{i}", point).name)
            meta["s"].append(sweep(out, f"s{i}", point, "extra_work_stage=vision_latency",
                                   f"extra_work_matmuls={n}").name)
            print(f"cycle {i + 1}/{args.cycles} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        meta["seconds"] = time.perf_counter() - t0
        (out / "runs.json").write_text(json.dumps(meta, indent=1))
        folders = [out]
    res = analyse(folders, args.runs_per_side)
    (out / "sensitivity.json").write_text(json.dumps(res, indent=1))
    print(summary(res))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
