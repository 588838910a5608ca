"""Tests of the CI baseline gate (``fastvlm-bench gate``) on hand-built result sets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.cli import main as cli_main
from bench.regress.checks import GateContext, RowFinder, check_visual_tokens
from bench.regress.gate import run_gate
from bench.regress.gate_config import DEFAULT_CONFIG, GateConfigError, load_gate_config, parse_gate_config
from bench.results.records import STATUS_ERROR, STATUS_SKIPPED, PointConfig, Record, StageStats
from bench.results.store import ResultsStore, load_table

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / DEFAULT_CONFIG


def main(argv):
    return cli_main(["gate", *argv])
WORKFLOW = REPO / ".github" / "workflows" / "fastvlm-bench.yml"


def _fastvithd(n):  # 6 stride-2 convs, each ceil(n/2)
    for _ in range(6):
        n = -(-n // 2)
    return n * n


def _vit_l14(n):
    assert n % 14 == 0
    return (n // 14) ** 2


def _convnext(n, extra=0):
    n //= 4
    for _ in range(3 + extra):
        n //= 2
    return n * n


#: the analytical counts written out independently of bench.models.encoders
ANALYTICAL = {"fastvithd": _fastvithd, "vit_l14": _vit_l14, "convnext_l": _convnext,
              "convllava_l": lambda n: _convnext(n, 1)}


def analytical(encoder, resolution):
    return ANALYTICAL[encoder](resolution)


# (vision ms, ttft ms) per point: FastViTHD clearly fastest at matched resolution
CI_POINTS = {("fastvithd", 336): (10, 40), ("fastvithd", 512): (20, 55), ("fastvithd", 1024): (60, 110),
             ("vit_l14", 336): (60, 150), ("vit_l14", 224): (25, 80),
             ("convnext_l", 336): (20, 50), ("convnext_l", 512): (40, 70),
             ("convllava_l", 336): (22, 52), ("convllava_l", 512): (42, 72), ("convllava_l", 1024): (90, 130)}


def stage(samples) -> StageStats:
    a = np.asarray(samples, dtype=float)
    return StageStats(median=float(np.median(a)), mean=float(a.mean()), p10=float(np.percentile(a, 10)),
                      p90=float(np.percentile(a, 90)), iqr=0.0, std=float(a.std()), n=int(a.size),
                      samples=[float(x) for x in a])


def record(encoder, res, rng, vision=1.0, ttft=1.0, tokens=None, status="ok", message="", llm="qwen2_0.5b",
           spread=0.02):
    cfg = PointConfig(encoder=encoder, resolution=res, llm=llm, dtype="fp32", device="cpu")
    if status != "ok":
        return Record(sweep="ci_baseline", config=cfg, status=status, message=message)
    noise = lambda: 1 + spread * rng.standard_normal(15)  # noqa: E731
    return Record(sweep="ci_baseline", config=cfg, visual_tokens=analytical(encoder, res),
                  visual_tokens_measured=analytical(encoder, res) if tokens is None else tokens,
                  stages={"vision_latency": stage(vision * noise()), "prefill": stage(25 * noise()),
                          "ttft": stage(ttft * noise())}, peak_rss_mb=2000.0)


def ci_set(root: Path, *, drop=(), override=None, tokens=None, extra=()) -> Path:
    """The ci_baseline sweep's points; ``override`` maps a point to (vision, ttft) ms."""
    rng = np.random.default_rng(0)
    store = ResultsStore(root)
    for p, (v, t) in CI_POINTS.items():
        if p in drop:
            continue
        v, t = (override or {}).get(p, (v, t))
        store.put(record(*p, rng, v, t, tokens=(tokens or {}).get(p)))
    store.put(record("vit_l14", 512, rng, status=STATUS_SKIPPED,
                     message="vit_l14 cannot take 512 px: the input must be a multiple of its patch size 14 px"))
    for r in extra:
        store.put(r)
    store.consolidate()
    return root


def failed(result):
    return [c for c in result["checks"] if not c["passed"]]


