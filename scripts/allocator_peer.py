#!/usr/bin/env python3
"""The harness against a peer timer, on the same module, under the same allocator (issue 33).

Each round runs, in fresh processes and alternating which goes first:

- the harness: ``python -m bench sweep=none llm=none encoder=E resolution=R threads=T
  allocator=A`` (an encoder-only point; its ``vision_latency`` median);
- the peer: timm's same tower (``timm.create_model(<the encoder's timm name>)``,
  re-parameterised as the harness deploys it, eval, ``forward_features``) timed by
  ``torch.utils.benchmark.Timer.blocked_autorange`` under ``torch.inference_mode`` with T
  threads, in a process started with the environment the harness's record names
  (``allocator_env``) and nothing else of ours.

It prints harness / peer per round and the median of the rounds' ratios: the harness agrees
with a fresh-process peer when that is within a few percent.

    python scripts/allocator_peer.py                          # fastvit @ 512 px, 2 threads, the default allocator
    python scripts/allocator_peer.py --allocator tcmalloc --rounds 5
    python scripts/allocator_peer.py --harness timing.warmup_seconds=5 --peer-warmup 10   # a longer warm-up
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peer(encoder: str, resolution: int, threads: int, min_run_time: float, warmup: int) -> None:
    """In the peer's own process: time the tower, print one JSON line."""
    import torch
    import torch.utils.benchmark as benchmark

    sys.path.insert(0, str(ROOT))
    from bench.measure.allocator import process_facts
    from bench.models.encoders import get_encoder_spec
    from bench.models.encoders.base import load_timm

    torch.set_num_threads(threads)
    timm = load_timm()
    spec = get_encoder_spec(encoder)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    if spec.reparameterize:
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model, inplace=True)
    model.eval()
    x = torch.randn(1, 3, resolution, resolution)
    with torch.inference_mode():
        for _ in range(warmup):
            model.forward_features(x)
        t = benchmark.Timer(stmt="model.forward_features(x)", globals={"model": model, "x": x}, num_threads=threads)
        m = t.blocked_autorange(min_run_time=min_run_time)
    facts = process_facts()
    print(json.dumps({"median_ms": m.median * 1e3, "n": len(m.times), "allocator": facts["allocator"],
                      "allocator_library": facts["allocator_library"]}))


def clean_env() -> dict:
    """This environment without any allocator state of ours (a preloaded allocator, the held
    thresholds): the base a record's ``allocator_env`` is put on."""
    sys.path.insert(0, str(ROOT))
    from bench.measure.allocator import child_env

    env = child_env("glibc")
    env.pop("FASTVLM_BENCH_ALLOCATOR_REEXEC", None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_harness(args, out: Path, i: int) -> dict:
    cmd = [sys.executable, "-m", "bench", "sweep=none", "llm=none", f"encoder={args.encoder}",
           f"resolution={args.resolution}", f"threads={args.threads}", f"allocator={args.allocator}",
           f"results_dir={out}", f"name=round{i}", "report=false", "count_flops=false", "measure_peak=false",
           "preprocess=false", *args.harness]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=clean_env())
    if p.returncode != 0:
        raise SystemExit(f"allocator_peer: the harness failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    rec = json.loads(next((out / f"round{i}" / "records").glob("*.json")).read_text())
    return {"median_ms": rec["stages"]["vision_latency"]["median"], "n": rec["stages"]["vision_latency"]["n"],
            "allocator_env": rec["env"]["allocator_env"], "allocator": rec["env"]["allocator"],
            "warmup_s": rec.get("warmup_s"), "warmup_iterations": rec.get("warmup_iterations")}


def run_peer(args, allocator_env: dict) -> dict:
    env = clean_env()
    env.update(allocator_env)
    cmd = [sys.executable, __file__, "--as-peer", "--encoder", args.encoder, "--resolution", str(args.resolution),
           "--threads", str(args.threads), "--min-run-time", str(args.min_run_time),
           "--peer-warmup", str(args.peer_warmup)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"allocator_peer: the peer failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="fastvit")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--allocator", default="glibc_held")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=5.0, help="the peer's blocked_autorange budget (s)")
    ap.add_argument("--peer-warmup", type=int, default=1, help="the peer's untimed iterations first")
    ap.add_argument("--harness", nargs="*", default=[], help="more overrides for the harness")
    ap.add_argument("--as-peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.as_peer:
        peer(args.encoder, args.resolution, args.threads, args.min_run_time, args.peer_warmup)
        return 0
    out = Path(tempfile.mkdtemp(prefix="fastvlm-peer-"))
    load = os.getloadavg()[0]
    print(f"{args.encoder} @ {args.resolution} px, {args.threads} threads, allocator={args.allocator}, "
          f"{args.rounds} rounds; load average {load:.2f} at the start")
    ratios = []
    for i in range(args.rounds):
        t0 = time.time()
        if i % 2 == 0:
            h = run_harness(args, out, i)
            p = run_peer(args, h["allocator_env"])
        else:  # the peer goes first; it needs the record's allocator_env: the state asked for
            from bench.measure.allocator import wanted_env

            p = run_peer(args, wanted_env(args.allocator))
            h = run_harness(args, out, i)
        ratios.append(h["median_ms"] / p["median_ms"])
        print(f"round {i + 1}: harness {h['median_ms']:.1f} ms (n={h['n']}, warm-up {h['warmup_iterations']} it "
              f"{h['warmup_s'] or 0:.1f} s, {h['allocator']}) | peer {p['median_ms']:.1f} ms (n={p['n']}, "
              f"{p['allocator']}) | ratio {ratios[-1]:.3f} | {time.time() - t0:.0f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    from bench.measure.stats import median_ci

    lo, hi = median_ci(ratios)  # the harness's own distribution-free interval of a median
    span = f"[{lo:.3f}, {hi:.3f}] 95 %" if lo is not None else "(too few rounds for a 95 % interval)"
    print(f"median ratio {statistics.median(ratios):.3f} {span} over {len(ratios)} rounds "
          f"({', '.join(f'{r:.3f}' for r in ratios)}); allocator_env {json.dumps(h['allocator_env'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
