"""CUDA paths. Marked `cuda`: skipped on machines without a GPU, run by scripts/gpu_check.sh."""
import time

import pytest
import torch

from bench.models import build_vlm
from bench.config import TimingConf
from bench.measure.timer import StageTimer

pytestmark = pytest.mark.cuda


def test_cuda_event_timer_against_known_gpu_work():
    """torch.cuda._sleep spins the GPU for a number of cycles: 3x the cycles ~ 3x the time."""
    timer = StageTimer("cuda", spans={"total": ("a", "b")})

    def step(t):
        with t.stage("a"):
            torch.cuda._sleep(1_000_000)
        with t.stage("b"):
            torch.cuda._sleep(3_000_000)

    res = timer.run(step, TimingConf(min_repeats=10, target_stage="total"))
    a, b = res.stages["a"].median, res.stages["b"].median
    assert 2.5 < b / a < 3.5
    assert 0.95 < res.stages["total"].median / (a + b) < 1.1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_events_on_the_target_device_not_the_current_one():
    """With cuda:0 current, timing work on cuda:1 must measure cuda:1's stream, not host launch time."""
    torch.cuda.set_device(0)
    timer = StageTimer("cuda:1")

    def step(t):
        with t.stage("a"), torch.cuda.device(1):
            torch.cuda._sleep(2_000_000)

    res = timer.run(step, TimingConf(min_repeats=6, target_stage="a"))
    # 2M cycles spin ~1 ms at GPU clocks; the host-side launch alone takes ~0.01 ms
    assert res.stages["a"].median > 0.5


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_point_end_to_end_on_gpu(dtype, tmp_path):
    from bench.config import BenchConfig, EncoderConf, LLMConf, TimingConf
    from bench.measure.scenario import measure_point, resolve_plan

    cfg = BenchConfig(name="cuda", encoder=EncoderConf("fastvithd"), llm=LLMConf("qwen2_0.5b"), resolution=1024,
                      device="cuda", dtype=dtype, timing=TimingConf(warmup=2, min_repeats=6, max_seconds=10),
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
    assert rec.status == "ok", rec.message
    assert rec.visual_tokens == 256 and rec.config.dtype == dtype
    assert rec.peak_memory_mb and rec.peak_memory_mb > 0
    assert rec.device_info["type"] == "cuda" and rec.device_info["name"]
    assert rec.stages["ttft"].median > rec.stages["prefill"].median * 0.9
    assert rec.device_peak_tflops and rec.device_peak_tflops > 10
    assert rec.visual_tokens_measured == 256 and rec.stop_reason in ("target", "budget", "max_repeats")
    assert rec.config.tf32 is False and rec.config.cudnn_benchmark is True
    if rec.energy_per_inference_j is not None:  # GPUs with NVML's energy counter
        assert rec.energy_loop_s >= 2.0 and rec.idle_power_w and rec.avg_power_w > rec.idle_power_w


def test_7b_materialises_on_gpu_in_seconds_without_cpu_copy():
    import psutil

    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    vlm, info = build_vlm("fastvithd", "qwen2_7b", 1024, "cuda", "bf16")
    torch.cuda.synchronize()
    took = time.perf_counter() - t
    assert next(vlm.llm.parameters()).device.type == "cuda"
    assert took < 60, took
    assert psutil.Process().memory_info().rss - rss0 < 4 * 2**30  # 15 GB of weights never went through the CPU
    del vlm
    torch.cuda.empty_cache()


def test_compile_time_recorded_apart(tmp_path):
    from bench.config import BenchConfig, EncoderConf, LLMConf, TimingConf
    from bench.measure.scenario import measure_point, resolve_plan

    cfg = BenchConfig(name="cuda", encoder=EncoderConf("fastvithd"), llm=LLMConf("qwen2_0.5b"), resolution=512,
                      device="cuda", dtype="bf16", compile=True, timing=TimingConf(warmup=2, min_repeats=6, max_seconds=10),
                      results_dir=str(tmp_path))
    rec = measure_point(resolve_plan(cfg))
    assert rec.status == "ok", rec.message
    assert rec.compile_s and rec.compile_s > 0
    assert rec.compile_info["unique_graphs"] >= 1 and rec.compile_info["recompiles"] == 0
