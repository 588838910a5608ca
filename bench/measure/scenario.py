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
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..config import BenchConfig, ConfigError, validate
from .environment import environment
from ..models import InsufficientMemoryError, InvalidResolutionError, build_vlm, get_encoder_spec, get_llm_spec
from ..models.decode import decode_bytes_per_step, kv_cache_bytes
from ..models.backends import get_backend
from ..models.llms import NO_LLM
from ..models.pipeline import Flow, Pipeline, build_pipeline, end_to_end, target_stage
from ..models.tiling import plan_for, source_image
from ..models.reduction import NONE, method_of, point_params
from ..models.reduction.base import to_conf
from ..models.vlm import dtype_name, resolve_device, resolve_dtype
from ..results.records import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, PointConfig, Record
from .checkpoint_id import checkpoint_identity
from .extra_work import extra_work
from .interrupt import PointInterrupted
from .stats import step_stages
from .timer import StageTimer, freeze_long_lived_objects
from .flops import count_flops
from .probes import disturbed_iterations, probe_for
from .turns import Turns, allowed_cpus, held, pin_to_first_cpus
from .trackers import (MemoryTracker, OtherCpuUse, device_info, measure_copy_gbps, measure_energy,
                       measure_peak_tflops, nvml_snapshot, warn_if_cpus_busy)

log = logging.getLogger("fastvlm_bench")
_PEAK_CACHE: dict = {}
_COPY_CACHE: dict = {}  # (device, threads) -> copy GB/s; on a CPU measured only for decoding points
#: FLOPs of a prefill, by what they depend on: the LLM, its attention and the input shapes.
#: Points of different encoders with equal token counts (fastvit and convnext_l at 224 px:
#: 49 each) share one count, 0.4 s for Qwen2-0.5B here.
_PREFILL_FLOPS: dict = {}


class DeviceUnavailableError(ConfigError):
    """The asked-for device does not exist here (``device=cuda`` without a GPU).

    A config error for a single run; inside a grid the point is reported as skipped and not
    recorded, because another machine sharing the results folder may well have the device.
    """


def resolve_point(cfg: BenchConfig) -> PointConfig:
    """The concrete knobs (auto device/dtype/threads resolved) that identify the point.

    Raises :class:`ConfigError` (nothing built yet) for a device torch does not have and a
    checkpoint that is not there.
    """
    try:
        dev = resolve_device(cfg.device)
    except ValueError as exc:
        raise DeviceUnavailableError(str(exc)) from None
    dt = resolve_dtype(str(cfg.dtype), dev)
    cuda = dev.type == "cuda"
    if cfg.hf:
        return _resolve_hf_point(cfg, dev, dt)
    encoder_only = cfg.llm.name == NO_LLM
    if encoder_only and cfg.checkpoint:
        raise ConfigError("llm=none (encoder only) cannot take a checkpoint: a LLaVA checkpoint needs its LLM")
    ckpt, fingerprint = checkpoint_identity(cfg.checkpoint)
    threads = None if cuda else resolve_threads(cfg.threads)
    backend_name = "compile" if cfg.compile and cfg.backend.name == "eager" else cfg.backend.name
    backend = get_backend(backend_name)
    reduction = to_conf(cfg.reduction)
    # Encoder only: the LLM-side knobs (projector, prompt, attention) change nothing that runs,
    # so they are null in the point (and its id), not the values of parts that were never built.
    resolution, tiling, tile_size, image_size = resolve_image(cfg)
    return PointConfig(encoder=cfg.encoder.name, resolution=resolution, llm=cfg.llm.name,
                       dtype=dtype_name(dt), device=str(dev), batch_size=cfg.batch_size,
                       prompt_tokens=None if encoder_only else cfg.prompt_tokens,
                       attn_implementation=None if encoder_only else str(cfg.attn_implementation),
                       compile=bool(cfg.compile) or backend_name == "compile", compile_mode=cfg.compile_mode,
                       preprocess=bool(cfg.preprocess), threads=threads,
                       timing_mode=str(cfg.timing.mode), tf32=bool(cfg.tf32) if cuda else None,
                       cudnn_benchmark=bool(cfg.cudnn_benchmark) if cuda else None,
                       channels_last=bool(cfg.channels_last), projector=None if encoder_only else cfg.projector,
                       checkpoint=ckpt,
                       checkpoint_fingerprint=fingerprint,
                       extra_work_stage=cfg.extra_work_stage if cfg.extra_work_matmuls else None,
                       extra_work_matmuls=int(cfg.extra_work_matmuls) if cfg.extra_work_stage else 0,
                       backend=backend_name, backend_stages=backend.stages(cfg),
                       backend_options=backend.options(cfg, threads, dtype_name(dt)),
                       tiling=tiling, tile_size=tile_size, image_size=image_size,
                       reduction=reduction.name, reduction_params=point_params(reduction),
                       decode_tokens=int(cfg.decode_tokens), allocator=str(cfg.allocator))


