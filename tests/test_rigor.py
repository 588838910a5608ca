"""Measurement rigor with real runs of tiny models: ``compare`` catches a real slowdown of one
stage and flags nothing when the same configuration is run again in another process; it refuses
incomparable sides with --strict; and the gate fails an encoder whose analytical token formula
is wrong, because it checks the count measured on the real forward pass.

The slowdown is real work: ``extra_work_matmuls`` 256x256 fp32 matmuls inside the vision stage,
calibrated in this process to about 30 % of that stage's measured median (extra work also
evicts the model's data from the caches, so the measured slowdown is somewhat larger).

Runs are made in pairs of processes at the same time, taking turns on the machine
(``timing.turns``): on a shared machine the speed drifts by several percent over tens of
seconds, and only runs that share the drift can be compared at a small noise floor (5 % for one
pair). Runs made one after the other get the single-run floor instead.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from bench.measure.extra_work import extra_work_ms
from bench.regress.compare import PAIR_NOISE_FLOOR
from conftest import ROOT, run_cli

# serial (tests/conftest.py), the tests of the interleaved runs (the ``runs`` fixture, made by the
# first of them) and of other processes' CPU use: judged from times measured in one run; a
# neighbour's work would distort them. The gate's token check, the non-finite check and the
# busy-CPU run (whose own hog makes every target out of reach) assert on no neighbour-free time.

POINT = ["sweep=none", "encoder=tiny_convnext", "llm=qwen2_tiny", "resolution=256", "device=cpu", "threads=1",
         "report=false", "count_flops=false", "measure_peak=false", "timing.max_seconds=4",
         "timing.turn_seconds=0.3"]


def _sweep(results, name, *extra):
    p = run_cli([*POINT, f"name={name}", f"results_dir={results}", *extra])
    assert p.returncode == 0, p.stderr[-3000:]
    return results / name


def _pair(results, names, extras):
    """Two runs at the same time, in turns on the machine (the real CLI, two processes)."""
    turn = results / f"{names[0]}.turn"
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *POINT, f"name={n}", f"results_dir={results}",
                               f"timing.turns={turn}", *x], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n, x in zip(names, extras)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return [results / n for n in names]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two interleaved pairs: base || the same again, and base || base + extra work calibrated to
    30 % of the vision stage (measured in this process)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("rigor")
    a, again = _pair(root, ("a", "again"), ([], []))
    vision_ms = float(pd.read_csv(a / "results.csv").loc[0, "vision_latency_ms"])
    n = max(1, round(0.30 * vision_ms / extra_work_ms(1)))
    c, slow = _pair(root, ("c", "slow"), ([], ["extra_work_stage=vision_latency", f"extra_work_matmuls={n}"]))
    return {"a": a, "again": again, "c": c, "slow": slow, "root": root, "matmuls": n}


def _compare(runs, base, cand, *extra):
    js = runs["root"] / f"{abs(hash((base, cand, extra)))}.json"
    # the slow side has one knob more (extra work), so match on the configuration proper
    p = run_cli(["compare", base, cand, "--match-on", "encoder,resolution,llm,dtype", "--json", str(js), *extra])
    assert p.returncode in (0, 1), p.stderr[-2000:]
    data = json.loads(js.read_text())["comparison"]
    return p, data, next(c for c in data["comparisons"] if c["metric"] == "vision_latency")


@pytest.mark.serial
def test_interleaved_runs_took_turns(runs):
    import pandas as pd

    for name in ("a", "again", "c", "slow"):
        row = pd.read_csv(runs[name] / "results.csv").iloc[0]
        assert row["turns_taken"] >= 1, (name, row["turns_taken"])  # the other process had turns meanwhile


@pytest.mark.serial
def test_a_real_slowdown_of_one_stage_is_flagged(runs):
    p, data, vis = _compare(runs, str(runs["c"]), str(runs["slow"]))
    assert p.returncode == 1, p.stdout[-3000:]
    assert vis["verdict"] == "regression" and vis["interleaved"] and vis["method"] == "paired bootstrap", vis
    assert vis["noise_floor"] == PAIR_NOISE_FLOOR, vis


@pytest.mark.serial
def test_the_same_configuration_run_again_is_not_flagged(runs):
    p, data, vis = _compare(runs, str(runs["a"]), str(runs["again"]))
    assert p.returncode == 0, p.stdout[-3000:]
    assert vis["interleaved"] and vis["noise_floor"] == PAIR_NOISE_FLOOR, vis
    assert "REGRESSION" not in p.stdout and "improved" not in p.stdout


@pytest.mark.serial
def test_runs_made_one_after_the_other_get_the_single_run_floor(runs):
    """a and c were made minutes apart: their interval cannot see the drift between them."""
    from bench.regress.compare import SINGLE_RUN_NOISE_FLOOR

    _, _, vis = _compare(runs, str(runs["a"]), str(runs["c"]))
    assert not vis["interleaved"] and vis["noise_floor"] == SINGLE_RUN_NOISE_FLOOR, vis


@pytest.mark.serial
def test_several_runs_per_side_are_resampled_as_runs(runs):
    from bench.regress.compare import SINGLE_RUN_NOISE_FLOOR

    p, data, vis = _compare(runs, f"{runs['a']},{runs['again']}", f"{runs['c']}")
    assert data["runs_base"] == 2 and vis["runs_base"] == 2 and vis["method"] == "bootstrap", vis
    assert vis["noise_floor"] == SINGLE_RUN_NOISE_FLOOR  # the candidate has one run


@pytest.mark.serial
def test_several_pairs_are_compared_across_pairs(runs):
    """a || again and c || slow as two pairs of one A/B: each base run is paired with the
    candidate run that shared its turn file. Student's t over two pairs that disagree (about
    1.0 and 1.3) holds that spread, so nothing is claimed."""
    from bench.regress.compare import DEFAULT_NOISE_FLOOR

    p, data, vis = _compare(runs, f"{runs['a']},{runs['c']}", f"{runs['again']},{runs['slow']}")
    assert vis["interleaved"] and vis["method"] == "paired t" and vis["noise_floor"] == DEFAULT_NOISE_FLOOR, vis
    assert vis["ci_low"] < 1.0 < vis["ci_high"] and vis["verdict"] == "unchanged", vis


@pytest.mark.serial
def test_incomparable_sides_warn_and_strict_refuses(runs):
    other = _sweep(runs["root"], "t2", "threads=2")
    p = run_cli(["compare", str(runs["a"]), str(other)])
    assert "warning: threads differs: base 1 vs candidate 2" in p.stdout, p.stdout[-2000:]
    p = run_cli(["compare", str(runs["a"]), str(other), "--strict"])
    assert p.returncode == 2 and "refusing to compare (--strict): threads differs" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.fixture
def own_encoders():
    """Encoders a test registers in this process are taken out again afterwards: a later test on
    the same worker (tests/test_list.py) compares this process's registry with what a fresh
    ``fastvlm-bench list`` prints, which knows nothing of them."""
    from bench.models.encoders import ENCODERS

    before = set(ENCODERS.names())
    yield
    for name in set(ENCODERS.names()) - before:
        del ENCODERS._items[name]


def test_gate_fails_an_encoder_whose_token_formula_is_wrong(tmp_path, own_encoders):
    """A test-registry encoder whose analytical formula misses a stride-2 stage: the records say
    4x the tokens the model produces. Comparing the formula with itself (the old gate) passed;
    the gate now checks the count measured on the forward pass and fails."""
    from bench.cli import main as cli_main
    from bench.config import BenchConfig, EncoderConf, LLMConf, QUICK_TIMING
    from bench.measure.scenario import measure_point, resolve_plan
    from bench.models.encoders import ENCODERS, get_encoder_spec
    from bench.results.store import ResultsStore

    good = get_encoder_spec("tiny_convnext")
    wrong = dataclasses.replace(good, name="tiny_convnext_wrongspec", downsamples=tuple(good.downsamples)[:-1])
    if wrong.name not in ENCODERS:
        ENCODERS.add(wrong.name, wrong)
    cfg = BenchConfig(name="wrong", encoder=EncoderConf(wrong.name), llm=LLMConf("qwen2_tiny"), resolution=128,
                      device="cpu", timing=dataclasses.replace(QUICK_TIMING), count_flops=False, measure_peak=False,
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
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


@pytest.mark.serial
def test_other_processes_cpu_use_counts_a_neighbour_and_not_our_own_children(tmp_path):
    """The record's ``device_info`` share of the CPUs used by other processes: a busy process
    that is not ours counts; our own busy child (as torch.compile's compile workers are) does
    not. Compared in the same run, so a busy CI host moves both readings alike."""
    import subprocess
    import sys
    import time

    from bench.measure.trackers import OtherCpuUse

    busy = "import time\nt=time.time()\nwhile time.time()-t<2.5: pass"

    def share_while(argv) -> float:
        proc = subprocess.Popen(argv)
        time.sleep(0.3)  # the busy loop is running (and the shell, if any, has exited)
        use = OtherCpuUse()
        time.sleep(1.5)
        frac = use.read()["other_processes_cpu_frac"]
        time.sleep(1.0)  # the busy loop has ended
        proc.wait()
        return frac

    child = share_while([sys.executable, "-c", busy])
    # started in the background by a shell that exits at once: the busy process is nobody's
    # child of ours
    neighbour = share_while(["sh", "-c", f"{sys.executable} -c '{busy}' &"])
    assert neighbour - child > 0.25, (child, neighbour)
    assert child < 0.25, child


def test_a_point_whose_outputs_are_not_finite_is_an_error_not_a_timing(tmp_path, own_encoders):
    """bf16/fp16 placeholder weights can overflow; inf/NaN arithmetic can be faster than real
    arithmetic, so such a point must not be timed. An encoder in a test registry whose output is
    inf: the check on the first warm-up iteration turns the point into an ``error`` record."""
    from torch import nn

    from bench.config import BenchConfig, EncoderConf, LLMConf, QUICK_TIMING
    from bench.measure.scenario import measure_point, resolve_plan
    from bench.models.encoders import ENCODERS, EncoderSpec, register_encoder

    class _Overflow(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 24, kernel_size=16, stride=16)

        def forward_features(self, pixels):
            return self.stem(pixels) * float("inf")

    name = "tiny_overflow"
    if name not in ENCODERS:
        register_encoder(EncoderSpec(name=name, description="outputs inf (test_rigor)", channels=24, stride=16,
                                     kind="conv", builder=lambda resolution: _Overflow(),
                                     downsamples=((16, 16, 0),), min_resolution=16, tiny=True))
    cfg = BenchConfig(name="overflow", encoder=EncoderConf(name), llm=LLMConf("qwen2_tiny"), resolution=64,
                      device="cpu", timing=dataclasses.replace(QUICK_TIMING), count_flops=False, measure_peak=False,
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
    assert rec.status == "error", rec.status
    assert "non-finite values in visual_tokens on the first warm-up iteration" in rec.message, rec.message
    assert not rec.stages  # nothing was timed
