"""Reliability round 3 (issue 29), through the real CLI: signals inside libraries, a shared
export cache, knobs checked up front, claims files and records read strictly, library noise."""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import FAST, run_cli, start_cli


def _records(folder: Path):
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _cache_is_whole(exports: Path) -> None:
    """Nothing half-made: no temporary folder, no exporter marked failed, every entry checks."""
    from bench.models.backends.export_cache import check_entry

    assert not list(exports.rglob("*.tmp-*")), list(exports.rglob("*.tmp-*"))
    assert not list(exports.rglob("*.failed")), [p.read_text() for p in exports.rglob("*.failed")]
    for folder in (p for p in exports.glob("*/*") if p.is_dir()):
        assert check_entry(folder, folder.name) == "", folder


# ---- 1. a signal inside an export or a compile -----------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_sigterm_during_an_export_or_compile_ends_the_point_every_time(tmp_path, backend):
    """SIGTERM 1-3.5 s into an ONNX export used to end in an ``ok`` record with exit 0: the
    handler cleared the signal before raising, and torch's ``except Exception`` swallowed the
    exception (once the run then fell back to the TorchScript exporter and cached that graph
    under the dynamo key). Now the signal stays pending until the harness handles it. A spread of
    moments after the first export began (the first stage's export, the next stages', the load
    and compile): each ends with exit 143, an ``error`` record, and no half-made cache entry."""
    for n, delay in enumerate((0.1, 1.6, 4.0)):  # early in the first export, mid-way, at load/compile
        res = tmp_path / f"r{n}"
        args = [*FAST, "name=sig", f"results_dir={res}", "encoder=tiny_vit", f"backend={backend}",
                "timing.max_repeats=100000", "timing.max_seconds=60", "timing.min_seconds=60"]
        proc = start_cli(args, cwd=tmp_path)  # forked once the imports are done (tests/forkserver.py)
        exports = res / "exports" / backend
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not list(exports.glob("*.tmp-*")):
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, (delay, err[-3000:])
        assert "Traceback" not in out + err, err[-3000:]
        (rec,) = _records(res / "sig" / "records")
        assert rec["status"] == "error" and "interrupted by SIGTERM" in rec["message"], (delay, rec["message"])
        _cache_is_whole(res / "exports")


