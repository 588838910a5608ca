"""End to end through the real CLI and real Hydra multiruns (tiny models, CPU)."""
import json
import signal
import time

import pandas as pd

from bench.results.store import load_table
from conftest import TINY, run_cli, start_cli


def test_multirun_basic_launcher_writes_records_and_progress(results_dir):
    p = run_cli(["-m", *TINY, "name=e2e", f"results_dir={results_dir}", "encoder=tiny_vit,tiny_convnext",
                 "resolution=64,96"])
    assert p.returncode == 0, p.stderr[-3000:]
    df = pd.read_csv(results_dir / "e2e" / "results.csv")
    assert len(df) == 4 and set(df.status) == {"ok"}
    assert set(df.encoder) == {"tiny_vit", "tiny_convnext"}
    for _, row in df.iterrows():
        assert row.ttft_ms > 0 and row.vision_latency_ms > 0 and row.prefill_ms > 0
        assert row.ttft_ms >= row.prefill_ms
        assert row.visual_tokens == {("tiny_vit", 64): 16, ("tiny_vit", 96): 36, ("tiny_convnext", 64): 4,
                                     ("tiny_convnext", 96): 9}[(row.encoder, row.resolution)]
        assert row.ttft_n == 2 and row.env_torch and row.device_name
        assert row.vision_latency_gflops > 0 and row.vision_params > 0 and row.peak_rss_mb > 0
        assert pd.isna(row.peak_memory_mb)  # CPU: no device memory figure, null not zero
    assert "[1/4]" in p.stderr and "[4/4]" in p.stderr and "ETA" in p.stderr
    rec = json.loads(next((results_dir / "e2e" / "records").glob("*.json")).read_text())
    assert len(rec["stages"]["ttft"]["samples"]) == 2 and rec["config"]["threads"] >= 1


def test_bad_points_are_recorded_and_the_sweep_goes_on(results_dir):
    # 40 px is not a multiple of 16 (skipped); projector=bogus makes every build fail (error)
    p = run_cli(["-m", *TINY, "name=bad", f"results_dir={results_dir}", "encoder=tiny_vit",
                 "resolution=32,40"])
    assert p.returncode == 0, p.stderr[-3000:]
    df = load_table(results_dir / "bad")
    skipped = df[df.resolution == 40].iloc[0]
    assert skipped.status == "skipped" and "nearest valid: [32, 48]" in skipped.message
    p = run_cli(["-m", *TINY, "name=bad2", f"results_dir={results_dir}", "encoder=tiny_vit,tiny_convnext",
                 "resolution=32", "projector=bogus"])
    assert p.returncode == 0, p.stderr[-3000:]
    df = load_table(results_dir / "bad2")
    assert len(df) == 2 and set(df.status) == {"error"}
    assert all("unknown projector 'bogus'" in m for m in df.message)


def test_point_without_memory_is_skipped_with_reason(results_dir):
    import psutil

    from bench.models.llms import get_llm_spec
    from bench.models.materialize import count_parameters, meta_parameters

    with meta_parameters():
        need = count_parameters(get_llm_spec("qwen2_tiny").build()) * 4
    headroom = 4 * psutil.virtual_memory().total / need  # make the tiny model "too big" for real
    p = run_cli(["-m", *TINY, "name=mem", f"results_dir={results_dir}", "encoder=tiny_vit", "resolution=32",
                 f"memory_headroom={headroom}"])
    assert p.returncode == 0, p.stderr[-3000:]
    row = load_table(results_dir / "mem").iloc[0]
    assert row.status == "skipped" and "GiB available" in row.message


def test_unknown_encoder_and_bad_values_are_clear_errors(results_dir):
    p = run_cli([*TINY, "name=x", f"results_dir={results_dir}", "encoder=fastvit_hd"])
    assert p.returncode != 0
    assert "fastvit_hd" in p.stderr and "fastvithd" in p.stderr  # Hydra lists the available options
    p = run_cli([*TINY, "name=x", f"results_dir={results_dir}", "encoder=tiny_vit", "batch_size=0",
                 "timing.min_repeats=-1"])
    assert p.returncode == 2
    assert "batch_size must be a positive whole number" in p.stderr and "timing.min_repeats" in p.stderr
    assert "Traceback" not in p.stderr
    # enum fields: OmegaConf rejects the value and lists the valid ones, still one line, exit 2
    p = run_cli([*TINY, "name=x", f"results_dir={results_dir}", "encoder=tiny_vit", "dtype=bfloat16"])
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    assert p.returncode == 2 and len(errors) == 1 and "bfloat16" in errors[0] and "bf16" in errors[0], p.stderr


