"""A point's plan: its config resolved once into typed, frozen parts, which the measurement reads.

Why: the measuring code used to take the raw config and the point and work parts out again
where it needed them (the tiling plan and the reduction in three places, the backend twice, an
``hf=`` point's folder and config three times and its processor twice). Now
:func:`resolve_plan` reads the config in one place, and :func:`bench.measure.scenario.measure_point`
and everything below it read only the plan. Each axis contributes its part through one
function in its own module:

- device, dtype, threads: :func:`resolve_plan` itself (``bench.models.vlm``'s resolvers);
- the image and its tiling plan: :func:`bench.models.tiling.plan_part`;
- the reduction and the analytic visual tokens: :func:`bench.models.reduction.plan_part`;
- the backend and its stages: :func:`bench.models.backends.plan_part`;
- decode and its KV cache: :func:`bench.models.decode.plan_part`;
- the memory estimate: :func:`bench.models.memory.plan_part`;
- a transformers model (``hf=``): :func:`bench.models.hf.plan.plan_part`;
- a server (``endpoint=``): :func:`bench.models.endpoints.plan_part`.

The point (:class:`~bench.results.records.PointConfig`) is the record's identity, resolved as
before, so every existing record keeps its id and is resumed, not re-measured.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from ..config import BenchConfig, ConfigError, TimingConf, validate
from ..models import InvalidResolutionError, get_encoder_spec, get_llm_spec
from ..models import backends as backend_axis, decode as decode_axis, reduction as reduction_axis
from ..models import tiling as tiling_axis
from ..models.reduction.base import to_conf
from ..models.llms import NO_LLM
from ..models import memory as memory_axis
from ..models.memory import WorkingSet
from ..models.vlm import dtype_name, resolve_device, resolve_dtype
from ..results.records import PointConfig
from .checkpoint_id import checkpoint_identity
from .turns import allowed_cpus

if TYPE_CHECKING:
    from ..models.encoders.base import EncoderSpec
    from ..models.endpoints import EndpointPart
    from ..models.hf.plan import HFPart
    from ..models.llms import LLMSpec


class DeviceUnavailableError(ConfigError):
    """The asked-for device does not exist here (``device=cuda`` without a GPU).

    A config error for a single run; inside a grid the point is reported as skipped and not
    recorded, because another machine sharing the results folder may well have the device.
    """


@dataclass(frozen=True)
class RunPart:
    """How thoroughly and where the point is measured, not what (see ``POINT_KEYS``)."""

    sweep: str
    settings: Dict[str, Any]  # the record's ``settings``
    timing: TimingConf
    count_flops: bool
    measure_peak: bool
    memory_headroom: float
    exports_dir: Path  # a backend's cached exports
    backend_atol: Optional[float]


@dataclass(frozen=True)
class PointPlan:
    """Everything the measurement needs of a point, resolved once (see the module docstring).

    ``skip`` is why the point cannot be measured (an impossible resolution or tile, not a paper
    resolution): its record is ``skipped`` with that message, and the parts after the failing
    one are None. Composed points have ``encoder``/``llm``, ``tiling``, ``reduction``,
    ``backend`` and ``memory``; an ``hf=`` point has ``hf`` and ``image`` instead (its tokens and
    memory follow from its processor and model: :mod:`bench.measure.hf_point`).
    """

    point: PointConfig
    device: torch.device
    dtype: torch.dtype
    threads: Optional[int]  # None on CUDA
    run: RunPart
    decode: decode_axis.DecodePart
    image: Optional[tiling_axis.ImageSpec] = None
    tiling: Optional[tiling_axis.TilingPlan] = None  # None untiled
    reduction: Optional[reduction_axis.ReductionPart] = None  # the analytic visual tokens
    backend: Optional[backend_axis.BackendPart] = None
    encoder: Optional["EncoderSpec"] = None
    llm: Optional["LLMSpec"] = None  # None for an encoder-only point
    memory: Optional[WorkingSet] = None  # one iteration's working set beyond the parameters
    skip: Optional[str] = None
    hf: Optional["HFPart"] = None
    endpoint: Optional["EndpointPart"] = None

    @property
    def pipeline_parts(self) -> Dict[str, Any]:
        """The axes' parts for :func:`bench.models.pipeline.build_pipeline`."""
        return {"tiling_plan": self.tiling, "reduction": self.reduction, "backend": self.backend}


def resolve_threads(threads: Optional[int]) -> int:
    """The configured thread count, else the cores this process may run on: never whatever
    ``torch.get_num_threads()`` says, which is the previous point's setting."""
    if threads:
        return int(threads)
    return len(allowed_cpus())


def measurement_settings(cfg: BenchConfig) -> Dict[str, Any]:
    """The knobs that change how thoroughly a point is measured, not what (see POINT_KEYS)."""
    out = {f"timing_{k}": v for k, v in asdict(cfg.timing).items() if k != "mode"}  # mode is in the id
    out.update(count_flops=bool(cfg.count_flops), measure_peak=bool(cfg.measure_peak),
               memory_headroom=cfg.memory_headroom)
    if cfg.batch_ladder:  # only where set: today's records keep their settings
        out["batch_ladder"] = True
    if cfg.paper_resolutions_only:  # only said where set: older tables keep their columns
        out["paper_resolutions_only"] = True
    return out


