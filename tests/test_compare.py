"""Tests of ``fastvlm-bench compare`` on hand-built result sets written through ResultsStore."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main as cli_main
from bench.regress.compare import compare_tables, encoder_speedups
from bench.regress.render import render_compare_markdown as render_markdown
from bench.regress.rows import match_rows
from bench.regress.stats import IMPROVEMENT, REGRESSION, UNCHANGED
from bench.results.records import STATUS_ERROR, STATUS_SKIPPED, PointConfig, Record, StageStats
from bench.results.store import ResultsStore, load_table

REPO = Path(__file__).resolve().parent.parent


def main(argv):
    return cli_main(["compare", *argv])


# analytical visual-token counts of the points used here
TOKENS = {("fastvithd", 336): 36, ("fastvithd", 512): 64, ("fastvithd", 1024): 256, ("vit_l14", 336): 576,
          ("vit_l14", 224): 256, ("convnext_l", 336): 100, ("convnext_l", 512): 256, ("convllava_l", 1024): 256}
# base medians (ms) of vision latency and ttft
BASE_MS = {("fastvithd", 336): (10.0, 40.0), ("vit_l14", 336): (50.0, 120.0), ("convnext_l", 336): (20.0, 60.0),
           ("fastvithd", 1024): (40.0, 90.0), ("vit_l14", 224): (20.0, 70.0), ("convllava_l", 1024): (30.0, 80.0)}


def stage(samples) -> StageStats:
    a = np.asarray(samples, dtype=float)
    q10, q25, q75, q90 = np.percentile(a, [10, 25, 75, 90])
    return StageStats(median=float(np.median(a)), mean=float(a.mean()), p10=float(q10), p90=float(q90),
                      iqr=float(q75 - q25), std=float(a.std()), n=int(a.size), samples=[float(x) for x in a])


def make_record(encoder, resolution, rng, *, vision, ttft, prefill=20.0, spread=0.01, n=30, slow=1.0,
                tokens=None, status="ok", threads=None, peak_rss=1000.0, peak_mem=None, message="") -> Record:
    cfg = PointConfig(encoder=encoder, resolution=resolution, llm="qwen2_0.5b", dtype="fp32", device="cpu",
                      threads=threads)
    if status != "ok":
        return Record(sweep="t", config=cfg, status=status, message=message)
    noise = lambda: 1.0 + spread * rng.standard_normal(n)  # noqa: E731
    return Record(sweep="t", config=cfg, visual_tokens=TOKENS[(encoder, resolution)] if tokens is None else tokens,
                  stages={"vision_latency": stage(vision * slow * noise()), "prefill": stage(prefill * noise()),
                          "ttft": stage(ttft * slow * noise())},
                  peak_rss_mb=peak_rss, peak_memory_mb=peak_mem)


def write_set(root: Path, points, seed=0, slow=None, spread=0.01, n=30, extra=(), **kw) -> Path:
    """A result set of ``points`` ((encoder, res) keys of BASE_MS); ``slow`` maps a point to a factor."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(root)
    for p in points:
        v, t = BASE_MS[p]
        store.put(make_record(*p, rng, vision=v, ttft=t, slow=(slow or {}).get(p, 1.0), spread=spread, n=n, **kw))
    for rec in extra:
        store.put(rec)
    store.consolidate()
    return root


CORE = [("fastvithd", 336), ("vit_l14", 336), ("convnext_l", 336)]


