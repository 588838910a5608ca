"""Results store: atomic writes, consolidated CSV/Parquet readable by pandas, resume checks."""
import json
import os

import pandas as pd
import pytest

from bench.results.records import PointConfig, Record, StageStats, samples_from_cell
from bench.results.io import atomic_write_text
from bench.results.store import ResultsStore, load_table


def _record(res=336, status="ok", enc="fastvithd"):
    cfg = PointConfig(encoder=enc, resolution=res, llm="qwen2_0.5b", dtype="fp32", device="cpu", threads=2)
    st = StageStats(median=10.0, mean=10.5, p10=9.0, p90=12.0, iqr=1.5, std=0.9, n=3, samples=[9.0, 10.0, 12.5])
    stages = {k: st for k in ("vision_latency", "projector", "prefill", "ttft")} if status == "ok" else {}
    return Record(sweep="t", config=cfg, status=status, visual_tokens=36, stages=stages,
                  flops={"vision_latency": 2e9, "projector": 1e6, "prefill": 3e9, "ttft": 5.001e9})


def test_put_get_and_consolidate(tmp_path):
    store = ResultsStore(tmp_path / "t")
    for res in (256, 336):
        store.put(_record(res))
    store.put(_record(512, status="error"))
    df = store.consolidate()
    assert len(df) == 3
    csv = pd.read_csv(tmp_path / "t" / "results.csv")
    pq = pd.read_parquet(tmp_path / "t" / "results.parquet")
    assert list(csv["resolution"]) == [256, 336, 512] and len(pq) == 3
    row = csv[csv.resolution == 336].iloc[0]
    assert row["vision_latency_ms"] == 10.0 and row["ttft_p90_ms"] == 12.0
    assert samples_from_cell(row["ttft_samples_ms"]) == [9.0, 10.0, 12.5]
    assert row["vision_latency_achieved_tflops"] == pytest.approx(2e9 / 0.010 / 1e12)
    # errors keep nulls, not zeros
    err = csv[csv.resolution == 512].iloc[0]
    assert pd.isna(err["ttft_ms"]) and err["status"] == "error"
    assert len(load_table(tmp_path / "t")) == 3 and len(load_table(tmp_path / "t" / "results.csv")) == 3


def test_resume_semantics(tmp_path):
    store = ResultsStore(tmp_path)
    ok, err = _record(256), _record(336, status="error")
    store.put(ok)
    store.put(err)
    assert store.is_done(ok.point_id)
    assert not store.is_done(err.point_id)  # errors are retried
    assert not store.is_done("0" * 12)


