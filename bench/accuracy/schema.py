"""The accuracy long format, shared by the lmms-eval importer, the paper layer and reports.

One row per (configuration, benchmark, metric, source)::

    encoder     str    vision encoder name, as in results tables (e.g. ``fastvithd``)
    resolution  int    input resolution in pixels
    llm         str    LLM name (e.g. ``qwen2_0.5b``)
    benchmark   str    canonical lowercase name: gqa, textvqa, pope, docvqa, seedbench_img,
                       chartqa, mmmu, sqa, mmvet, vqav2, llava_bench_w, ...
    metric      str    metric name (e.g. ``exact_match``)
    accuracy    float  percent, 0-100
    source      str    "lmms-eval", "paper-reported" or "user"
    origin      str    file path or paper row id

Do not change these columns: other modules (the lmms-eval importer) write this format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import pandas as pd

ACCURACY_COLUMNS = ("encoder", "resolution", "llm", "benchmark", "metric", "accuracy", "source", "origin")
SOURCES = ("lmms-eval", "paper-reported", "user")
SOURCE_PAPER = "paper-reported"


#: How a harness reports a task's score: a fraction in [0, 1] or a percentage in [0, 100].
#: The long format stores percent; :func:`to_percent` converts.
FRACTION = "fraction"
PERCENT = "percent"


def to_percent(value: float, scale: str, what: str) -> float:
    """``value`` on ``scale`` as a percentage; a value outside the scale's range is an error
    naming ``what`` (a wrong declared scale must not pass silently)."""
    top = 1.0 if scale == FRACTION else 100.0
    if not 0.0 <= value <= top:
        raise ValueError(f"{what} = {value} is not a {'fraction in [0, 1]' if scale == FRACTION else 'percentage'}"
                         f" (declared scale: {scale})")
    return value * 100.0 / top


class AccuracyFormatError(ValueError):
    """An accuracy table does not follow the long format."""


def empty_accuracy() -> pd.DataFrame:
    return normalize_accuracy(pd.DataFrame({c: [] for c in ACCURACY_COLUMNS}))


def normalize_accuracy(df: pd.DataFrame, where: str = "accuracy table") -> pd.DataFrame:
    """Check the columns and types of a long-format table; return a cleaned copy.

    Raises :class:`AccuracyFormatError` naming the missing columns or the bad values.
    """
    missing = [c for c in ACCURACY_COLUMNS if c not in df.columns]
    if missing:
        raise AccuracyFormatError(
            f"{where}: missing column(s) {missing}; expected columns {list(ACCURACY_COLUMNS)} "
            f"(found {list(df.columns)})")
    out = df.copy()
    for col in ("encoder", "llm", "benchmark", "metric", "source", "origin"):
        out[col] = out[col].astype("string").str.strip()
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    out["benchmark"] = [b.lower() if isinstance(b, str) else b for b in out["benchmark"]]
    for col in ("encoder", "llm", "benchmark", "source"):
        bad = out[col].isna() | (out[col] == "")
        if bad.any():
            raise AccuracyFormatError(f"{where}: empty {col!r} in row(s) {list(out.index[bad][:10])}")
    res = pd.to_numeric(out["resolution"], errors="coerce")
    bad = res.isna() | (res != res.round())
    if bad.any():
        raise AccuracyFormatError(
            f"{where}: 'resolution' must be an integer (pixels); bad row(s) {list(out.index[bad][:10])}")
    out["resolution"] = res.astype("int64")
    acc = pd.to_numeric(out["accuracy"], errors="coerce")
    bad = acc.isna() & out["accuracy"].notna()
    if bad.any():
        raise AccuracyFormatError(
            f"{where}: 'accuracy' must be a number in percent; bad row(s) {list(out.index[bad][:10])}")
    out["accuracy"] = acc.astype("float64")
    bad = (out["accuracy"] < 0) | (out["accuracy"] > 100)
    if bad.any():
        raise AccuracyFormatError(
            f"{where}: 'accuracy' must be percent in 0-100 (a 0-1 fraction must be multiplied by 100); "
            f"bad row(s) {list(out.index[bad][:10])}")
    bad = ~out["source"].isin(SOURCES)
    if bad.any():
        raise AccuracyFormatError(
            f"{where}: 'source' must be one of {SOURCES}; got {sorted(set(out.loc[bad, 'source']))}")
    out["metric"] = out["metric"].fillna("")
    out["origin"] = out["origin"].fillna("")
    extra = [c for c in out.columns if c not in ACCURACY_COLUMNS]
    return out[list(ACCURACY_COLUMNS) + extra].reset_index(drop=True)


def read_accuracy(path: Union[str, Path]) -> pd.DataFrame:
    """Read a CSV in the accuracy long format, validating its columns and values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no accuracy file at {path}")
    try:
        df = pd.read_csv(path, dtype={"encoder": str, "llm": str, "benchmark": str, "metric": str,
                                      "source": str, "origin": str})
    except pd.errors.EmptyDataError as exc:
        raise AccuracyFormatError(f"{path}: empty file; expected CSV columns {list(ACCURACY_COLUMNS)}") from exc
    return normalize_accuracy(df, where=str(path))


def read_accuracy_files(paths: Iterable[Union[str, Path]]) -> pd.DataFrame:
    frames = [read_accuracy(p) for p in paths]
    if not frames:
        return empty_accuracy()
    return pd.concat(frames, ignore_index=True)
