"""Token-reduction figures: TTFT against the visual tokens reaching the LLM, one line per method
(resolution scaling against pruning, one figure), and each method's own overhead.

Registered in the report's figure registry (:func:`bench.report.figures.register_figure`); both
draw nothing for a results set without a ``reduction`` other than ``none``, so other reports
are unchanged. A line is a (encoder, method) pair: points without reduction are lines per
encoder across resolutions (FastViTHD at 512/768/1024 px, ViT-L/14 at lower resolutions), points
with one are lines per method across its budgets.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import matplotlib.pyplot as plt
import pandas as pd

from . import figures as F

SECTION = "Token reduction: resolution scaling against pruning"


def _with_reduction(ok: pd.DataFrame) -> pd.DataFrame:
    """Rows of a results set with some token reduction, with ``llm_tokens``: the visual tokens
    the LLM computes, its layers' mean for a method inside the LLM (FastV), else its input's."""
    if "reduction" not in ok.columns or not (ok["reduction"].fillna("none") != "none").any():
        return ok.iloc[0:0]
    mean = ok["visual_tokens_llm_mean"] if "visual_tokens_llm_mean" in ok.columns else None
    llm_tokens = ok["visual_tokens"] if mean is None else mean.fillna(ok["visual_tokens"])
    return ok.assign(reduction=ok["reduction"].fillna("none"), llm_tokens=llm_tokens)


def line_label(encoder: str, reduction: str) -> str:
    return f"{encoder} (resolution)" if reduction == "none" else f"{encoder} + {reduction}"


def ttft_vs_llm_tokens(ok: pd.DataFrame, out_dir: Path, name: str = "ttft_vs_llm_tokens") -> Path:
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for (enc, red), g in ok.groupby(["encoder", "reduction"], sort=True):
        g = g.sort_values("llm_tokens")
        style = "-" if red == "none" else "--"
        marker = "o" if red == "none" else "s"
        ax.plot(g["llm_tokens"], g["ttft_ms"], style, marker=marker, label=line_label(enc, red))
        if red == "none":
            for x, y, r in zip(g["llm_tokens"], g["ttft_ms"], g["resolution"]):
                ax.annotate(f"{int(r)}px", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    F._log_axis(ax, "x", time=False)
    F._log_axis(ax, "y")
    ax.set_xlabel("visual tokens reaching the LLM (FastV: mean over its layers; count, log scale)")
    ax.set_ylabel("TTFT (ms, median, log scale)")
    ax.set_title("TTFT vs visual tokens reaching the LLM")
    ax.legend(fontsize=7.5, loc="best")
    return F.save(fig, out_dir, name)


def overhead_bars(ok: pd.DataFrame, out_dir: Path, name: str = "reduction_overhead") -> Path:
    red = ok[ok["reduction"] != "none"].sort_values(["reduction", "visual_tokens"])
    labels = [f"{r} -> {int(t)} tok ({w})" for r, t, w in zip(red["reduction"], red["visual_tokens"],
                                                              red["reduction_overhead_in"].fillna("?"))]
    fig, ax = plt.subplots(figsize=(7.2, 0.3 * len(red) + 1.4))
    ax.barh(range(len(red)), red["reduction_overhead_ms"].fillna(0.0), color=F.MEASURED_COLOR)
    ax.set_yticks(range(len(red)), labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("the method's own time (ms, median)")
    ax.set_title("Token-reduction methods' own overhead")
    return F.save(fig, out_dir, name)


@F.register_figure(SECTION)
def ttft_vs_llm_tokens_figure(ok: pd.DataFrame, fig_dir: Path) -> List[F.Caption]:
    ok = _with_reduction(ok)
    if not len(ok) or "ttft_ms" not in ok.columns:
        return []
    return [(ttft_vs_llm_tokens(ok, fig_dir),
             "TTFT (ms) against the visual tokens that reach the LLM: solid lines are encoders scaled by "
             "input resolution (no reduction), dashed lines token-reduction methods at their budgets. "
             "For FastV and its mask-only variant the x value is the mean over the LLM's layers of the visual "
             "tokens each computes (FastV: all of them up to layer K, the kept ones after; the mask-only "
             "variant computes all in every layer).")]


@F.register_figure(SECTION)
def reduction_overhead_figure(ok: pd.DataFrame, fig_dir: Path) -> List[F.Caption]:
    ok = _with_reduction(ok)
    if not len(ok) or "reduction_overhead_ms" not in ok.columns:
        return []
    return [(overhead_bars(ok, fig_dir),
             "Each method's own time (ms): its `reduce` stage's median, or, for a method inside another stage "
             "(in brackets), its work alone measured on the point's tensors (ToMe's matching and merging; "
             "VisionZip's and FastV's one eager attention plus selection, less that layer under SDPA).")]
