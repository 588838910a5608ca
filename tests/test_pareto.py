"""Pareto frontier, benchmark averages, the efficiency/accuracy join and the paper layer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.accuracy.schema import ACCURACY_COLUMNS, AccuracyFormatError, read_accuracy
from bench.analysis.join import join_efficiency_accuracy
from bench.analysis.pareto import AVG5, avg_accuracy, pareto_front
from bench.analysis.reference import (paper_accuracy_long, paper_encoder_table, paper_points, paper_vlm_points,
                                      paper_vlm_table)
from bench.results.records import PointConfig, Record, StageStats


def _pts(xy, index=None):
    return pd.DataFrame(xy, columns=["ttft_ms", "accuracy"], index=index)


def _brute_force(df, x="ttft_ms", y="accuracy"):
    out = []
    for i, a in df.iterrows():
        if pd.isna(a[x]) or pd.isna(a[y]):
            out.append(False)
            continue
        dom = any((b[x] <= a[x] and b[y] >= a[y] and (b[x] < a[x] or b[y] > a[y]))
                  for j, b in df.iterrows() if j != i and pd.notna(b[x]) and pd.notna(b[y]))
        out.append(not dom)
    return out


def test_front_simple():
    df = _pts([(10, 50), (20, 60), (15, 55), (30, 58), (5, 40), (25, 70)])
    front = pareto_front(df)
    assert front.tolist() == [True, True, True, False, True, True]
    assert front.dtype == bool and front.index.equals(df.index)


def test_front_ties():
    # Two identical points: both on the front. Same x, worse y: dominated. Same y, slower: dominated.
    df = _pts([(10, 60), (10, 60), (10, 55), (12, 60), (8, 50)], index=list("abcde"))
    front = pareto_front(df)
    assert front.to_dict() == {"a": True, "b": True, "c": False, "d": False, "e": True}


def test_front_missing_values_excluded():
    df = _pts([(10, 60), (np.nan, 99), (5, np.nan), (20, 70), (None, None)], index=[3, 7, 9, 11, 13])
    front = pareto_front(df)
    assert front.to_dict() == {3: True, 7: False, 9: False, 11: True, 13: False}
    assert front.attrs["excluded"] == [7, 9, 13]
    # A missing point must not dominate anything: 99% accuracy without a time is ignored.
    assert front[3] and front[11]


def test_front_directions_and_errors():
    df = pd.DataFrame({"tok": [16, 64, 256], "acc": [55.0, 60.0, 59.0]})
    assert pareto_front(df, x="tok", y="acc").tolist() == [True, True, False]
    # Maximize x and minimize y: the opposite corner.
    assert pareto_front(df, x="tok", y="acc", minimize_x=False, maximize_y=False).tolist() == [True, False, True]
    with pytest.raises(KeyError, match="ttft_ms"):
        pareto_front(df)
    assert pareto_front(df.iloc[:0], x="tok", y="acc").empty


def test_front_matches_brute_force_random():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 25))
        # Coarse grid values so ties are frequent; some NaNs.
        xs = rng.integers(1, 6, n).astype(float)
        ys = rng.integers(1, 6, n).astype(float)
        xs[rng.random(n) < 0.1] = np.nan
        ys[rng.random(n) < 0.1] = np.nan
        df = _pts(np.column_stack([xs, ys]))
        assert pareto_front(df).tolist() == _brute_force(df)


def _acc_rows(encoder, res, llm, values, source="lmms-eval", origin="f.json"):
    return [dict(encoder=encoder, resolution=res, llm=llm, benchmark=b, metric="exact_match", accuracy=v,
                 source=source, origin=origin) for b, v in values.items()]


def test_avg5_complete_and_missing():
    full = dict(zip(AVG5, [60.0, 50.0, 80.0, 30.0, 65.0]))
    partial = {k: v for k, v in full.items() if k != "docvqa"}
    acc = pd.DataFrame(_acc_rows("fastvithd", 512, "qwen2_0.5b", full)
                       + _acc_rows("fastvithd", 512, "qwen2_0.5b", {"chartqa": 10.0})  # not in Avg-5
                       + _acc_rows("fastvithd", 1024, "qwen2_0.5b", partial)
                       + _acc_rows("fastvithd", 512, "qwen2_0.5b", full, source="user", origin="manual"))
    avg = avg_accuracy(acc)
    assert set(avg.columns) >= set(ACCURACY_COLUMNS) | {"missing", "n_benchmarks"}
    a = avg.set_index(["resolution", "source"])
    assert a.loc[(512, "lmms-eval"), "accuracy"] == pytest.approx(57.0)
    assert a.loc[(512, "user"), "accuracy"] == pytest.approx(57.0)
    assert np.isnan(a.loc[(1024, "lmms-eval"), "accuracy"])
    assert a.loc[(1024, "lmms-eval"), "missing"] == "docvqa"
    assert a.loc[(1024, "lmms-eval"), "n_benchmarks"] == 4
    # Other benchmark choice.
    two = avg_accuracy(acc, benchmarks=("gqa", "chartqa")).set_index(["resolution", "source"])
    assert two.loc[(512, "lmms-eval"), "accuracy"] == pytest.approx(35.0)
    assert two.loc[(1024, "lmms-eval"), "missing"] == "chartqa"


def test_avg5_reproduces_paper_avg5_column():
    """Our Avg-5 of the paper's Table 1/4 rows equals the paper's own avg5 column (to rounding: five values
    each rounded to 0.1, then the mean rounded: at most 0.1 apart)."""
    enc = paper_encoder_table().dropna(subset=["avg5"])
    avg = avg_accuracy(paper_accuracy_long())
    for _, r in enc.iterrows():
        hit = avg[(avg.encoder == r.encoder) & (avg.resolution == r.resolution) & (avg.llm == r.llm)
                  & avg.origin.str.contains(f"{r.encoder}@{r.resolution}")]
        assert len(hit) == 1, r.to_dict()
        assert hit.accuracy.iloc[0] == pytest.approx(r.avg5, abs=0.101), r.to_dict()
    # Table 6 lists one configuration under several training-data rows: kept apart by origin.
    r3 = avg[avg.origin.str.endswith("Table 6 R3")]
    r5 = avg[avg.origin.str.endswith("Table 6 R5")]
    assert r3.accuracy.iloc[0] == pytest.approx(np.mean([61.6, 57.4, 87.4, 61.0, 65.6]))
    assert r5.accuracy.iloc[0] == pytest.approx(np.mean([62.7, 65.8, 86.2, 79.1, 69.3]))


def _row(encoder, resolution, status, ttft_ms=None, dtype="fp16"):
    """A results-table row as the store writes it: ``Record(...).to_row()``."""
    cfg = PointConfig(encoder=encoder, resolution=resolution, llm="qwen2_0.5b", dtype=dtype, device="cuda",
                      batch_size=1)
    rec = Record(sweep="t", config=cfg, status=status)
    if ttft_ms is not None:
        rec.stages = {"ttft": StageStats(median=ttft_ms, mean=ttft_ms, p10=ttft_ms, p90=ttft_ms, iqr=0.0, std=0.0,
                                         n=1, samples=[ttft_ms])}
    return rec.to_row()


def _results():
    rows = [_row("fastvithd", 512, "ok", 40.0), _row("fastvithd", 1024, "ok", 90.0),
            _row("fastvithd", 768, "ok", 60.0), _row("vit_l14", 336, "error"),
            _row("fastvithd", 512, "skipped", dtype="fp32")]
    return pd.DataFrame(rows)


def test_join_with_unmatched_rows():
    res = _results()
    acc = pd.DataFrame(_acc_rows("fastvithd", 512, "qwen2_0.5b", {"gqa": 60.0, "pope": 85.0})
                       + _acc_rows("fastvithd", 1024, "qwen2_0.5b", {"gqa": 63.0})
                       + _acc_rows("vit_l14", 336, "qwen2_0.5b", {"gqa": 62.0})     # only an error row
                       + _acc_rows("convnext_l", 512, "qwen2_0.5b", {"gqa": 61.0}))  # never measured
    joined, um_res, um_acc = join_efficiency_accuracy(res, acc)
    assert len(joined) == 3
    assert set(zip(joined.resolution, joined.benchmark)) == {(512, "gqa"), (512, "pope"), (1024, "gqa")}
    assert (joined.status == "ok").all()
    assert {"ttft_ms", "accuracy", "source", "origin", "dtype"} <= set(joined.columns)
    assert joined.loc[joined.resolution == 1024, "accuracy"].item() == 63.0
    assert um_res[["encoder", "resolution"]].values.tolist() == [["fastvithd", 768]]
    assert sorted(um_acc.encoder) == ["convnext_l", "vit_l14"]


def test_join_normalizes_key_types():
    res = _results()
    res["resolution"] = res["resolution"].astype(float)  # e.g. read back from CSV with NaNs elsewhere
    acc = pd.DataFrame(_acc_rows(" fastvithd ", "512", "qwen2_0.5b", {"GQA": 60.0}))
    joined, um_res, um_acc = join_efficiency_accuracy(res, acc)
    assert len(joined) == 1 and joined.benchmark.item() == "gqa" and um_acc.empty


def test_read_accuracy_validation(tmp_path):
    good = tmp_path / "acc.csv"
    pd.DataFrame(_acc_rows("fastvithd", 512, "qwen2_0.5b", {"gqa": 60.0})).to_csv(good, index=False)
    df = read_accuracy(good)
    assert list(df.columns) == list(ACCURACY_COLUMNS)
    assert df.resolution.dtype == np.int64 and df.accuracy.dtype == np.float64
    bad = tmp_path / "bad.csv"
    bad.write_text("encoder,resolution,llm,benchmark,accuracy\nfastvithd,512,qwen2_0.5b,gqa,60\n")
    with pytest.raises(AccuracyFormatError, match=r"missing column\(s\) \['metric', 'source', 'origin'\]"):
        read_accuracy(bad)
    frac = tmp_path / "frac.csv"
    pd.DataFrame(_acc_rows("fastvithd", 512, "qwen2_0.5b", {"gqa": 160.0})).to_csv(frac, index=False)
    with pytest.raises(AccuracyFormatError, match="0-100"):
        read_accuracy(frac)
    src = tmp_path / "src.csv"
    pd.DataFrame(_acc_rows("fastvithd", 512, "qwen2_0.5b", {"gqa": 60.0}, source="measured")).to_csv(src, index=False)
    with pytest.raises(AccuracyFormatError, match="source"):
        read_accuracy(src)
    with pytest.raises(FileNotFoundError):
        read_accuracy(tmp_path / "absent.csv")


def test_paper_layer_is_labelled():
    for df in (paper_vlm_table(), paper_encoder_table(), paper_accuracy_long(), paper_points(),
               paper_vlm_points()):
        assert len(df) and (df["source"] == "paper-reported").all()
    pts = paper_points().set_index(["encoder", "resolution", "llm"])
    r = pts.loc[("fastvithd", 1024, "qwen2_0.5b")]
    assert (r.visual_tokens, r.ttft_ms, r.vision_latency_ms, r.prefill_ms) == (256, 166.0, 116.3, 50.5)
    # Reported only where the paper has it: ViTamin-L has a TTFT but no Table 10 split.
    v = pts.loc[("vitamin_l", 384, "vicuna_7b")]
    assert v.ttft_ms == 1308.0 and np.isnan(v.vision_latency_ms) and np.isnan(v.prefill_ms)
    assert np.isnan(pts.loc[("siglip_so400m", 384, "qwen2_0.5b")].ttft_ms)
    acc = paper_accuracy_long()
    assert set(acc.benchmark) >= set(AVG5) | {"mmmu", "sqa", "vqav2", "llava_bench_w", "mmvet"}
    assert acc.accuracy.between(0, 100).all()
