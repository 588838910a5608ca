"""Measure one sweep point: build the VLM, count FLOPs, time the stages, return a Record.

Data flows one way: config -> plan -> build models -> time -> record. The config is read once,
into the point's plan (:mod:`bench.measure.plan`); everything here reads the plan. Failures of
the point itself (no memory, an impossible resolution, an error while running) become records
with status ``skipped`` or ``error`` and a message, so a sweep always goes on.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
import traceback
from typing import Dict, Optional

import torch

from .environment import environment
from ..models import InsufficientMemoryError, build_vlm
from ..models.decode import decode_bytes_per_step
from ..models.pipeline import Flow, Pipeline, build_pipeline, end_to_end, target_stage
from ..results.records import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, PointConfig, Record
from .extra_work import extra_work
from .interrupt import PointInterrupted
# the resolvers, re-exported: callers and tests have always imported them from here
from .plan import DeviceUnavailableError, PointPlan, resolve_plan, resolve_point, resolve_threads  # noqa: F401
from .stats import step_stages
from .timer import StageTimer, freeze_long_lived_objects
from .flops import count_flops
from .probes import disturbed_iterations, probe_for
from .turns import Turns, held, pin_to_first_cpus
from .trackers import (MemoryTracker, OtherCpuUse, device_info, measure_copy_gbps, measure_energy,
                       measure_peak_tflops, nvml_snapshot, warn_if_cpus_busy)

log = logging.getLogger("fastvlm_bench")
_PEAK_CACHE: dict = {}
_COPY_CACHE: dict = {}  # (device, threads) -> copy GB/s; on a CPU measured only for decoding points
#: FLOPs of a prefill, by what they depend on: the LLM, its attention and the input shapes.
#: Points of different encoders with equal token counts (fastvit and convnext_l at 224 px:
#: 49 each) share one count, 0.4 s for Qwen2-0.5B here.
_PREFILL_FLOPS: dict = {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def configure_backends(plan: PointPlan) -> None:
    """Set every backend flag that changes a measurement explicitly for this point."""
    point, dev = plan.point, plan.device
    if dev.type == "cpu":
        torch.set_num_threads(point.threads)
        torch.set_flush_denormal(True)
    else:
        torch.cuda.set_device(dev)  # events, allocations and kernels on the target device
        torch.backends.cuda.matmul.allow_tf32 = bool(point.tf32)
        torch.backends.cudnn.allow_tf32 = bool(point.tf32)
        torch.backends.cudnn.benchmark = bool(point.cudnn_benchmark)


def measure_point(plan: PointPlan) -> Record:
    """Run one point end to end and return its record (never raises for point failures).

    ``plan`` (:func:`~bench.measure.plan.resolve_plan`) is all it reads: the config was read
    there, once."""
    if plan.endpoint is not None:  # a server's answers: no model is built here
        from .endpoint_point import measure_endpoint_point

        return measure_endpoint_point(plan)
    t_start = time.perf_counter()
    point, dev = plan.point, plan.device
    configure_backends(plan)
    rec = Record(sweep=plan.run.sweep, config=point, env=environment(), timestamp=_now(),
                 settings=plan.run.settings)
    if not point.hf:  # an hf= point's tokens come from its processor (bench.measure.hf_point)
        rec.encoder_channels = plan.encoder.channels
        rec.llm_hidden = None if plan.llm is None else plan.llm.hidden_size
        _write_tokens(plan, rec)
        if plan.skip:
            rec.status, rec.message = STATUS_SKIPPED, plan.skip
            rec.wall_s = time.perf_counter() - t_start
            return rec
    if plan.tiling is not None:
        tp = plan.tiling
        rec.tiling_grid, rec.tiles, rec.tile_tokens, rec.tiling_merged_grid = tp.grid, tp.tiles, tp.tile_tokens, \
            tp.merged_grid
    vlm = None
    freeze_long_lived_objects()
    # Interleaved with other processes (timing.turns): hold the machine from here on.
    turns = held(plan.run.timing.turns, plan.run.timing.turn_parties)
    cpu = {"others": OtherCpuUse() if dev.type == "cpu" else None}

    def built() -> None:
        """Other processes' CPU use over the build, then over the measurement."""
        if cpu["others"] is not None:
            rec.device_info["before"] = cpu["others"].read()
            warn_if_cpus_busy(rec.device_info["before"], "before the point was measured")
            # taking turns, the partner's turns would count as disturbance: its probes say more
            cpu["others"] = OtherCpuUse() if not turns.path else None

    try:
        pinned = pin_to_first_cpus(point.threads) if turns.path and dev.type == "cpu" else None
        rec.device_info = device_info(dev)
        if pinned is not None:
            rec.device_info["pinned_cpus"] = pinned  # the same CPUs in every process taking turns
        if point.hf:
            from .hf_point import measure_hf

            measure_hf(plan, rec, turns, built)
        else:
            # the KV cache the answer ends with (recorded; build_vlm's memory check counts it with the
            # rest of the working set before anything is allocated: a batch ladder ends there, skipped)
            rec.kv_cache_bytes = plan.decode.kv_cache_bytes
            tp = plan.tiling
            # a tiled point's encoder is built for its tiles, not for the whole image
            vlm, info = build_vlm(point.encoder, point.llm, point.tile_size or point.resolution, point.device,
                                  point.dtype, point.attn_implementation, point.projector, point.checkpoint,
                                  memory_headroom=plan.run.memory_headroom, keep_llm=True,
                                  batch_size=point.batch_size, prompt_tokens=point.prompt_tokens,
                                  tiles=tp.tiles if tp else 1, llm_tokens=tp.tokens if tp else None,
                                  decode_tokens=point.decode_tokens, work=plan.memory)
            built()
            rec.build_s = info.build_s
            rec.params = vlm.parameter_counts()
            log.info("built %s in %.1fs (%.2f GiB of parameters%s)", point.label(), info.build_s,
                     info.param_bytes / 2**30, ", the LLM kept from the previous point" if info.llm_kept else "")
            _time_point(plan, vlm, rec, turns)
        rec.status = STATUS_OK
    except InsufficientMemoryError as exc:
        rec.status, rec.message = STATUS_SKIPPED, str(exc)
    except torch.OutOfMemoryError as exc:
        rec.status, rec.message = STATUS_ERROR, f"out of memory: {str(exc).splitlines()[0]}"
    except Exception as exc:  # a broken point must not end the sweep
        if isinstance(exc, PointInterrupted):  # a signal (bench.measure.interrupt): the point ends here
            raise
        rec.status = STATUS_ERROR
        rec.message = f"{type(exc).__name__}: {exc}".strip()
        log.debug("point failed:\n%s", traceback.format_exc())
    finally:
        del vlm
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    others = cpu["others"]
    if rec.device_info.get("type") == "cuda":
        rec.device_info["after"] = nvml_snapshot(dev)
    elif others is not None:
        rec.device_info["during"] = others.read()
        warn_if_cpus_busy(rec.device_info["during"], "while the point was measured")
    rec.wall_s = time.perf_counter() - t_start
    return rec


