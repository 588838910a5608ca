"""Rows of results tables, as ``compare`` and ``gate`` see them: cells normalised across CSV and
Parquet reads, labels, raw samples, several runs per side, and row matching.

A *side* (BASE or CANDIDATE) is one or more result sets (folders, tables); each becomes a run,
numbered in :data:`RUN_COLUMN`. The same point measured in several runs is not ambiguous: its
rows are the runs the hierarchical bootstrap (:mod:`bench.regress.stats`) resamples.
"""
from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..config import InputError
from ..results.records import STATUS_OK, samples_from_cell

#: Column added to loaded tables: which run (0, 1, ...) of its side a row comes from.
RUN_COLUMN = "_run"
#: Column added to loaded tables: the path the run was read from (named in warnings).
SOURCE_COLUMN = "_source"

try:
    from pandas import NA as _PD_NA
except ImportError:  # pragma: no cover
    _PD_NA = object()


def is_missing(value: Any) -> bool:
    if value is None or value is _PD_NA:
        return True
    try:
        return isinstance(value, (float, np.floating)) and bool(math.isnan(value))
    except TypeError:
        return False


def normalize_value(value: Any) -> Any:
    """A table cell as a plain, hashable Python value, equal across CSV and Parquet reads.

    NaN/None -> None; numpy scalars -> Python; whole floats -> int; "True"/"False" -> bool.
    """
    if is_missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return value
    return value