def _run_part(cfg: BenchConfig) -> RunPart:
    return RunPart(sweep=cfg.name, settings=measurement_settings(cfg), timing=replace(cfg.timing),  # a copy
                   count_flops=bool(cfg.count_flops), measure_peak=bool(cfg.measure_peak),
                   memory_headroom=cfg.memory_headroom, exports_dir=Path(cfg.results_dir) / "exports",
                   backend_atol=cfg.backend.atol)


def resolve_image(cfg: BenchConfig):
    """``(resolution, tiling, tile_size, image_size)`` of a point.

    Without tiling: ``(resolution, "none", None, None)``, as before. With tiling, the tile size
    is ``tiling.tile`` or the encoder's native input size (None when it has none: the point is
    then skipped with the reason), and ``image_size`` is resolved to ``WxH`` (``photo`` to the
    photo's own size) with ``resolution`` its longer side; a square image of ``resolution``
    px is recorded as ``image_size`` null, so ``image_size=1152x1152`` is the point
    ``resolution=1152``.
    """
    name = str(cfg.tiling.name)
    if name == "none":
        return int(cfg.resolution), name, None, None
    tile = cfg.tiling.tile or get_encoder_spec(cfg.encoder.name).native_resolution
    w, h = tiling_axis.image_wh(int(cfg.resolution), cfg.image_size)
    return max(w, h), name, (int(tile) if tile else None), (None if w == h else f"{w}x{h}")


def resolve_point(cfg: BenchConfig) -> PointConfig:
    """The point (the record's identity) of ``cfg``: :func:`resolve_plan`'s ``point``."""
    return resolve_plan(cfg).point


def resolve_plan(cfg: BenchConfig) -> PointPlan:
    """The plan of ``cfg``, its only reading by the measurement.

    Raises :class:`ConfigError` (nothing built yet) for a device torch does not have, a
    checkpoint that is not there and an ``hf=`` folder that cannot be a point; a point that
    cannot be measured for what it asks (an impossible resolution) gets ``skip`` instead.
    """
    validate(cfg)
    if str(cfg.endpoint.name) != "none":
        return _endpoint_plan(cfg)
    try:
        dev = resolve_device(cfg.device)
    except ValueError as exc:
        raise DeviceUnavailableError(str(exc)) from None
    dt = resolve_dtype(str(cfg.dtype), dev)
    threads = None if dev.type == "cuda" else resolve_threads(cfg.threads)
    if cfg.hf:
        return _hf_plan(cfg, dev, dt, threads)
    point = _composed_point(cfg, dev, dt, threads)
    enc = get_encoder_spec(point.encoder)
    llm = None if point.llm == NO_LLM else get_llm_spec(point.llm)
    elem = torch.empty((), dtype=dt).element_size()
    parts: Dict[str, Any] = {}
    try:
        part = tiling_axis.plan_part(point)  # a tiling mode's count: tiles, base image, unpad and newline tokens
        parts.update(image=part.image, tiling=part.plan)
        n = part.plan.tokens if part.plan is not None else enc.num_tokens(point.resolution)
        layers = None if llm is None else int(llm.config["num_hidden_layers"])
        parts["reduction"] = reduction_axis.plan_part(point, n, enc, layers)
        if cfg.paper_resolutions_only and point.resolution not in enc.paper_resolutions:
            raise InvalidResolutionError(
                f"{point.encoder} at {point.resolution} px: not a paper resolution of this encoder "
                f"({', '.join(map(str, enc.paper_resolutions)) or 'none'}; paper_resolutions_only=true)")
    except InvalidResolutionError as exc:
        parts["skip"] = str(exc)
    red, plan = parts.get("reduction"), parts.get("tiling")
    if not parts.get("skip"):
        parts["memory"] = memory_axis.plan_part(point, enc, llm, elem, plan)
    return PointPlan(point=point, device=dev, dtype=dt, threads=threads, run=_run_part(cfg),
                     decode=decode_axis.plan_part(point, llm, elem, red.tokens_to_llm if red else 0),
                     backend=backend_axis.plan_part(point), encoder=enc, llm=llm, **parts)


def _runtime_knobs(cfg: BenchConfig, dev: torch.device, dt: torch.dtype, threads: Optional[int]) -> Dict[str, Any]:
    """The point keys every point has alike, composed or ``hf=``: how and where it runs."""
    cuda = dev.type == "cuda"
    return dict(dtype=dtype_name(dt), device=str(dev), batch_size=cfg.batch_size, preprocess=bool(cfg.preprocess),
                threads=threads, timing_mode=str(cfg.timing.mode), tf32=bool(cfg.tf32) if cuda else None,
                cudnn_benchmark=bool(cfg.cudnn_benchmark) if cuda else None, decode_tokens=int(cfg.decode_tokens),
                allocator=str(cfg.allocator))