def _write_tokens(plan: PointPlan, rec: Record) -> None:
    """The plan's analytic visual tokens into the record: those reaching the LLM (after the
    point's tiling and token reduction), the encoder's own count when a reduction changes it,
    and per LLM layer for in-LLM methods. Nothing where the point is skipped before its count."""
    red = plan.reduction
    if red is None:
        return
    rec.visual_tokens = red.tokens_to_llm
    if red.active:
        rec.visual_tokens_encoder = red.tokens_encoder
        rec.reduction_overhead_in = red.overhead_in
        if red.tokens_per_layer is not None:
            rec.llm_visual_tokens_per_layer = red.tokens_per_layer


def _count_stage_flops(point: PointConfig, pipe: Pipeline, flow: Flow) -> Dict[str, Optional[float]]:
    """FLOPs of every stage for one batch, counted on fake tensors by walking the pipeline in
    order (each stage sees the fake outputs of the ones before), plus ``ttft``: their sum.

    A prefill is counted once per (LLM, attention, input shapes, what owns the stage): points of
    different encoders with equal token counts (fastvit and convnext_l at 224 px: 49 each)
    share one count, 0.4 s for Qwen2-0.5B here.
    """
    out: Dict[str, Optional[float]] = {}
    for st in pipe.stages:
        if st.name == "prefill":
            key = (point.llm, point.attn_implementation, st.owner, point.reduction_params, tuple(flow.embeds.shape),
                   tuple(flow.ids.shape))
            if key in _PREFILL_FLOPS:
                out[st.name] = _PREFILL_FLOPS[key]
                continue
        # a runtime's stage counts the arithmetic of the eager module it was exported from
        run = getattr(st.run, "computes", st.run)
        _, out[st.name] = count_flops(lambda: run(flow))
        if st.name == "prefill":
            _PREFILL_FLOPS[key] = out[st.name]
    if end_to_end(pipe):  # no TTFT without a prefill (encoder-only points): null, not the encoder's
        out["ttft"] = sum(v for k, v in out.items() if k != "decode")
    if "decode" in out:
        out["e2e"] = out["ttft"] + out["decode"]
    return out