# ---------------------------------------------------------------------------------------- comparing
def test_identical_inputs_no_regression_exit_0(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE)
    rc = main([str(base), str(base), "--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no regressions" in out and "REGRESSION" not in out
    data = json.loads((tmp_path / "c.json").read_text())["comparison"]
    assert data["matched"] == 3 and data["regressions"] == 0
    assert {c["metric"] for c in data["comparisons"]} == {"vision_latency", "prefill", "ttft", "visual_tokens",
                                                          "peak_memory"}
    for c in data["comparisons"]:
        assert c["ratio"] == pytest.approx(1.0)
        assert c["ci_low"] <= 1.0 <= c["ci_high"]
    assert (tmp_path / "c.md").read_text().startswith("<!-- fastvlm-bench-compare -->")


def test_twenty_percent_slowdown_flagged_exit_1(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=1, slow={("fastvithd", 336): 1.2})
    md, js = tmp_path / "pr.md", tmp_path / "r.json"
    rc = main([str(base), str(cand), "--markdown", str(md), "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "REGRESSION" in out and "FAIL: 2 regressions" in out
    data = json.loads(js.read_text())
    assert data["exit_status"] == 1
    flagged = {(c["config"]["encoder"], c["metric"]) for c in data["comparison"]["comparisons"]
               if c["verdict"] == REGRESSION}
    assert flagged == {("fastvithd", "vision_latency"), ("fastvithd", "ttft")}
    reg = [c for c in data["comparison"]["comparisons"] if c["verdict"] == REGRESSION]
    assert all(c["method"] == "bootstrap" and c["ci_low"] > 1.05 and 1.15 < c["ratio"] < 1.25 for c in reg)
    text = md.read_text()
    assert ":x: regression" in text and "| fastvithd@336" in text


def test_speedup_reported_as_improvement_exit_0(tmp_path):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=1, slow={("vit_l14", 336): 0.7})
    res = compare_tables(load_table(base), load_table(cand))
    verdicts = {(c["config"]["encoder"], c["metric"]): c["verdict"] for c in res["comparisons"]}
    assert verdicts[("vit_l14", "vision_latency")] == IMPROVEMENT
    assert res["regressions"] == 0 and res["improvements"] == 2
    assert main([str(base), str(cand)]) == 0


def test_noise_inside_interval_not_flagged_but_tight_same_shift_is(tmp_path):
    # 8% slower medians: beyond the 5% threshold as a point, but with 30% spread on 12
    # samples the interval reaches below 1.05, so nothing is flagged ...
    noisy_b = write_set(tmp_path / "nb", CORE, seed=3, spread=0.30, n=12)
    noisy_c = write_set(tmp_path / "nc", CORE, seed=4, spread=0.30, n=12,
                        slow={p: 1.08 for p in CORE})
    res = compare_tables(load_table(noisy_b), load_table(noisy_c), metrics=["vision_latency", "ttft"])
    assert res["regressions"] == 0
    assert all(c["ci_low"] < 1.05 < c["ci_high"] for c in res["comparisons"])
    # ... whereas the same shift with 1% spread is a regression everywhere (at a 1 % noise floor:
    # what runs that share the machine's drift get) ...
    tight_b = write_set(tmp_path / "tb", CORE, seed=3, spread=0.01, n=40)
    tight_c = write_set(tmp_path / "tc", CORE, seed=4, spread=0.01, n=40, slow={p: 1.08 for p in CORE})
    res = compare_tables(load_table(tight_b), load_table(tight_c), metrics=["vision_latency", "ttft"],
                         noise_floor=0.01)
    assert res["regressions"] == 6
    # ... but not between two single runs made at different times: their intervals cannot see
    # the drift between them, so the default floor is the measured run-to-run drift
    from bench.regress.compare import SINGLE_RUN_NOISE_FLOOR

    res = compare_tables(load_table(tight_b), load_table(tight_c), metrics=["vision_latency", "ttft"])
    assert res["regressions"] == 0
    assert {c["noise_floor"] for c in res["comparisons"]} == {SINGLE_RUN_NOISE_FLOOR}


def test_small_jitter_not_flagged(tmp_path):
    # a 1 % shift with 2 % per-iteration spread (what the stopping rule's +-2 % target leaves)
    base = write_set(tmp_path / "b", CORE, seed=5, spread=0.02)
    cand = write_set(tmp_path / "c", CORE, seed=6, spread=0.02, slow={p: 1.01 for p in CORE})
    assert main([str(base), str(cand)]) == 0


def test_thresholds_global_and_per_metric(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=1, slow={("fastvithd", 336): 1.2})
    assert main([str(base), str(cand), "--threshold", "0.3"]) == 0
    assert main([str(base), str(cand), "--metric-threshold", "ttft=0.3"]) == 1  # vision still flagged
    capsys.readouterr()
    js = tmp_path / "t.json"
    assert main([str(base), str(cand), "--metric-threshold", "ttft=0.3,vision_latency=0.25", "--json", str(js)]) == 0
    data = json.loads(js.read_text())["comparison"]
    assert data["metric_thresholds"] == {"ttft": 0.3, "vision_latency": 0.25, "peak_memory": 0.1}
    assert {c["threshold"] for c in data["comparisons"] if c["metric"] == "prefill"} == {0.03}


def test_unmatched_rows_are_listed(tmp_path, capsys):
    rng = np.random.default_rng(9)
    base = write_set(tmp_path / "base", CORE + [("fastvithd", 1024)])
    cand = write_set(tmp_path / "cand", [("fastvithd", 336), ("vit_l14", 336), ("vit_l14", 224)],
                     extra=[make_record("convnext_l", 336, rng, vision=0, ttft=0, status=STATUS_ERROR,
                                        message="RuntimeError: out of memory")])
    js = tmp_path / "u.json"
    rc = main([str(base), str(cand), "--json", str(js), "--markdown", str(tmp_path / "u.md")])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(js.read_text())["comparison"]
    assert data["matched"] == 2
    only_base = {(u["config"]["encoder"], u["config"]["resolution"]): u for u in data["unmatched_base"]}
    assert set(only_base) == {("convnext_l", 336), ("fastvithd", 1024)}
    assert only_base[("convnext_l", 336)]["other_side_status"] == "error"
    assert [(u["config"]["encoder"], u["config"]["resolution"]) for u in data["unmatched_candidate"]] == [("vit_l14", 224)]
    assert "only in base (2)" in out and "only in candidate (1)" in out and "status=error" in out
    assert "Only in candidate (1)" in (tmp_path / "u.md").read_text()
    # --strict turns unmatched rows into a failure
    assert main([str(base), str(cand), "--strict"]) == 1


def test_csv_and_parquet_match_and_threads_ignored_by_default(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=0, threads=8)
    res = compare_tables(load_table(base / "results.csv"), load_table(cand / "results.parquet"))
    assert res["matched"] == 3 and res["regressions"] == 0 and not res["unmatched_base"]
    assert "threads" not in res["match_on"]
    # matching on threads too finds nothing in common: a clear error, exit 2
    rc = main([str(base / "results.csv"), str(cand), "--match-on", "encoder,resolution,threads"])
    err = capsys.readouterr().err
    assert rc == 2 and "no ok rows matched" in err


def test_duplicate_keys_are_ambiguous_not_compared(tmp_path):
    rng = np.random.default_rng(0)
    base = write_set(tmp_path / "base", CORE,
                     extra=[make_record("fastvithd", 336, rng, vision=10, ttft=40, threads=4)])
    cand = write_set(tmp_path / "cand", CORE)
    res = compare_tables(load_table(base), load_table(cand))
    assert res["matched"] == 2
    assert len(res["ambiguous_base"]) == 2 and not res["unmatched_candidate"]


def test_peak_memory_prefers_device_memory_and_is_exact(tmp_path):
    base = write_set(tmp_path / "b", CORE, peak_mem=500.0)
    cand = write_set(tmp_path / "c", CORE, peak_mem=750.0)
    res = compare_tables(load_table(base), load_table(cand), metrics=["peak_memory", "visual_tokens"])
    mem = [c for c in res["comparisons"] if c["metric"] == "peak_memory"]
    assert all(c["column"] == "peak_memory_mb" and c["method"] == "exact" for c in mem)
    assert all(c["ratio"] == c["ci_low"] == c["ci_high"] == pytest.approx(1.5) for c in mem)
    assert all(c["verdict"] == REGRESSION for c in mem)
    assert all(c["verdict"] == UNCHANGED for c in res["comparisons"] if c["metric"] == "visual_tokens")
    # RSS is used when device memory is missing on one side
    res = compare_tables(load_table(base), load_table(write_set(tmp_path / "d", CORE)), metrics=["peak_memory"])
    assert {c["column"] for c in res["comparisons"]} == {"peak_rss_mb"}
    md = render_markdown(res, "b", "d")
    assert "peak_memory (peak_rss_mb)" in md


def test_match_rows_normalises_types():
    a = [{"encoder": "x", "resolution": 336, "compile": False, "status": "ok"}]
    b = [{"encoder": "x", "resolution": 336.0, "compile": "False", "status": "ok"}]
    m = match_rows(a, b, ["encoder", "resolution", "compile"])
    assert len(m.pairs) == 1 and not m.unmatched_base and not m.unmatched_candidate


# ---------------------------------------------------------------------------------------- bad input
def _one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    return err


def test_missing_input_exit_2(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE)
    assert main([str(base), str(tmp_path / "nope")]) == 2
    _one_line_error(capsys, "no results at")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), str(base)]) == 2
    _one_line_error(capsys, "BASE")


