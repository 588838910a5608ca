"""Measure an ``hf=`` point: a transformers VLM, per stage, on the same timer as our own points.

Why a module apart from :mod:`.scenario`: the composed points walk our own
:class:`~bench.models.pipeline.Pipeline`; an ``hf`` point runs the model's own ``forward`` once per
iteration, and its stages are marked from inside that call (:mod:`bench.models.hf.stages`).
Everything around the loop is the same code: the stopping rule and intervals
(:class:`~.timer.StageTimer`), turns, probes, memory and energy trackers, the memory check
before allocation, the record.

One iteration:

- ``preprocess``: the real processor on the sample photo (resized to the point's image), the
  tensors moved to the device; timed, not part of TTFT;
- ``ttft``: the model's own ``forward(**inputs, use_cache=True, logits_to_keep=1)``, the argmax of
  the last position and the token id on the host, measured end to end; inside it the hooks
  mark ``vision_latency``, ``projector``, ``merge`` and ``prefill`` (they sum to TTFT up to the
  few kernels outside every part: the text embedding lookup before the tower);
- ``decode`` (``decode_tokens`` N >= 2): N-1 steps of the model's own ``forward`` on its cache,
  each ended by its token on the host and marked as a step (TPOT, ITL, TTST, E2E as for our
  points).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch

from ..config import BenchConfig
from ..models.hf import HFSourceError, image_token_id, resolve_source
from ..models.hf.inputs import load_processor, make_inputs, prompt_text, token_counts
from ..models.hf.model import build_model, kv_bytes_per_token
from ..models.hf.stages import StageHooks
from ..models.vlm import InsufficientMemoryError, available_memory_bytes, resolve_dtype
from ..results.records import PointConfig, Record
from .flops import count_flops_by_module
from .probes import disturbed_iterations, probe_for
from .stats import step_stages
from .timer import StageTimer
from .trackers import MemoryTracker, measure_energy, measure_peak_tflops

log = logging.getLogger("fastvlm_bench")
_PEAK_CACHE: dict = {}


def image_of(point: PointConfig):
    """The sample photo resized to the point's image: ``resolution`` square, or ``image_size``."""
    from PIL import Image

    from ..models.preprocess import load_sample_image

    w, h = (map(int, point.image_size.split("x")) if point.image_size else (point.resolution, point.resolution))
    return load_sample_image().convert("RGB").resize((w, h), Image.BICUBIC), (w, h)


def hf_options(point: PointConfig) -> Dict[str, int]:
    """``min_pixels=..,max_pixels=..`` of the point id back as a dict."""
    if not point.hf_options:
        return {}
    return {k: int(v) for k, v in (kv.split("=") for kv in point.hf_options.split(","))}


