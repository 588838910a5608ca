"""What every token-reduction method exposes, its registry, and the pipeline axis that applies it.

A method is a class registered with :func:`register_reduction`. It owns:

- ``Conf``: its typed parameters (a dataclass deriving from :class:`ReductionConf`); Hydra
  stores one ``reduction=NAME`` option per method (``bench.config.register_configs``), and the
  parameters, written canonically (:func:`point_params`), are part of the point id;
- ``problems``: the one-line reasons it cannot run a point (ToMe on a conv encoder, FastV
  under ``torch.compile``), checked by ``bench.config.validate`` before anything is built;
- ``tokens_to_llm``: the analytic count of visual tokens that reach the LLM's input (the
  record's ``visual_tokens``), and for methods working inside the LLM ``llm_tokens_per_layer``
  (the visual tokens each LLM layer computes);
- ``apply``: the pipeline edit. ``where`` names the stage its own cost is timed in: its own
  ``reduce`` stage (pooling, random) or inside the stage it changes (``vision_latency`` for
  ToMe and VisionZip, ``prefill`` for FastV);
- ``overhead_ms``: for a method that works inside another stage, a measurement of its own work
  alone on the point's real tensors (the matching of ToMe, FastV's one eager layer over SDPA),
  since the stage timer cannot separate it from the stage.

The default ``none`` edits nothing, so a point without reduction has today's pipeline, record
and id (``reduction``/``reduction_params`` are ``_LATER_KEYS`` of the id).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, List, Optional

import torch

from ...config import ReductionConf
from ...registry import Registry

NONE = "none"


class ReductionMethod:
    name: str = NONE
    Conf: type = ReductionConf
    #: the stage whose time holds the method's own work: ``reduce`` (its own stage),
    #: ``vision_latency`` or ``prefill`` (inside the stage it changes)
    where: str = "reduce"
    #: encoders it needs: ``vit`` (ViT blocks), ``vit_cls`` (and a class token), ``any``
    needs: str = "any"
    compiles: bool = True  # works under torch.compile

    # ---- checks (before anything is built) -----------------------------------------------
    def problems(self, conf, encoder: str, llm: str, resolution: int, compile: bool, tiling: str = NONE
                 ) -> List[str]:
        from ..encoders import get_encoder_spec

        if self.name == NONE:
            return []
        out: List[str] = []
        spec = get_encoder_spec(encoder)
        if self.needs in ("vit", "vit_cls") and spec.kind != "vit":
            out.append(f"reduction={self.name} works inside ViT blocks; {encoder} is a {spec.kind} encoder "
                       f"(it can take: {', '.join(vit_encoders(self.needs == 'vit_cls'))})")
        elif self.needs == "vit_cls" and spec.prefix_tokens != 1:
            out.append(f"reduction={self.name} needs a class token's attention; {encoder} has none "
                       f"(it can take: {', '.join(vit_encoders(True))})")
        if llm == "none" and self.where != "vision_latency":
            out.append(f"reduction={self.name} works on the LLM's input; llm=none (encoder only) has none "
                       f"(encoder-only points take: {', '.join(n for n in REDUCTIONS.names() if REDUCTIONS.get(n).where == 'vision_latency')})")
        if compile and not self.compiles:
            out.append(f"reduction={self.name} cannot run under torch.compile (compile=true): {self.why_no_compile}")
        if not out and (llm != "none" or self.where == "vision_latency"):
            try:
                n = spec.num_tokens(resolution)
            except ValueError:
                return out  # the point is recorded as skipped for its resolution
            out += self.param_problems(conf, n, spec, llm)
        return out

    why_no_compile = ""

    def param_problems(self, conf, n: int, spec, llm: str) -> List[str]:
        return []

    # ---- analytic facts ------------------------------------------------------------------
    def tokens_to_llm(self, conf, n: int, spec) -> int:
        """Visual tokens that reach the LLM's input, from the encoder's ``n``."""
        return n

    def llm_tokens_per_layer(self, conf, n: int, layers: int) -> Optional[List[int]]:
        """Visual tokens each LLM layer computes (only for methods working inside the LLM)."""
        return None

    # ---- the pipeline edit ---------------------------------------------------------------
    def apply(self, conf, pipe, vlm, point) -> None:
        return None

    def overhead_ms(self, conf, vlm, pixels: torch.Tensor, ids: torch.Tensor) -> Optional[float]:
        return None

    @property
    def owner(self) -> str:
        return f"reduction:{self.name}"


REDUCTIONS: Registry[ReductionMethod] = Registry("reduction")


def register_reduction(cls):
    """Class decorator: one instance of the method under ``cls.name``."""
    REDUCTIONS.add(cls.name, cls())
    return cls


@register_reduction
class NoReduction(ReductionMethod):
    """Every visual token the encoder gives reaches the LLM (today's path)."""

    name = NONE


def vit_encoders(cls_token: bool) -> List[str]:
    from ..encoders import ENCODERS

    return [n for n in ENCODERS.names() if ENCODERS.get(n).kind == "vit"
            and (not cls_token or ENCODERS.get(n).prefix_tokens == 1)]


# ---- points <-> configs --------------------------------------------------------------------
def to_conf(conf: Any) -> ReductionConf:
    """A ``cfg.reduction`` node (OmegaConf, from Hydra) or a dataclass, as the method's dataclass."""
    if conf is None:
        return ReductionConf()
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(conf, DictConfig):
            conf = OmegaConf.to_object(conf)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(conf, dict):
        conf = dict(conf)
        method = REDUCTIONS.get(conf.get("name", NONE))
        return method.Conf(**conf)
    return conf


def point_params(conf: ReductionConf) -> Optional[str]:
    """The method's parameters as canonical JSON (sorted keys): part of the point id; None for none."""
    if conf.name == NONE:  # a budget without a method changes nothing: not part of the id
        return None
    return json.dumps({f.name: getattr(conf, f.name) for f in fields(conf) if f.name != "name"}, sort_keys=True)


def conf_of_point(point) -> ReductionConf:
    name = getattr(point, "reduction", NONE) or NONE
    method = REDUCTIONS.get(name)
    params = json.loads(getattr(point, "reduction_params", None) or "{}")
    return method.Conf(name=name, **params)


def method_of(point):
    """``(method, conf)`` of a point."""
    conf = conf_of_point(point)
    return REDUCTIONS.get(conf.name), conf


@dataclass(frozen=True)
class ReductionPart:
    """The reduction axis's part of a point's plan: the method, its parameters, and the
    analytic visual tokens it leaves (the record's ``visual_tokens``; with a method, the
    encoder's own count, where its cost is timed and, in the LLM, the tokens per layer)."""

    method: "ReductionMethod"
    conf: ReductionConf
    tokens_to_llm: int
    tokens_encoder: Optional[int] = None  # None without a method
    overhead_in: Optional[str] = None
    tokens_per_layer: Optional[List[int]] = None  # None without a method or an LLM

    @property
    def active(self) -> bool:
        return self.method.name != NONE


def plan_part(point, encoder_tokens: int, spec, llm_layers: Optional[int]) -> ReductionPart:
    """The axis's part of the plan (``bench.measure.plan``): ``encoder_tokens`` visual tokens
    (after tiling) from an encoder of ``spec`` into an LLM of ``llm_layers`` layers (None: no LLM)."""
    method, conf = method_of(point)
    to_llm = method.tokens_to_llm(conf, encoder_tokens, spec)
    if method.name == NONE:
        return ReductionPart(method, conf, to_llm)
    per_layer = (method.llm_tokens_per_layer(conf, to_llm, llm_layers) or []) if llm_layers is not None else None
    return ReductionPart(method, conf, to_llm, encoder_tokens, method.where, per_layer)


def check_reduction(conf: ReductionConf, encoder: str, llm: str, resolution: int, compile: bool,
                    tiling: str = NONE) -> List[str]:
    if conf.name not in REDUCTIONS:
        return [f"unknown reduction {conf.name!r}; valid: {', '.join(REDUCTIONS.names())}"]
    return REDUCTIONS.get(conf.name).problems(conf, encoder, llm, resolution, compile, tiling)


def apply_reduction(pipe, vlm, point) -> None:
    """The axis (``bench.models.pipeline.AXES``): the point's method edits its pipeline (the
    plan's, ``pipe.extras["reduction"]``, where a resolved plan built the pipeline)."""
    part = pipe.extras.get("reduction")
    method, conf = (part.method, part.conf) if part is not None else method_of(point)
    if method.name != NONE:
        method.apply(conf, pipe, vlm, point)


def for_generation(conf: ReductionConf, vlm) -> None:
    """Apply ``conf`` to ``vlm`` for :meth:`~bench.models.vlm.VLM.generate` (the lmms-eval
    plugin's path): the method edits a pipeline of ``vlm`` as in a sweep; a ``reduce`` stage
    becomes ``vlm.reduce_visual``, an encoder it wraps stays wrapped. A method that replaces
    the prefill (FastV) expects the visual tokens first, which a chat prompt does not give:
    refused with a one-line reason."""
    from ..pipeline import Flow, base_pipeline

    method = REDUCTIONS.get(conf.name)
    if method.name == NONE:
        return
    pipe = base_pipeline(vlm)
    method.apply(conf, pipe, vlm, None)
    owners = pipe.owners()
    if owners.get("prefill") == method.owner:
        raise ValueError(f"reduction={method.name} replaces the LLM's prefill with the visual tokens first; "
                         "generation with a text prefix before the image does not support it yet")
    if "reduce" in owners:
        run = pipe.get("reduce").run

        def reduce_visual(vis: torch.Tensor) -> torch.Tensor:
            f = Flow(pixels=vis, ids=vis, embeds=vis)
            run(f)
            return f.embeds

        vlm.reduce_visual = reduce_visual


def conf_from_args(name: str, params: dict) -> ReductionConf:
    """A method's conf from string parameters (lmms-eval model_args), cast to the field types."""
    method = REDUCTIONS.get(name)
    types = {f.name: f.type for f in fields(method.Conf)}
    out = {}
    for key, value in params.items():
        if key not in types:
            raise ValueError(f"reduction={name} has no parameter {key!r}; it has: "
                             f"{', '.join(k for k in types if k != 'name')}")
        t = str(types[key])
        out[key] = (str(value).lower() in ("1", "true", "yes") if "bool" in t else
                    int(value) if "int" in t else float(value) if "float" in t else value)
    return method.Conf(name=name, **out)


def after_projection(pipe) -> str:
    """The stage a stage on the LLM's input goes after: tiling's ``merge`` where there is one."""
    return "merge" if "merge" in pipe.names() else "projector"


def median_ms(fn: Callable[[], Any], device: torch.device, reps: int = 9, warmup: int = 3,
              without: Optional[Callable[[], Any]] = None) -> float:
    """Median milliseconds of ``fn()`` (a method's own work), after ``warmup`` untimed calls (the
    first calls of a new kernel shape can be 100x slower on a CPU). With ``without``: the median
    of ``fn`` less the median of ``without``, the two interleaved call by call so that a change
    in the machine's speed falls on both."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    fns = [fn] + ([without] if without is not None else [])
    for _ in range(warmup):
        for f in fns:
            f()
    sync()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(reps):
        for f, out in zip(fns, times):
            t = time.perf_counter()
            f()
            sync()
            out.append((time.perf_counter() - t) * 1e3)
    med = [sorted(t)[len(t) // 2] for t in times]
    return med[0] - (med[1] if without is not None else 0.0)
