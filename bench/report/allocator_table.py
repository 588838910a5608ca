"""The report's allocator table (``sweep=allocators``, issue 33): which allocator to deploy with.

On a CPU the allocator moves a latency by 3-70 % (bench.measure.allocator), so a user asks which
one to deploy with. One row per system (encoder, resolution, LLM and the rest of the point)
and allocator: the medians of vision latency and TTFT with their 95 % intervals, the ratio to
the same system under the default allocator, and for an allocator that was not installed on
the measuring machine the row says so, with the reason from its ``skipped`` record.
Only drawn when the rows hold more than one allocator.
"""
from __future__ import annotations

import pandas as pd

SECTION = "Latency by memory allocator"
TEXT = ("Each system under every allocator (allocator=glibc | glibc_held | tcmalloc | jemalloc; the manual's "
        "page docs/cpu-allocator.md), each measured by a process started under it. Medians with their 95 % intervals; "
        "ratio = this allocator / the default (glibc_held) on the same system, below 1 is faster. Allocators "
        "that were not installed are listed as skipped with the reason.")
_SYSTEM = ["encoder", "resolution", "llm", "dtype", "device", "threads", "batch_size", "backend"]
_STAGES = ["vision_latency", "ttft"]


def _interval(row, stage: str):
    lo, hi = row.get(f"{stage}_ci_low_ms"), row.get(f"{stage}_ci_high_ms")
    if pd.isna(row.get(f"{stage}_ms")):
        return None
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{row[f'{stage}_ms']:.1f}"
    return f"{row[f'{stage}_ms']:.1f} [{lo:.1f}, {hi:.1f}]"


def allocator_table(df: pd.DataFrame, default: str = "glibc_held") -> pd.DataFrame:
    """One row per system and allocator (empty when the rows hold fewer than two allocators)."""
    if "allocator" not in df.columns or df["allocator"].dropna().nunique() < 2:
        return pd.DataFrame()
    keys = [k for k in _SYSTEM if k in df.columns]
    rows = []
    for _, r in df.sort_values(keys + ["allocator"]).iterrows():
        out = {k: r[k] for k in keys}
        out["allocator"] = r["allocator"]
        out["status"] = r["status"]
        for stage in _STAGES:
            if f"{stage}_ms" in df.columns and df[f"{stage}_ms"].notna().any():
                out[f"{stage}_ms [95 % CI]"] = _interval(r, stage) if r["status"] == "ok" else None
        base = df[(df["allocator"] == default) & (df["status"] == "ok")]
        for k in keys:
            base = base[base[k].astype(str) == str(r[k])]
        stage = "ttft" if "ttft_ms" in df.columns and pd.notna(r.get("ttft_ms")) else "vision_latency"
        ratio = (float(r[f"{stage}_ms"]) / float(base[f"{stage}_ms"].iloc[0])
                 if r["status"] == "ok" and len(base) and pd.notna(r.get(f"{stage}_ms")) else None)
        out[f"{stage} ratio to {default}"] = None if ratio is None else round(ratio, 3)
        out["library"] = r.get("allocator_library")
        out["note"] = r["message"] if r["status"] != "ok" else None
        rows.append(out)
    return pd.DataFrame(rows)
