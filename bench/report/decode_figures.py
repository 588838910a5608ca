"""Report figures of the decode axis (``decode_tokens``) and of throughput under batching.

Registered in the report's figure registry (:func:`bench.report.figures.register_figure`) like
every figure; each draws only from rows that decoded (``tpot_ms`` / ``e2e_ms`` filled) and
returns nothing otherwise, so a sweep without decode gets the report it always had.

- ``latency_throughput_figure``: output tokens/s against per-request latency (E2E), one line
  per encoder (and resolution, LLM, answer length) through its batch sizes -- vLLM's
  ``plot_pareto`` (vllm-project/vllm, ``benchmarks/auto_tune/plot_pareto.py``: throughput
  against latency, one point per configuration), with the encoder as the line.
- ``tpot_vs_tokens_figure``: TPOT (median and its 95 % interval) against visual tokens, one
  line per encoder: each visual token is a KV-cache position every decode step reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .figures import Caption, _log_axis, finish_lines, register_figure, save

SECTION = "Decode and throughput: TTFT, TPOT, E2E"
_LINE_KEYS = ["encoder", "resolution", "llm", "decode_tokens"]


def _decoded(ok: pd.DataFrame, col: str) -> pd.DataFrame:
    if col not in ok.columns:
        return ok.iloc[0:0]
    return ok[pd.to_numeric(ok[col], errors="coerce").notna()]


def _keys(df: pd.DataFrame, extra: List[str]) -> List[str]:
    return [k for k in _LINE_KEYS + extra if k in df.columns]


@register_figure(SECTION)
def latency_throughput_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    data = _decoded(ok, "output_tokens_per_s")
    data = data[pd.to_numeric(data["e2e_ms"], errors="coerce").notna()] if len(data) else data
    if data.empty or data["batch_size"].nunique() < 2:
        return []  # not a batch sweep: one point per line is no curve
    keys = _keys(data, ["dtype", "device"])
    g = data.groupby(keys + ["batch_size"], as_index=False).agg(
        e2e_ms=("e2e_ms", "median"), output_tokens_per_s=("output_tokens_per_s", "median"),
        requests_per_s=("requests_per_s", "median"))
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    markers = "osD^vP*X"
    for i, (line, grp) in enumerate(g.groupby(keys, sort=True)):
        grp = grp.sort_values("batch_size")
        d = dict(zip(keys, line))
        label = f"{d['encoder']}@{d['resolution']} + {d['llm']}, {d['decode_tokens']} tokens"
        ax.plot(grp["e2e_ms"], grp["output_tokens_per_s"], marker=markers[i % len(markers)], lw=1.5, ms=5,
                label=label)
        for _, r in grp.iterrows():
            ax.annotate(f"b{int(r['batch_size'])}", (r["e2e_ms"], r["output_tokens_per_s"]), fontsize=7.5,
                        xytext=(4, 3), textcoords="offset points", color="0.3")
    finish_lines(fig, ax, g["e2e_ms"], "x", "per-request latency, E2E: image tensor in -> last token out (ms, median)",
                 "output tokens/s (batch x tokens / E2E)", "Latency-throughput under batching, one line per encoder")
    return [(save(fig, fig_dir, "latency_throughput"),
             "Output tokens/s against per-request latency (E2E median) through batch sizes (labels bN): up and "
             "to the left is better; a line ends where memory or the per-point budget ended the batch ladder.")]


@register_figure(SECTION)
def tpot_vs_tokens_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    data = _decoded(ok, "tpot_ms")
    if data.empty:
        return []
    data = data[data["batch_size"] == data["batch_size"].min()] if "batch_size" in data else data
    keys = [k for k in ("encoder", "llm", "decode_tokens") if k in data.columns]
    g = data.groupby(keys + ["visual_tokens"], as_index=False).agg(
        tpot_ms=("tpot_ms", "median"), lo=("tpot_ci_low_ms", "median"), hi=("tpot_ci_high_ms", "median"))
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    markers = "osD^vP*X"
    for i, (line, grp) in enumerate(g.groupby(keys, sort=True)):
        grp = grp.sort_values("visual_tokens")
        d = dict(zip(keys, line if isinstance(line, tuple) else (line,)))
        yerr = None
        if grp[["lo", "hi"]].notna().all().all():
            yerr = np.vstack([grp["tpot_ms"] - grp["lo"], grp["hi"] - grp["tpot_ms"]]).clip(min=0)
        ax.errorbar(grp["visual_tokens"], grp["tpot_ms"], yerr=yerr, marker=markers[i % len(markers)], capsize=3,
                    lw=1.5, ms=5, label=f"{d.get('encoder')} + {d.get('llm')}")
    if g["visual_tokens"].max() / max(g["visual_tokens"].min(), 1) > 20:
        _log_axis(ax, "x", time=False)
    ax.set_xlabel("visual tokens (KV-cache positions before the prompt)")
    ax.set_ylabel("TPOT: mean decode step after the first token (ms, median)")
    ax.set_title("TPOT vs visual tokens")
    ax.legend(title="encoder", loc="best", framealpha=0.9)
    fig.tight_layout()
    return [(save(fig, fig_dir, "tpot_vs_visual_tokens"),
             "TPOT (median over iterations of each answer's mean step, with its 95 % interval) by visual tokens, "
             "at the smallest batch size: every decode step reads the visual tokens' KV cache.")]
