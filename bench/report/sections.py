"""The report's opening sections: the headline of this machine's own measurements, the paper's
claims measured here, and the paper's accuracy beside the latency measured here. Each is one
function returning a :class:`~.frames.Section` (or None when the folder has nothing for it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from ..analysis.pareto import pareto_front
from . import figures as F
from .frames import Section, _cols

HEADLINE_TITLE = "Headline: measured here"
CLAIMS_TITLE = "Paper claims measured here"
JOINED_TITLE = "Accuracy (paper-reported) vs latency (measured here)"
JOINED_LABEL = "accuracy: paper-reported; latency: measured here"


def _headline_section(ok: pd.DataFrame) -> Section:
    from ..analysis.headline import BUDGET_EDGES, headline_table

    sec = Section(HEADLINE_TITLE, text=(
        "Your own measurements, on this machine: per token budget (upper edges "
        f"{', '.join(map(str, BUDGET_EDGES))} visual tokens, the paper's counts), the fastest configuration by "
        "median TTFT (vision-encoder latency for encoder-only points), and its speed-up over the fastest ViT and "
        "the fastest ConvNeXt of the same budget, LLM, device and dtype: ratio of medians with its 95 % "
        "hierarchical-bootstrap interval. Blank: that budget has no such baseline."))
    sec.tables.append(("Fastest configuration per token budget (measured here)", headline_table(ok)))
    return sec


def _claims_section(df: pd.DataFrame, sweep: str) -> Optional[Section]:
    """The claims table (:mod:`bench.analysis.claims`) when at least one claim was measured in
    this folder, or the folder is a ``paper_claims`` sweep (then every skip and its reason)."""
    from ..analysis.claims import PAPER_SETUP, display_table, evaluate, load_claims

    claims = load_claims()
    if sweep != "paper_claims":  # cheap first: does any ok row measure one side of a claim?
        have = set(zip(df.loc[df["status"] == "ok", "encoder"].astype(str),
                       pd.to_numeric(df.loc[df["status"] == "ok", "resolution"], errors="coerce"),
                       df.loc[df["status"] == "ok", "llm"].astype(str))) if len(df) else set()
        if not any((s.encoder, s.resolution, s.llm) in have for c in claims for s in (c.fast, c.baseline)):
            return None
    # why a claim could not be measured needs the model registries (torch, timm): consulted when
    # they are loaded anyway (the report at the end of a sweep) or the folder is a paper_claims one
    import sys

    explain = sweep == "paper_claims" or "bench.models" in sys.modules
    if explain:
        from .. import models  # noqa: F401  (the config groups evaluate() reads: bench.models.config_groups)
    rows = pd.DataFrame(evaluate(claims, df, explain=explain))
    if not len(rows) or not ((rows["status"] == "measured").any() or sweep == "paper_claims"):
        return None
    sec = Section(CLAIMS_TITLE, text=(
        f"The FastVLM paper's headline comparisons: the paper's ratio ({PAPER_SETUP}: never measured here) "
        "beside the ratio measured here (baseline / FastVLM medians, 95 % hierarchical-bootstrap interval). "
        "'direction holds here': yes when the interval lies above 1, no when below, unclear when it holds 1. "
        "The same table: fastvlm-bench claims RESULTS_DIR (claims.md, claims.json)."))
    sec.tables.append((f"{int((rows['status'] == 'measured').sum())} of {len(rows)} claims measured",
                       display_table(rows)))
    return sec


def _paper_accuracy_measured_latency_section(ok: pd.DataFrame, benchmarks, atitle: str, x: str,
                                             fig_dir: Path) -> Section:
    from ..analysis.join import paper_accuracy_measured_latency

    sec = Section(JOINED_TITLE, text=(
        f"{JOINED_LABEL}. The paper's accuracy ({atitle}) for configurations measured here that match a paper "
        "configuration exactly: same encoder, resolution, tiling and LLM (the paper lists some several times, "
        "trained on different data: one point each). Placeholder weights time the same computation as the "
        "trained model; the accuracy is the paper's trained model's."))
    j = paper_accuracy_measured_latency(ok, benchmarks)
    if len(j):
        j = j.dropna(subset=[x]).copy() if x in j.columns else j.iloc[0:0]
    if not len(j):
        sec.text += (" None of the measured configurations matches one: e.g. fastvithd@1024+qwen2_0.5b "
                     "(Table 6 R3-R5) or fastvithd@768+qwen2_1.5b (R7, R8) would.")
        return sec
    j["label"] = [f"{r['paper_row'].replace('Table 6 ', '')} {r['label']}" for _, r in j.iterrows()]
    j["on_frontier"] = pareto_front(j, x=x, y="accuracy")
    png = F.accuracy_vs_x(j, pd.DataFrame(columns=["label", x, "accuracy"]), x,
                          f"{atitle}\n{JOINED_LABEL}", fig_dir, f"pareto_paper_accuracy_measured_{x}",
                          measured_label=JOINED_LABEL)
    sec.figures.append((png, f"{JOINED_LABEL}: {atitle} (%) vs {F.X_LABELS[x]}."))
    sec.tables.append((f"{JOINED_LABEL} (exactly matching configurations)",
                       j[_cols(j, ["label", "paper_row", "tiling", x, "accuracy", "on_frontier"])]))
    return sec
