"""Results store: atomic writes, consolidated CSV/Parquet readable by pandas, resume checks."""
import json
import os

import pandas as pd
import pytest

from bench.records import PointConfig, Record, StageStats, samples_from_cell
from bench.store import ResultsStore, atomic_write_text, load_table


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
