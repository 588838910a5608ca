"""Measure one sweep point: build the VLM, count FLOPs, time the stages, return a Record.

Data flows one way: config -> build models -> time -> record. Failures of the point itself
(no memory, an impossible resolution, an error while running) become records with status
``skipped`` or ``error`` and a message, so a sweep always goes on.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
import traceback
from typing import Optional

import torch

from .config import BenchConfig, validate
from .environment import environment
from .models import InsufficientMemoryError, InvalidResolutionError, build_vlm, get_encoder_spec, get_llm_spec
from .models.vlm import dtype_name, resolve_device, resolve_dtype
from .records import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, PointConfig, Record
from .timing import StageTimer
from .timing.flops import count_flops
from .timing.trackers import (EnergyTracker, MemoryTracker, cpu_snapshot, device_info, measure_copy_gbps,
                              measure_peak_tflops, nvml_snapshot)

log = logging.getLogger("fastvlm_bench")
_PEAK_CACHE: dict = {}


class PointInterrupted(Exception):
    """SIGTERM arrived while a point was being measured (Slurm preemption, scancel, requeue).

    Raised by the handler :func:`bench.app.run_point` installs, so the point stops at once and
    no ``ok`` record is written. An Exception (not a BaseException) so that submitit still
    writes its result file and the sweep's driver learns that the job ended.
    """


def resolve_point(cfg: BenchConfig) -> PointConfig:
    """The concrete knobs (auto device/dtype/threads resolved) that identify the point."""
    dev = resolve_device(cfg.device)
    dt = resolve_dtype(cfg.dtype, dev)
    threads = cfg.threads or torch.get_num_threads()
    return PointConfig(encoder=cfg.encoder.name, resolution=int(cfg.resolution), llm=cfg.llm.name,
                       dtype=dtype_name(dt), device=str(dev), batch_size=cfg.batch_size,
                       prompt_tokens=cfg.prompt_tokens, attn_implementation=cfg.attn_implementation,
                       compile=bool(cfg.compile), compile_mode=cfg.compile_mode,
                       preprocess=bool(cfg.preprocess), threads=threads if dev.type == "cpu" else None)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def measure_point(cfg: BenchConfig, point: Optional[PointConfig] = None) -> Record:
    """Run one point end to end and return its record (never raises for point failures)."""
    validate(cfg)
    t_start = time.perf_counter()
    point = point or resolve_point(cfg)
    dev = torch.device(point.device)
    if dev.type == "cpu":
        torch.set_num_threads(point.threads)
        torch.set_flush_denormal(True)
    rec = Record(sweep=cfg.name, config=point, env=environment(), timestamp=_now())
    enc_spec, llm_spec = get_encoder_spec(point.encoder), get_llm_spec(point.llm)
    rec.encoder_channels, rec.llm_hidden = enc_spec.channels, llm_spec.hidden_size
    try:
        rec.visual_tokens = enc_spec.num_tokens(point.resolution)
    except InvalidResolutionError as exc:
        rec.status, rec.message = STATUS_SKIPPED, str(exc)
        rec.wall_s = time.perf_counter() - t_start
        return rec
    vlm = None
    try:
        rec.device_info = device_info(dev)
        vlm, info = build_vlm(point.encoder, point.llm, point.resolution, point.device, point.dtype,
                              point.attn_implementation, cfg.projector, cfg.checkpoint,
                              memory_headroom=cfg.memory_headroom)
        rec.build_s = info.build_s
        rec.params = vlm.parameter_counts()
        log.info("built %s in %.1fs (%.2f GiB of parameters)", point.label(), info.build_s,
                 info.param_bytes / 2**30)
        _time_point(cfg, point, vlm, rec)
        rec.status = STATUS_OK
    except InsufficientMemoryError as exc:
        rec.status, rec.message = STATUS_SKIPPED, str(exc)
    except torch.OutOfMemoryError as exc:
        rec.status, rec.message = STATUS_ERROR, f"out of memory: {str(exc).splitlines()[0]}"
    except Exception as exc:  # a broken point must not end the sweep
        if isinstance(exc, PointInterrupted):  # SIGTERM (bench.app.run_point): the point ends here
            raise
        rec.status = STATUS_ERROR
        rec.message = f"{type(exc).__name__}: {exc}".strip()
        log.debug("point failed:\n%s", traceback.format_exc())
    finally:
        del vlm
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if rec.device_info.get("type") == "cuda":
        rec.device_info["after"] = nvml_snapshot(dev)
    elif rec.device_info:
        rec.device_info["after"] = cpu_snapshot()
    rec.wall_s = time.perf_counter() - t_start
    return rec


@torch.inference_mode()
def _time_point(cfg: BenchConfig, point: PointConfig, vlm, rec: Record) -> None:
    from .models.preprocess import load_sample_image

    dev = torch.device(point.device)
    images = [load_sample_image()] * point.batch_size
    pixels = vlm.preprocess(images)
    ids = vlm.prompt_ids(point.batch_size, point.prompt_tokens)

    encode, project, prefill = vlm.encode, vlm.project, vlm.prefill  # bound methods: see compiled modules
    # One untimed eager pass: FLOPs per stage (when asked) and the measured token count.
    if cfg.count_flops:
        vis, fv = count_flops(lambda: encode(pixels))
        proj, fp = count_flops(lambda: project(vis))
        _, fl = count_flops(lambda: prefill(proj, ids))
        rec.flops = {"vision_latency": fv, "projector": fp, "prefill": fl, "ttft": fv + fp + fl}
    else:
        vis = encode(pixels)
    if vis.shape[1] != rec.visual_tokens:
        raise RuntimeError(f"{point.encoder} produced {vis.shape[1]} visual tokens at {point.resolution} px, "
                           f"analytical count is {rec.visual_tokens}")
    del vis

    if point.compile:
        t0 = time.perf_counter()
        # compiled modules stand in for the eager ones; the stage methods stay the same
        vlm.encoder = torch.compile(vlm.encoder, mode=point.compile_mode)
        vlm.projector = torch.compile(vlm.projector, mode=point.compile_mode)
        vlm.llm = torch.compile(vlm.llm, mode=point.compile_mode)
        for _ in range(2):  # compile (and recompile for the second shape guard), untimed
            prefill(project(encode(pixels)), ids)[0].cpu()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        rec.compile_s = time.perf_counter() - t0

    if cfg.measure_peak:  # roofline ceilings, measured once per process, device and dtype
        key = (str(dev), vlm.dtype)
        if key not in _PEAK_CACHE:
            _PEAK_CACHE[key] = (measure_peak_tflops(dev, vlm.dtype), measure_copy_gbps(dev))
        rec.device_peak_tflops, copy_gbps = _PEAK_CACHE[key]
        if copy_gbps is not None:
            rec.device_info["copy_gbps"] = copy_gbps

    def step(timer: StageTimer) -> None:
        if point.preprocess:
            with timer.stage("preprocess"):
                px = vlm.preprocess(images)
        else:
            px = pixels
        with timer.stage("vision_latency"):
            v = encode(px)
        with timer.stage("projector"):
            p = project(v)
        with timer.stage("prefill"):
            tok, _ = prefill(p, ids)
            tok.cpu()  # the first token id reaches the host: end of TTFT

    t = cfg.timing
    timer = StageTimer(dev, spans={"ttft": ("vision_latency", "prefill")})
    with MemoryTracker(dev) as mem, EnergyTracker(dev) as energy:
        result = timer.run(step, warmup=t.warmup, min_repeats=t.min_repeats, min_seconds=t.min_seconds,
                           max_repeats=t.max_repeats, max_seconds=t.max_seconds)
    rec.stages = result.stages
    rec.timed_s = result.timed_s
    rec.peak_memory_mb, rec.peak_rss_mb = mem.peak_memory_mb, mem.peak_rss_mb
    if energy.joules is not None:
        total_iters = result.iterations + t.warmup
        # energy covers warm-up and timed iterations alike; per iteration = per batch
        rec.energy_per_inference_j = energy.joules / total_iters
        rec.avg_power_w = energy.avg_power_w