def _resolve_hf_point(cfg: BenchConfig, dev: torch.device, dt: torch.dtype) -> PointConfig:
    """An ``hf=`` point: the folder checked (one line and exit 2 when it cannot be a point), the
    image as ``resolution`` square or ``image_size``; ``encoder``/``llm`` name the model."""
    from ..models.tiling import image_wh
    from .hf_point import check_source

    source = check_source(cfg.hf, cfg.min_pixels, cfg.max_pixels)
    w, h = image_wh(int(cfg.resolution), cfg.image_size)
    opts = ",".join(f"{k}={getattr(cfg, k)}" for k in ("max_pixels", "min_pixels") if getattr(cfg, k))
    cuda = dev.type == "cuda"
    return PointConfig(encoder=f"hf:{source.name}", resolution=max(w, h), llm=f"hf:{source.name}",
                       dtype=dtype_name(dt), device=str(dev), batch_size=cfg.batch_size,
                       prompt_tokens=cfg.prompt_tokens, attn_implementation=str(cfg.attn_implementation),
                       preprocess=bool(cfg.preprocess), threads=None if cuda else resolve_threads(cfg.threads),
                       timing_mode=str(cfg.timing.mode), tf32=bool(cfg.tf32) if cuda else None,
                       cudnn_benchmark=bool(cfg.cudnn_benchmark) if cuda else None, projector=None,
                       image_size=None if w == h else f"{w}x{h}", decode_tokens=int(cfg.decode_tokens),
                       hf=source.key, hf_fingerprint=source.fingerprint, hf_options=opts or None,
                       allocator=str(cfg.allocator))


def resolve_image(cfg: BenchConfig) -> Tuple[int, str, Optional[int], Optional[str]]:
    """``(resolution, tiling, tile_size, image_size)`` of a point.

    Without tiling: ``(resolution, "none", None, None)``, as before. With tiling, the tile size
    is ``tiling.tile`` or the encoder's native input size (None when it has none: the point is
    then skipped with the reason), and ``image_size`` is resolved to ``WxH`` (``photo`` to the
    photo's own size) with ``resolution`` its longer side; a square image of ``resolution``
    px is recorded as ``image_size`` null, so ``image_size=1152x1152`` is the point
    ``resolution=1152``.
    """
    from ..models.tiling import image_wh

    tiling = str(cfg.tiling.name)
    if tiling == "none":
        return int(cfg.resolution), tiling, None, None
    tile = cfg.tiling.tile or get_encoder_spec(cfg.encoder.name).native_resolution
    w, h = image_wh(int(cfg.resolution), cfg.image_size)
    return max(w, h), tiling, (int(tile) if tile else None), (None if w == h else f"{w}x{h}")


def resolve_threads(threads: Optional[int]) -> int:
    """The configured thread count, else the cores this process may run on: never whatever
    ``torch.get_num_threads()`` says, which is the previous point's setting."""
    if threads:
        return int(threads)
    return len(allowed_cpus())


def configure_backends(point: PointConfig) -> None:
    """Set every backend flag that changes a measurement explicitly for this point."""
    dev = torch.device(point.device)
    if dev.type == "cpu":
        torch.set_num_threads(point.threads)
        torch.set_flush_denormal(True)
    else:
        torch.cuda.set_device(dev)  # events, allocations and kernels on the target device
        torch.backends.cuda.matmul.allow_tf32 = bool(point.tf32)
        torch.backends.cudnn.allow_tf32 = bool(point.tf32)
        torch.backends.cudnn.benchmark = bool(point.cudnn_benchmark)