# ---------------------------------------------------------------------------------------- config
def test_shipped_config_is_valid_and_fits_the_ci_sweep():
    cfg = load_gate_config(str(CONFIG))
    assert cfg.target == "fastvithd"
    by_res = {e.resolution: e for e in cfg.matched_resolution}
    assert set(by_res) == {336, 512}
    assert set(by_res[336].baselines) == {"vit_l14", "convnext_l", "convllava_l"}
    assert "vit_l14" not in by_res[512].baselines  # 512 is not a multiple of 14
    for res, e in by_res.items():
        for enc, factor in e.token_factor.items():
            assert factor == analytical(enc, res) / analytical("fastvithd", res)
        assert cfg.min_speedup["vit_l14" if res == 336 else "convnext_l"]["vision_latency"] > 1.0
    tm = cfg.token_matched
    assert tm.visual_tokens == 256
    assert all(analytical(p.encoder, p.resolution) == 256 for p in tm.points)


def test_shipped_config_agrees_with_encoder_registry():
    from bench.models.encoders import get_encoder_spec

    for (enc, res) in CI_POINTS:
        assert get_encoder_spec(enc).num_tokens(res) == analytical(enc, res)


@pytest.mark.parametrize("bad, needle", [
    ({"matched_resolution": []}, "target"),
    ({"target": "fastvithd", "matched_resolution": [{"resolution": "336", "baselines": ["vit_l14"]}]}, "resolution"),
    ({"target": "fastvithd", "matched_resolution": [{"resolution": 336, "baselines": ["vit_l14"]}]}, "min_speedup"),
    ({"target": "fastvithd", "min_speedup": {"vit_l14": {"latency": 2}}}, "unknown metric"),
    ({"target": "fastvithd", "min_speedup": {"vit_l14": {"ttft": -1}}}, "positive"),
    ({"target": "fastvithd", "token_matched": {"visual_tokens": 256, "points": []}}, "points"),
    ([1, 2], "mapping"),
    ({"target": "fastvithd", "matched_resolutions": []}, "unknown key 'matched_resolutions'; valid: target"),
    ({"target": "fastvithd", "matched_resolution": [{"resolution": 336, "baseline": []}]}, "unknown key 'baseline'"),
])
def test_parse_config_rejects_malformed(bad, needle):
    with pytest.raises(GateConfigError, match=needle):
        parse_gate_config(bad)


# ---------------------------------------------------------------------------------------- checks
def test_visual_token_check_uses_the_measured_count():
    import pandas as pd

    rows = pd.DataFrame([
        {"encoder": "fastvithd", "resolution": 336, "visual_tokens": 36, "visual_tokens_measured": 36, "status": "ok"},
        {"encoder": "vit_l14", "resolution": 336, "visual_tokens": 576, "visual_tokens_measured": 577, "status": "ok"},
        {"encoder": "mystery", "resolution": 336, "visual_tokens": 1, "visual_tokens_measured": 1, "status": "ok"},
        {"encoder": "convnext_l", "resolution": 512, "visual_tokens": 256, "visual_tokens_measured": None,
         "status": "ok"}])
    cfg = parse_gate_config({"target": "fastvithd"})
    checks = check_visual_tokens(GateContext(rows, cfg, RowFinder(rows, {}), analytical))
    assert [c.passed for c in checks] == [True, False, False, False]
    assert "577 tokens" in checks[1].detail and "gives 576" in checks[1].detail  # not the analytical column
    assert "KeyError" in checks[2].detail
    assert "no measured token count" in checks[3].detail


