"""`fastvlm-bench claims` and `sweep=paper_claims`: the paper's ratios, the points that measure
them, and the table, on a real tiny-model sweep through Hydra and the real CLI."""
from __future__ import annotations

import json
import statistics

import pytest

from conftest import ROOT, run_cli

TINY_CLAIMS = """
claims:
  - id: tiny_ttft
    title: "tiny ConvNeXt vs tiny ViT: TTFT"
    metric: ttft
    fast: {encoder: tiny_convnext, resolution: 64, llm: qwen2_tiny}
    baseline: {encoder: tiny_vit, resolution: 96, llm: qwen2_tiny, timing: {min_repeats: 3}}
    paper: {fast: {row: R3}, baseline: {row: R2}, says: "85x faster TTFT"}
  - id: tiny_vision
    title: "tiny ConvNeXt vs tiny ViT: vision latency"
    metric: vision_latency
    fast: {encoder: tiny_convnext, resolution: 64, llm: qwen2_tiny}
    baseline: {encoder: tiny_vit, resolution: 96, llm: qwen2_tiny, timing: {min_repeats: 3}}
    paper: {fast: {table: T10, encoder: fastvithd, resolution: 1024}, baseline: {table: T10, encoder: convllava_l, resolution: 1024}}
  - id: tiny_params
    title: "tiny encoder parameters"
    metric: vision_params
    fast: {encoder: tiny_convnext, resolution: 64, llm: qwen2_tiny}
    baseline: {encoder: tiny_vit, resolution: 96, llm: qwen2_tiny, timing: {min_repeats: 3}}
    paper: {fast: {row: R3}, baseline: {row: R2}}
  - id: tiny_encoder_only
    title: "tiny encoders alone (llm=none): vision latency"
    metric: vision_latency
    fast: {encoder: tiny_convnext, resolution: 64, llm: none}
    baseline: {encoder: tiny_vit, resolution: 96, llm: none}
  - id: not_here
    title: "a model this install lacks"
    metric: vision_latency
    fast: {encoder: tiny_convnext, resolution: 64, llm: qwen2_tiny}
    baseline: {encoder: no_such_encoder, resolution: 256, llm: qwen2_tiny}
  - id: bad_size
    title: "a size the encoder cannot take (recorded as skipped by the sweep)"
    metric: ttft
    fast: {encoder: tiny_convnext, resolution: 64, llm: qwen2_tiny}
    baseline: {encoder: tiny_vit, resolution: 100, llm: qwen2_tiny}
"""


def test_paper_claims_data_and_paper_ratios():
    """The paper's ratios come out of bench/data/reference as the paper's tables give them."""
    from bench.analysis.claims import load_claims, paper_value

    claims = {c.id: c for c in load_claims()}
    expected = {  # baseline / FastVLM, from Tables 4, 6 and 10
        "onevision_ttft": 14124 / 166, "onevision_encoder_size": 430 / 125, "onevision_vision": 2721.4 / 116.3,
        "llava15_ttft": 1297 / 387, "convllava_768": 164.3 / 54.8, "convllava_1024": 696.1 / 116.3,
        "convnext_xxl_256tok": 397.1 / 235.6, "convnext_xxl_64tok": 89.9 / 33.5, "vitamin_ttft": 1308 / 387,
        "llava_next_ttft": 20347 / 641, "llava_next_vision": 637.0 / 116.3}
    for cid, ratio in expected.items():
        c = claims[cid]
        (f, _), (b, _) = paper_value(c.paper_fast, c.metric), paper_value(c.paper_baseline, c.metric)
        assert b / f == pytest.approx(ratio), cid
    assert round(14124 / 166) == 85  # the headline
    assert paper_value(claims["convllava_1536"].paper_fast, "vision_latency")[0] is None  # not in the paper
    # every comparison of the issue has a claim
    assert {"onevision_ttft", "onevision_encoder_size", "llava15_ttft", "convllava_768", "convllava_1024",
            "convllava_1536", "convnext_xxl_256tok", "vitamin_ttft", "llava_next_ttft"} <= set(claims)
    # vision-only pairs without a TTFT point are encoder-only (no LLM built)
    for c in claims.values():
        if c.metric == "vision_latency" and c.id.startswith(("convllava", "convnext")):
            assert c.fast.llm == c.baseline.llm == "none", c.id