def measurement_settings(cfg: BenchConfig) -> Dict[str, Any]:
    """The knobs that change how thoroughly a point is measured, not what (see POINT_KEYS)."""
    from dataclasses import asdict

    out = {f"timing_{k}": v for k, v in asdict(cfg.timing).items() if k != "mode"}  # mode is in the id
    out.update(count_flops=bool(cfg.count_flops), measure_peak=bool(cfg.measure_peak),
               memory_headroom=cfg.memory_headroom)
    if cfg.batch_ladder:  # only where set: today's records keep their settings
        out["batch_ladder"] = True
    if cfg.paper_resolutions_only:  # only said where set: older tables keep their columns
        out["paper_resolutions_only"] = True
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def measure_point(cfg: BenchConfig, point: Optional[PointConfig] = None) -> Record:
    """Run one point end to end and return its record (never raises for point failures)."""
    validate(cfg)
    t_start = time.perf_counter()
    point = point or resolve_point(cfg)
    dev = torch.device(point.device)
    configure_backends(point)
    rec = Record(sweep=cfg.name, config=point, env=environment(), timestamp=_now(),
                 settings=measurement_settings(cfg))
    plan = None
    if not point.hf:  # an hf= point's tokens come from its processor (bench.measure.hf_point)
        enc_spec = get_encoder_spec(point.encoder)
        rec.encoder_channels = enc_spec.channels
        rec.llm_hidden = None if point.llm == NO_LLM else get_llm_spec(point.llm).hidden_size
        try:
            plan = _visual_tokens(point, rec, enc_spec)
            if cfg.paper_resolutions_only and point.resolution not in enc_spec.paper_resolutions:
                raise InvalidResolutionError(
                    f"{point.encoder} at {point.resolution} px: not a paper resolution of this encoder "
                    f"({', '.join(map(str, enc_spec.paper_resolutions)) or 'none'}; paper_resolutions_only=true)")
        except InvalidResolutionError as exc:
            rec.status, rec.message = STATUS_SKIPPED, str(exc)
            rec.wall_s = time.perf_counter() - t_start
            return rec
    if plan is not None:
        rec.tiling_grid, rec.tiles, rec.tile_tokens = plan.grid, plan.tiles, plan.tile_tokens
        rec.tiling_merged_grid = plan.merged_grid
    vlm = None
    freeze_long_lived_objects()
    # Interleaved with other processes (timing.turns): hold the machine from here on.
    turns = held(cfg.timing.turns, cfg.timing.turn_parties)
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

            measure_hf(cfg, point, rec, turns, built)
        else:
            # the KV cache the answer ends with (recorded; build_vlm's memory check counts it with the
            # rest of the working set before anything is allocated: a batch ladder ends there, skipped)
            elem = torch.empty((), dtype=resolve_dtype(point.dtype, dev)).element_size()
            rec.kv_cache_bytes = kv_cache_bytes(get_llm_spec(point.llm), elem, point.batch_size, rec.visual_tokens,
                                                point.prompt_tokens, point.decode_tokens) if point.decode_tokens else None
            # a tiled point's encoder is built for its tiles, not for the whole image
            vlm, info = build_vlm(point.encoder, point.llm, point.tile_size or point.resolution, point.device,
                                  point.dtype, point.attn_implementation, point.projector, point.checkpoint,
                                  memory_headroom=cfg.memory_headroom, keep_llm=True,
                                  batch_size=point.batch_size, prompt_tokens=point.prompt_tokens,
                                  tiles=plan.tiles if plan else 1, llm_tokens=plan.tokens if plan else None,
                                  decode_tokens=point.decode_tokens)
            built()
            rec.build_s = info.build_s
            rec.params = vlm.parameter_counts()
            log.info("built %s in %.1fs (%.2f GiB of parameters%s)", point.label(), info.build_s,
                     info.param_bytes / 2**30, ", the LLM kept from the previous point" if info.llm_kept else "")
            _time_point(cfg, point, vlm, rec, turns)
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


