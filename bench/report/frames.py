"""The report's data preparation: a row's label and setting, and tables formatted for people
(numbers rounded by size, integers without a decimal point, blanks for missing values), plus
the :class:`Section` every part of a report is built as. Shared by the report's builder
(:mod:`.render`), its opening sections (:mod:`.sections`) and its writer (:mod:`.output`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd

from .tables import markdown_table

SETTING_FIELDS = (("dtype", "{}"), ("device", "{}"), ("batch_size", "b{}"), ("prompt_tokens", "p{}"),
                  ("attn_implementation", "{}"), ("compile", "compile={}"), ("compile_mode", "{}"),
                  ("threads", "t{}"), ("preprocess", "preprocess={}"), ("tiling", "{}"),
                  ("image_size", "image {}"), ("backend", "{}"),
                  ("decode_tokens", "+{}tok"))

@dataclass
class Section:
    title: str
    text: str = ""
    figures: List[Tuple[Path, str]] = field(default_factory=list)   # (png, caption)
    tables: List[Tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)


# ----------------------------------------------------------------------------- data prep
def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    varying = [(c, f) for c, f in SETTING_FIELDS if c in df and df[c].astype(str).nunique() > 1]
    base = [(c, f) for c, f in SETTING_FIELDS[:3] if c in df]

    def setting(r):
        parts = varying or base
        return " ".join(f.format(r[c]) for c, f in parts) if parts else ""

    df["setting"] = [setting(r) for _, r in df.iterrows()] if len(df) else pd.Series(dtype=str)
    show = bool(varying)
    def reduction(r) -> str:  # a token-reduction method and its budget (bench.models.reduction)
        red = r.get("reduction")
        return "" if red in (None, "none") or pd.isna(red) else f" {red}->{int(r['visual_tokens'])}"

    df["label"] = [f"{r['encoder']}@{int(r['resolution'])}{reduction(r)}+{r['llm']}"
                   + (f" [{r['setting']}]" if show else "") for _, r in df.iterrows()] if len(df) else pd.Series(dtype=str)
    return df


def _fmt(v, integral: bool = False) -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if integral:
            return str(int(round(v)))
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1:  # ratios and speed-ups live here: 1.027 must not read as "1.0"
            return f"{v:.3f}"
        return f"{v:.3g}"
    return str(v)


def _format_column(col: pd.Series) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce") if col.dtype.kind in "fiu" else None
    integral = bool(num is not None and num.notna().any()
                    and (num.dropna() == num.dropna().round()).all() and (num.dropna().abs() < 1e15).all())
    return col.map(lambda v: _fmt(v, integral))


def _formatted(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(_format_column) if len(df) else df.astype(str)


def to_markdown(df: pd.DataFrame) -> str:
    if df is None or not len(df.columns):
        return "_(empty)_\n"
    if not len(df):
        return "_(no rows)_\n"
    f = _formatted(df)
    return markdown_table([str(c) for c in f.columns], list(f.itertuples(index=False))) + "\n"


def _cols(df: pd.DataFrame, cols: Sequence[str]) -> List[str]:
    return [c for c in cols if c in df.columns]
