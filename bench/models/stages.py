"""A point's path from pixels to tokens as an ordered list of named stages, with plug-ins: the
types (:class:`Flow`, :class:`Stage`, :class:`Pipeline`) and the :data:`AXES` list the plug-ins
register into. :mod:`bench.models.pipeline` assembles a point's pipeline from them; the axes
import this module, never that one, so that no axis and the assembly import each other.

Why a pipeline and not more methods on :class:`~bench.models.vlm.VLM`: four axes change a
point's path, each in the part of it it owns, and they combine:

- **tiling** (``bench.models.tiling``) splits the image into tiles before the encoder and adds
  a ``merge`` stage (unpad, newline tokens, interpolation) after the projector;
- **token reduction** (``bench.models.reduction``) adds its own stage (pooling, pruning) or
  changes the module of the stage it works inside (ToMe in the encoder, FastV in the LLM);
- **backends** (``bench.models.backends``) replace how a stage runs (ONNX Runtime, OpenVINO)
  but not what it computes;
- **decode** appends a ``decode`` stage after ``prefill``.

Each plug-in edits the :class:`Pipeline` (``insert_after``, ``replace``) instead of the timed
loop growing a flag per axis. The timer (``bench.measure.scenario``) only walks the stages in
order, wrapping each in ``timer.stage(name)``; the FLOP counter and the energy loop walk the same
list, so all three always describe the same work. Every stage says which plug-in put it
there or last replaced it (``owner``), and the record keeps that (``pipeline``).

Values flow between stages in a :class:`Flow`: one per iteration, nothing kept across
iterations (every prefill starts from a fresh KV cache).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional


def _no_step() -> None:
    pass

import contextlib

import torch


@dataclass
class Flow:
    """What one iteration carries from stage to stage.

    ``pixels`` and ``ids`` are the inputs (image tensor on the device, prompt token ids);
    each stage reads what earlier stages wrote and writes its own output. ``extras`` is for
    plug-ins (a tiling plan, kept-token indices) without widening this class per plug-in.
    """

    pixels: torch.Tensor
    ids: torch.Tensor
    feats: Optional[torch.Tensor] = None  # encoder output (batch or tiles, tokens, channels)
    embeds: Optional[torch.Tensor] = None  # visual embeddings in the LLM's width (batch, tokens, hidden)
    token: Optional[torch.Tensor] = None  # the first generated token ids (batch,)
    past: Any = None  # the KV cache after prefill (and after each decode step)
    logits: Optional[torch.Tensor] = None  # last position's logits of the latest LLM step
    extras: Dict[str, Any] = field(default_factory=dict)
    #: Marks the end of one step of the running stage (a decoded token): the timer's
    #: ``StageTimer.step`` while timed, a no-op otherwise (FLOP counting, energy loop).
    step: Callable[[], None] = _no_step


@dataclass
class Stage:
    """One timed stage: ``name`` is the timer's and the record's stage name."""

    name: str
    run: Callable[[Flow], None]
    owner: str = "vlm"  # what put this stage here, or last replaced how it runs


class Pipeline:
    """The stages of one point, in order. Plug-ins edit it; the timer walks it.

    ``preprocess`` (PIL images -> the encoder's input tensor) is not a stage of the walk: it is
    timed on its own, outside TTFT, only with ``preprocess=true``, and the untimed passes (FLOPs,
    energy) start from its output. A plug-in that changes what the encoder sees (tiling: the
    tiles plus a base image) replaces it and names itself in ``preprocess_owner``. ``extras``
    is what a plug-in wants the point's record to know (a tiling plan).
    """

    def __init__(self, stages: Iterable[Stage], preprocess: Optional[Callable[[Any], torch.Tensor]] = None):
        self.stages: List[Stage] = list(stages)
        self.preprocess = preprocess
        self.preprocess_owner = "vlm"
        self.extras: Dict[str, Any] = {}

    def names(self) -> List[str]:
        return [s.name for s in self.stages]

    def index(self, name: str) -> int:
        for i, s in enumerate(self.stages):
            if s.name == name:
                return i
        raise KeyError(f"the pipeline has no stage {name!r} (stages: {', '.join(self.names())})")

    def get(self, name: str) -> Stage:
        return self.stages[self.index(name)]

    def insert_after(self, anchor: str, stage: Stage) -> None:
        if stage.name in self.names():
            raise ValueError(f"the pipeline already has a stage {stage.name!r}")
        self.stages.insert(self.index(anchor) + 1, stage)

    def replace(self, name: str, run: Callable[[Flow], None], owner: str) -> None:
        """Run stage ``name`` with ``run`` instead (same place, same name, new owner)."""
        self.stages[self.index(name)] = Stage(name, run, owner)

    def owners(self) -> Dict[str, str]:
        """Stage name -> owner, in order: what the record keeps as ``pipeline``."""
        return {s.name: s.owner for s in self.stages}

    def __call__(self, flow: Flow, stage: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext(),
                 after: Callable[[str], None] = lambda name: None,
                 step: Optional[Callable[[], None]] = None) -> Flow:
        """Run every stage on ``flow``; ``stage(name)`` wraps each (the timer's marks), and
        ``after(name)`` runs inside that wrapper once the stage's own work is done. ``step``
        (the timer's per-step mark) is what a stage that repeats a unit of work calls after
        each unit, through ``flow.step``."""
        if step is not None:
            flow.step = step
        for s in self.stages:
            with stage(s.name):
                s.run(flow)
                after(s.name)
        return flow


def base_pipeline(vlm) -> Pipeline:
    """Today's path: encoder -> projector -> prefill, the first token id copied to the host.

    The host copy ends ``prefill`` (and so TTFT): a serving stack has the first token only
    when the host can send it. An encoder-only point (``llm=none``: ``vlm.llm`` is None) is the
    encoder stage alone, so the timer, the FLOP counter and the energy loop time and count
    nothing else, and the record has no projector, prefill or TTFT to report.
    """

    def encode(f: Flow) -> None:
        f.feats = vlm.encode(f.pixels)

    def project(f: Flow) -> None:
        f.embeds = vlm.project(f.feats)

    def prefill(f: Flow) -> None:
        f.token, f.past, f.logits = vlm.prefill(f.embeds, f.ids)
        f.token.cpu()

    if vlm.llm is None:
        return Pipeline([Stage("vision_latency", encode)], preprocess=vlm.preprocess)
    return Pipeline([Stage("vision_latency", encode), Stage("projector", project), Stage("prefill", prefill)],
                    preprocess=vlm.preprocess)


def end_to_end(pipe: Pipeline) -> Optional[tuple]:
    """The span TTFT measures, ``(first stage, "prefill")``, or None when the pipeline has no
    prefill (an encoder-only point has no first token, so no TTFT)."""
    return ("vision_latency", "prefill") if "prefill" in pipe.names() else None


def target_stage(pipe: Pipeline, configured: str) -> str:
    """The stage the stopping rule watches: ``timing.target_stage`` where the pipeline has it;
    ``ttft`` (the default) on a pipeline without a prefill (encoder-only points) becomes the
    encoder stage, which is then the whole pipeline's work. The record keeps which
    (``target_stage``). Any other stage the pipeline lacks is an error, not a silent substitute."""
    have = ["preprocess"] + pipe.names() + (["ttft"] if end_to_end(pipe) else []) \
        + (["ttst", "e2e"] if "decode" in pipe.names() else [])  # the decode axis's spans
    if configured in have:
        return configured
    if configured == "ttft":
        return "vision_latency"
    raise ValueError(f"timing.target_stage={configured!r}: this point's pipeline has no such stage "
                     f"(it has {', '.join(have)})")


#: The axes that edit a point's pipeline, in the order they apply: each is
#: ``apply(pipeline, vlm, point)`` and owns one registry of plug-ins (one file per method).
#: Order matters where two touch the same stage: tiling decides what the encoder sees, token
#: reduction what reaches the LLM, a backend how a stage runs, decode what follows prefill.
AXES: List[Callable[[Pipeline, Any, Any], None]] = []
