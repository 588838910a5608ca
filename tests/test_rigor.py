"""Measurement rigor with real runs of tiny models: ``compare`` catches a real slowdown of one
stage and flags nothing when the same configuration is run again in another process; it refuses
incomparable sides with --strict; and the gate fails an encoder whose analytical token formula
is wrong, because it checks the count measured on the real forward pass.

The slowdown is real work: ``extra_work_matmuls`` 256x256 fp32 matmuls inside the vision stage,
calibrated in this process to about 10 % of that stage's measured median.
"""
from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from conftest import run_cli

POINT = ["sweep=none", "encoder=tiny_convnext", "llm=qwen2_tiny", "resolution=256", "device=cpu", "threads=1",
         "report=false", "count_flops=false", "measure_peak=false", "timing.max_seconds=8"]


def _sweep(results, name, *extra):
    p = run_cli([*POINT, f"name={name}", f"results_dir={results}", *extra])
    assert p.returncode == 0, p.stderr[-3000:]
    return results / name


def _matmul_ms(n=400) -> float:
    torch.set_num_threads(1)
    a, b, out = torch.randn(256, 256), torch.randn(256, 256), torch.empty(256, 256)
    for _ in range(20):
        torch.mm(a, b, out=out)
    t = time.perf_counter()
    for _ in range(n):
        torch.mm(a, b, out=out)
    return (time.perf_counter() - t) * 1e3 / n


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rigor")
    a = _sweep(root, "a")
    a2 = _sweep(root, "a2")
    import pandas as pd

    vision_ms = float(pd.read_csv(a / "results.csv").loc[0, "vision_latency_ms"])
    n = max(1, round(0.10 * vision_ms / _matmul_ms()))
    slow = _sweep(root, "slow", "extra_work_stage=vision_latency", f"extra_work_matmuls={n}")
    return {"a": a, "a2": a2, "slow": slow, "root": root, "matmuls": n}


def test_a_real_slowdown_of_one_stage_is_flagged(runs):
    # the candidate has one knob more (extra work), so match on the configuration proper
    p = run_cli(["compare", str(runs["a"]), str(runs["slow"]), "--match-on", "encoder,resolution,llm,dtype"])
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-2000:]
    line = next(ln for ln in p.stdout.splitlines() if " vision_latency " in ln)
    assert "REGRESSION" in line, p.stdout
    assert "prefill" in p.stdout and all("REGRESSION" not in ln for ln in p.stdout.splitlines() if " prefill " in ln)


def test_the_same_configuration_run_again_is_not_flagged(runs):
    p = run_cli(["compare", str(runs["a"]), str(runs["a2"])])
    assert p.returncode == 0, p.stdout[-3000:]
    assert "REGRESSION" not in p.stdout and "improved" not in p.stdout


def test_several_runs_per_side_are_resampled_as_runs(runs):
    js = runs["root"] / "multi.json"
    p = run_cli(["compare", f"{runs['a']},{runs['a2']}", str(runs["slow"]), "--match-on", "encoder,resolution,llm",
                 "--json", str(js)])
    assert p.returncode == 1, p.stdout[-3000:]
    data = json.loads(js.read_text())["comparison"]
    assert data["runs_base"] == 2 and data["runs_candidate"] == 1 and data["matched"] == 1
    vis = next(c for c in data["comparisons"] if c["metric"] == "vision_latency")
    assert vis["runs_base"] == 2 and vis["verdict"] == "regression"


def test_incomparable_sides_warn_and_strict_refuses(runs):
    other = _sweep(runs["root"], "t2", "threads=2")
    p = run_cli(["compare", str(runs["a"]), str(other)])
    assert "warning: threads differs: base 1 vs candidate 2" in p.stdout, p.stdout[-2000:]
    p = run_cli(["compare", str(runs["a"]), str(other), "--strict"])
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