def test_point_id_is_stable_and_distinguishes_knobs():
    a, b = _record(336), _record(336)
    assert a.point_id == b.point_id
    b.config.dtype = "bf16"
    assert a.point_id != b.point_id


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, json.dumps({"v": 1}))

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, json.dumps({"v": 2, "pad": "x" * 100000}))
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_load_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results"):
        load_table(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no records"):
        load_table(tmp_path / "empty")
    bad = tmp_path / "x.txt"
    bad.write_text("hi")
    with pytest.raises(ValueError, match="expected a results folder"):
        load_table(bad)


def _check_store_after_kill(root, finished_before):
    """Every record parses, each table file is one whole consolidation, no finished record lost."""
    recs = {}
    for path in (root / "records").glob("*.json"):
        rec = Record.from_dict(json.loads(path.read_text()))  # a torn file would fail here
        recs[rec.point_id] = (rec.status, path.read_text())
    for pid, text in finished_before.items():
        assert pid in recs and recs[pid][1] == text, f"finished record {pid} lost or changed"
    for name, read in (("results.csv", pd.read_csv), ("results.parquet", pd.read_parquet)):
        if (root / name).exists():
            df = read(root / name)  # parses whole: old or new table, never a mix
            assert set(df.point_id) <= set(recs) and df.point_id.is_unique
            assert len(df.columns) > 50 and not df.status.isna().any()
    return {pid: text for pid, (status, text) in recs.items() if status == "ok"}


def test_kill_9_at_random_moments_loses_no_finished_record(tmp_path):
    """SIGKILL a running local sweep 12 times at seeded random moments; resume after each kill.

    Each run is a process forked from one that has done the imports (tests/forkserver.py): what
    a kill -9 can tear is written by the run (records, tables, Hydra's folders), never by the
    imports, and a forked run writes its first record a second or two after it starts instead of
    ~10 s (12 fresh starts took 289 s in CI). ``FASTVLM_TESTS_FRESH_PROCESS=1``: fresh processes."""
    import random
    import shutil
    import signal
    import time

    from conftest import TINY, start_cli

    rng = random.Random(10)
    res = ",".join(str(16 * k) for k in range(2, 26))  # 24 tiny points, milliseconds each
    args = ["-m", *TINY, "name=k9", f"results_dir={tmp_path}", "encoder=tiny_vit",
            f"resolution={res}", "timing.min_repeats=1", "count_flops=false", "measure_peak=false", "threads=1"]
    root = tmp_path / "k9"
    finished, kills, hits, t0 = {}, 0, 0, time.monotonic()

    def n_records():
        return len(list((root / "records").glob("*.json"))) if (root / "records").is_dir() else 0

    startup = None  # seconds from launch to the first record, measured by the first run
    # Two kinds of moment, alternating. A blind one (a random time around the end of start-up
    # and into the first points) can land anywhere, start-up included. A watched one waits for
    # this process's first new record, then kills at a random moment of the next second, while
    # it writes further records and tables: on a slow, shared CI host the blind ones alone hit a
    # writing sweep only 4 times in 20 (start-up varies run to run), so two in three are aimed
    # at writes. The cap only stops a sweep that hangs.
    while kills < 12 and time.monotonic() - t0 < 600:
        n0 = n_records()
        proc = start_cli(args, quiet=True)  # forked, or fresh with FASTVLM_TESTS_FRESH_PROCESS=1
        if startup is None or kills % 3 != 0:
            t_launch = time.monotonic()
            while n_records() == n0 and proc.poll() is None and time.monotonic() - t_launch < 120:
                time.sleep(0.005)
            if startup is None:
                startup = time.monotonic() - t_launch
            time.sleep(rng.uniform(0, 1.0))
        else:  # blind: around the end of start-up and into the first points (a point every ~0.5-1.5 s)
            time.sleep(rng.uniform(0.4 * startup, startup + 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            hits += n_records() > n0  # this process had written records when it died
        proc.wait()
        finished = _check_store_after_kill(root, finished)
        if len(finished) == 24:  # all measured: start over so that the kills keep hitting writes
            shutil.rmtree(root)
            finished = {}
    assert kills >= 12, f"only {kills} kills in {time.monotonic() - t0:.0f} s"
    assert hits >= 6, f"only {hits} of {kills} kills hit a sweep that was writing records"
    print(f"kill -9: {kills} kills ({hits} after records were written; start-up {startup:.1f} s) in "
          f"{time.monotonic() - t0:.1f} s, "
          "no finished record lost")


def test_full_disk_while_writing_a_record_keeps_the_old_table(tmp_path):
    """A results folder on a full filesystem (a small tmpfs; root only): a clear error, and the
    old record and table stay intact, with no temporary file left."""
    import errno
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        root = mnt / "t"
        store = ResultsStore(root)
        old = _record(256)
        store.put(old)
        store.consolidate()
        csv_before, pq_before = (root / "results.csv").read_bytes(), (root / "results.parquet").read_bytes()
        big = _record(336)
        big.stages["ttft"] = StageStats(median=1, mean=1, p10=1, p90=1, iqr=0, std=0, n=40000,
                                        samples=[1.0 + i * 1e-7 for i in range(40000)])  # ~1 MB of JSON
        with pytest.raises(OSError) as exc:
            store.put(big)
        assert exc.value.errno == errno.ENOSPC and "No space left on device" in str(exc.value)
        assert [q.name for q in (root / "records").iterdir()] == [f"{old.point_id}.json"]
        with pytest.raises(OSError):  # fill what is left
            with open(mnt / "fill", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        with pytest.raises(OSError) as exc:
            store.consolidate()
        assert exc.value.errno == errno.ENOSPC
        assert (root / "results.csv").read_bytes() == csv_before  # the old table, whole
        assert (root / "results.parquet").read_bytes() == pq_before
        assert ResultsStore(root).get(old.point_id).to_json() == old.to_json()
        assert not list(mnt.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