# ---- 2. two processes exporting the same graph at once ---------------------------------------
def test_two_concurrent_sweeps_share_one_export_cache(tmp_path):
    """Two sweeps of the same point on one results folder (two names, one ``exports/``): one used
    to delete the other's in-progress temporary folder (``FileNotFoundError``, exit 0). Now each
    key is locked while it is built: both end ``ok``, one export made, the other reused."""
    res = tmp_path / "r"
    procs = [start_cli([*FAST, f"name={name}", f"results_dir={res}", "encoder=tiny_vit", "backend=onnxruntime",
                        "backend.stages=[vision_latency]"], cwd=tmp_path)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    recs = [r for name in ("a", "b") for r in _records(res / name / "records")]
    assert [r["status"] for r in recs] == ["ok", "ok"], [r.get("message") for r in recs]
    stages = [r["backend_info"]["stages"]["vision_latency"] for r in recs]
    assert sorted(s["cached"] for s in stages) == [False, True]  # one exported, the other waited and reused it
    _cache_is_whole(res / "exports")


# ---- 3. knobs accepted and then not done: one line, exit 2, before anything is built ----------
@pytest.mark.parametrize("bad, words", [
    (["backend=onnxruntime", "backend.opset=1"], "backend.opset"),
    (["backend=onnxruntime", "backend.atol=-1"], "backend.atol"),
    (["backend=onnxruntime", "backend.atol=nan"], "backend.atol"),
    (["backend=onnxruntime", "backend.stages=[]"], "backend.stages=[]"),
    (["reduction.tokens=4"], "reduction.tokens=4 needs a method"),
    (["tiling.tile=64"], "tiling.tile=64 needs a tiling mode"),
    (["timing.target_stage=bogus"], "timing.target_stage must be one of"),
    (["decode_tokens=5000"], "context of 4096"),
    (["tiling=anyres_next", "tiling.tile=64", "image_size=1000x8"], "yield no tokens"),
    (["tiling=anyres_next", "tiling.tile=1"], "cannot take 1 px"),
    (["resolution=65"], "cannot take 65 px"),
])
def test_a_knob_that_would_not_be_done_is_one_line_and_exit_2(tmp_path, bad, words):
    """Each used to be accepted and then ignored, or fail every point, or be a ``skipped`` row
    with exit 0 (a single run's bad resolution: the documented status for bad input is 2)."""
    res = tmp_path / "r"
    p = run_cli([*FAST, "name=k", f"results_dir={res}", "encoder=tiny_vit", *bad], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, (bad, p.returncode, p.stderr[-2000:])
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastvlm-bench: error: ") and words in err[0], err
    assert not res.exists()  # refused before the results folder is made (nothing was built)


def test_a_bad_resolution_in_a_grid_stays_a_skipped_row(tmp_path):
    """In a grid, one point's resolution the encoder cannot take is that point's ``skipped``
    row; the others are measured (only a single run refuses it with exit 2)."""
    res = tmp_path / "r"
    p = run_cli(["-m", *[a for a in FAST if not a.startswith("resolution")], "name=g", f"results_dir={res}",
                 "encoder=tiny_vit", "resolution=64,65"], cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(r["status"] for r in _records(res / "g" / "records")) == ["ok", "skipped"]


def test_the_tolerance_used_is_recorded(tmp_path):
    """``backend.atol`` is the numerics check's tolerance; the record says which one was used."""
    res = tmp_path / "r"
    p = run_cli([*FAST, "name=t", f"results_dir={res}", "encoder=tiny_vit", "backend=onnxruntime",
                 "backend.stages=[projector]", "backend.atol=0.01"], cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = _records(res / "t" / "records")
    assert rec["backend_info"]["stages"]["projector"]["tolerance"] == 0.01


# ---- 4. claims files read as strictly as records -------------------------------------------
_SIDE = "{encoder: tiny_vit, resolution: 64, llm: qwen2_tiny}"


@pytest.mark.parametrize("entry, words", [
    (f"{{id: a, title: t, metric: ttft, fast: {{encoder: tiny_vit, resolution: 64, llm: qwen2_tiny, tokens: many}}, "
     f"baseline: {_SIDE}}}", "claims[0] (id a).fast.tokens must be a whole number >= 0, got 'many'"),
    (f"{{id: a, title: t, metric: ttft, fast: {{encoder: tiny_vit, resolution: [64], llm: qwen2_tiny}}, "
     f"baseline: {_SIDE}}}", "claims[0] (id a).fast.resolution must be a positive whole number, got [64]"),
    (f"{{id: a, title: t, metric: ttft, fast: {{encoder: {{x: 1}}, resolution: 64, llm: qwen2_tiny}}, "
     f"baseline: {_SIDE}}}", "claims[0] (id a).fast.encoder must be a non-empty name"),
    (f"{{id: a, title: t, metric: ttft, fast: {_SIDE}, baseline: {_SIDE}, "
     "paper: {fast: {table: T10, encoder: x, resolution: big}}}", "(id a).paper.fast.resolution must be a positive"),
    (f"{{id: a, title: t, metric: ttft, fast: {_SIDE}, baseline: {_SIDE}, paper: [1]}}", "(id a).paper must be a mapping"),
    (f"{{id: 1, title: t, metric: ttft, fast: {_SIDE}, baseline: {_SIDE}}}\n  - "
     f"{{id: '1', title: u, metric: ttft, fast: {_SIDE}, baseline: {_SIDE}}}", "claims[1]: duplicate id '1'"),
])
def test_a_malformed_claim_is_one_line_naming_the_claim_and_the_field(tmp_path, good, entry, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"claims:\n  - {entry}\n")
    p = run_cli(["claims", str(good), "--claims", str(bad), "--out", str(tmp_path)])
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and words in err[0], (p.returncode, p.stderr[-2000:])


def test_a_broken_claims_file_does_not_break_a_run_that_does_not_use_claims(tmp_path):
    """``FASTVLM_BENCH_CLAIMS`` naming a broken file used to break every sweep, even
    ``sweep=none``, with a traceback. Now: one warning line, and the point is measured."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - {id: a, title: t, metric: ttft, fast: {encoder: tiny_vit, resolution: x, llm: none},"
                   " baseline: {encoder: tiny_vit, resolution: 64, llm: none}}\n")
    res = tmp_path / "r"
    p = run_cli([*FAST, "name=c", f"results_dir={res}", "encoder=tiny_vit", "llm=none"], cwd=tmp_path,
                env={"FASTVLM_BENCH_CLAIMS": str(bad)}, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert [line for line in p.stderr.splitlines() if str(bad) in line] == [
        f"fastvlm-bench: warning: {bad}: claims[0] (id a).fast.resolution must be a positive whole number, got 'x'; "
        "sweep=paper_claims has no points until it is fixed"]
    assert [r["status"] for r in _records(res / "c" / "records")] == ["ok"]


# ---- 5. claims and the headline do not pool different points ---------------------------------
def test_claims_and_headline_keep_backends_apart(tmp_path, good):
    """Eager and ONNX Runtime rows of one encoder used to be pooled as runs of one point; the
    headline named an ONNX Runtime row without its backend."""
    import shutil

    res = tmp_path / "good"
    shutil.copytree(good, res)
    p = run_cli([*FAST, "name=good", f"results_dir={tmp_path}", "encoder=tiny_vit", "backend=onnxruntime",
                 "backend.stages=[projector]", "timing.min_repeats=7", "timing.max_repeats=7"], cwd=tmp_path,
                timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {(r["config"]["encoder"], r["config"].get("backend", "eager")): r for r in _records(res / "records")}
    n_eager = recs[("tiny_vit", "eager")]["stages"]["ttft"]["n"]
    n_ort = recs[("tiny_vit", "onnxruntime")]["stages"]["ttft"]["n"]
    assert n_eager != n_ort
    claims = tmp_path / "c.yaml"
    claims.write_text("claims:\n"
                      "  - {id: eager, title: e, metric: ttft, fast: {encoder: tiny_convnext, resolution: 64, "
                      "llm: qwen2_tiny}, baseline: {encoder: tiny_vit, resolution: 64, llm: qwen2_tiny}}\n"
                      "  - {id: ort, title: o, metric: ttft, fast: {encoder: tiny_convnext, resolution: 64, "
                      "llm: qwen2_tiny}, baseline: {encoder: tiny_vit, resolution: 64, llm: qwen2_tiny, "
                      "backend: onnxruntime}}\n")
    out = tmp_path / "out"
    out.mkdir()
    p = run_cli(["claims", str(res), "--claims", str(claims), "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["id"]: r for r in json.loads((out / "claims.json").read_text())["claims"]}
    assert rows["eager"]["n_baseline"] == n_eager and rows["ort"]["n_baseline"] == n_ort, rows
    assert rows["ort"]["baseline"] == "tiny_vit@64 [onnxruntime]+qwen2_tiny"
    from bench.analysis.headline import headline_table
    from bench.results.store import load_table

    df = load_table(res)
    t = headline_table(df[(df.status == "ok") & (df.backend == "onnxruntime")])
    assert list(t["fastest configuration"]) == ["tiny_vit@64 [onnxruntime]"], t.to_dict()


# ---- 6. the gate and compare say when a check cannot apply -----------------------------------
def test_gate_counts_token_reduction_and_says_when_a_speedup_checks_nothing(tmp_path, good):
    """A correct ``reduction=pool reduction.tokens=4`` row failed the visual_tokens check
    ("formula gives 16"); a top-level ``min_speedup`` without a matched_resolution entry checked
    nothing and passed silently."""
    import yaml

    res = tmp_path / "r"
    p = run_cli([*FAST, "name=red", f"results_dir={res}", "encoder=tiny_vit", "reduction=pool", "reduction.tokens=4"],
                cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(yaml.safe_dump({"target": "tiny_vit", "check_visual_tokens": True}))
    p = run_cli(["gate", str(res / "red"), "--config", str(cfg), "--json", str(tmp_path / "g.json")])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    (check,) = json.loads((tmp_path / "g.json").read_text())["checks"]
    assert check["section"] == "visual_tokens" and check["measured"] == "4" and check["required"] == "== 4"

    cfg.write_text(yaml.safe_dump({"target": "tiny_convnext", "check_visual_tokens": True,
                                   "min_speedup": {"tiny_vit": {"ttft": 1.0}}}))
    p = run_cli(["gate", str(good), "--config", str(cfg)])
    assert p.returncode == 1 and "no speed-up was checked" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]


def test_compare_on_metrics_no_row_has_is_not_ok(good):
    """``compare --metrics tpot,e2e`` over rows without decode printed "OK over 2 matched
    configurations"."""
    p = run_cli(["compare", str(good), str(good), "--metrics", "tpot,e2e"])
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "no matched row has tpot, e2e" in err[0], p.stdout + p.stderr
    p = run_cli(["compare", str(good), str(good), "--metrics", "ttft,tpot"])
    assert p.returncode == 0 and "--metrics tpot: no matched row has it" in p.stderr, p.stdout + p.stderr


# ---- 7. records of the new stages are validated ---------------------------------------------
@pytest.fixture(scope="module")
def decode_and_backend(tmp_path_factory):
    """Two real records: a decode point (decode_tokens=4) and an ONNX Runtime point."""
    base = tmp_path_factory.mktemp("newstages")
    for extra in (["decode_tokens=4"], ["backend=onnxruntime", "backend.stages=[projector]"]):
        p = run_cli([*FAST, "name=n", f"results_dir={base}", "encoder=tiny_vit", *extra], cwd=base, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        (base / f"output-{extra[0].split('=')[0]}.txt").write_text(p.stdout + p.stderr)
    recs = {("backend" if r["config"].get("backend", "eager") != "eager" else "decode"): (path, r)
            for path in (base / "n" / "records").glob("*.json") for r in [json.loads(path.read_text())]}
    assert set(recs) == {"decode", "backend"}
    return recs


def _itl_negative(r):
    r["stages"]["itl"]["samples"][0] = -1.0


def _itl_empty(r):
    r["stages"]["itl"]["samples"] = []


def _itl_too_many(r):
    s = r["stages"]["itl"]
    s["samples"] = sorted(s["samples"] * 10)
    s["n"] = len(s["samples"])


def _tpot_contradicts(r):
    s = r["stages"]["tpot"]
    for k in ("median", "mean", "p10", "p90", "ci_low", "ci_high"):
        if s.get(k) is not None:
            s[k] *= 1e4
    s["samples"] = [x * 1e4 for x in s["samples"]]


def _backend_nan(r):
    r["backend_info"]["stages"]["projector"]["max_abs_err"] = float("nan")


@pytest.mark.parametrize("kind, edit, words", [
    ("decode", _itl_negative, "stages.itl.samples has negative times"),
    ("decode", _itl_empty, "stages.itl.samples is empty but n is"),
    ("decode", _itl_too_many, "stages.itl.n is"),
    ("decode", _tpot_contradicts, "contradicts stages.decode.median"),
    ("backend", _backend_nan, "backend_info.stages.projector.max_abs_err must be a finite number"),
])
def test_collect_rejects_new_stage_records_that_contradict_themselves(tmp_path, decode_and_backend, kind, edit,
                                                                      words):
    src, rec = decode_and_backend[kind]
    records = tmp_path / "n" / "records"
    records.mkdir(parents=True)
    rec = json.loads(json.dumps(rec))
    edit(rec)
    (records / src.name).write_text(json.dumps(rec))
    p = run_cli(["collect", str(tmp_path / "n")], cwd=tmp_path)
    assert p.returncode == 1, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if src.name in line]
    assert lines and all(words in line for line in lines), p.stderr[-2000:]  # the record and the field, one line each
    assert (records / "corrupt" / src.name).exists()


def test_the_real_new_stage_records_are_valid(decode_and_backend):
    from bench.results.validate import problems_of

    for path, rec in decode_and_backend.values():
        assert problems_of(rec, path.stem) == []


# ---- 8. library noise goes to a log file beside the records -----------------------------------
def test_library_noise_goes_to_a_log_beside_the_records(decode_and_backend):
    """A tiny ONNX Runtime run printed ~160 onnx_ir/onnxscript INFO lines; now the user sees our
    lines only, and the libraries' lines are in ``library.log`` beside the records (named in the
    record)."""
    path, rec = decode_and_backend["backend"]
    out = (path.parent.parent.parent / "output-backend.txt").read_text()
    assert "onnx_ir" not in out and "onnxscript" not in out and "torch/onnx" not in out, out[-3000:]
    log = Path(rec["backend_info"]["library_log"])
    assert log == path.parent.parent / "library.log" and "onnx_ir" in log.read_text()


# ---- 9. threads above the usable cores; a turn file in a missing folder ------------------------
def test_threads_above_the_usable_cores_are_warned_about(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    res = tmp_path / "r"
    p = run_cli([*FAST, "name=t", f"results_dir={res}", "encoder=tiny_vit", "llm=none", f"threads={cores + 1}"],
                cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"threads={cores + 1} is more than the {cores} CPU cores this process may use" in p.stdout + p.stderr


def test_a_turn_file_in_a_missing_folder_is_refused_before_the_results_folder_is_made(tmp_path):
    res = tmp_path / "r"
    p = run_cli([*FAST, "name=t", f"results_dir={res}", "encoder=tiny_vit", f"timing.turns={tmp_path}/no/ab.turn"],
                cwd=tmp_path, timeout=120)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "does not exist" in err[0], p.stderr[-2000:]
    assert not res.exists()


def test_a_fallback_exporter_has_its_own_cache_key_and_is_said(tmp_path):
    """Once the dynamo exporter failed (a swallowed signal) and the run silently fell back to the
    TorchScript exporter, caching that graph under the same key. Now the exporter is part of the
    key, and a fallback is a warning line and ``fallback`` in the record. The dynamo exporter's
    failure is the cache's own ``<key>.failed`` file (as a real failure leaves it)."""
    res = tmp_path / "r"
    args = [*FAST, "name=f", f"results_dir={res}", "encoder=tiny_vit", "backend=onnxruntime",
            "backend.stages=[projector]"]
    p = run_cli(args, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = _records(res / "f" / "records")
    first = rec["backend_info"]["stages"]["projector"]
    assert "dynamo=True" in first["exporter"] and "fallback" not in first
    entry = res / "exports" / "onnxruntime" / first["cache_key"]
    shutil.rmtree(entry)
    (entry.parent / f"{entry.name}.failed").write_text("RuntimeError: the dynamo exporter cannot take this graph\n")
    p = run_cli([*args, "force=true"], cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "the dynamo exporter failed on this graph before" in p.stdout + p.stderr
    (rec,) = _records(res / "f" / "records")
    st = rec["backend_info"]["stages"]["projector"]
    assert "dynamo=False" in st["exporter"] and "cannot take this graph" in st["fallback"]
    assert st["cache_key"] != first["cache_key"] and not entry.exists()  # never under the dynamo key


def test_our_own_warnings_are_one_line_without_the_source_line(tmp_path):
    """Issue 29, item 8: a warning of ours (other processes using the CPUs, made real here by two
    busy processes) prints as ``fastvlm-bench: warning: ...``, not with the ``warnings.warn(...)``
    source line under it."""
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        p = run_cli(["sweep=none", "encoder=tiny_vit", "llm=none", "resolution=64", "report=false", "timing=quick",
                     "count_flops=false", "measure_peak=false", f"results_dir={tmp_path}"], cwd=tmp_path)
    finally:
        for h in hogs:
            h.kill()
    assert p.returncode == 0, p.stderr[-2000:]
    assert "fastvlm-bench: warning: other processes used" in p.stderr, p.stderr[-2000:]
    assert "warnings.warn(" not in p.stderr and "RuntimeWarning" not in p.stderr, p.stderr[-2000:]
