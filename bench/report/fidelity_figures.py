"""The fidelity section: shipped transformers systems beside our compositions of them.

Draws, per measured pair (:mod:`bench.analysis.fidelity`), the ratio hf / ours of every stage's
median with its 95 % interval against the [0.9, 1.1] band, and gives the table with both sides'
tokens, medians and the reason where a ratio leaves the band. Nothing is drawn for a results
set without such a pair, so other reports are unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import matplotlib.pyplot as plt
import pandas as pd

from ..analysis.fidelity import BAND, STAGES, fidelity_rows, missing_pairs
from . import figures as F

SECTION = "Fidelity: the transformers model beside our composition"
TEXT = ("Each shipped transformers system (hf=NAME) that we also compose, measured at the same image, dtype and "
        "threads. Tokens must be equal (both are the processor's / tiling mode's count). Ratios are hf / ours of the "
        f"stage medians with 95 % hierarchical-bootstrap intervals; outside [{BAND[0]}, {BAND[1]}] the known "
        "difference is given (a tower's depth, a kernel). Both figures are real: the deployed model's and ours.")


@F.register_figure(SECTION)
def fidelity_ratios(ok: pd.DataFrame, out_dir: Path) -> List[F.Caption]:
    rows = fidelity_rows(ok)
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(rows) * len(STAGES) + 1.2))
    y, labels = 0, []
    for r in rows:
        for st in STAGES:
            p, lo, hi = r.get(f"{st}_ratio"), r.get(f"{st}_ci_low"), r.get(f"{st}_ci_high")
            if p is not None:
                ax.errorbar([p], [y], xerr=[[p - lo], [hi - p]], fmt="o", color="C0" if BAND[0] <= p <= BAND[1]
                            else "C3", capsize=3)
            labels.append(f"{r['system']} {st}")
            y += 1
    ax.axvspan(*BAND, color="0.9", zorder=0)
    ax.axvline(1.0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("hf / ours (median ratio, 95 % interval)")
    ax.set_title("Fidelity per stage: the transformers model over our composition")
    return [(F.save(fig, out_dir, "fidelity_ratios"), "Per-stage ratio hf / ours; grey: the [0.9, 1.1] band")]


def section_tables(ok: pd.DataFrame) -> Optional[Tuple[str, List[Tuple[str, pd.DataFrame]]]]:
    """``(text, [(caption, table)])`` of the fidelity section, or None without hf points."""
    if "hf" not in ok.columns or not ok["hf"].notna().any():
        return None
    rows = pd.DataFrame(fidelity_rows(ok))
    tables = []
    if len(rows):
        cols = ["system", "ours", "image", "dtype", "tokens_hf", "tokens_ours", "tokens_equal"] + \
               [c for st in STAGES for c in (f"{st}_hf_ms", f"{st}_ours_ms", f"{st}_ratio", f"{st}_ci_low",
                                             f"{st}_ci_high")] + ["vision_params_hf", "vision_params_ours",
                                                                  "outside_band", "why"]
        tables.append(("Pairs measured here (ms: medians)", rows[[c for c in cols if c in rows.columns]]))
    miss = pd.DataFrame(missing_pairs(ok))
    if len(miss):
        tables.append(("Shipped pairs not measured in this folder", miss))
    return TEXT, tables
