"""What every backend is: which stages it can run, its knobs, and how it edits a pipeline.

A backend changes *how* a stage runs, never *what* it computes (``bench.models.pipeline``):
the eager module of the stage is the reference it is exported from and checked against.
Two kinds:

- in-process PyTorch (``eager``, ``compile``): the stage's own ``run``, maybe wrapped;
- deployment runtimes (``onnxruntime``, ``openvino``, :class:`ExportedBackend`): the stage's
  module is exported at the point's static shapes, cached by content
  (:mod:`.export_cache`), loaded into the runtime, and its first output compared with eager's
  on the same input (:mod:`.numerics`) before anything is timed. Export and first-load time
  are recorded apart (``backend_info``), never timed.

A stage a backend cannot run is a one-line :class:`~bench.config.ConfigError` when asked for
(``backend.stages``), and it is never run eagerly behind the backend's name: stages the
backend does not run keep their owner (``vlm``) in the record's ``pipeline``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...registry import Registry
from ..pipeline import Flow, Pipeline
from .errors import one_line, BackendError  # noqa: F401  (re-exported: bench.models.backends.base.BackendError)

log = logging.getLogger("fastvlm_bench")

#: Stages a runtime may run, in pipeline order.
RUNTIME_STAGES = ("vision_latency", "projector", "prefill")


class Backend:
    """One way of running a point's stages. Subclasses register with ``@BACKENDS.register``."""

    name: str = ""
    #: the stages this backend can run
    can_run: Tuple[str, ...] = ()

    def problems(self, cfg) -> List[str]:
        """What makes ``cfg`` (a :class:`~bench.config.BenchConfig`) impossible for this backend."""
        out = []
        for st in cfg.backend.stages or ():
            if st not in self.can_run:
                out.append(f"backend {self.name} cannot run stage {st!r} (it runs: {', '.join(self.can_run) or 'none'})")
        return out

    def stages(self, cfg) -> Optional[str]:
        """The point's ``backend_stages``: asked-for stages in pipeline order, else all it can run."""
        return None

    def options(self, cfg, threads: Optional[int], dtype: str) -> Optional[str]:
        """The point's ``backend_options`` (knobs that change what runs, in the id)."""
        return None

    def versions(self) -> Dict[str, str]:
        return {}

    def apply(self, pipe: Pipeline, vlm, point) -> None:
        """Edit ``pipe`` (the AXES hook); nothing is exported or run here."""

    def prepare(self, pipe: Pipeline, vlm, point, flow: Flow, rec, cache_root: Path,
                atol: Optional[float] = None) -> None:
        """Untimed work before the first iteration (compile, export, load, numerics check)."""

    def timing_guard(self):
        """A context held around the timed loop (compile: a recompile is an error)."""
        return contextlib.nullcontext()


BACKENDS: Registry[Backend] = Registry("backend")


#: Loggers of the exporters and runtimes: their INFO lines (~160 for one tiny ONNX point) and
#: warnings go to ``library.log`` beside the records, not to the user's terminal.
LIBRARY_LOGGERS = ("onnx_ir", "onnxscript", "onnx", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                   "torch._export", "openvino", "nncf")


@contextlib.contextmanager
def library_log(path: Path):
    """While exporting, loading and checking: the libraries' log records, their Python warnings
    and what they print go to ``path`` (appended; a log, not a result), so the user sees our
    lines only. Our own logger is untouched."""
    import io
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    saved = []
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, list(lg.handlers)))
        # torch's own logging setup gives "torch.onnx" a terminal handler of its own: replaced too.
        # Levels unchanged: what reached the terminal reaches the file instead.
        lg.handlers = [handler]
        lg.propagate = False
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            yield
    finally:
        for lg, propagate, handlers in saved:
            lg.handlers = handlers
            lg.propagate = propagate
        lib = logging.getLogger("fastvlm_bench.library")
        lib.addHandler(handler)
        lib.propagate = False
        for w in locals().get("caught") or []:
            lib.warning("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)
        for line in printed.getvalue().splitlines():
            lib.info("stdout: %s", line)
        lib.removeHandler(handler)
        handler.close()


def options_string(knobs: Dict[str, Any]) -> str:
    return ",".join(f"{k}={knobs[k]}" for k in sorted(knobs))


def parse_options(text: Optional[str]) -> Dict[str, str]:
    return dict(kv.split("=", 1) for kv in (text or "").split(",") if kv)


# ---- the stages a runtime can run, as modules with tensor inputs and outputs -----------------

class _Prefill(torch.nn.Module):
    """The prefill stage as one graph: (visual embeddings, prompt ids) -> (last logits, K, V, ...),
    the KV cache flattened to tensors, since a deployment runtime has no ``DynamicCache``."""

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds: torch.Tensor, ids: torch.Tensor):
        out = self.vlm._prefill_forward(embeds, ids)
        kv = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1, :], *kv)


