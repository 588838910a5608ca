"""``backend=onnxruntime``: each backend stage exported to ONNX at the point's static shapes and
run by an ONNX Runtime ``InferenceSession`` on the CPU execution provider.

Export: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the exporter PyTorch
now recommends; where it fails for an architecture, the TorchScript exporter
(``dynamo=False``); the record says which (``backend_info.stages.<stage>.exporter``).
Weights go to external data (``model.onnx.data``) so a 7B prefill is not capped at protobuf's
2 GiB. Session knobs, recorded in ``backend_options`` and the id: graph optimisation level
(``graph_opt``: disable | basic | extended | all = ORT_ENABLE_ALL, which adds the layout
and conv+activation fusions), ``intra_op_threads`` = the point's ``threads`` (inter-op 1,
sequential execution), execution provider (``ep``), opset.
"""
from __future__ import annotations

from pathlib import Path

from .base import BACKENDS, ONNX_EXPORTERS, Exported, ExportedBackend, export_onnx, options_string, parse_options

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


#: The oldest opset exported as asked: below it the dynamo exporter made opset-18 graphs anyway
#: (after three converter tracebacks) while the id and the options said otherwise.
MIN_OPSET = 18


def _max_opset() -> int:
    try:
        import onnx

        return int(onnx.defs.onnx_opset_version())
    except ImportError:
        return MIN_OPSET


@BACKENDS.register("onnxruntime")
class OnnxRuntime(ExportedBackend):
    name = "onnxruntime"

    def versions(self):
        import onnx
        import onnxruntime
        import onnxscript

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}

    def problems(self, cfg):
        out = super().problems(cfg)
        top = _max_opset()
        if not isinstance(cfg.backend.opset, int) or not MIN_OPSET <= cfg.backend.opset <= top:
            out.append(f"backend.opset must be {MIN_OPSET}..{top} (the dynamo exporter makes opset {MIN_OPSET}+ graphs; "
                       f"onnx {top} is the newest this onnx knows), got {cfg.backend.opset!r}")
        if cfg.backend.graph_opt not in LEVELS:
            out.append(f"backend.graph_opt must be one of {', '.join(LEVELS)}, got {cfg.backend.graph_opt!r}")
        try:
            import onnxruntime

            if cfg.backend.provider not in onnxruntime.get_available_providers():
                out.append(f"onnxruntime has no execution provider {cfg.backend.provider!r} here "
                           f"(available: {', '.join(onnxruntime.get_available_providers())})")
        except ImportError:
            pass
        return out

    def options(self, cfg, threads, dtype):
        return options_string({"ep": cfg.backend.provider, "graph_opt": cfg.backend.graph_opt,
                               "intra_op_threads": threads, "opset": int(cfg.backend.opset)})

    def key_parts(self, point):
        return {"opset": parse_options(point.backend_options).get("opset")}

    def exporters(self, graph):
        return ONNX_EXPORTERS

    def export(self, graph, example, folder: Path, point, exporter: str) -> Exported:
        opset = int(parse_options(point.backend_options)["opset"])
        exporter = export_onnx(graph.module, example, folder / "model.onnx", opset, dynamo=exporter == "dynamo")
        return Exported(sorted(p.name for p in folder.iterdir() if p.is_file()), exporter)

    def load(self, folder: Path, point):
        import onnxruntime as ort

        opts = parse_options(point.backend_options)
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[opts["graph_opt"]])
        so.intra_op_num_threads = int(opts["intra_op_threads"])
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=[opts["ep"]])
        inputs = sess.get_inputs()
        names = [i.name for i in inputs]

        def call(arrays):
            return sess.run(None, dict(zip(names, arrays)))

        return call, [tuple(i.shape) for i in inputs]