def _start_until_first_record(args, records):
    """``python -m bench ARGS`` started, once its first record is in ``records``."""
    proc = start_cli(args)  # forked once the imports are done (tests/forkserver.py)
    deadline = time.time() + 300
    while time.time() < deadline and not (records.is_dir() and list(records.glob("*.json"))):
        time.sleep(0.1)
    return proc


def test_resume_after_interrupted_sweep(results_dir):
    """Kill a running sweep after its first record, re-run: kept records untouched, rest measured."""
    args = ["-m", *TINY, "name=resume", f"results_dir={results_dir}", "encoder=tiny_vit",
            "resolution=32,48,64,80", "timing.min_seconds=1.5"]
    records = results_dir / "resume" / "records"
    proc = _start_until_first_record(args, records)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    first = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert 1 <= len(first) < 4
    assert not list(records.glob(".*.tmp"))  # nothing half-written
    p = run_cli(args)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert out.count("already measured") == len(first)
    after = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())
    # force re-measures everything
    p = run_cli(args[:1] + [a for a in args[1:] if not a.startswith("timing.min_seconds")] + ["force=true"])
    assert p.returncode == 0 and "already measured" not in p.stdout + p.stderr


def test_sigterm_ends_a_local_sweep_at_once_and_the_same_command_resumes_it(results_dir):
    """`kill`, `timeout` or a cancelled CI job send SIGTERM. Hydra's basic launcher catches a
    job's exception and goes on with the next point, so the sweep used to ignore it for the
    rest of its points and end on a traceback. Now: one line, exit 143, at once."""
    args = ["-m", *TINY, "name=term", f"results_dir={results_dir}", "encoder=tiny_vit",
            "resolution=32,48,64", "timing.max_repeats=100000", "timing.max_seconds=30",
            "timing.min_seconds=5"]  # >= 5 s a point: 10 s more after the signal
    records = results_dir / "term" / "records"
    proc = _start_until_first_record(args, records)
    time.sleep(1.0)  # into the second point
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 143, err[-3000:]
    assert elapsed < 5, f"the sweep went on for {elapsed:.1f} s after SIGTERM"
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fastvlm-bench: error: ") and "interrupted by SIGTERM" in last, last
    df = load_table(results_dir / "term")  # the table lists the finished point and the interrupted one
    assert sorted(df.status) == ["error", "ok"] and len(list(records.glob("*.json"))) == 2
    assert "interrupted by SIGTERM" in df[df.status == "error"].message.iloc[0]
    # the same points (the stopping rule is no part of a point's id) under timing=quick's own rule:
    # with max_seconds=30 kept, each of the two points left timed until its interval reached the
    # +-2 % target or 30 s had passed; a busy host often gives the 30 s (the test took 60-87 s)
    p = run_cli([a for a in args if not a.startswith(("timing.max_repeats", "timing.max_seconds",
                                                       "timing.min_seconds"))])
    assert p.returncode == 0, p.stderr[-3000:]
    assert (p.stdout + p.stderr).count("already measured") == 1
    assert sorted(load_table(results_dir / "term").status) == ["ok"] * 3


def test_torch_compile_on_cpu_records_compile_time_apart(tmp_path):
    from bench.config import BenchConfig, EncoderConf, LLMConf, TimingConf
    from bench.measure.scenario import measure_point, resolve_plan

    cfg = BenchConfig(name="c", encoder=EncoderConf("tiny_vit"), llm=LLMConf("qwen2_tiny"), resolution=32,
                      device="cpu", compile=True,
                      # exactly 3 timed iterations of milliseconds: a budget-bound loop on a busy host
                      # (20 s) would outlast the compile it is compared with
                      timing=TimingConf(warmup=1, min_repeats=3, max_repeats=3, min_seconds=0.0, max_seconds=1.0),
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
    assert rec.status == "ok", rec.message
    assert rec.config.compile and rec.compile_s > 0
    assert rec.timed_s < rec.compile_s  # compiling happened before, not inside, the timed loop


def test_batch_size_two_reports_throughput(tmp_path):
    from bench.config import BenchConfig, EncoderConf, LLMConf, TimingConf
    from bench.measure.scenario import measure_point, resolve_plan

    cfg = BenchConfig(name="b", encoder=EncoderConf("tiny_convnext"), llm=LLMConf("llama_tiny"), resolution=64,
                      device="cpu", batch_size=2, timing=TimingConf(warmup=1, min_repeats=3),
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
    assert rec.status == "ok", rec.message
    row = rec.to_row()
    assert row["batch_size"] == 2
    assert abs(row["throughput_images_per_s"] - 2 / (row["ttft_ms"] / 1e3)) < 1e-6
    assert rec.flops["vision_latency"] > 0 and rec.device_peak_tflops > 0