def _check_finite(point: PointConfig, **tensors) -> None:
    """Placeholder weights in bf16/fp16 must not time inf/NaN arithmetic (it can be faster)."""
    for name, t in tensors.items():
        if t is not None and not torch.isfinite(t).all():
            raise RuntimeError(f"{point.label()}: non-finite values in {name} on the first warm-up iteration; "
                               "timing them would not measure real arithmetic")


@torch.inference_mode()
def _time_point(plan: PointPlan, vlm, rec: Record, turns: Turns) -> None:
    from ..models.preprocess import load_sample_image

    taken_before = turns.taken_by_others
    point, dev, run = plan.point, plan.device, plan.run
    pipe = build_pipeline(vlm, point, plan.pipeline_parts)
    rec.pipeline = pipe.owners()
    images = [plan.image.load(load_sample_image())] * point.batch_size
    pixels = pipe.preprocess(images)
    if point.channels_last and plan.encoder.kind == "conv":
        vlm.encoder = vlm.encoder.to(memory_format=torch.channels_last)
    to_encoder = ((lambda px: px.contiguous(memory_format=torch.channels_last)) if point.channels_last
                  else (lambda px: px))
    pixels = to_encoder(pixels)
    ids = vlm.prompt_ids(point.batch_size, point.prompt_tokens)
    rule = run.timing
    rec.target_stage = target_stage(pipe, rule.target_stage)
    if rec.target_stage != rule.target_stage:  # e.g. ttft on an encoder-only point: vision_latency
        from dataclasses import replace

        rule = replace(rule, target_stage=rec.target_stage)

    if run.count_flops:  # on fake tensors: shapes only, no arithmetic
        rec.flops = _count_stage_flops(point, pipe, Flow(pixels, ids))

    # compile, or export + load + numerics check: untimed, recorded apart (compile_s, backend_info)
    backend = plan.backend.backend
    backend.prepare(pipe, vlm, point, Flow(pixels, ids), rec, run.exports_dir, run.backend_atol)

    if run.measure_peak:  # roofline ceilings, measured once per process, device, dtype and threads
        key = (str(dev), vlm.dtype, point.threads)
        if key not in _PEAK_CACHE:
            _PEAK_CACHE[key] = measure_peak_tflops(dev, vlm.dtype)
        rec.device_peak_tflops = _PEAK_CACHE[key]
        # the memory ceiling: always on CUDA; on a CPU only where a decode's bytes are set against it
        if dev.type == "cuda" or point.decode_tokens:
            ckey = (str(dev), point.threads)
            if ckey not in _COPY_CACHE:
                _COPY_CACHE[ckey] = measure_copy_gbps(dev)
            rec.device_info["copy_gbps"] = _COPY_CACHE[ckey]

    extra = extra_work(point, dev)
    checked = []

    def check(v, p, logits) -> None:
        """On the first warm-up iteration (untimed, so no separate pass is paid for): the
        visual tokens the model really produces (what reaches the LLM: after the merge of a
        tiling mode), and finite outputs."""
        rec.visual_tokens_measured = int((p if p is not None else v).shape[1])  # encoder only: no projector
        _check_finite(point, visual_tokens=v, projector_output=p, logits=logits)
        if rec.visual_tokens_measured != rec.visual_tokens:
            log.warning("%s: the model produced %d visual tokens, the analytical count is %d", point.label(),
                        rec.visual_tokens_measured, rec.visual_tokens)
        checked.append(True)

    def step(timer: StageTimer) -> None:
        if point.preprocess:
            with timer.stage("preprocess"):
                px = to_encoder(pipe.preprocess(images))
                extra("preprocess")
        else:
            px = pixels
        flow = pipe(Flow(px, ids), stage=timer.stage, after=extra, step=timer.step)
        if not checked:  # after the last mark: not part of any stage's time
            check(flow.feats, flow.embeds, flow.logits)

    span = end_to_end(pipe)
    spans = {"ttft": span} if span else {}
    if "decode" in pipe.names():  # its steps are marked: the second and the last token (bench.models.decode)
        spans.update(ttst=(span[0], ("decode", 0)), e2e=(span[0], "decode"))
    timer = StageTimer(dev, spans=spans, mode=point.timing_mode)
    guard = backend.timing_guard()
    with MemoryTracker(dev) as mem, guard:
        result = timer.run(step, rule, probe=probe_for(dev, point.threads),
                           pass_turn=turns.pass_turn if turns.path else None)
        # Energy from its own back-to-back loop (>= 2 s, no preprocessing), idle power first.
        energy = measure_energy(dev, lambda: pipe(Flow(pixels, ids)))
    rec.stages = {**result.stages, **step_stages(result.steps.get("decode", []), run.timing.confidence)}
    if "decode" in rec.stages:
        rec.decode_bytes_per_step = decode_bytes_per_step(
            plan.llm, rec.params.get("llm") or 0, torch.empty((), dtype=vlm.dtype).element_size(),
            point.batch_size, rec.visual_tokens_measured or rec.visual_tokens, point.prompt_tokens, point.decode_tokens)
    _reduction_overhead(plan, vlm, rec, pixels, ids)
    result.fill_run_fields(rec)
    rec.iteration_probes = result.probes
    rec.disturbed_iterations = disturbed_iterations(result.probes)
    rec.turns_taken = turns.taken_by_others - taken_before if turns.path else None
    if rec.turns_taken == 0:  # nobody took a turn: a run alone, not interleaved (compare will not pair it)
        log.warning("timing.turns: no other process took a turn while %s was measured: it ran alone, not "
                    "interleaved (turns_taken: 0)", point.label())
    rec.peak_memory_mb, rec.peak_rss_mb = mem.peak_memory_mb, mem.peak_rss_mb
    if energy is not None:
        rec.energy_per_inference_j = energy["joules_per_call"]  # one call = one batch
        rec.avg_power_w, rec.idle_power_w, rec.energy_loop_s = (energy["avg_power_w"], energy["idle_power_w"],
                                                                energy["seconds"])


def _reduction_overhead(plan: PointPlan, vlm, rec: Record, pixels, ids) -> None:
    """A token reduction's own time: its ``reduce`` stage's median, or for a method inside
    another stage its work alone, measured by the method on this point's tensors."""
    method, conf = plan.reduction.method, plan.reduction.conf
    if not plan.reduction.active:
        return
    if method.where == "reduce":
        st = rec.stages.get("reduce")
        rec.reduction_overhead_ms = st.median if st else None
    else:
        rec.reduction_overhead_ms = method.overhead_ms(conf, vlm, pixels, ids)
