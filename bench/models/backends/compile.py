"""``backend=compile`` (or ``compile=true``, the same point): ``torch.compile`` on every stage.

Isolated per point: Dynamo state reset, static shapes; graphs, graph breaks and recompiles
recorded (``compile_info``), compile time recorded apart (``compile_s``), never timed. While
timing, a recompile is an error (:class:`no_recompiles`): the point would otherwise silently
time another graph, or eager after the recompile limit.
"""
from __future__ import annotations

import time

import torch

from .base import BACKENDS, Backend


@BACKENDS.register("compile")
class Compile(Backend):
    name = "compile"
    can_run = ("vision_latency", "projector", "prefill")

    def problems(self, cfg):
        """``backend.stages`` is for the runtimes (a sweep over backends sets it for all of
        them); this backend runs every stage, and the record's ``pipeline`` says so."""
        return []

    def apply(self, pipe, vlm, point) -> None:
        """The stages keep calling ``vlm``'s parts; :meth:`prepare` swaps in compiled modules.
        The record names the backend of every stage it compiles."""
        for name in self.can_run:
            if name in pipe.names():
                pipe.replace(name, pipe.get(name).run, self.name)

    def prepare(self, pipe, vlm, point, flow, rec, cache_root, atol=None) -> None:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        from ..pipeline import Flow

        dynamo.reset()
        counters.clear()
        t0 = time.perf_counter()
        vlm.encoder = torch.compile(vlm.encoder, mode=point.compile_mode, dynamic=False)
        if vlm.llm is not None:  # encoder-only points (llm=none) have neither
            vlm.projector = torch.compile(vlm.projector, mode=point.compile_mode, dynamic=False)
            vlm.llm = torch.compile(vlm.llm, mode=point.compile_mode, dynamic=False)
        for _ in range(2):  # compile, then prove the graphs are reused
            pipe(Flow(flow.pixels, flow.ids))
        if point.device.startswith("cuda"):
            torch.cuda.synchronize(torch.device(point.device))
        rec.compile_s = time.perf_counter() - t0
        rec.compile_info = {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
                            "graph_breaks": int(sum(counters["graph_break"].values())),
                            "recompiles": int(counters["recompiles"].get("recompiles", 0)
                                              + sum(v for k, v in counters["stats"].items() if "recompil" in k)),
                            "cudagraph_skips": int(sum(counters["inductor"].get(k, 0) for k in counters["inductor"]
                                                       if "cudagraph_skip" in k))}
        if rec.compile_info["unique_graphs"] == 0:
            raise RuntimeError("torch.compile produced no graph: the point would run eager")

    def timing_guard(self):
        return no_recompiles()


class no_recompiles:
    """While timing, a recompile is an error, not a result."""

    def __enter__(self):
        import torch._dynamo.config as dc

        self._old = dc.error_on_recompile
        dc.error_on_recompile = True
        return self

    def __exit__(self, *exc):
        import torch._dynamo.config as dc

        dc.error_on_recompile = self._old
        return False