def test_gate_pass(tmp_path, capsys):
    res = ci_set(tmp_path / "ci")
    md, js = tmp_path / "gate.md", tmp_path / "gate.json"
    rc = main([str(res), "--config", str(CONFIG), "--markdown", str(md), "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GATE PASS" in out and "FAIL" not in out
    data = json.loads(js.read_text())
    assert data["passed"] and data["n_failed"] == 0
    sections = {c["section"] for c in data["checks"]}
    assert sections == {"visual_tokens", "token_factor", "speedup", "token_matched"}
    # every ok row's tokens checked (10 ok rows, the skipped vit_l14@512 is not)
    assert sum(c["section"] == "visual_tokens" for c in data["checks"]) == 10
    speed = {c["subject"]: c["value"] for c in data["checks"] if c["section"] == "speedup"}
    assert 5.6 < speed["fastvithd vs vit_l14 @336 vision_latency"] <= 6.0  # the interval's lower bound
    assert "fastvithd vs vit_l14 @512 vision_latency" not in speed
    assert {(e["encoder"], e["resolution"]) for e in data["token_matched"]} == {("vit_l14", 224),
                                                                                  ("convllava_l", 1024)}
    text = md.read_text()
    assert text.startswith("<!-- fastvlm-bench-gate -->") and "CI gate: PASS" in text
    assert "Token-matched configurations (256 visual tokens)" in text


def test_gate_fails_when_fastvithd_is_slower(tmp_path, capsys):
    res = ci_set(tmp_path / "ci", override={("fastvithd", 512): (31, 71)})
    rc = main([str(res), "--config", str(CONFIG)])
    out = capsys.readouterr().out
    assert rc == 1 and "GATE FAIL" in out
    result = run_gate(load_table(res), load_gate_config(str(CONFIG)), analytical)
    subjects = {c["subject"] for c in failed(result)}
    assert subjects == {"fastvithd vs convnext_l @512 vision_latency", "fastvithd vs convnext_l @512 ttft",
                        "fastvithd vs convllava_l @512 vision_latency", "fastvithd vs convllava_l @512 ttft"}


def test_gate_ratio_threshold_is_respected(tmp_path):
    # 1.3x faster than vit_l14 in vision latency: above 1.0 but below the configured 2.0
    res = ci_set(tmp_path / "ci", override={("vit_l14", 336): (13, 150)})
    result = run_gate(load_table(res), load_gate_config(str(CONFIG)), analytical)
    assert [c["subject"] for c in failed(result)] == ["fastvithd vs vit_l14 @336 vision_latency"]
    assert 1.2 < failed(result)[0]["value"] <= 1.3 and failed(result)[0]["required"] == "CI low >= 2x"


def test_speedup_is_decided_on_the_interval_not_the_point(tmp_path):
    """ViT-L/14 2.1x slower as a point ratio (>= the 2.0 minimum), but so noisy (25 % spread) that
    the interval's lower bound is below 2.0: the gate must fail that check."""
    rng = np.random.default_rng(4)
    res = ci_set(tmp_path / "ci", drop=[("vit_l14", 336), ("fastvithd", 336)],
                 extra=[record("vit_l14", 336, rng, 21.0, 150, spread=0.25),
                        record("fastvithd", 336, rng, 10.0, 40, spread=0.25)])
    result = run_gate(load_table(res), load_gate_config(str(CONFIG)), analytical)
    check = next(c for c in result["checks"] if c["subject"] == "fastvithd vs vit_l14 @336 vision_latency")
    point = float(check["detail"].split(" = ")[1].split("x")[0])
    assert point >= 2.0 and check["value"] < 2.0 and not check["passed"], check


def test_gate_fails_on_wrong_token_count(tmp_path, capsys):
    res = ci_set(tmp_path / "ci", tokens={("fastvithd", 336): 49})
    js = tmp_path / "g.json"
    rc = main([str(res), "--config", str(CONFIG), "--json", str(js)])
    assert rc == 1
    bad = failed(json.loads(js.read_text()))
    assert {c["section"] for c in bad} == {"visual_tokens", "token_factor"}
    tok = [c for c in bad if c["section"] == "visual_tokens"][0]
    assert tok["subject"].startswith("fastvithd@336") and tok["required"] == "== 36" and tok["measured"] == "49"
    assert "FAIL" in capsys.readouterr().out


def test_gate_fails_on_missing_or_failed_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    res = ci_set(tmp_path / "ci", drop=[("convnext_l", 512), ("convllava_l", 512), ("vit_l14", 224)],
                 extra=[record("convllava_l", 512, rng, status=STATUS_ERROR, message="RuntimeError: boom")])
    md = tmp_path / "g.md"
    rc = main([str(res), "--config", str(CONFIG), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert rc == 1
    result = run_gate(load_table(res), load_gate_config(str(CONFIG)), analytical)
    missing = {c["subject"]: c["detail"] for c in failed(result) if c["section"] == "present"}
    assert set(missing) == {"convnext_l@512", "convllava_l@512", "vit_l14@224"}
    assert "no row in the results" in missing["convnext_l@512"]
    assert "status=error: RuntimeError: boom" in missing["convllava_l@512"]
    assert "token-matched" in missing["vit_l14@224"]
    assert len(failed(result)) == 3
    assert "convllava_l@512" in out and ":x: FAIL" in md.read_text()


def test_rows_outside_select_do_not_count(tmp_path):
    # the fastvithd@336 row exists, but for another LLM: the gate must not use it
    rng = np.random.default_rng(2)
    res = ci_set(tmp_path / "ci", drop=[("fastvithd", 336)],
                 extra=[record("fastvithd", 336, rng, 10, 40, llm="other_llm")])
    result = run_gate(load_table(res), load_gate_config(str(CONFIG)), analytical)
    assert not result["passed"]
    assert any(c["subject"] == "fastvithd@336" and "select" in c["detail"] for c in failed(result))


def test_gate_with_registry_token_counts(tmp_path):
    # the default counter uses bench.models.encoders.get_encoder_spec
    res = ci_set(tmp_path / "ci")
    assert run_gate(load_table(res), load_gate_config(str(CONFIG)))["passed"]
    res2 = ci_set(tmp_path / "ci2", tokens={("convnext_l", 336): 144})
    bad = failed(run_gate(load_table(res2), load_gate_config(str(CONFIG))))
    assert [c["subject"].split()[0] for c in bad] == ["convnext_l@336"]


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_exit_2(tmp_path, capsys):
    res = ci_set(tmp_path / "ci")
    assert main([str(tmp_path / "missing"), "--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert "no results at" in err and len(err.strip().splitlines()) == 1
    assert main([str(res), "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("target: [unclosed\n")
    assert main([str(res), "--config", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"target": "fastvithd", "matched_resolution": [{"resolution": 336,
                                                                                  "baselines": ["vit_l14"]}]}))
    assert main([str(res), "--config", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "min_speedup" in err and "Traceback" not in err


def test_real_exit_codes_in_subprocess(tmp_path):
    code = "import sys; from bench.cli import main; sys.exit(main(['gate', *sys.argv[1:]]))"
    slow = ci_set(tmp_path / "slow", override={("fastvithd", 336): (70, 160)})
    run = lambda *a: subprocess.run([sys.executable, "-c", code, *map(str, a)], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    p = run(slow)  # default --config, resolved from the repository (exit 0 is checked in-process)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "GATE FAIL" in p.stdout and "fastvithd vs vit_l14 @336 vision_latency" in p.stdout
    p = run(tmp_path / "nothing")
    assert p.returncode == 2 and "Traceback" not in p.stderr


# ---------------------------------------------------------------------------------------- workflow
def test_workflow_is_valid_yaml_and_runs_the_gate():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in on
    steps = wf["jobs"]["bench"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "download.pytorch.org/whl/cpu" in runs and "pip install -c constraints/lock-base.txt -e ." in runs
    assert "torch==2.14.1" in runs and "torch==2.14.1" in (REPO / "constraints" / "lock-base.txt").read_text()
    assert "fastvlm-bench sweep=ci_baseline" in runs
    assert "fastvlm-bench gate results/ci_baseline --markdown gate.md" in runs
    assert "fastvlm-bench report results/ci_baseline" in runs
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and "reports/" in upload[0]["with"]["path"] and "results/" in upload[0]["with"]["path"]
    comment = [s for s in steps if "github-script" in s.get("uses", "")]
    assert comment and "pull_request" in comment[0]["if"]
