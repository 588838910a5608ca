"""Deployment runtimes (bench.models.backends): tiny models through ONNX Runtime and OpenVINO.

Every point here is real: the tiny encoder, projector and Qwen2-shaped LLM are exported with
the real exporters, loaded by the real runtimes and checked against eager PyTorch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest

from bench.config import BackendConf, BenchConfig, ConfigError, EncoderConf, LLMConf, QUICK_TIMING, validate
from bench.results.records import POINT_KEYS, PointConfig, _LATER_KEYS


def _cfg(tmp_path, backend="eager", resolution=64, encoder="tiny_convnext", llm="qwen2_tiny", **backend_kw):
    return BenchConfig(name="rt", encoder=EncoderConf(encoder), llm=LLMConf(llm), resolution=resolution,
                       device="cpu", threads=1, preprocess=False, timing=dataclasses.replace(QUICK_TIMING),
                       count_flops=False, measure_peak=False, results_dir=str(tmp_path),
                       backend=BackendConf(name=backend, **backend_kw))


def test_default_backend_and_compile_keep_their_ids():
    a = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu")
    old_keys = [k for k in POINT_KEYS if k not in _LATER_KEYS]
    old = hashlib.sha1(json.dumps({k: getattr(a, k) for k in old_keys}, sort_keys=True).encode()).hexdigest()[:12]
    assert a.backend == "eager" and a.point_id() == old
    c = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu", compile=True)  # compile=true, as before
    assert c.backend == "compile"
    knobs = {k: getattr(c, k) for k in old_keys}
    assert c.point_id() == hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:12]
    assert PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu", compile=True, backend="compile").point_id() \
        == c.point_id()
    ort = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu", backend="onnxruntime",
                      backend_stages="vision_latency", backend_options="ep=CPUExecutionProvider,graph_opt=all")
    ort2 = dataclasses.replace(ort, backend_options="ep=CPUExecutionProvider,graph_opt=basic")
    assert len({a.point_id(), ort.point_id(), ort2.point_id()}) == 3


def test_resolve_point_backend_knobs(tmp_path):
    from bench.measure.scenario import resolve_point

    p = resolve_point(_cfg(tmp_path, "onnxruntime"))
    assert p.backend_stages == "vision_latency,projector,prefill"
    assert p.backend_options == "ep=CPUExecutionProvider,graph_opt=all,intra_op_threads=1,opset=18"
    p = resolve_point(_cfg(tmp_path, "openvino", stages=["projector", "vision_latency"]))
    assert p.backend_stages == "vision_latency,projector"
    assert p.backend_options == "hint=LATENCY,precision=f32,streams=1,threads=1"
    assert resolve_point(dataclasses.replace(_cfg(tmp_path), compile=True)).point_id() == \
        resolve_point(_cfg(tmp_path, "compile")).point_id()
    assert resolve_point(_cfg(tmp_path, "onnxruntime", llm="none")).backend_stages == "vision_latency"


@pytest.mark.parametrize("bad, words", [
    (dict(backend="openvino", stages=["decode"]), "backend openvino cannot run stage 'decode'"),
    (dict(backend="onnxruntime", graph_opt="max"), "backend.graph_opt must be one of"),
    (dict(backend="tensorrt"), "unknown backend 'tensorrt'"),
    (dict(backend="onnxruntime", llm="none", stages=["vision_latency", "prefill"]),
     "llm=none has the vision_latency stage alone; backend.stages asks for prefill"),
])
def test_a_stage_or_knob_a_backend_cannot_take_is_one_line(tmp_path, bad, words):
    b, llm = bad.pop("backend"), bad.pop("llm", "qwen2_tiny")
    with pytest.raises(ConfigError) as ei:
        validate(_cfg(tmp_path, b, llm=llm, **bad))
    assert words in str(ei.value) and "\n" not in str(ei.value)


def _entries(tmp_path, backend):
    """Cache entries by stage."""
    out = {}
    for man in (tmp_path / "exports" / backend).glob("*/manifest.json"):
        out.setdefault(json.loads(man.read_text())["stage"], []).append(man.parent)
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_checked_cached_rebuilt_and_broken_export(tmp_path, backend):
    from bench.measure.scenario import measure_point, resolve_plan

    # 1. every runtime stage exported, loaded, checked against eager: a result
    rec = measure_point(resolve_plan(_cfg(tmp_path, backend)))
    assert rec.status == "ok", rec.message
    assert rec.pipeline == {"vision_latency": backend, "projector": backend, "prefill": backend}
    stages = rec.backend_info["stages"]
    assert set(stages) == {"vision_latency", "projector", "prefill"}
    for name, st in stages.items():
        assert st["cached"] is False and st["export_s"] > 0 and st["load_s"] > 0, (name, st)
        assert 0 <= st["max_rel_err"] <= st["tolerance"] == 1e-3, (name, st)
    assert rec.backend_info["versions"][backend]
    row = rec.to_row()
    assert row[f"env_{backend}"] and row["export_s"] > 0 and row["backend"] == backend
    assert rec.stages["vision_latency"].n == 2 and rec.stages["ttft"].median > 0

    # 2. the same point again (a resumed or repeated sweep): every export comes from the cache
    again = measure_point(resolve_plan(_cfg(tmp_path, backend)))
    assert again.status == "ok", again.message
    assert all(st["cached"] and st["export_s"] == 0.0 for st in again.backend_info["stages"].values())
    assert {s: st["cache_key"] for s, st in again.backend_info["stages"].items()} == \
        {s: st["cache_key"] for s, st in stages.items()}

    # 3. a corrupt export (a truncated weights file) is found and rebuilt
    entry = _entries(tmp_path, backend)["vision_latency"][0]
    victim = max((p for p in entry.iterdir() if p.name != "manifest.json"), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    rebuilt = measure_point(resolve_plan(_cfg(tmp_path, backend, stages=["vision_latency"])))
    assert rebuilt.status == "ok", rebuilt.message
    vis = rebuilt.backend_info["stages"]["vision_latency"]
    assert vis["cached"] is False and victim.name in vis["rebuilt"] and "bytes" in vis["rebuilt"]
    assert list(rebuilt.backend_info["stages"]) == ["vision_latency"]
    assert rebuilt.pipeline == {"vision_latency": backend, "projector": "vlm", "prefill": "vlm"}

    # 4. a broken export (the graph of another input shape -- the projector's -- under the
    #    vision encoder's key, manifest and all): an error naming the backend and the stage
    entries = _entries(tmp_path, backend)
    vis_dir = next(e for e in entries["vision_latency"] if e.name == vis["cache_key"])
    proj_dir = entries["projector"][0]
    shutil.rmtree(vis_dir)
    shutil.copytree(proj_dir, vis_dir)
    man = json.loads((vis_dir / "manifest.json").read_text())
    (vis_dir / "manifest.json").write_text(json.dumps(dict(man, key=vis["cache_key"], stage="vision_latency")))
    broken = measure_point(resolve_plan(_cfg(tmp_path, backend, stages=["vision_latency"])))
    assert broken.status == "error"
    assert broken.message.startswith(f"BackendError: {backend} vision_latency: the exported graph takes inputs of shape "
                                     "(1, 4, 128) but the stage gets (1, 3, 64, 64)"), broken.message


def test_compare_warns_when_runtime_versions_differ(tmp_path):
    """Two sides measured through onnxruntime of different versions: ``compare`` says so."""
    import numpy as np

    from bench.regress.compare import compare_tables
    from bench.results.store import ResultsStore, load_table
    from test_compare import make_record

    for side, version in (("base", "1.31.1"), ("cand", "1.32.0")):
        store = ResultsStore(tmp_path / side)
        rec = make_record("fastvithd", 336, np.random.default_rng(0), vision=10.0, ttft=40.0)
        rec.config = dataclasses.replace(rec.config, backend="onnxruntime", backend_stages="vision_latency",
                                         backend_options="ep=CPUExecutionProvider,graph_opt=all")
        rec.backend_info = {"name": "onnxruntime", "versions": {"onnxruntime": version, "onnx": "1.23.2"},
                            "stages": {"vision_latency": {"export_s": 3.0, "load_s": 0.1, "cached": False,
                                                          "max_abs_err": 1e-6, "max_rel_err": 1e-7}}}
        store.put(rec)
        store.consolidate()
    res = compare_tables(load_table(tmp_path / "base"), load_table(tmp_path / "cand"))
    assert res["matched"] == 1
    assert "env_onnxruntime differs: base 1.31.1 vs candidate 1.32.0" in res["incomparable"]
    assert not any("env_onnx " in w for w in res["incomparable"])
