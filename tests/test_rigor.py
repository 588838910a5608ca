"""Measurement rigor with real runs of tiny models: ``compare`` catches a real slowdown of one
stage and flags nothing when the same configuration is run again in another process; it refuses
incomparable sides with --strict; and the gate fails an encoder whose analytical token formula
is wrong, because it checks the count measured on the real forward pass.

The slowdown is real work: ``extra_work_matmuls`` 256x256 fp32 matmuls inside the vision stage,
calibrated in this process to about 30 % of that stage's measured median (extra work also
evicts the model's data from the caches, so the measured slowdown is somewhat larger). Each
side is three runs in separate processes: on this 2-core machine two processes of the same
configuration differ by up to ~5 %, which the hierarchical bootstrap over runs must absorb.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from bench.measure.scenario import extra_work_ms
from conftest import run_cli

POINT = ["sweep=none", "encoder=tiny_convnext", "llm=qwen2_tiny", "resolution=256", "device=cpu", "threads=1",
         "report=false", "count_flops=false", "measure_peak=false", "timing.max_seconds=4"]
RUNS = 3  # per side: separate processes drift by a few percent, so a side is several runs


def _sweep(results, name, *extra):
    p = run_cli([*POINT, f"name={name}", f"results_dir={results}", *extra])
    assert p.returncode == 0, p.stderr[-3000:]
    return results / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three sides of RUNS separate processes each: base, the same again, and base + extra work
    calibrated to 30 % of the vision stage (measured in this process)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("rigor")
    base = [_sweep(root, f"a{i}") for i in range(RUNS)]
    again = [_sweep(root, f"b{i}") for i in range(RUNS)]
    vision_ms = float(pd.read_csv(base[0] / "results.csv").loc[0, "vision_latency_ms"])
    n = max(1, round(0.30 * vision_ms / extra_work_ms(1)))
    slow = [_sweep(root, f"s{i}", "extra_work_stage=vision_latency", f"extra_work_matmuls={n}") for i in range(RUNS)]
    side = lambda paths: ",".join(map(str, paths))  # noqa: E731
    return {"a": side(base), "again": side(again), "slow": side(slow), "a0": base[0], "root": root, "matmuls": n}


def test_a_real_slowdown_of_one_stage_is_flagged(runs):
    js = runs["root"] / "slow.json"
    # the candidate has one knob more (extra work), so match on the configuration proper
    p = run_cli(["compare", runs["a"], runs["slow"], "--match-on", "encoder,resolution,llm,dtype", "--json", str(js)])
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-2000:]
    data = json.loads(js.read_text())["comparison"]
    assert data["runs_base"] == RUNS and data["runs_candidate"] == RUNS
    vis = next(c for c in data["comparisons"] if c["metric"] == "vision_latency")
    assert vis["verdict"] == "regression" and vis["runs_base"] == RUNS, vis


def test_the_same_configuration_run_again_is_not_flagged(runs):
    p = run_cli(["compare", runs["a"], runs["again"]])
    assert p.returncode == 0, p.stdout[-3000:]
    assert "REGRESSION" not in p.stdout and "improved" not in p.stdout


def test_incomparable_sides_warn_and_strict_refuses(runs):
    other = _sweep(runs["root"], "t2", "threads=2")
    p = run_cli(["compare", str(runs["a0"]), str(other)])
    assert "warning: threads differs: base 1 vs candidate 2" in p.stdout, p.stdout[-2000:]
    p = run_cli(["compare", str(runs["a0"]), str(other), "--strict"])
    assert p.returncode == 2 and "refusing to compare (--strict): threads differs" in p.stderr
    assert "Traceback" not in p.stderr


def test_gate_fails_an_encoder_whose_token_formula_is_wrong(tmp_path):
    """A test-registry encoder whose analytical formula misses a stride-2 stage: the records say
    4x the tokens the model produces. Comparing the formula with itself (the old gate) passed;
    the gate now checks the count measured on the forward pass and fails."""
    from bench.cli import main as cli_main
    from bench.config import BenchConfig, EncoderConf, LLMConf, QUICK_TIMING
    from bench.measure.scenario import measure_point
    from bench.models.encoders import ENCODERS, get_encoder_spec
    from bench.results.store import ResultsStore

    good = get_encoder_spec("tiny_convnext")
    wrong = dataclasses.replace(good, name="tiny_convnext_wrongspec", downsamples=tuple(good.downsamples)[:-1])
    if wrong.name not in ENCODERS:
        ENCODERS.add(wrong.name, wrong)
    cfg = BenchConfig(name="wrong", encoder=EncoderConf(wrong.name), llm=LLMConf("qwen2_tiny"), resolution=128,
                      device="cpu", timing=dataclasses.replace(QUICK_TIMING), count_flops=False, measure_peak=False,
                      results_dir=str(tmp_path))
    rec = measure_point(cfg)
    assert rec.status == "ok", rec.message
    assert rec.visual_tokens == 4 * rec.visual_tokens_measured  # the formula is wrong, the model is not
    store = ResultsStore(tmp_path / "wrong")
    store.put(rec)
    store.consolidate()
    gate_cfg = tmp_path / "g.yaml"
    gate_cfg.write_text(f"target: {wrong.name}\ncheck_visual_tokens: true\n")
    assert cli_main(["gate", str(tmp_path / "wrong"), "--config", str(gate_cfg)]) == 1


def test_disturbed_or_wide_points_are_flagged_in_the_record_and_the_report(tmp_path):
    """A real run on a CPU kept busy by another process: the probe flags contended iterations
    in the record, and the report lists points that missed the target interval or were disturbed."""
    import subprocess
    import sys

    import pandas as pd

    hog = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<60: pass"])
    try:
        root = _sweep(tmp_path, "busy", "threads=2", "timing.max_seconds=3", "timing.target=0.0001")
    finally:
        hog.kill()
    row = pd.read_csv(root / "results.csv").iloc[0]
    assert row["stop_reason"] == "budget"  # a +-0.01 % target is out of reach: the budget ends the loop
    rec = json.loads(next((root / "records").glob("*.json")).read_text())
    assert len(rec["iteration_probes"]) == rec["stages"]["ttft"]["n"]
    assert all({"cpu_util", "nivcsw"} <= set(p) for p in rec["iteration_probes"])
    p = run_cli(["report", str(root), "--out", str(tmp_path / "rep")])
    assert p.returncode == 0, p.stderr[-2000:]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Measurement quality" in md and "budget" in md
