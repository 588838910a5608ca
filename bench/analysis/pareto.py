"""Pareto frontiers and benchmark averages for efficiency/accuracy trade-offs."""
from __future__ import annotations

import logging
from typing import Sequence, Tuple

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: The paper's Avg-5: mean of GQA, TextVQA, POPE, DocVQA and SeedBench-I.
AVG5: Tuple[str, ...] = ("gqa", "textvqa", "pope", "docvqa", "seedbench_img")
GROUP_KEYS = ("encoder", "resolution", "llm", "source")


def pareto_front(df: pd.DataFrame, x: str = "ttft_ms", y: str = "accuracy",
                 minimize_x: bool = True, maximize_y: bool = True) -> pd.Series:
    """Which rows of ``df`` lie on the Pareto frontier of (``x``, ``y``).

    A row is dominated when another row is at least as good in both x and y and strictly
    better in one. Equal points are therefore both on the frontier; a point with the same x
    but a worse y is dominated. Rows with a missing x or y are not compared: they get False
    and their index labels are listed in ``result.attrs["excluded"]`` (and logged).
    Returns a boolean Series aligned with ``df.index``.
    """
    for col in (x, y):
        if col not in df.columns:
            raise KeyError(f"pareto_front: column {col!r} not in table (columns: {list(df.columns)})")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    valid = np.isfinite(xs) & np.isfinite(ys)
    # Turn both into "smaller is better".
    a = xs if minimize_x else -xs
    b = -ys if maximize_y else ys
    on_front = np.zeros(len(df), dtype=bool)
    idx = np.flatnonzero(valid)
    if len(idx):
        av, bv = a[idx][:, None], b[idx][:, None]
        # dominates[j, i]: point j dominates point i.
        no_worse = (av <= av.T) & (bv <= bv.T)
        strictly = (av < av.T) | (bv < bv.T)
        dominated = (no_worse & strictly).any(axis=0)
        on_front[idx] = ~dominated
    result = pd.Series(on_front, index=df.index, name="pareto")
    excluded = list(df.index[~valid])
    result.attrs["excluded"] = excluded
    if excluded:
        log.info("pareto_front: %d row(s) without %s or %s left out: %s", len(excluded), x, y, excluded)
    return result


def avg_accuracy(acc_long: pd.DataFrame, benchmarks: Sequence[str] = AVG5) -> pd.DataFrame:
    """Mean accuracy over ``benchmarks`` per (encoder, resolution, llm, source).

    Paper-reported rows are also kept apart by ``origin`` (the paper lists one configuration
    several times, trained on different data). A group gets an average only when every chosen
    benchmark is present; otherwise ``accuracy`` is NaN and ``missing`` lists what is absent.
    Several values for one benchmark in a group (e.g. two metrics) are averaged first, and
    ``n_values`` says how many rows went in. Columns: encoder, resolution, llm, source,
    origin, accuracy, n_benchmarks, missing, n_values, benchmark (e.g. "avg5"), metric
    ("mean of ..."); so the rows also fit the accuracy long format.
    """
    benchmarks = tuple(b.lower() for b in benchmarks)
    cols = list(GROUP_KEYS) + ["origin", "accuracy", "n_benchmarks", "missing", "n_values", "benchmark",
                               "metric"]
    if acc_long is None or acc_long.empty:
        return pd.DataFrame(columns=cols)
    df = acc_long[acc_long["benchmark"].isin(benchmarks)].copy()
    all_groups = acc_long.copy()
    for frame in (df, all_groups):
        frame["_variant"] = np.where(frame["source"] == "paper-reported", frame["origin"].astype(str), "")
    keys = list(GROUP_KEYS) + ["_variant"]
    label = avg_label(benchmarks)
    rows = []
    for key, grp in all_groups.groupby(keys, sort=True, dropna=False):
        sel = df
        for k, v in zip(keys, key):
            sel = sel[sel[k] == v]
        per_bench = sel.groupby("benchmark")["accuracy"].mean()
        missing = [b for b in benchmarks if b not in per_bench.index or pd.isna(per_bench.get(b))]
        acc = float(per_bench[list(benchmarks)].mean()) if not missing else np.nan
        origin = ";".join(sorted(set(grp["origin"].astype(str)))) if key[-1] == "" else key[-1]
        rows.append(dict(zip(GROUP_KEYS, key[:-1]), origin=origin, accuracy=acc,
                         n_benchmarks=len(benchmarks) - len(missing), missing=",".join(missing),
                         n_values=len(sel), benchmark=label,
                         metric="mean of " + ",".join(benchmarks)))
    out = pd.DataFrame(rows, columns=cols)
    n_missing = int(out["accuracy"].isna().sum())
    if n_missing:
        log.debug("avg_accuracy: %d configuration(s) lack some of %s", n_missing, benchmarks)
    return out


def avg_label(benchmarks: Sequence[str]) -> str:
    benchmarks = tuple(b.lower() for b in benchmarks)
    if benchmarks == AVG5:
        return "avg5"
    return "avg(" + ",".join(benchmarks) + ")"