def test_claim_points_compose_to_the_plain_configs(tmp_path):
    """`+claim_point=NAME` composes exactly what `encoder=... resolution=... llm=...` does (same
    point id: the sweep resumes points measured by hand), plus its own timing overrides; the
    points this install lacks are left out of the group with the reason."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from bench.analysis.claims import register_claim_points, sweep_points
    from bench.config import register_configs, sweeps_dir
    from bench.measure.scenario import resolve_point as point_config  # the record's config from a BenchConfig

    register_configs()
    register_claim_points()  # the app's step after register_configs (bench.app.main)
    points, left_out = sweep_points()
    assert "fastvithd_1024_qwen2_0.5b" in points and "vit_l14_336_qwen2_0.5b" in points
    for name, why in left_out.items():
        assert "not registered" in why or "not supported" in why or "no tiling axis" in why, (name, why)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(sweeps_dir()), version_base="1.3"):
        for name, side in points.items():
            a = compose("config", overrides=["sweep=paper_claims", f"+claim_point={name}"])
            b = compose("config", overrides=["sweep=paper_claims", f"encoder={side.encoder}",
                                             f"resolution={side.resolution}", f"llm={side.llm}"]
                        + ([f"tiling={side.tiling}"] if side.tiling != "none" else []))
            ta, tb = OmegaConf.to_object(a), OmegaConf.to_object(b)
            assert point_config(ta).point_id() == point_config(tb).point_id(), name
            assert ta.encoder.name == side.encoder and ta.resolution == side.resolution and ta.llm.name == side.llm
            assert ta.timing.min_repeats == dict(side.timing).get("min_repeats", 6)
            assert ta.name == "paper_claims"
    GlobalHydra.instance().clear()


def test_claims_on_a_tiny_paper_claims_sweep(tmp_path):
    """A real multirun of sweep=paper_claims (tiny claims file), then `fastvlm-bench claims`:
    the measured ratio is the ratio of the records' medians, inside its interval; the paper's
    ratio is labelled; a missing model and an unmeasured point are skipped with the reason."""
    claims_file = tmp_path / "tiny_claims.yaml"
    claims_file.write_text(TINY_CLAIMS)
    res = tmp_path / "results"
    env = {"FASTVLM_BENCH_CLAIMS": str(claims_file)}
    p = run_cli(["sweep=paper_claims", "name=tc", f"results_dir={res}", "report=false",
                 "timing.warmup_max_seconds=0", "timing.max_seconds=0.3", "timing.min_repeats=2", "measure_peak=false",
                 "count_flops=false", "preprocess=false"], env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "with 5 points" in p.stderr, p.stderr[-2000:]  # the glob sweep is counted
    records, alone = {}, {}
    for f in (res / "tc" / "records").glob("*.json"):
        r = json.loads(f.read_text())
        (alone if r["config"]["llm"] == "none" else records)[(r["config"]["encoder"], r["config"]["resolution"])] = r
    assert set(records) == {("tiny_convnext", 64), ("tiny_vit", 96), ("tiny_vit", 100)}
    assert set(alone) == {("tiny_convnext", 64), ("tiny_vit", 96)}
    assert records[("tiny_vit", 100)]["status"] == "skipped"
    assert records[("tiny_vit", 96)]["settings"]["timing_min_repeats"] == 2  # the command line wins

    out = tmp_path / "claims_out"
    p = run_cli(["claims", str(res / "tc"), "--claims", str(claims_file), "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    table = {c["id"]: c for c in json.loads((out / "claims.json").read_text())["claims"]}
    fast, base = records[("tiny_convnext", 64)], records[("tiny_vit", 96)]
    for cid, stage in (("tiny_ttft", "ttft"), ("tiny_vision", "vision_latency")):
        c = table[cid]
        want = statistics.median(base["stages"][stage]["samples"]) / statistics.median(fast["stages"][stage]["samples"])
        assert c["status"] == "measured" and c["measured_ratio"] == pytest.approx(want)
        assert c["ci_low"] <= c["measured_ratio"] <= c["ci_high"]
        assert c["device"] == "cpu" and c["dtype"] == "fp32"
        assert c["direction_holds"] == ("yes" if c["ci_low"] > 1 else "no" if c["ci_high"] < 1 else "unclear")
    c = table["tiny_encoder_only"]  # encoder-only rows: vision latency, no TTFT
    want = statistics.median(alone[("tiny_vit", 96)]["stages"]["vision_latency"]["samples"]) / \
        statistics.median(alone[("tiny_convnext", 64)]["stages"]["vision_latency"]["samples"])
    assert c["status"] == "measured" and c["measured_ratio"] == pytest.approx(want)
    assert c["paper_ratio"] is None and c["fast"] == "tiny_convnext@64 (encoder only)"
    assert table["tiny_ttft"]["paper_ratio"] == pytest.approx(14124 / 166)
    assert "M1 Max" in table["tiny_ttft"]["paper_source"] and "Table 6 R2" in table["tiny_ttft"]["paper_source"]
    assert table["tiny_params"]["measured_ratio"] == pytest.approx(base["params"]["vision"] / fast["params"]["vision"])
    assert table["not_here"]["status"] == "skipped" and "no_such_encoder" in table["not_here"]["skipped"]
    assert table["not_here"]["paper_ratio"] is None
    skipped = table["bad_size"]["skipped"]
    assert table["bad_size"]["status"] == "skipped" and skipped.startswith("tiny_vit@100+qwen2_tiny: skipped (")
    assert records[("tiny_vit", 100)]["message"].splitlines()[0] in skipped
    md = (out / "claims.md").read_text()
    assert "paper ratio (M1 Max, Core ML + MLX)" in md and "| tiny ConvNeXt vs tiny ViT: TTFT |" in md
    assert (out / "claims.csv").is_file() and md.strip() in p.stdout

    # bad input: one line, exit 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - {id: x, title: t, metric: speed, fast: {}, baseline: {}}\n")
    p = run_cli(["claims", str(res / "tc"), "--claims", str(bad)])
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "metric must be one of" in p.stderr, p.stderr
    p = run_cli(["claims", str(tmp_path / "nope")])
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_paper_claims_sweep_file_is_documented():
    text = (ROOT / "docs" / "reports.md").read_text()  # the manual's page on reports and claims
    assert "fastvlm-bench claims" in text and "sweep=paper_claims" in text
    assert (ROOT / "sweeps" / "sweep" / "paper_claims.yaml").is_file()
