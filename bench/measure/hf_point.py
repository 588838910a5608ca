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
from typing import TYPE_CHECKING, Optional

import torch

from ..models.hf import image_token_id
from ..models.hf.inputs import make_inputs, prompt_text, token_counts
from ..models.hf.model import build_model, kv_bytes_per_token
from ..models.hf.stages import StageHooks
from ..models.vlm import InsufficientMemoryError, available_memory_bytes
from ..results.records import Record
from .flops import count_flops_by_module
from .probes import disturbed_iterations, probe_for
from .stats import step_stages
from .timer import StageTimer
from .trackers import MemoryTracker, measure_energy, measure_peak_tflops

if TYPE_CHECKING:
    from .plan import PointPlan

log = logging.getLogger("fastvlm_bench")
_PEAK_CACHE: dict = {}


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


def measure_hf(plan: "PointPlan", rec: Record, turns, built=lambda: None) -> None:
    """Build, check and time ``plan``'s point (an ``hf`` point) into ``rec``; raises for a failed
    point (the caller records it), :class:`InsufficientMemoryError` before allocating. The
    folder, its config and its processor are the plan's (``bench.models.hf.plan``), resolved once."""
    from ..models.preprocess import load_sample_image

    point, dev, dt, hf = plan.point, plan.device, plan.dtype, plan.hf
    image = plan.image.load(load_sample_image().convert("RGB"))
    wh = (plan.image.width, plan.image.height)
    images = [image] * point.batch_size
    text = prompt_text(hf.source, hf.processor, point.prompt_tokens)
    inputs = make_inputs(hf.processor, images, text, torch.device("cpu"), dt)
    counts = token_counts(hf.processor, inputs, image_token_id(hf.config), wh)
    rec.visual_tokens = counts["placeholders"]
    seq = counts["sequence_tokens"] + plan.decode.steps
    model, config, parts, build_s = build_model(hf.source, dev, dt, point.attn_implementation or "sdpa",
                                                available_memory_bytes(dev), plan.run.memory_headroom, seq,
                                                point.batch_size, InsufficientMemoryError,
                                                checked=(hf.config, hf.model_class))
    built()
    try:
        _time(plan, rec, model, parts, images, text, counts, build_s, turns)
    finally:
        del model


@torch.inference_mode()
def _time(plan: "PointPlan", rec: Record, model, parts, images, text, counts, build_s, turns) -> None:
    point, dev, run = plan.point, plan.device, plan.run
    config, proc, source = plan.hf.config, plan.hf.processor, plan.hf.source
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
    steps = plan.decode.steps
    rec.kv_cache_bytes = (point.batch_size * (counts["sequence_tokens"] + steps)
                          * kv_bytes_per_token(config, torch.empty((), dtype=dt).element_size())) if steps else None

    def forward(inp):
        return model(**inp, use_cache=True, logits_to_keep=1)

    if run.count_flops:  # once, untimed; real tensors (the models' placeholder checks read values)
        rec.flops = count_flops_by_module(lambda: forward(inputs), model, {
            "vision_latency": parts.vision, "projector": parts.projector, "prefill": parts.language_model},
            exclusive={"vision_latency": "projector"} if parts.projector_in_vision else {})
    if run.measure_peak:
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

    rule = run.timing
    rec.target_stage = rule.target_stage
    try:
        with MemoryTracker(dev) as mem:
            result = timer.run(step, rule, probe=probe_for(dev, point.threads),
                               pass_turn=turns.pass_turn if turns.path else None)
            energy = measure_energy(dev, lambda: forward(inputs))
    finally:
        hooks.remove()
    rec.stages = {**result.stages, **step_stages(result.steps.get("decode", []), run.timing.confidence)}
    rec.pipeline = {s: "hf" for s in ("vision_latency", "projector", "merge", "prefill") if s in rec.stages}
    if steps:
        rec.pipeline["decode"] = "hf"
    result.fill_run_fields(rec)
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