def as_float(value: Any) -> Optional[float]:
    value = normalize_value(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars and NaN/inf into JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def row_key(row: Mapping[str, Any], keys: Sequence[str]) -> Tuple[Any, ...]:
    return tuple(normalize_value(row.get(k)) for k in keys)


def row_label(row: Mapping[str, Any], extra_keys: Sequence[str] = ()) -> str:
    """A short human label of a row's configuration."""
    get = lambda k: normalize_value(row.get(k))  # noqa: E731
    parts = []
    enc, res = get("encoder"), get("resolution")
    if enc is not None or res is not None:
        parts.append(f"{enc if enc is not None else '?'}@{res if res is not None else '?'}")
    if get("llm") is not None:
        parts.append(str(get("llm")))
    dd = "/".join(str(get(k)) for k in ("dtype", "device") if get(k) is not None)
    if dd:
        parts.append(dd)
    if get("batch_size") is not None:
        parts.append(f"b{get('batch_size')}")
    for k in extra_keys:
        if k not in ("encoder", "resolution", "llm", "dtype", "device", "batch_size"):
            parts.append(f"{k}={get(k)}")
    return " ".join(parts) if parts else "(row)"


def varying_keys(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> List[str]:
    """The keys whose value differs between rows (worth showing in labels)."""
    seen: Dict[str, set] = {k: set() for k in keys}
    for row in rows:
        for k in keys:
            seen[k].add(normalize_value(row.get(k)))
    return [k for k in keys if len(seen[k]) > 1]


def row_samples(row: Mapping[str, Any], column: Optional[str]) -> List[float]:
    if not column:
        return []
    try:
        return samples_from_cell(row.get(column))
    except (ValueError, TypeError) as exc:
        raise InputError(f"malformed samples in column {column} of {row_label(row)}: {exc}") from None


#: A fraction-valued option above this is legal but so loose that its check hardly ever fails.
UNUSUAL_FRACTION = 0.25


def parse_fraction(value: Any, what: str) -> float:
    """A fraction-valued option: a number in [0, 1), where 0.05 means 5 %. ``--noise-floor 5``
    (meant as 5 %) would be 500 %, a check that can never fail: refused. A legal value above
    :data:`UNUSUAL_FRACTION` is warned about on stderr."""
    import sys

    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a fraction (0.05 = 5 %), got {value!r}") from None
    if not math.isfinite(x) or not 0 <= x < 1:
        hint = f"; for {value} % write {x / 100:g}" if math.isfinite(x) and 1 <= x <= 100 else ""
        raise InputError(f"{what}: values are fractions (0.05 = 5 %) from 0 to below 1, got {value!r}{hint}")
    if x > UNUSUAL_FRACTION:
        print(f"fastvlm-bench: warning: {what} {x:g} means {x * 100:g} %: a check this loose hardly ever fails "
              "(values are fractions, 0.05 = 5 %)", file=sys.stderr)
    return x


def parse_list(value: Optional[str]) -> List[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ---------------------------------------------------------------------------------------
# statistics


def ok_rows(df) -> List[Dict[str, Any]]:
    if df is None or len(df) == 0:
        return []
    return [r for r in df.to_dict("records") if normalize_value(r.get("status")) == STATUS_OK]


def not_ok_rows(df) -> List[Dict[str, Any]]:
    if df is None or len(df) == 0:
        return []
    return [r for r in df.to_dict("records") if normalize_value(r.get("status")) != STATUS_OK]


def effective_match_keys(base_df, cand_df, match_on: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(keys used, keys dropped because a table lacks the column)."""
    used, dropped = [], []
    for k in match_on:
        if k in base_df.columns and k in cand_df.columns:
            used.append(k)
        else:
            dropped.append(k)
    return used, dropped


@dataclass
class Matching:
    """Rows paired on ``keys``. Each side of a pair is a list: one row per run of that point."""

    keys: List[str]
    pairs: List[Tuple[Tuple[Any, ...], List[Dict[str, Any]], List[Dict[str, Any]]]]
    unmatched_base: List[Dict[str, Any]]
    unmatched_candidate: List[Dict[str, Any]]
    ambiguous_base: List[Dict[str, Any]]
    ambiguous_candidate: List[Dict[str, Any]]


def _index(rows: List[Dict[str, Any]], keys: Sequence[str]):
    """key -> that point's rows, one per run; rows sharing a key *within one run* are ambiguous."""
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(row_key(r, keys), []).append(r)
    unique, ambiguous = {}, []
    for k, v in groups.items():
        runs = [r.get(RUN_COLUMN, 0) for r in v]
        if len(set(runs)) == len(runs):
            unique[k] = v
        else:
            ambiguous += v
    return unique, ambiguous


def match_rows(base_rows: List[Dict[str, Any]], cand_rows: List[Dict[str, Any]], keys: Sequence[str]) -> Matching:
    """Pair rows with equal values of ``keys`` (normalised, so CSV and Parquet reads agree)."""
    keys = list(keys)
    b_idx, b_amb = _index(base_rows, keys)
    c_idx, c_amb = _index(cand_rows, keys)
    pairs = [(k, b_idx[k], c_idx[k]) for k in b_idx if k in c_idx]
    c_amb_keys = {row_key(r, keys) for r in c_amb}
    b_amb_keys = {row_key(r, keys) for r in b_amb}
    unmatched_b = [v[0] for k, v in b_idx.items() if k not in c_idx and k not in c_amb_keys]
    unmatched_c = [v[0] for k, v in c_idx.items() if k not in b_idx and k not in b_amb_keys]
    return Matching(keys, pairs, unmatched_b, unmatched_c, b_amb, c_amb)


def median_ms(row: Mapping[str, Any], metric: str) -> Optional[float]:
    """A row's median of a timed metric (its column, else the median of its raw samples)."""
    v = as_float(row.get(f"{metric}_ms"))
    if v is None:
        s = row_samples(row, f"{metric}_samples_ms")
        if s:
            v = float(np.median(s))
    return v


def expand_paths(spec: str) -> List[str]:
    """``a,b`` and shell globs (``'results/run*'``) -> the paths of a side's runs, in order."""
    out: List[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        hits = sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part]
        if not hits:
            raise InputError(f"{part}: no results match this pattern")
        out += hits
    if not out:
        raise InputError(f"no results given in {spec!r}")
    return out


def load_results(spec: str, side: str):
    """All runs of a side as one table with :data:`RUN_COLUMN`; any failure is an InputError."""
    import pandas as pd

    from ..results.store import CorruptRecordError, load_table

    frames = []
    for i, path in enumerate(expand_paths(spec)):
        try:
            df = load_table(path)
        except FileNotFoundError as exc:
            raise InputError(f"{side} {path}: {exc}") from None
        except CorruptRecordError as exc:  # a record that fails its checks: the whole reason, in one line
            raise InputError(f"{side}: cannot read results: {exc}") from None
        except Exception as exc:  # the input boundary: malformed CSV/Parquet/JSON of any kind
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise InputError(f"{side} {path}: cannot read results ({type(exc).__name__}: {first})") from None
        if df is None or len(df) == 0:
            raise InputError(f"{side} {path}: the results table is empty")
        if "status" not in df.columns:
            raise InputError(f"{side} {path}: no 'status' column, not a fastvlm-bench results table")
        # a copy first: a frame built column by column is fragmented, and adding a column to it
        # prints pandas' PerformanceWarning into our output
        df = df.copy()
        df[RUN_COLUMN], df[SOURCE_COLUMN] = i, str(path)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_output(path: str, text: str) -> None:
    """Write a report/JSON output atomically (a full disk leaves the old file, and one line)."""
    from ..results.io import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise InputError(str(exc) if str(exc).startswith("cannot write") else
                         f"cannot write {path}: {exc.strerror or exc}") from None