def _composed_point(cfg: BenchConfig, dev: torch.device, dt: torch.dtype, threads: Optional[int]) -> PointConfig:
    """The concrete knobs of a composed point (an encoder, a projector, an LLM)."""
    encoder_only = cfg.llm.name == NO_LLM
    if encoder_only and cfg.checkpoint:
        raise ConfigError("llm=none (encoder only) cannot take a checkpoint: a LLaVA checkpoint needs its LLM")
    ckpt, fingerprint = checkpoint_identity(cfg.checkpoint)
    backend_name = "compile" if cfg.compile and cfg.backend.name == "eager" else cfg.backend.name
    backend = backend_axis.get_backend(backend_name)
    conf = to_conf(cfg.reduction)
    # Encoder only: the LLM-side knobs (projector, prompt, attention) change nothing that runs,
    # so they are null in the point (and its id), not the values of parts that were never built.
    resolution, tiling_name, tile_size, image_size = resolve_image(cfg)
    return PointConfig(encoder=cfg.encoder.name, resolution=resolution, llm=cfg.llm.name,
                       prompt_tokens=None if encoder_only else cfg.prompt_tokens,
                       attn_implementation=None if encoder_only else str(cfg.attn_implementation),
                       compile=bool(cfg.compile) or backend_name == "compile", compile_mode=cfg.compile_mode,
                       channels_last=bool(cfg.channels_last), projector=None if encoder_only else cfg.projector,
                       checkpoint=ckpt, checkpoint_fingerprint=fingerprint,
                       extra_work_stage=cfg.extra_work_stage if cfg.extra_work_matmuls else None,
                       extra_work_matmuls=int(cfg.extra_work_matmuls) if cfg.extra_work_stage else 0,
                       backend=backend_name, backend_stages=backend.stages(cfg),
                       backend_options=backend.options(cfg, threads, dtype_name(dt)),
                       tiling=tiling_name, tile_size=tile_size, image_size=image_size,
                       reduction=conf.name, reduction_params=reduction_axis.point_params(conf),
                       **_runtime_knobs(cfg, dev, dt, threads))


def _hf_plan(cfg: BenchConfig, dev: torch.device, dt: torch.dtype, threads: Optional[int]) -> PointPlan:
    """An ``hf=`` point: the folder resolved and checked, its processor loaded (one line and
    exit 2 when it cannot be a point), the image as ``resolution`` square or ``image_size``;
    ``encoder``/``llm`` name the model."""
    from ..models.hf.plan import plan_part

    hf = plan_part(cfg.hf, cfg.min_pixels, cfg.max_pixels)
    w, h = tiling_axis.image_wh(int(cfg.resolution), cfg.image_size)
    name = hf.source.name
    point = PointConfig(encoder=f"hf:{name}", resolution=max(w, h), llm=f"hf:{name}",
                        prompt_tokens=cfg.prompt_tokens, attn_implementation=str(cfg.attn_implementation),
                        projector=None, image_size=None if w == h else f"{w}x{h}",
                        hf=hf.source.key, hf_fingerprint=hf.source.fingerprint, hf_options=hf.options,
                        **_runtime_knobs(cfg, dev, dt, threads))
    # the sample photo resized to the point's image: the processor decides its tiles or patches
    return PointPlan(point=point, device=dev, dtype=dt, threads=threads, run=_run_part(cfg),
                     decode=decode_axis.plan_part(point, None, 0, 0), image=tiling_axis.ImageSpec(w, h, resize=True),
                     hf=hf)


def _endpoint_plan(cfg: BenchConfig) -> PointPlan:
    """An ``endpoint=`` point: the server, the model and the image the client sends (the sample
    photo resized to ``resolution`` square or ``image_size``); ``encoder``/``llm`` name the kind
    and the model, ``batch_size`` is the concurrency, and the device is the server (``endpoint``)."""
    from ..models.endpoints import plan_part
    from ..models.endpoints.base import point_fields

    part = plan_part(cfg.endpoint)
    w, h = tiling_axis.image_wh(int(cfg.resolution), cfg.image_size)
    keys = point_fields(part)
    model = keys["endpoint_model"] or "default"
    point = PointConfig(encoder=f"endpoint:{part.kind}", resolution=max(w, h), llm=f"endpoint:{model}",
                        dtype="server", device="endpoint", batch_size=part.concurrency,
                        prompt_tokens=cfg.prompt_tokens, attn_implementation=None, projector=None,
                        preprocess=False, image_size=None if w == h else f"{w}x{h}",
                        decode_tokens=int(cfg.decode_tokens), allocator=str(cfg.allocator), **keys)
    return PointPlan(point=point, device=torch.device("cpu"), dtype=torch.float32, threads=None, run=_run_part(cfg),
                     decode=decode_axis.plan_part(point, None, 0, 0), image=tiling_axis.ImageSpec(w, h, resize=True),
                     endpoint=part)
