"""Issue 23 through the real CLI: records checked when read, signals handled alike, inputs that
cannot fit, stale arrivals, and compare/gate that say when their own records doubt a run.
Real subprocesses, real Hydra sweeps of the tiny models, real files; the bad-input table is in
tests/test_reliability.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import COMMANDS, main
from bench.results.store import load_table
from conftest import FAST, run_cli
from test_reliability import assert_one_line


# ---- 1. every subcommand's --help -----------------------------------------------------------
HELP = [[], *[[c] for c in COMMANDS], ["accuracy", "import"], ["accuracy", "run"]]


@pytest.mark.parametrize("argv", HELP, ids=lambda a: " ".join(a) or "top")
def test_every_subcommand_has_a_help(argv, capsys):
    """``compare --help`` used to be a traceback (the noise-floor rule's % signs in its help)."""
    try:
        rc = main([*argv, "--help"])
    except SystemExit as exc:  # argparse's --help exits 0
        rc = exc.code
    out = capsys.readouterr()
    assert rc in (0, None) and "Traceback" not in out.err, out.err
    assert "usage:" in out.out or "fastvlm-bench" in out.out


# ---- 2. records checked when read -----------------------------------------------------------
@pytest.fixture
def copy_of_good(tmp_path, good):
    res = tmp_path / "results"
    shutil.copytree(good, res / "good")
    return res


def test_records_that_contradict_themselves_are_moved_aside_and_measured_again(copy_of_good, tmp_path):
    """A record edited by hand (TTFT below its own stages) is not resumed as measured, a copy under
    another name does not become a second row, and a string median is no traceback."""
    res = copy_of_good
    records = res / "good" / "records"
    edited, other = sorted(records.glob("*.json"))
    rec = json.loads(edited.read_text())
    ttft = rec["stages"]["ttft"]
    for k in ("median", "mean", "p10", "p90", "ci_low", "ci_high"):
        ttft[k] = None if ttft[k] is None else ttft[k] / 10
    ttft["samples"] = [x / 10 for x in ttft["samples"]]
    edited.write_text(json.dumps(rec))
    shutil.copy(other, records / "0123456789ab.json")  # the same point under another name
    other_bytes = other.read_bytes()
    p = run_cli(["-m", *FAST, "name=good", f"results_dir={res}", "encoder=tiny_vit,tiny_convnext"], cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert out.count("already measured") == 1  # the other point; the edited one was measured again
    assert edited.name in out and "TTFT contains that stage" in out and "0123456789ab.json" in out
    assert (records / "corrupt" / edited.name).exists() and (records / "corrupt" / "0123456789ab.json").exists()
    assert json.loads(edited.read_text())["status"] == "ok" and other.read_bytes() == other_bytes
    df = pd.read_csv(res / "good" / "results.csv")
    assert len(df) == 2 and df.point_id.is_unique
    # a median that is a string: collect names it and moves it, one error line, no traceback
    rec = json.loads(other.read_text())
    rec["stages"]["ttft"]["median"] = "fast"
    other.write_text(json.dumps(rec))
    p = run_cli(["collect", str(res / "good")], cwd=tmp_path)
    assert_one_line(p, 1, "corrupt")
    assert other.name in p.stderr and "stages.ttft.median must be float" in p.stderr
    assert (records / "corrupt" / other.name).exists() and len(pd.read_csv(res / "good" / "results.csv")) == 1


def test_records_other_features_write_are_accepted(good):
    """Validate what is there: unknown optional stages, extra fields, a null TTFT of an
    encoder-only row and a schema-1 record (no schema_version) are records, not corruption."""
    from bench.results.validate import problems_of

    src = sorted((good / "records").glob("*.json"))[0]
    rec = json.loads(src.read_text())
    assert problems_of(rec, src.stem) == []
    rec["stages"]["merge"] = dict(rec["stages"]["projector"])  # a stage another feature adds
    rec["decode_tokens_per_s"] = 12.5  # a field another feature adds
    rec["stages"]["prefill"] = None
    assert problems_of(rec) == []
    del rec["schema_version"]
    assert problems_of(rec) == []
    enc_only = json.loads(src.read_text())
    enc_only["config"]["llm"] = "none"
    for k in ("ttft", "prefill", "projector"):
        enc_only["stages"].pop(k)
    assert problems_of(enc_only) == []
    enc_only["config"]["llm"] = "qwen2_tiny"  # an ok record with an LLM but no TTFT is not
    assert any("no ttft" in p for p in problems_of(enc_only))


# ---- 4. signals other than SIGTERM ----------------------------------------------------------
def _start_until_claimed(args, records: Path, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def default_signals():  # a test runner started in the background (nohup, `cmd &`) ignores them
        for s in (signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_signals)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(records.glob("*.claim")):
        time.sleep(0.05)
    time.sleep(1.0)  # into the timed loop
    return proc


def test_sighup_and_sigint_end_a_point_like_sigterm_and_the_same_command_resumes(tmp_path):
    """SIGHUP (a closed terminal) used to kill the run silently with a stale claim; SIGINT printed
    a KeyboardInterrupt traceback with exit 1. Both: one line, an error record naming the
    signal, the claim released, exit 129 / 130; the same command measures the point again."""
    args = [*FAST, "name=sig", f"results_dir={tmp_path / 'r'}", "encoder=tiny_vit", "timing.max_repeats=100000",
            "timing.max_seconds=60", "timing.min_seconds=60"]
    records = tmp_path / "r" / "sig" / "records"
    for sig, code in ((signal.SIGHUP, 129), (signal.SIGINT, 130)):
        proc = _start_until_claimed(args, records, tmp_path)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err[-3000:]
        assert time.monotonic() - t0 < 20 and "Traceback" not in out + err, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("fastvlm-bench: error: ") and f"interrupted by {sig.name}" in last, last
        assert not list(records.glob("*.claim"))
        (rec,) = [json.loads(p.read_text()) for p in records.glob("*.json")]
        assert rec["status"] == "error" and f"interrupted by {sig.name}" in rec["message"]
        # the second round (SIGINT) is the same command resuming: it measured the point again


def test_a_signal_that_lands_in_a_finaliser_is_not_lost():
    """The SIGTERM race: a handler that raises inside a ``__del__`` (torch.multiprocessing's, or
    any run by the garbage collector) has its exception printed and dropped, and the run went
    on to exit 0. The signal is now kept and raised when the guarded block ends."""
    from bench.measure.interrupt import PointInterrupted, interrupt_on_signals

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, inside __del__

    with pytest.raises(PointInterrupted, match="SIGTERM"):
        with interrupt_on_signals():
            SignalledWhileCollected()  # collected at once: __del__ runs, the signal lands there
            time.sleep(0.05)


# ---- 3. + 5. stale arrivals and inputs that cannot fit: one sweep ---------------------------
def test_stale_arrivals_do_not_count_and_a_batch_that_cannot_fit_is_skipped_at_once(tmp_path):
    """``.turn.arrivals`` naming pid 1 (alive, unrelated) used to count as a partner: the run
    started alone, silently, with turns_taken 0. And ``batch_size=100000000`` on the tiny models
    built and then hung for minutes (the memory check counted parameters only)."""
    turn = tmp_path / "ab.turn"
    Path(f"{turn}.arrivals").write_text("1\n1 12.0\n")  # an old-format line, and a start time that is not pid 1's
    res = tmp_path / "r"
    t0 = time.monotonic()
    p = run_cli(["-m", *FAST, "name=st", f"results_dir={res}", "encoder=tiny_vit", "batch_size=100000000,1",
                 f"timing.turns={turn}", "timing.turn_parties=2"], cwd=tmp_path,
                env={"FASTVLM_BENCH_TEST_ARRIVAL_TIMEOUT": "1"}, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "only 1 of timing.turn_parties=2" in out  # pid 1 is no partner
    assert "ran alone, not interleaved" in out
    df = load_table(res / "st").set_index("batch_size")
    big = df.loc[100000000]
    assert big.status == "skipped" and "KV cache" in big.message and "activations" in big.message
    assert df.loc[1].status == "ok" and df.loc[1].turns_taken == 0
    assert time.monotonic() - t0 < 240
    # compare does not treat a run that took no turns as interleaved
    js = tmp_path / "c.json"
    p = run_cli(["compare", str(res / "st"), str(res / "st"), "--json", str(js)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    comps = json.loads(js.read_text())["comparison"]["comparisons"]
    assert comps and not any(c["interleaved"] for c in comps) and all(c["method"] != "paired t" for c in comps)


# ---- 7. compare and gate say when their own records doubt a run ------------------------------
def test_compare_and_gate_flag_disturbed_runs_per_row_in_text_and_json(good, tmp_path):
    df = pd.read_csv(good / "results.csv")
    df["disturbed_iterations"] = [0, 0]  # this shared machine may have disturbed the good runs for real
    df.to_csv(tmp_path / "quiet.csv", index=False)
    df["disturbed_iterations"] = [5, 0]
    df.to_csv(tmp_path / "loaded.csv", index=False)
    js = tmp_path / "c.json"
    p = run_cli(["compare", str(tmp_path / "quiet.csv"), str(tmp_path / "loaded.csv"), "--json", str(js)],
                cwd=tmp_path)
    assert p.returncode == 0 and "Warning" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert "Quality" in p.stdout and any("candidate run 0: 5 disturbed iterations" in ln for ln in lines)
    assert lines[-1].startswith("OK (unreliable runs): ") and "not one to sign" in lines[-1]
    assert "bootstrap over iterations (one run per side)" in p.stdout and "hierarchical" not in p.stdout
    result = json.loads(js.read_text())["comparison"]
    assert result["flagged"] == 1 and result["flagged_runs"][0]["source"].endswith("loaded.csv")
    label = result["flagged_runs"][0]["label"]
    assert all(bool(c["quality"]) == (c["label"].startswith(label.split()[0])) for c in result["comparisons"])
    # gate: the row is named before the verdict, and in the JSON
    gjs = tmp_path / "g.json"
    cfg = tmp_path / "g.yaml"
    cfg.write_text("target: tiny_vit\nselect: {llm: qwen2_tiny}\ncheck_visual_tokens: true\n")
    p = run_cli(["gate", str(tmp_path / "loaded.csv"), "--config", str(cfg), "--json", str(gjs)], cwd=tmp_path)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "5 disturbed iterations" in p.stdout and "--strict refuses" in p.stdout
    assert json.loads(gjs.read_text())["flagged"] == 1
