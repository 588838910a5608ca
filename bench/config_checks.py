"""The up-front checks of :func:`bench.config.validate` that were added for knobs accepted and
then not done (issue 29): each knob is refused with one line before anything is built, or it
does what it says. Kept apart from :mod:`bench.config` (the typed configs) because these read
the model registries (encoder and LLM specs, tiling plans) and grow with every axis.
"""
from __future__ import annotations

from typing import List

# ``"BenchConfig"`` in the annotations is :class:`bench.config.BenchConfig`, not imported: that
# module imports this one (inside validate), and a module pair must not import each other.

#: Every name ``timing.target_stage`` may take (a point's pipeline has some of them).
TARGET_STAGES = ("preprocess", "vision_latency", "merge", "reduce", "projector", "prefill", "ttft", "decode", "ttst",
                 "e2e", "tpot", "itl")


def knob_problems(cfg: "BenchConfig", swept: set) -> List[str]:
    """Knobs that were accepted and then not done (issue 29): each is refused up front."""
    import math

    out: List[str] = []
    b = cfg.backend
    if b.atol is not None and (isinstance(b.atol, bool) or not math.isfinite(float(b.atol)) or float(b.atol) < 0):
        out.append(f"backend.atol must be a finite tolerance >= 0 (a fraction of the output's scale), got {b.atol!r}")
    if b.stages is not None and len(b.stages) == 0:
        out.append("backend.stages=[] names no stage; leave it out to run every stage the backend can run")
    if cfg.timing.target_stage not in TARGET_STAGES:
        out.append(f"timing.target_stage must be one of {', '.join(TARGET_STAGES)}, got {cfg.timing.target_stage!r}")
    tiled_swept = bool({"tiling", "tiling.name"} & swept)
    if cfg.tiling.tile is not None and str(cfg.tiling.name) == "none" and not tiled_swept:
        out.append(f"tiling.tile={cfg.tiling.tile} needs a tiling mode (tiling=anyres_next|anyres_max_9): "
                   "without tiling there are no tiles")
    return out


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; a container's or ``taskset``'s)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hf_problems(cfg: "BenchConfig") -> List[str]:
    """Knobs that cannot apply to an ``hf=`` point (a transformers model runs its own forward and
    processor), each said in one line rather than silently ignored."""
    out = []
    for key in ("min_pixels", "max_pixels"):
        v = getattr(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            out.append(f"{key} must be a positive number of pixels, got {v!r}")
    if cfg.hf is None:
        if cfg.min_pixels is not None or cfg.max_pixels is not None:
            out.append("min_pixels/max_pixels apply to hf= points (a Qwen2-VL-style processor's bounds)")
        return out
    if not str(cfg.hf).strip():
        out.append("hf must name a shipped system (fastvlm-bench list) or a model folder")
    if cfg.min_pixels and cfg.max_pixels and cfg.min_pixels > cfg.max_pixels:
        out.append(f"min_pixels ({cfg.min_pixels}) must be <= max_pixels ({cfg.max_pixels})")
    if str(cfg.tiling.name) != "none":
        out.append(f"tiling={cfg.tiling.name} does not apply to hf={cfg.hf}: the model's own processor decides "
                   "its tiles (use image_size=WxH for a non-square image)")
    if str(cfg.reduction.name) != "none":
        out.append(f"reduction={cfg.reduction.name} is not supported on hf= points: the methods edit our own "
                   "composed pipeline, not a transformers model's forward")
    if str(cfg.backend.name) != "eager" or cfg.compile:
        out.append(f"backend={'compile' if cfg.compile else cfg.backend.name} is not supported on hf= points yet "
                   "(they run the model's own forward eagerly)")
    if cfg.checkpoint:
        out.append("checkpoint= is for composed points; an hf= folder loads its own *.safetensors")
    if cfg.extra_work_matmuls:
        out.append("extra_work_* is not supported on hf= points")
    if cfg.timing.target_stage not in ("ttft", "preprocess", "vision_latency", "projector", "merge", "prefill",
                                       "e2e", "decode", "ttst"):
        out.append(f"timing.target_stage={cfg.timing.target_stage} is not a stage of an hf= point")
    return out


#: ``endpoint.launch`` values: the servers the harness can start (bench.measure.endpoint_server).
LAUNCHERS = ("llama_cpp",)
IMAGE_FORMATS = ("png", "jpeg")


def endpoint_problems(cfg: "BenchConfig") -> List[str]:
    """An endpoint point's knobs that cannot work, said before any request is sent (the server
    kind's name is checked against its registry in :mod:`bench.models.config_groups`)."""
    import os
    from pathlib import Path
    from urllib.parse import urlsplit

    e = cfg.endpoint
    if str(e.name) == "none":
        set_ = [k for k in ("url", "launch", "gguf", "mmproj") if getattr(e, k)]
        return [f"endpoint.{set_[0]} needs a server kind: endpoint=openai|llama_cpp|vllm|sglang"] if set_ else []
    out: List[str] = []
    if cfg.hf:
        out.append("hf= and endpoint= are two kinds of point: a model in this process, or a server")
    if e.launch is None and not e.url:
        out.append("endpoint.url=http://HOST:PORT/v1 is needed (or endpoint.launch=llama_cpp with gguf= and mmproj=)")
    if e.launch is not None and e.url:
        out.append("endpoint.url and endpoint.launch exclude each other: a launched server gets its own loopback url")
    if e.url:
        u = urlsplit(str(e.url))
        if u.scheme not in ("http", "https") or not u.hostname:
            out.append(f"endpoint.url must be http://HOST:PORT/v1, got {e.url!r}")
        else:
            try:
                u.port
            except ValueError:
                out.append(f"endpoint.url has a bad port: {e.url!r}")
    if e.launch is not None:
        if e.launch not in LAUNCHERS:
            out.append(f"endpoint.launch must be one of {', '.join(LAUNCHERS)}, got {e.launch!r}")
        if str(e.name) != "llama_cpp":
            out.append(f"endpoint.launch={e.launch} starts llama-server: endpoint=llama_cpp, not {e.name}")
        for key in ("gguf", "mmproj"):
            v = getattr(e, key)
            if not v:
                out.append(f"endpoint.launch={e.launch} needs endpoint.{key}=PATH")
            elif not Path(v).expanduser().is_file():
                out.append(f"endpoint.{key}={v}: no such file")
        if e.server_threads is not None and e.server_threads <= 0:
            out.append(f"endpoint.server_threads must be positive, got {e.server_threads}")
        if e.slots < 1 or e.ctx < 256:
            out.append(f"endpoint.slots must be >= 1 and endpoint.ctx >= 256, got {e.slots} and {e.ctx}")
    if e.image_format not in IMAGE_FORMATS:
        out.append(f"endpoint.image_format must be png or jpeg, got {e.image_format!r}")
    if isinstance(e.concurrency, bool) or not isinstance(e.concurrency, int) or e.concurrency < 1:
        out.append(f"endpoint.concurrency must be a whole number >= 1, got {e.concurrency!r}")
    if not e.timeout_s or e.timeout_s <= 0:
        out.append(f"endpoint.timeout_s must be positive, got {e.timeout_s!r}")
    if e.api_key_env and not os.environ.get(e.api_key_env):
        out.append(f"endpoint.api_key_env={e.api_key_env}: that environment variable is not set (it names the "
                   "variable holding the key; the key itself is never recorded)")
    if cfg.batch_size != 1:
        out.append("batch_size does not apply to an endpoint point: endpoint.concurrency is its requests in flight")
    for key in ("tiling", "reduction", "backend"):
        if str(getattr(cfg, key).name) not in ("none", "eager"):
            out.append(f"{key}={getattr(cfg, key).name} does not apply to an endpoint point: the server runs its own")
    if cfg.timing.target_stage not in ("ttft", "e2e", "ttst", "decode"):
        out.append(f"timing.target_stage={cfg.timing.target_stage} is not a stage of an endpoint point "
                   "(ttft, ttst, e2e)")
    return out
