"""Encoder-only points (``llm=none``): the encoder stage alone, through the real CLI.

One module-scoped results folder from one multirun: two tiny encoders (``timing=quick``), each
encoder-only and with a tiny LLM, so that compare, gate and report each see rows with and
without an LLM, as a user's folder would.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli

ENCODER_ONLY = ["sweep=none", "name=eo", "timing=quick", "measure_peak=false", "threads=1"]


@pytest.fixture(scope="module")
def eo(tmp_path_factory):
    """results/eo from one multirun: tiny_vit and tiny_convnext at 64 px, each encoder-only and
    with qwen2_tiny; the multirun renders its report (reports/eo) as a user's run does."""
    root = tmp_path_factory.mktemp("eo")
    res = root / "results"
    p = run_cli(["-m", *ENCODER_ONLY, "encoder=tiny_vit,tiny_convnext", "resolution=64", "llm=none,qwen2_tiny",
                 f"results_dir={res}", f"reports_dir={root / 'reports'}"], cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    return root, res / "eo"


def _records(folder: Path):
    return [json.loads(f.read_text()) for f in sorted((folder / "records").glob("*.json"))]


def test_encoder_only_records_have_no_llm_and_null_llm_columns(eo):
    _, folder = eo
    recs = _records(folder)
    only = [r for r in recs if r["config"]["llm"] == "none"]
    assert len(only) == 2 and len(recs) == 4
    for r in only:
        assert r["status"] == "ok", r["message"]
        assert list(r["stages"]) == ["preprocess", "vision_latency"]  # nothing else was timed
        assert r["pipeline"] == {"vision_latency": "vlm"}
        assert r["target_stage"] == "vision_latency"  # ttft asked for, none to watch
        assert r["params"]["vision"] > 0 and r["params"]["projector"] is None and r["params"]["llm"] is None
        assert r["llm_hidden"] is None
        assert set(r["flops"]) == {"vision_latency"} and r["flops"]["vision_latency"] > 0
        assert r["visual_tokens_measured"] == r["visual_tokens"] > 0
        assert r["peak_rss_mb"] > 0
        # knobs of parts that were not built are null in the point (and its id)
        assert r["config"]["projector"] is None and r["config"]["prompt_tokens"] is None
        assert r["config"]["attn_implementation"] is None
    for with_llm in (r for r in recs if r["config"]["llm"] == "qwen2_tiny"):
        assert with_llm["target_stage"] == "ttft" and "prefill" in with_llm["stages"]
    table = pd.read_csv(folder / "results.csv")
    rows = table[table["llm"] == "none"]
    for col in ("ttft_ms", "prefill_ms", "projector_ms", "ttft_gflops", "prefill_gflops", "llm_params",
                "throughput_images_per_s"):
        assert rows[col].isna().all(), col  # null, never zero
    assert rows["vision_latency_ms"].gt(0).all() and rows["vision_latency_gflops"].gt(0).all()


def test_encoder_only_point_id_ignores_llm_side_knobs():
    """prompt_tokens, projector and attention change nothing an encoder-only point runs: one point
    (resumed, not measured twice); a checkpoint needs an LLM and is a config error up front."""
    from bench.config import BenchConfig, ConfigError, EncoderConf, LLMConf
    from bench.measure.scenario import resolve_point

    def point(**kw):
        return resolve_point(BenchConfig(encoder=EncoderConf("tiny_vit"), llm=LLMConf("none"), resolution=64,
                                         device="cpu", threads=1, **kw))

    ids = {point().point_id(), point(prompt_tokens=64).point_id(), point(projector="linear").point_id()}
    assert len(ids) == 1
    with_llm = resolve_point(BenchConfig(encoder=EncoderConf("tiny_vit"), llm=LLMConf("qwen2_tiny"), resolution=64,
                                         device="cpu", threads=1))
    assert with_llm.point_id() not in ids and with_llm.projector == "mlp2x_gelu"
    with pytest.raises(ConfigError, match="llm=none"):
        point(checkpoint="/nonexistent")


def test_compare_handles_rows_without_llm(eo):
    root, folder = eo
    p = run_cli(["compare", str(folder), str(folder), "--baseline-encoder", "tiny_convnext",
                 "--json", str(root / "cmp.json")], cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads((root / "cmp.json").read_text())
    cmp = out["comparison"]
    assert cmp["matched"] == 4 and not cmp["regressions"]
    text = p.stdout
    assert "tiny_convnext@64 none" in text and "tiny_vit@64 qwen2_tiny" in text
    eo_lines = [ln for ln in text.splitlines() if " none " in ln and ln.startswith("tiny_")]
    assert eo_lines and not any("ttft" in ln or "prefill" in ln for ln in eo_lines), eo_lines
    assert any("vision_latency" in ln for ln in eo_lines)
    # the speed-up over the baseline encoder: vision only on encoder-only rows, TTFT "-"
    sp = [ln for ln in text.splitlines() if ln.startswith("none ") and "tiny_vit" in ln]
    assert sp and all(ln.rstrip().endswith("-  -") for ln in sp), sp


def test_gate_handles_rows_without_llm(eo):
    root, folder = eo
    cfg = root / "gate.yaml"
    cfg.write_text("sweep: eo\ntarget: tiny_vit\nselect: {llm: none}\ncheck_visual_tokens: true\n"
                   "min_speedup:\n  tiny_convnext: {vision_latency: 0.001, ttft: 0.001}\n"
                   "matched_resolution:\n  - resolution: 64\n    baselines: [tiny_convnext]\n")
    p = run_cli(["gate", str(folder), "--config", str(cfg), "--json", str(root / "gate.json")], cwd=root)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-2000:]  # the ttft check cannot pass
    checks = json.loads((root / "gate.json").read_text())["checks"]
    speed = {c["subject"]: c for c in checks if c["section"] == "speedup"}
    assert speed["tiny_vit vs tiny_convnext @64 vision_latency"]["passed"]
    bad = speed["tiny_vit vs tiny_convnext @64 ttft"]
    assert not bad["passed"] and "encoder-only" in bad["detail"]
    tokens = [c for c in checks if c["section"] == "visual_tokens"]
    assert len(tokens) == 4 and all(c["passed"] for c in tokens)


def test_report_handles_rows_without_llm(eo):
    """The sweep's own report (rendered when the multirun ended) of rows with and without an LLM."""
    root, folder = eo
    md = (root / "reports" / "eo" / "report.md").read_text()
    assert "## Vision-encoder latency vs resolution" in md and "tiny_convnext" in md
    breakdown = md.split("## TTFT breakdown", 1)[1].split("\n## ", 1)[0]
    assert "tiny_vit@64+qwen2_tiny" in breakdown and "+none" not in breakdown  # TTFT rows have an LLM
    vision = md.split("## Vision-encoder latency vs resolution", 1)[1].split("\n## ", 1)[0]
    assert vision.count("| none |") == 2  # encoder-only rows are in the vision table


def test_report_of_encoder_only_rows_plots_vision_latency(eo, tmp_path):
    """Only encoder-only rows: no TTFT section figures, accuracy against vision latency. In
    process (the CLI path of ``report`` is the one above): it saves a 10 s interpreter start."""
    from bench.report.render import render_report

    _, folder = eo
    table = pd.read_csv(folder / "results.csv")
    only = tmp_path / "only.csv"
    table[table["llm"] == "none"].to_csv(only, index=False)
    out = tmp_path / "rep"
    render_report(only, out, include_paper=False)
    md = (out / "report.md").read_text()
    assert "Every measured row is encoder-only (llm=none)" in md
    # no accuracy file and no paper layer here: the (empty) accuracy section is left out, but
    # the report says which axis accuracy would be drawn against, and never against TTFT
    assert "Accuracy is drawn against vision-encoder latency" in md
    assert "## Accuracy vs TTFT" not in md
    assert not (out / "figures" / "ttft_breakdown.png").exists()
    assert not (out / "figures" / "ttft_heatmap.png").exists()
    assert (out / "figures" / "vision_latency_vs_resolution.png").exists()


def test_the_stopping_rule_watches_the_encoder_when_there_is_no_ttft():
    from bench.models import build_vlm
    from bench.models.pipeline import build_pipeline, target_stage
    from bench.results.records import PointConfig

    vlm, info = build_vlm("tiny_vit", "none", 64, "cpu", "fp32")
    assert vlm.llm is None and vlm.projector is None and info.param_bytes == 4 * vlm.parameter_counts()["vision"]
    pipe = build_pipeline(vlm, PointConfig("tiny_vit", 64, "none", "fp32", "cpu"))
    assert pipe.names() == ["vision_latency"]
    assert target_stage(pipe, "ttft") == "vision_latency" and target_stage(pipe, "preprocess") == "preprocess"
    with pytest.raises(ValueError, match="no such stage.*vision_latency"):
        target_stage(pipe, "prefill")  # asked for by name: an error, not a silent substitute
