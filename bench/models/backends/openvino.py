"""``backend=openvino``: each backend stage converted with ``openvino.convert_model`` from the
PyTorch module itself (OpenVINO's PyTorch frontend, traced on the point's example inputs),
saved as IR (``model.xml`` + ``model.bin``, weights uncompressed: ``compress_to_fp16=False``)
and compiled for the CPU plugin.

Knobs, recorded in ``backend_options`` and the id: ``PERFORMANCE_HINT`` (``hint``, LATENCY),
``INFERENCE_PRECISION_HINT`` (``precision``: f32 for fp32 points unless set; the CPU plugin
would otherwise run bf16 on CPUs with AMX/AVX512-BF16), ``NUM_STREAMS`` (``streams`` = 1: one
request at a time, as the timer runs) and ``INFERENCE_NUM_THREADS`` = the point's ``threads``.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from .base import BACKENDS, ONNX_EXPORTERS, Exported, ExportedBackend, export_onnx, options_string, parse_options

ONNX_OPSET = 18  # where the graph goes through ONNX (see export)
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


@BACKENDS.register("openvino")
class OpenVINO(ExportedBackend):
    name = "openvino"

    def versions(self):
        import openvino

        return {"openvino": openvino.__version__.split("-")[0]}

    def problems(self, cfg):
        out = super().problems(cfg)
        if cfg.backend.hint not in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
            out.append(f"backend.hint must be LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT, got {cfg.backend.hint!r}")
        if cfg.backend.precision not in (None, "f32", "bf16", "f16"):
            out.append(f"backend.precision must be f32, bf16 or f16, got {cfg.backend.precision!r}")
        if cfg.backend.streams < 1:
            out.append(f"backend.streams must be >= 1, got {cfg.backend.streams}")
        return out

    def options(self, cfg, threads, dtype):
        return options_string({"hint": cfg.backend.hint, "precision": cfg.backend.precision or PRECISIONS[dtype],
                               "streams": int(cfg.backend.streams), "threads": threads})

    def exporters(self, graph):
        # torch.export's graph first (the one the ONNX dynamo exporter also starts from), then
        # OpenVINO's ONNX frontend on the ONNX export of the same module, which folds what the
        # PyTorch frontend cannot. OpenVINO 2026.4's PyTorch frontend fails on transformers'
        # DynamicCache (it concatenates onto an empty tensor: "Axis -2 out of the tensor rank
        # range"), so prefill is not tried that way for every point.
        onnx = tuple(f"onnx-{ex}" for ex in ONNX_EXPORTERS)
        return onnx if graph.name == "prefill" else ("torch.export",) + onnx

    def export(self, graph, example, folder: Path, point, exporter: str) -> Exported:
        import openvino as ov
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "torch.export":
                model = ov.convert_model(torch.export.export(graph.module, example, strict=False))
                how = "openvino.convert_model(torch.export)"
            else:
                onnx_dir = folder / "onnx"
                onnx_dir.mkdir()
                via = export_onnx(graph.module, example, onnx_dir / "model.onnx", ONNX_OPSET,
                                  dynamo=exporter == "onnx-dynamo")
                model = ov.convert_model(str(onnx_dir / "model.onnx"))
                how = f"openvino.convert_model(ONNX from {via})"
        # static shapes, as the point runs them (convert_model leaves the traced inputs dynamic)
        model.reshape({model.inputs[i]: ov.PartialShape(list(t.shape)) for i, t in enumerate(example)})
        ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
        shutil.rmtree(folder / "onnx", ignore_errors=True)
        return Exported(["model.xml", "model.bin"], how)

    def load(self, folder: Path, point):
        import openvino as ov

        opts = parse_options(point.backend_options)
        core = ov.Core()
        model = core.read_model(str(folder / "model.xml"))
        config = {"PERFORMANCE_HINT": opts["hint"], "INFERENCE_PRECISION_HINT": opts["precision"],
                  "NUM_STREAMS": opts["streams"], "INFERENCE_NUM_THREADS": opts["threads"]}
        compiled = core.compile_model(model, "CPU", config)
        req = compiled.create_infer_request()
        outputs = list(compiled.outputs)

        def call(arrays):
            res = req.infer(arrays, share_inputs=True)
            return [res[o] for o in outputs]

        return call, [tuple(i.get_partial_shape().to_shape()) for i in compiled.inputs]