@dataclass
class StageGraph:
    """A stage as a module on named flow fields: what is exported, fed and checked."""

    name: str
    module: torch.nn.Module
    inputs: Tuple[str, ...]  # Flow fields read, in order
    compared: str  # the output compared with eager's (first output)
    weights: Optional[torch.nn.Module] = None  # whose weights the export bakes in (default: module)

    def example(self, flow: Flow) -> Tuple[torch.Tensor, ...]:
        return tuple(getattr(flow, k) for k in self.inputs)

    def write(self, flow: Flow, outs: Sequence[torch.Tensor]) -> None:
        """Put a runtime's outputs where the eager stage puts its own."""
        if self.name == "vision_latency":
            flow.feats = outs[0]
        elif self.name == "projector":
            flow.embeds = outs[0]
        else:
            flow.logits = outs[0]
            flow.token = flow.logits.argmax(dim=-1)
            flow.past = tuple(outs[1:])  # (K0, V0, K1, V1, ...), as the runtime returned them
            flow.token.cpu()  # ends prefill, as in base_pipeline


def stage_graph(vlm, name: str) -> StageGraph:
    if name == "vision_latency":
        return StageGraph(name, vlm.encoder, ("pixels",), "feats")
    if name == "projector":
        return StageGraph(name, vlm.projector, ("feats",), "embeds")
    if name == "prefill":
        return StageGraph(name, _Prefill(vlm).eval(), ("embeds", "ids"), "logits", weights=vlm.llm)
    raise KeyError(name)


class _RuntimeStage:
    """A pipeline stage run by a deployment runtime. ``computes`` is the eager run it replaced:
    the FLOP counter counts that (same arithmetic), and :meth:`ExportedBackend.prepare` takes
    the reference output from it. Until prepared, calling it is an error, not eager."""

    def __init__(self, backend: str, graph: StageGraph, computes: Callable[[Flow], None]):
        self.backend, self.graph, self.computes = backend, graph, computes
        self.call: Optional[Callable[[List[np.ndarray]], List[np.ndarray]]] = None

    def __call__(self, flow: Flow) -> None:
        if self.call is None:
            raise BackendError(f"{self.backend} {self.graph.name}: the stage was never exported and loaded")
        arrays = [np.ascontiguousarray(t.detach().numpy()) for t in self.graph.example(flow)]
        try:
            outs = self.call(arrays)
        except Exception as exc:
            if getattr(exc, "interrupts_point", False):  # SIGTERM (measure.runner): not the stage's error
                raise
            raise BackendError(f"{self.backend} {self.graph.name}: {one_line(exc)}") from exc
        self.graph.write(flow, [torch.from_numpy(np.asarray(o)) for o in outs])