def _visual_tokens(point: PointConfig, rec: Record, enc_spec):
    """The analytic visual tokens reaching the LLM (after the point's tiling and token
    reduction), the encoder's own count when a reduction changes it, and per LLM layer for
    in-LLM methods. Returns the tiling plan (None untiled)."""
    plan = plan_for(point)  # a tiling mode's count: tiles, base image, unpad and newline tokens
    n = plan.tokens if plan is not None else enc_spec.num_tokens(point.resolution)
    method, conf = method_of(point)
    rec.visual_tokens = method.tokens_to_llm(conf, n, enc_spec)
    if method.name != NONE:
        rec.visual_tokens_encoder = n
        rec.reduction_overhead_in = method.where
        if point.llm != NO_LLM:
            layers = int(get_llm_spec(point.llm).config["num_hidden_layers"])
            rec.llm_visual_tokens_per_layer = method.llm_tokens_per_layer(conf, rec.visual_tokens, layers) or []
    return plan


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
def _time_point(cfg: BenchConfig, point: PointConfig, vlm, rec: Record, turns: Turns) -> None:
    from ..models.preprocess import load_sample_image

    taken_before = turns.taken_by_others
    dev = torch.device(point.device)
    pipe = build_pipeline(vlm, point)
    rec.pipeline = pipe.owners()
    images = [source_image(point, load_sample_image())] * point.batch_size
    pixels = pipe.preprocess(images)
    if point.channels_last and get_encoder_spec(point.encoder).kind == "conv":
        vlm.encoder = vlm.encoder.to(memory_format=torch.channels_last)
    to_encoder = ((lambda px: px.contiguous(memory_format=torch.channels_last)) if point.channels_last
                  else (lambda px: px))
    pixels = to_encoder(pixels)
    ids = vlm.prompt_ids(point.batch_size, point.prompt_tokens)
    rule = cfg.timing
    rec.target_stage = target_stage(pipe, rule.target_stage)
    if rec.target_stage != rule.target_stage:  # e.g. ttft on an encoder-only point: vision_latency
        from dataclasses import replace

        rule = replace(rule, target_stage=rec.target_stage)

    if cfg.count_flops:  # on fake tensors: shapes only, no arithmetic
        rec.flops = _count_stage_flops(point, pipe, Flow(pixels, ids))

    # compile, or export + load + numerics check: untimed, recorded apart (compile_s, backend_info)
    backend = get_backend(point.backend)
    backend.prepare(pipe, vlm, point, Flow(pixels, ids), rec, Path(cfg.results_dir) / "exports", cfg.backend.atol)

    if cfg.measure_peak:  # roofline ceilings, measured once per process, device, dtype and threads
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
    rec.stages = {**result.stages, **step_stages(result.steps.get("decode", []), cfg.timing.confidence)}
    if "decode" in rec.stages:
        rec.decode_bytes_per_step = decode_bytes_per_step(
            get_llm_spec(point.llm), rec.params.get("llm") or 0, torch.empty((), dtype=vlm.dtype).element_size(),
            point.batch_size, rec.visual_tokens_measured or rec.visual_tokens, point.prompt_tokens, point.decode_tokens)
    _reduction_overhead(point, vlm, rec, pixels, ids)
    rec.timed_s, rec.warmup_s = result.timed_s, result.warmup_s
    rec.stop_reason, rec.warmup_iterations, rec.warmup_reason = (result.stop_reason, result.warmup_iterations,
                                                                 result.warmup_reason)
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


def _reduction_overhead(point: PointConfig, vlm, rec: Record, pixels, ids) -> None:
    """A token reduction's own time: its ``reduce`` stage's median, or for a method inside
    another stage its work alone, measured by the method on this point's tensors."""
    method, conf = method_of(point)
    if method.name == NONE:
        return
    if method.where == "reduce":
        st = rec.stages.get("reduce")
        rec.reduction_overhead_ms = st.median if st else None
    else:
        rec.reduction_overhead_ms = method.overhead_ms(conf, vlm, pixels, ids)