def _count_features(out) -> Optional[int]:
    """Visual feature vectors that ``get_image_features`` returned (a tensor, a list per image or a
    model output with ``pooler_output``): what the forward scatters into the placeholders."""
    if torch.is_tensor(out):
        return int(out.numel() // out.shape[-1]) if out.dim() >= 2 else None
    if isinstance(out, (list, tuple)) and out and all(torch.is_tensor(t) for t in out):
        return sum(int(t.numel() // t.shape[-1]) for t in out)
    for attr in ("pooler_output", "image_embeds", "last_hidden_state"):
        v = getattr(out, attr, None)
        if v is not None:
            return _count_features(v)
    if isinstance(out, (list, tuple)) and out:
        return _count_features(out[0])
    return None


def measure_hf(cfg: BenchConfig, point: PointConfig, rec: Record, turns, built=lambda: None) -> None:
    """Build, check and time ``point`` (an ``hf`` point) into ``rec``; raises for a failed point
    (the caller records it), :class:`InsufficientMemoryError` before allocating."""
    dev = torch.device(point.device)
    dt = resolve_dtype(point.dtype, dev)
    source = resolve_source(point.hf)
    opts = hf_options(point)
    proc = load_processor(source, opts.get("min_pixels"), opts.get("max_pixels"))
    image, wh = image_of(point)
    images = [image] * point.batch_size
    text = prompt_text(source, proc, point.prompt_tokens)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source.folder), local_files_only=True)
    inputs = make_inputs(proc, images, text, torch.device("cpu"), dt)
    counts = token_counts(proc, inputs, image_token_id(config), wh)
    rec.visual_tokens = counts["placeholders"]
    seq = counts["sequence_tokens"] + max(point.decode_tokens - 1, 0)
    model, config, parts, build_s = build_model(source, dev, dt, point.attn_implementation or "sdpa",
                                                available_memory_bytes(dev), cfg.memory_headroom, seq,
                                                point.batch_size, InsufficientMemoryError)
    built()
    try:
        _time(cfg, point, rec, model, config, parts, proc, images, text, source, counts, build_s, turns)
    finally:
        del model


@torch.inference_mode()
def _time(cfg, point, rec, model, config, parts, proc, images, text, source, counts, build_s, turns) -> None:
    dev = torch.device(point.device)
    dt = next(model.parameters()).dtype
    rec.build_s = build_s
    rec.params = parts.counts(model)
    rec.llm_hidden = int(config.get_text_config().hidden_size)
    rec.hf_info = {"model_type": config.model_type, "class": type(model).__name__, "source": source.meta().get("source"),
                   "folder": str(source.folder), "weights": "loaded" if source.weights else "placeholder",
                   "vision_module": type(parts.vision).__name__,
                   "vision_layers": _layers(config.vision_config) if hasattr(config, "vision_config") else None,
                   "llm_layers": int(config.get_text_config().num_hidden_layers),
                   "processor": type(proc).__name__, **counts}
    log.info("built %s (%s, %s weights) in %.1fs", point.label(), rec.hf_info["class"], rec.hf_info["weights"],
             build_s)
    inputs = make_inputs(proc, images, text, dev, dt)
    rec.hf_info["inputs"] = {k: list(v.shape) for k, v in inputs.items()}
    steps = max(point.decode_tokens - 1, 0)
    rec.kv_cache_bytes = (point.batch_size * (counts["sequence_tokens"] + steps)
                          * kv_bytes_per_token(config, torch.empty((), dtype=dt).element_size())) if steps else None

    def forward(inp):
        return model(**inp, use_cache=True, logits_to_keep=1)

    if cfg.count_flops:  # once, untimed; real tensors (the models' placeholder checks read values)
        rec.flops = count_flops_by_module(lambda: forward(inputs), model, {
            "vision_latency": parts.vision, "projector": parts.projector, "prefill": parts.language_model},
            exclusive={"vision_latency": "projector"} if parts.projector_in_vision else {})
    if cfg.measure_peak:
        key = (str(dev), dt, point.threads)
        if key not in _PEAK_CACHE:
            _PEAK_CACHE[key] = measure_peak_tflops(dev, dt)
        rec.device_peak_tflops = _PEAK_CACHE[key]

    timer = StageTimer(dev, spans={"ttst": ("ttft", ("decode", 0)), "e2e": ("ttft", "decode")} if steps else {},
                       mode=point.timing_mode)
    hooks = StageHooks(parts, timer.begin, timer.end)
    checked = []
    base = getattr(model, "model", model)
    get_feats = getattr(base, "get_image_features", None)

    def step(t: StageTimer) -> None:
        inp = inputs
        if point.preprocess:
            with t.stage("preprocess"):
                inp = make_inputs(proc, images, text, dev, dt)
        seen = []
        if not checked and get_feats is not None:  # first warm-up iteration only: count the features
            base.get_image_features = lambda *a, **k: seen.append(get_feats(*a, **k)) or seen[-1]
        hooks.arm()
        try:
            with t.stage("ttft"):
                out = forward(inp)
                token = out.logits[:, -1, :].argmax(dim=-1)
                token.cpu()
                t.end("prefill")
        finally:
            hooks.armed = False
            if seen or "get_image_features" in vars(base):
                del base.get_image_features
        if steps:
            past = out.past_key_values
            with t.stage("decode"):
                for _ in range(steps):
                    o = model(input_ids=token[:, None], past_key_values=past, use_cache=True, logits_to_keep=1)
                    token, past = o.logits[:, -1, :].argmax(dim=-1), o.past_key_values
                    token.cpu()
                    t.step()
        if not checked:
            rec.visual_tokens_measured = _count_features(seen[0]) // point.batch_size if seen and \
                _count_features(seen[0]) else None
            if not torch.isfinite(out.logits).all():
                raise RuntimeError(f"{point.label()}: non-finite logits on the first warm-up iteration")
            if rec.visual_tokens_measured is not None and rec.visual_tokens_measured != rec.visual_tokens:
                log.warning("%s: the forward filled %d visual features, the processor placed %d", point.label(),
                            rec.visual_tokens_measured, rec.visual_tokens)
            checked.append(True)

    rule = cfg.timing
    rec.target_stage = rule.target_stage
    try:
        with MemoryTracker(dev) as mem:
            result = timer.run(step, rule, probe=probe_for(dev, point.threads),
                               pass_turn=turns.pass_turn if turns.path else None)
            energy = measure_energy(dev, lambda: forward(inputs))
    finally:
        hooks.remove()
    rec.stages = {**result.stages, **step_stages(result.steps.get("decode", []), cfg.timing.confidence)}
    rec.pipeline = {s: "hf" for s in ("vision_latency", "projector", "merge", "prefill") if s in rec.stages}
    if steps:
        rec.pipeline["decode"] = "hf"
    rec.timed_s, rec.warmup_s = result.timed_s, result.warmup_s
    rec.stop_reason, rec.warmup_iterations, rec.warmup_reason = (result.stop_reason, result.warmup_iterations,
                                                                 result.warmup_reason)
    rec.iteration_probes = result.probes
    rec.disturbed_iterations = disturbed_iterations(result.probes)
    rec.peak_memory_mb, rec.peak_rss_mb = mem.peak_memory_mb, mem.peak_rss_mb
    if energy is not None:
        rec.energy_per_inference_j = energy["joules_per_call"]
        rec.avg_power_w, rec.idle_power_w, rec.energy_loop_s = (energy["avg_power_w"], energy["idle_power_w"],
                                                                energy["seconds"])


def _layers(vc) -> Optional[int]:
    for attr in ("num_hidden_layers", "depth"):
        v = getattr(vc, attr, None)
        if isinstance(v, int):
            return v
    return None


def check_source(value: str, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None):
    """For :func:`bench.measure.scenario.resolve_point`: the source, or a one-line error (before
    anything is built): a folder that cannot be a point, or pixel bounds its processor lacks."""
    from ..config import ConfigError
    from ..models.hf import check_config

    try:
        source = resolve_source(value)
        check_config(source)
        if min_pixels or max_pixels:
            load_processor(source, min_pixels, max_pixels)
    except (HFSourceError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return source