def test_malformed_inputs_exit_2(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    assert main([str(base), str(bad_csv)]) == 2
    _one_line_error(capsys, "status")
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"not a parquet file at all")
    assert main([str(bad_pq), str(base)]) == 2
    _one_line_error(capsys, "cannot read results")
    bad_json = tmp_path / "rec.json"
    bad_json.write_text("{not json")
    assert main([str(base), str(bad_json)]) == 2
    _one_line_error(capsys, "cannot read results")
    bad_ext = tmp_path / "x.txt"
    bad_ext.write_text("hello")
    assert main([str(base), str(bad_ext)]) == 2
    _one_line_error(capsys, "expected a results folder")
    # a corrupt samples cell
    df = load_table(base)
    df.loc[0, "vision_latency_samples_ms"] = "[1.0, oops"
    corrupt = tmp_path / "corrupt.csv"
    df.to_csv(corrupt, index=False)
    assert main([str(base), str(corrupt)]) == 2
    _one_line_error(capsys, "malformed samples")


def test_bad_options_exit_2(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE)
    assert main([str(base), str(base), "--metric-threshold", "latency=0.1"]) == 2
    _one_line_error(capsys, "--metric-threshold")
    assert main([str(base), str(base), "--threshold", "abc"]) == 2
    _one_line_error(capsys, "--threshold")
    assert main([str(base), str(base), "--metrics", "vision_latency,bogus"]) == 2
    _one_line_error(capsys, "bogus")
    assert main([str(base), str(base), "--match-on", "colour"]) == 2
    _one_line_error(capsys, "colour")
    assert main([str(base)]) == 2
    _one_line_error(capsys, "CANDIDATE is required")
    with pytest.raises(SystemExit) as exc:  # argparse: one error line, exit 2
        main([])
    assert exc.value.code == 2 and "required" in capsys.readouterr().err