def export_onnx(module: torch.nn.Module, example: Tuple[torch.Tensor, ...], path: Path, opset: int,
                dynamo: bool = True) -> str:
    """Export ``module`` at ``example``'s static shapes to ``path``; returns how.
    ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript, what PyTorch recommends;
    weights as external data) or the TorchScript exporter (``dynamo=False``). The fallback from
    one to the other is the export cache's (:func:`.export_cache.get_or_build`): the exporter
    is part of the cache key, and a fallback is logged and recorded."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, example, str(path), dynamo=True, opset_version=opset, external_data=True,
                              verbose=False)
        else:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset)
    return f"torch.onnx.export(dynamo={dynamo}, opset={opset})"


#: The ONNX exporters, preferred first (names used in cache keys and ``.failed`` files).
ONNX_EXPORTERS = ("dynamo", "torchscript")


@dataclass
class Exported:
    """What an exporter made: the files in the cache entry, and how."""

    files: List[str]
    exporter: str


class ExportedBackend(Backend):
    """A deployment runtime: export each stage's module, load it, check it, then run it."""

    can_run = RUNTIME_STAGES
    #: what a cache key of this backend depends on besides the stage (format, opset, ...)
    format_version: str = "1"

    def problems(self, cfg) -> List[str]:
        out = super().problems(cfg)
        if str(cfg.dtype) not in ("fp32", "auto"):
            out.append(f"backend {self.name} runs fp32 on this CPU build; got dtype={cfg.dtype}")
        if cfg.device not in ("cpu", "auto") or (cfg.device == "auto" and torch.cuda.is_available()):
            out.append(f"backend {self.name} runs on device=cpu (its CPU build); got device={cfg.device}")
        if cfg.compile:
            out.append(f"compile=true and backend={self.name} are two backends: choose one")
        for axis in ("tiling", "reduction"):  # they change what a stage's module is: not exported yet
            if str(getattr(getattr(cfg, axis, None), "name", "none")) != "none":
                out.append(f"backend {self.name} cannot run a point with {axis}={getattr(cfg, axis).name} yet "
                           "(its stages' modules and inputs are that axis's own)")
        from ..llms import NO_LLM

        if cfg.llm.name == NO_LLM and set(cfg.backend.stages or ()) - {"vision_latency"}:
            out.append(f"llm={NO_LLM} has the vision_latency stage alone; backend.stages asks for "
                       f"{', '.join(s for s in cfg.backend.stages if s != 'vision_latency')}")
        if cfg.channels_last:
            out.append(f"channels_last is a PyTorch memory format; backend {self.name} chooses its own layouts")
        try:
            self.versions()
        except ImportError as exc:
            out.append(f"backend {self.name} is not installed ({exc.name}): pip install -e .[runtimes] "
                       "with constraints/lock.txt (bash scripts/install.sh)")
        return out

    def stages(self, cfg) -> Optional[str]:
        from ..llms import NO_LLM

        # an encoder-only point (llm=none) has the encoder stage alone
        have = ("vision_latency",) if cfg.llm.name == NO_LLM else RUNTIME_STAGES
        want = list(cfg.backend.stages or self.can_run)
        return ",".join(s for s in have if s in want)

    def apply(self, pipe: Pipeline, vlm, point) -> None:
        for name in (point.backend_stages or "").split(","):
            if not name:
                continue
            if name not in pipe.names():
                raise BackendError(f"{self.name} {name}: the pipeline has no such stage ({', '.join(pipe.names())})")
            pipe.replace(name, _RuntimeStage(self.name, stage_graph(vlm, name), pipe.get(name).run), self.name)

    # -- subclasses ------------------------------------------------------------------------
    def exporters(self, graph: StageGraph) -> Tuple[str, ...]:
        """The exporters that may make ``graph``, preferred first (each a cache key of its own)."""
        return ("default",)

    def export(self, graph: StageGraph, example: Tuple[torch.Tensor, ...], folder: Path, point,
               exporter: str) -> Exported:
        raise NotImplementedError

    def load(self, folder: Path, point) -> Tuple[Callable[[List[np.ndarray]], List[np.ndarray]], List[Tuple]]:
        """``(call, input shapes)``: ``call(arrays) -> arrays`` runs the loaded graph once."""
        raise NotImplementedError

    def key_parts(self, point) -> Dict[str, Any]:
        return {}

    # -- the untimed part of a point -------------------------------------------------------
    def prepare(self, pipe: Pipeline, vlm, point, flow: Flow, rec, cache_root: Path,
                atol: Optional[float] = None) -> None:
        runtime = [s for s in pipe.stages if isinstance(s.run, _RuntimeStage)]
        info: Dict[str, Any] = {"name": self.name, "versions": self.versions(), "options": point.backend_options,
                                "stages": {}}
        rec.backend_info = info
        if not runtime:
            return
        # beside the records (<results_dir>/<sweep>/library.log); the record names it
        log_path = Path(cache_root).parent / (rec.sweep or "exports") / "library.log"
        info["library_log"] = str(log_path)
        with library_log(log_path):
            self._prepare(pipe, point, flow, info, runtime, cache_root, atol)

    def _prepare(self, pipe: Pipeline, point, flow: Flow, info: Dict[str, Any], runtime, cache_root: Path,
                 atol: Optional[float]) -> None:
        from . import export_cache, numerics

        # One eager pass: every runtime stage's input (export example, numerics input) and its
        # reference output, each stage on eager inputs (an error is the stage's own).
        refs: Dict[str, Tuple[Tuple[torch.Tensor, ...], torch.Tensor]] = {}
        for st in pipe.stages:
            if isinstance(st.run, _RuntimeStage):
                example = tuple(t.clone() for t in st.run.graph.example(flow))
                st.run.computes(flow)
                refs[st.name] = (example, getattr(flow, st.run.graph.compared).detach().clone())
            else:
                st.run(flow)
        for st in runtime:
            graph, (example, ref) = st.run.graph, refs[st.name]
            attempts = [(ex, export_cache.content_key(self.name, self.format_version, graph, example, point,
                                                      self.versions(), {**self.key_parts(point), "exporter": ex}))
                        for ex in self.exporters(graph)]
            entry: Dict[str, Any] = {}
            t0 = time.perf_counter()
            try:
                folder, made = export_cache.get_or_build(
                    cache_root, self.name, attempts, lambda d, ex: self.export(graph, example, d, point, ex), entry,
                    st.name)
            except BackendError:
                raise
            except Exception as exc:
                if getattr(exc, "interrupts_point", False):
                    raise
                raise BackendError(f"{self.name} {st.name}: export failed: {one_line(exc)}") from exc
            # a cached entry's check (sizes and SHA-256 of its files) is kept apart from export time
            entry["export_s" if made else "cache_check_s"] = time.perf_counter() - t0
            entry.setdefault("export_s", 0.0)
            entry["cached"] = not made
            entry["cache_key"] = folder.name
            export_cache.raise_if_signalled()  # a harness checkpoint after the export call returned
            t0 = time.perf_counter()
            try:
                call, shapes = self.load(folder, point)
            except Exception as exc:
                if getattr(exc, "interrupts_point", False):
                    raise
                raise BackendError(f"{self.name} {st.name}: the export in {folder} does not load: "
                                   f"{one_line(exc)}") from exc
            want = [tuple(t.shape) for t in example]
            if [tuple(s) for s in shapes] != want:
                raise BackendError(f"{self.name} {st.name}: the exported graph takes inputs of shape "
                                   f"{', '.join(map(str, map(tuple, shapes)))} but the stage gets "
                                   f"{', '.join(map(str, want))} (export {folder})")
            st.run.call = call
            probe = Flow(flow.pixels, flow.ids, feats=flow.feats, embeds=flow.embeds)
            for name, t in zip(graph.inputs, example):
                setattr(probe, name, t)
            st.run(probe)  # the backend's first call: on the eager stage's own input
            export_cache.raise_if_signalled()  # after the load and first call (a runtime's own handlers)
            entry["load_s"] = time.perf_counter() - t0
            entry.update(numerics.compare(getattr(probe, graph.compared), ref, point.dtype, self.name, st.name, atol))
            info["stages"][st.name] = entry
            log.info("%s %s: %s in %.1f s, loaded in %.2f s, max abs err %.2g (rel %.2g)", self.name, st.name,
                     "cached export" if not made else f"exported ({entry.get('exporter')})", entry["export_s"],
                     entry["load_s"], entry["max_abs_err"], entry["max_rel_err"])
        eager = [s.name for s in pipe.stages if not isinstance(s.run, _RuntimeStage)]
        if eager:
            log.info("%s runs %s; eager PyTorch runs %s", self.name, ", ".join(s.name for s in runtime),
                     ", ".join(eager))
