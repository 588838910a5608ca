"""Hostile-but-fair inputs through the real CLI (issue 13): every failure is one line with the
documented exit status, nothing is written outside the results folder, and good results are
never changed. Real subprocesses, real Hydra multiruns with the tiny models, real files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.results.records import POINT_KEYS, PointConfig
from conftest import FAST, run_cli, start_cli



def tree(root: Path) -> dict:
    """path -> sha1 of every file under root (the before/after fingerprint of a folder)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line(p, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one error line, no traceback; returns that line."""
    out = p.stdout + p.stderr
    assert p.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, p.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def work(tmp_path, good):
    """A private copy of the good results, and an empty cwd for the command."""
    res = tmp_path / "results"
    shutil.copytree(good, res / "good")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return res, cwd


def _gate_config(path: Path, typo: str = "") -> Path:
    path.write_text(f"""target: tiny_vit
select: {{llm: qwen2_tiny}}
check_visual_tokens: true
min_speedup:
  tiny_convnext: {{vision_latency: 1000.0}}
matched_resolution{typo}:
  - resolution: 64
    baselines: [tiny_convnext]
""")
    return path


def _case_args(case: str, res: Path, cwd: Path):
    """(argv, expected exit status, words the error line must hold) for one bad input."""
    good = res / "good"
    if case == "sweep_name_escapes":
        return [*FAST, "name=../escaped", f"results_dir={res}", "encoder=tiny_vit"], 2, ["../escaped"]
    if case == "sweep_missing_checkpoint":
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", "checkpoint=/nonexistent"], 2, \
            ["/nonexistent", "does not exist"]
    if case == "sweep_checkpoint_without_weights":
        (cwd / "ckpt").mkdir()
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", f"checkpoint={cwd / 'ckpt'}"], 2, \
            ["no weights"]
    if case == "sweep_cuda_without_gpu":
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", "device=cuda"], 2, ["CUDA"]
    if case == "sweep_negative_timing":
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", "timing.min_repeats=-1",
                "timing.min_seconds=-1"], 2, ["timing.min_repeats", "timing.min_seconds"]
    if case == "sweep_unknown_key":
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", "bogus=1"], 2, ["bogus"]
    if case == "sweep_unknown_encoder":
        return [*FAST, "name=good", f"results_dir={res}", "encoder=nope"], 2, ["nope", "tiny_vit"]
    if case == "sweep_results_dir_is_a_file":
        (cwd / "afile").write_text("x")
        return [*FAST, "name=good", f"results_dir={cwd / 'afile'}", "encoder=tiny_vit"], 2, ["afile", "not a folder"]
    if case == "collect_missing_dir":
        return ["collect", str(cwd / "nonexistent_dir")], 2, ["nonexistent_dir"]
    if case == "collect_unknown_flag":
        return ["collect", str(good), "--bogus"], 2, ["--bogus"]
    if case == "collect_dir_is_a_file":
        return ["collect", str(good / "results.csv")], 2, ["not a folder"]
    if case == "report_missing_dir":
        return ["report", str(cwd / "nope"), "--out", str(cwd / "rep")], 2, ["nope"]
    if case == "report_missing_columns":
        df = pd.read_csv(good / "results.csv")[["encoder", "resolution", "llm", "status", "ttft_ms"]]
        df.to_csv(cwd / "cut.csv", index=False)
        return ["report", str(cwd / "cut.csv"), "--out", str(cwd / "rep")], 2, ["cut.csv", "vision_latency_ms"]
    if case == "report_unknown_flag":
        return ["report", str(good), "--bogus"], 2, ["--bogus"]
    if case == "compare_missing_candidate":
        return ["compare", str(good), str(cwd / "nope")], 2, ["nope"]
    if case == "compare_no_common_points":
        other = cwd / "other.csv"
        df = pd.read_csv(good / "results.csv")
        df["llm"] = "llama_tiny"
        df.to_csv(other, index=False)
        return ["compare", str(good), str(other)], 2, ["no ok rows matched"]
    if case == "compare_bad_threshold":
        return ["compare", str(good), str(good), "--threshold", "abc"], 2, ["--threshold"]
    # ---- issue 23: fractions, records checked on read, runs their records doubt, messages ------
    if case == "sweep_timing_target_percent":  # 2 = 200 %
        return [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit", "timing.target=2"], 2, \
            ["timing.target", "0.05 = 5 %"]
    if case == "sweep_unquoted_space":  # results_dir=/data/my runs, unquoted: two arguments
        return [*FAST, "name=good", f"results_dir={cwd}/my", "runs", "encoder=tiny_vit"], 2, ["quoted", "runs"]
    if case in ("compare_noise_floor_percent", "compare_threshold_percent", "compare_threshold_negative",
                "compare_noise_floor_nan", "compare_metric_threshold_percent"):
        flag, value = {"compare_noise_floor_percent": ("--noise-floor", "5"),
                       "compare_threshold_percent": ("--threshold", "3"),
                       "compare_threshold_negative": ("--threshold", "-0.01"),
                       "compare_noise_floor_nan": ("--noise-floor", "nan"),
                       "compare_metric_threshold_percent": ("--metric-threshold", "ttft=10")}[case]
        return ["compare", str(good), str(good), flag, value], 2, [flag, "fractions", "0.05 = 5 %"]
    if case == "compare_confidence_percent":
        return ["compare", str(good), str(good), "--confidence", "95"], 2, ["--confidence", "0.95 = 95 %"]
    if case == "compare_point_twice":  # one run holding the same point twice: not "no rows matched"
        df = pd.read_csv(good / "results.csv")
        pd.concat([df, df]).to_csv(cwd / "twice.csv", index=False)
        return ["compare", str(cwd / "twice.csv"), str(good)], 2, ["BASE holds the same point more than once"]
    if case in ("compare_strict_disturbed", "compare_strict_budget", "gate_strict_disturbed"):
        df = pd.read_csv(good / "results.csv")
        if case == "compare_strict_budget":
            df["stop_reason"], df["ttft_ci_rel"], df["setting_timing_target"] = "budget", 0.65, 0.02
            needle = "stopped on the budget at +-65% (target +-2%)"
        else:
            df["disturbed_iterations"] = 5
            needle = "5 disturbed iterations"
        df.to_csv(cwd / "loaded.csv", index=False)
        if case == "gate_strict_disturbed":
            return ["gate", str(cwd / "loaded.csv"), "--config", str(_gate_config(cwd / "g.yaml")), "--strict"], 2, \
                ["--strict", needle]
        return ["compare", str(good), str(cwd / "loaded.csv"), "--strict"], 2, ["--strict", needle, "loaded.csv"]
    if case.startswith("compare_record_"):  # a record file edited by hand: checked when read
        src = sorted((good / "records").glob("*.json"))[0]
        rec = json.loads(src.read_text())
        ttft, needle = rec["stages"]["ttft"], ""
        if case == "compare_record_string_median":
            ttft["median"], needle = str(ttft["median"]), "stages.ttft.median must be float"
        elif case == "compare_record_newer_schema":
            rec["schema_version"], needle = 99, "schema_version 99"
        elif case == "compare_record_ttft_below_its_stages":  # median and samples edited alike
            ttft["samples"] = [x / 10 for x in ttft["samples"]]
            for k in ("median", "mean", "p10", "p90", "ci_low", "ci_high"):
                ttft[k] = None if ttft[k] is None else ttft[k] / 10
            needle = "TTFT contains that stage"
        elif case == "compare_record_bad_status":
            rec["status"], needle = "great", "status must be one of ok, error, skipped"
        elif case == "compare_record_n_mismatch":
            ttft["n"], needle = ttft["n"] + 7, "samples"
        elif case == "compare_record_median_not_of_samples":
            ttft["median"] = ttft["p10"] = ttft["median"] * 0.5
            needle = "is not the median of its samples"
        (cwd / "edited.json").write_text(json.dumps(rec))
        return ["compare", str(cwd / "edited.json"), str(src)], 2, ["edited.json", "not a valid record", needle]
    if case == "accuracy_import_nothing_readable":
        return ["accuracy", "import", str(cwd / "nope"), "--out", str(cwd / "acc.csv")], 1, ["nope: no such file or folder"]
    if case == "gate_key_typo":
        return ["gate", str(good), "--config", str(_gate_config(cwd / "g.yaml", "s"))], 2, \
            ["matched_resolutions", "valid:", "matched_resolution"]
    if case == "gate_select_typo":
        cfg = cwd / "g.yaml"
        cfg.write_text(_gate_config(cwd / "g.yaml").read_text().replace("select:", "selct:"))
        return ["gate", str(good), "--config", str(cfg)], 2, ["selct"]
    if case == "gate_empty_folder":
        (cwd / "empty").mkdir()
        return ["gate", str(cwd / "empty"), "--config", str(_gate_config(cwd / "g.yaml"))], 2, ["empty"]
    if case == "gate_failed_check":  # a real failure: exit 1 (the verdict line, no error line needed)
        return ["gate", str(good), "--config", str(_gate_config(cwd / "g.yaml"))], 1, []
    raise AssertionError(case)


CASES = ["sweep_name_escapes", "sweep_missing_checkpoint", "sweep_checkpoint_without_weights",
         "sweep_cuda_without_gpu", "sweep_negative_timing", "sweep_unknown_key",
         "sweep_unknown_encoder", "sweep_results_dir_is_a_file", "collect_missing_dir", "collect_unknown_flag",
         "collect_dir_is_a_file", "report_missing_dir", "report_missing_columns", "report_unknown_flag",
         "compare_missing_candidate", "compare_no_common_points", "compare_bad_threshold",
         "accuracy_import_nothing_readable", "gate_key_typo", "gate_select_typo", "gate_empty_folder",
         "gate_failed_check",
         # issue 23 (19 more)
         "sweep_timing_target_percent", "sweep_unquoted_space", "compare_noise_floor_percent",
         "compare_threshold_percent", "compare_threshold_negative", "compare_noise_floor_nan",
         "compare_metric_threshold_percent", "compare_confidence_percent", "compare_point_twice",
         "compare_strict_disturbed", "compare_strict_budget", "gate_strict_disturbed",
         "compare_record_string_median", "compare_record_newer_schema", "compare_record_ttft_below_its_stages",
         "compare_record_bad_status", "compare_record_n_mismatch", "compare_record_median_not_of_samples"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_harmless(case, work):
    res, cwd = work
    if case == "sweep_cuda_without_gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    args, code, needles = _case_args(case, res, cwd)
    before_res, before_cwd = tree(res), tree(cwd)
    p = run_cli(args, cwd=cwd)
    if code == 1 and not needles:
        assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr and "GATE FAIL" in p.stdout
    else:
        assert_one_line(p, code, *needles)
    assert tree(res) == before_res, "good results changed"
    assert tree(cwd) == before_cwd, "something was written outside the results folder"
    assert not (res.parent / "escaped").exists() and not (cwd / "nonexistent_dir").exists()
    assert not (cwd / "rep").exists(), "a partial report folder was left behind"


# ---- 1. the point id covers every knob that changes a measurement ---------------------------
def test_projector_and_checkpoint_are_part_of_the_point_id(work):
    res, cwd = work
    base = [*FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit"]
    p = run_cli([*base, "projector=linear"], cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "already measured" not in p.stdout + p.stderr  # a different model: measured
    df = pd.read_csv(res / "good" / "results.csv")
    vit = df[df.encoder == "tiny_vit"]
    assert sorted(vit.projector) == ["linear", "mlp2x_gelu"] and set(vit.status) == {"ok"}
    assert vit.point_id.nunique() == 2
    assert {"checkpoint", "checkpoint_fingerprint", "setting_timing_min_repeats", "setting_count_flops"} <= set(df)
    # an error record of a bad projector gets its own id: it can never replace the good one
    good_files = tree(res / "good" / "records")
    p = run_cli([*base, "projector=foo", "force=true"], cwd=cwd)
    assert p.returncode == 0
    after = tree(res / "good" / "records")
    assert all(after[k] == v for k, v in good_files.items()) and len(after) == len(good_files) + 1


def test_checkpoint_identity_changes_with_path_and_content(tmp_path):
    from bench.measure.checkpoint_id import checkpoint_identity

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"x" * 10)
    path, fp1 = checkpoint_identity(str(ck))
    assert path == str(ck.resolve())
    os.utime(ck / "model.safetensors", ns=(1, 1))
    assert checkpoint_identity(str(ck))[1] != fp1
    a = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu")
    b = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu", checkpoint=path, checkpoint_fingerprint=fp1)
    c = PointConfig("tiny_vit", 64, "qwen2_tiny", "fp32", "cpu", projector="linear")
    assert len({a.point_id(), b.point_id(), c.point_id()}) == 3
    # points measured before these keys existed keep their ids (resume survives the upgrade)
    from bench.results.records import _LATER_KEYS

    assert {"projector", "checkpoint", "checkpoint_fingerprint"} <= set(_LATER_KEYS)
    old_keys = [k for k in POINT_KEYS if k not in _LATER_KEYS]
    old = hashlib.sha1(json.dumps({k: getattr(a, k) for k in old_keys}, sort_keys=True).encode()).hexdigest()[:12]
    assert a.point_id() == old


# ---- 3. a corrupt record is named, moved aside, re-measured; the good ones are collected ---
def test_corrupt_record_is_named_skipped_and_remeasured(work):
    res, cwd = work
    root = res / "good"
    recs = sorted((root / "records").glob("*.json"))
    victim = recs[0]
    good_other = {recs[1].name: recs[1].read_bytes()}
    victim.write_text(victim.read_text()[:200])  # truncated: "Unterminated string"
    p = run_cli(["report", str(root), "--out", str(cwd / "rep")], cwd=cwd)
    assert p.returncode == 0 and victim.name in p.stderr and "Traceback" not in p.stderr
    assert victim.exists()  # report only reads: it skips, never moves
    p = run_cli(["collect", str(root)], cwd=cwd)
    line = assert_one_line(p, 1, "corrupt")
    assert victim.name in p.stderr and "Traceback" not in p.stderr, line
    assert (root / "records" / "corrupt" / victim.name).exists() and not victim.exists()
    assert len(pd.read_csv(root / "results.csv")) == 1  # the good record was collected
    p = run_cli(["collect", str(root), "--keep-going"], cwd=cwd)
    assert p.returncode == 0
    # resume measures the lost point again
    p = run_cli(["-m", *FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit,tiny_convnext"], cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (p.stdout + p.stderr).count("already measured") == 1 and victim.exists()
    assert json.loads(victim.read_text())["status"] == "ok"
    assert {k: (root / "records" / k).read_bytes() for k in good_other} == good_other


# ---- 4. concurrent sweeps: a point is claimed before it is measured -------------------------
def test_a_live_claim_is_respected_and_a_stale_one_taken_over(work):
    res, cwd = work
    args = [*FAST, "name=c", f"results_dir={res}", "encoder=tiny_vit"]
    from bench.config import BenchConfig, EncoderConf, LLMConf
    from bench.measure.scenario import resolve_point

    point = resolve_point(BenchConfig(encoder=EncoderConf("tiny_vit"), llm=LLMConf("qwen2_tiny"), resolution=64,
                                      device="cpu", dtype="auto"))
    claim = res / "c" / "records" / f"{point.point_id()}.claim"
    claim.parent.mkdir(parents=True)
    me = psutil.Process()  # a live owner on this host: this test process
    claim.write_text(json.dumps({"pid": me.pid, "host": socket.gethostname(), "started": me.create_time(),
                                 "time": "now"}))
    p = run_cli(args, cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"pid {me.pid}" in p.stdout + p.stderr and "claimed" in p.stderr  # logged, and in the summary
    assert not (res / "c" / "records" / f"{point.point_id()}.json").exists() and claim.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 1.0, "time": "then"}))
    p = run_cli(args, cwd=cwd)
    assert p.returncode == 0 and "stale claim" in p.stdout + p.stderr, p.stderr[-3000:]
    assert json.loads((res / "c" / "records" / f"{point.point_id()}.json").read_text())["status"] == "ok"
    assert not claim.exists()  # released after measuring


def test_two_concurrent_sweeps_measure_each_point_once(tmp_path):
    res = tmp_path / "results"
    args = ["-m", *FAST, "name=both", f"results_dir={res}", "encoder=tiny_vit,tiny_convnext",
            "resolution=32,64", "timing.min_seconds=0.5", "timing.max_repeats=1000"]
    procs = [start_cli(args, cwd=tmp_path) for _ in range(2)]  # forked once the imports are done
    outs = ["".join(pr.communicate(timeout=600)) for pr in procs]
    assert all(pr.returncode == 0 for pr in procs), outs
    measured = sum(o.count("/records/") for o in outs)  # one "-> .../records/<id>.json" per measured point
    assert measured == 4, outs
    assert len(list((res / "both" / "records").glob("*.json"))) == 4
    assert not list((res / "both" / "records").glob("*.claim"))
    assert len([d for d in (res / "both" / "hydra").iterdir() if d.is_dir()]) == 2  # one hydra/ folder per run


# ---- 5./6. errors that used to end in a traceback or a silent success; file modes ----------
def test_cuda_without_gpu_in_a_grid_is_skipped_not_fatal(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = run_cli(["-m", *FAST, "name=g", f"results_dir={tmp_path}", "encoder=tiny_vit", "device=cuda,cpu"],
                cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "unavailable" in p.stderr
    df = pd.read_csv(tmp_path / "g" / "results.csv")
    assert list(df.device) == ["cpu"] and list(df.status) == ["ok"]


def test_result_files_follow_the_umask(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", *FAST, "name=m", f"results_dir={tmp_path}",
                        "encoder=tiny_convnext"], cwd=tmp_path, capture_output=True, text=True,
                       preexec_fn=lambda: os.umask(0o022), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    files = [*(tmp_path / "m" / "records").glob("*.json"), tmp_path / "m" / "results.csv",
             tmp_path / "m" / "results.parquet"]
    assert len(files) == 3 and all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs filled to the brim (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _fill(mnt: Path) -> None:
    try:
        with open(mnt / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:  # ENOSPC: full, as wanted
        pass


def test_full_disk_is_one_line_naming_the_file(good, full_disk, tmp_path):
    shutil.copytree(good / "records", full_disk / "good" / "records")
    shutil.copy(good / "results.csv", full_disk / "good" / "results.csv")
    _fill(full_disk)
    before = tree(full_disk / "good")
    p = run_cli(["collect", str(full_disk / "good")], cwd=tmp_path)
    assert_one_line(p, 1, "cannot write", str(full_disk / "good" / "results.csv"), "No space left")
    assert tree(full_disk / "good") == before
    # a sweep: Hydra's own files and our records on the full disk
    p = run_cli([*FAST, "name=good", f"results_dir={full_disk}", "encoder=tiny_vit", "projector=linear"],
                cwd=tmp_path)
    assert_one_line(p, 1, "cannot write", str(full_disk), "No space left")
    # only the records on the full disk, Hydra's folder elsewhere
    p = run_cli([*FAST, "name=good", f"results_dir={full_disk}", "encoder=tiny_vit", "projector=linear",
                 f"hydra.sweep.dir={tmp_path / 'hyd'}"], cwd=tmp_path)
    assert_one_line(p, 1, "cannot write", str(full_disk / "good" / "records"), "No space left")
    assert tree(full_disk / "good") == before