def test_real_exit_codes_in_subprocess(tmp_path):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=1, slow={("fastvithd", 336): 1.2})
    code = "import sys; from bench.cli import main; sys.exit(main(['compare', *sys.argv[1:]]))"
    run = lambda *a: subprocess.run([sys.executable, "-c", code, *map(str, a)], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    p = run(base, cand)
    assert p.returncode == 1, p.stderr
    assert "REGRESSION" in p.stdout
    p = run(base, tmp_path / "missing")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.strip().startswith("fastvlm-bench compare: error:")


# ---------------------------------------------------------------------------------------- encoders
def test_baseline_encoder_speedups_known_ratios(tmp_path, capsys):
    pts = CORE + [("fastvithd", 1024), ("vit_l14", 224), ("convllava_l", 1024)]
    # spread 0 -> exact medians, so the expected ratios are exact
    base = write_set(tmp_path / "set", pts, spread=0.0, extra=[
        make_record("vit_l14", 512, None, vision=0, ttft=0, status=STATUS_SKIPPED,
                    message="vit_l14 cannot take 512 px")])
    md, js = tmp_path / "sp.md", tmp_path / "sp.json"
    rc = main([str(base), "--baseline-encoder", "vit_l14", "--markdown", str(md), "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0
    sp = json.loads(js.read_text())["encoder_speedups"]["base"]
    by_res = {(e["encoder"], e["resolution"]): e for e in sp["by_resolution"]}
    assert set(by_res) == {("fastvithd", 336), ("convnext_l", 336)}
    assert by_res[("fastvithd", 336)]["vision_latency"]["speedup"] == pytest.approx(5.0)
    assert by_res[("fastvithd", 336)]["ttft"]["speedup"] == pytest.approx(3.0)
    assert by_res[("convnext_l", 336)]["vision_latency"]["speedup"] == pytest.approx(2.5)
    assert by_res[("fastvithd", 336)]["baseline_visual_tokens"] == 576
    by_tok = {(e["encoder"], e["resolution"]): e for e in sp["by_tokens"]}
    assert set(by_tok) == {("fastvithd", 1024), ("convllava_l", 1024)}
    assert all(e["visual_tokens"] == 256 and e["baseline_resolution"] == 224 for e in by_tok.values())
    assert by_tok[("fastvithd", 1024)]["vision_latency"]["speedup"] == pytest.approx(0.5)
    assert by_tok[("convllava_l", 1024)]["ttft"]["speedup"] == pytest.approx(70 / 80)
    assert "at matched visual-token count" in out and "5.00x" in out
    text = md.read_text()
    assert "Encoder speed-ups over `vit_l14`" in text and "| fastvithd | 336 |" in text
    # the pure function agrees, and a missing baseline encoder is a clear error
    assert encoder_speedups(load_table(base), "vit_l14")["by_resolution"] == sp["by_resolution"]
    assert main([str(base), "--baseline-encoder", "siglip_so400m"]) == 2
    _one_line_error(capsys, "siglip_so400m")


def test_baseline_encoder_with_candidate_runs_both(tmp_path, capsys):
    base = write_set(tmp_path / "base", CORE, seed=0)
    cand = write_set(tmp_path / "cand", CORE, seed=1, slow={("fastvithd", 336): 1.2})
    js = tmp_path / "both.json"
    assert main([str(base), str(cand), "--baseline-encoder", "vit_l14", "--json", str(js)]) == 1
    data = json.loads(js.read_text())
    assert set(data["encoder_speedups"]) == {"base", "candidate"}
    b = {e["encoder"]: e for e in data["encoder_speedups"]["base"]["by_resolution"]}
    c = {e["encoder"]: e for e in data["encoder_speedups"]["candidate"]["by_resolution"]}
    assert c["fastvithd"]["vision_latency"]["speedup"] < b["fastvithd"]["vision_latency"]["speedup"] / 1.15
