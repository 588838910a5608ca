"""``fastvlm-bench compare``: is a candidate result set slower than a base one?

Usage::

    fastvlm-bench compare BASE CANDIDATE [--threshold 0.05] [--metric-threshold ttft=0.10]
                          [--match-on encoder,resolution,llm] [--metrics vision_latency,ttft]
                          [--resamples 2000] [--confidence 0.95] [--seed 0]
                          [--markdown FILE] [--json FILE] [--strict]
    fastvlm-bench compare BASE --baseline-encoder vit_l14 [--markdown FILE] [--json FILE]

BASE and CANDIDATE are anything :func:`bench.store.load_table` reads: a sweep folder
``results/<sweep>/``, its ``records/`` folder, a ``results.csv``/``results.parquet`` table or
one record ``.json``.

**Matching.** Only rows with ``status == "ok"`` are compared. Rows are paired on the sweep
point keys :data:`bench.records.POINT_KEYS` *except* ``threads``, ``checkpoint`` and
``checkpoint_fingerprint``: the thread count is mostly a property of the machine (``None``
means "whatever the runner has"), a checkpoint's path and file times differ between machines
while latency does not depend on weight values, and two runs of the same configuration on
different runners are exactly what one wants to compare.
``--match-on`` replaces the key list (comma separated). A key that one of the two tables
lacks as a column (an older schema) is dropped from matching with a warning. Rows of one
side that share a key with another row of the same side are *ambiguous* and are listed, not
compared. Rows without a partner are listed as unmatched (with the other side's status when
that side has the point but it did not succeed).

**Metrics.** ``vision_latency``, ``prefill``, ``ttft`` (per-iteration timings), and the
scalars ``visual_tokens`` and ``peak_memory`` (``peak_memory_mb`` when both rows have it,
else ``peak_rss_mb``). All are lower-is-better. The ratio is ``candidate / base``. For timed
stages the interval is a percentile bootstrap of the ratio of medians: the base and the
candidate samples are resampled independently (seeded, 2000 resamples, 95 % by default).
A stage without raw samples, and every scalar metric, gets the exact ratio (interval = point).

**Verdict.** A *regression* is flagged when the whole interval lies above ``1 + threshold``
(its lower bound exceeds it); an *improvement* when the whole interval lies below
``1 - threshold``. Anything else is within noise. The threshold is 5 % unless set globally
(``--threshold``) or per metric (``--metric-threshold ttft=0.10``, repeatable).

**Exit status.** 1 when any regression is flagged (or, with ``--strict``, when a row of
either side has no partner), 0 otherwise, 2 for bad, missing or malformed input.

**Encoder speed-ups** (``--baseline-encoder NAME``): inside one result set, each encoder's
speed-up over the baseline encoder (``baseline / other`` for vision latency and TTFT, with
the same bootstrap interval) at matched resolution (same resolution and the same remaining
configuration keys: llm, dtype, device, batch size, ...) and at matched visual-token count
(same ``visual_tokens`` and remaining keys, any resolution). CANDIDATE may then be omitted;
when given, the plain comparison runs too and speed-ups are shown for both sets.

The pure functions (:func:`bootstrap_ratio_ci`, :func:`match_rows`, :func:`compare_tables`,
:func:`encoder_speedups`, :func:`render_markdown`, ...) are reused by ``bench.gate``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .records import POINT_KEYS, STATUS_OK, samples_from_cell

PROG = "fastvlm-bench compare"

#: Default match keys: every point key but the thread count (see the module docstring).
DEFAULT_MATCH_ON: Tuple[str, ...] = tuple(k for k in POINT_KEYS
                                          if k not in ("threads", "checkpoint", "checkpoint_fingerprint"))
DEFAULT_THRESHOLD = 0.05
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0

REGRESSION, IMPROVEMENT, UNCHANGED, UNDEFINED = "regression", "improvement", "unchanged", "undefined"


class InputError(Exception):
    """Bad, missing or malformed input: reported as one line, exit status 2."""


@dataclass(frozen=True)
class MetricSpec:
    """One compared quantity: the columns holding it (first present pair wins) and samples."""

    name: str
    columns: Tuple[str, ...]
    samples: Optional[str] = None
    unit: str = "ms"
    lower_is_better: bool = True


METRICS: Dict[str, MetricSpec] = {
    "vision_latency": MetricSpec("vision_latency", ("vision_latency_ms",), "vision_latency_samples_ms"),
    "prefill": MetricSpec("prefill", ("prefill_ms",), "prefill_samples_ms"),
    "ttft": MetricSpec("ttft", ("ttft_ms",), "ttft_samples_ms"),
    "visual_tokens": MetricSpec("visual_tokens", ("visual_tokens",), None, "tokens"),
    "peak_memory": MetricSpec("peak_memory", ("peak_memory_mb", "peak_rss_mb"), None, "MB"),
    # not compared by default, available through --metrics
    "preprocess": MetricSpec("preprocess", ("preprocess_ms",), "preprocess_samples_ms"),
    "projector": MetricSpec("projector", ("projector_ms",), "projector_samples_ms"),
}
DEFAULT_METRICS: Tuple[str, ...] = ("vision_latency", "prefill", "ttft", "visual_tokens", "peak_memory")
#: Timed metrics used for encoder speed-ups.
SPEEDUP_METRICS: Tuple[str, ...] = ("vision_latency", "ttft")


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
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


def parse_threshold_overrides(items: Iterable[str]) -> Dict[str, float]:
    """``["ttft=0.10", "prefill=0.2,peak_memory=0.1"]`` -> ``{"ttft": 0.1, ...}``."""
    out: Dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in METRICS:
                raise InputError(f"bad --metric-threshold {part!r}: expected METRIC=FRACTION with METRIC in "
                                 f"{', '.join(METRICS)}")
            out[name] = parse_fraction(value, f"--metric-threshold {name}")
    return out


def parse_fraction(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise InputError(f"{what}: expected a non-negative fraction (0.05 = 5%), got {value!r}")
    return x


def parse_list(value: Optional[str]) -> List[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------
def _bootstrap_medians(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = x.size
    out = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def bootstrap_ratio_ci(base: Sequence[float], candidate: Sequence[float], n_resamples: int = DEFAULT_RESAMPLES,
                       confidence: float = DEFAULT_CONFIDENCE, seed: int = DEFAULT_SEED) -> Tuple[float, float, float]:
    """Ratio of medians ``median(candidate) / median(base)`` and its percentile bootstrap CI.

    Both sides are resampled independently with replacement ``n_resamples`` times from a
    generator seeded with ``seed`` (same inputs, same answer). Returns ``(point, low, high)``.
    Raises ``ValueError`` for empty samples, a non-positive base median or a bad confidence.
    """
    b = np.asarray(list(base), dtype=float)
    c = np.asarray(list(candidate), dtype=float)
    if b.size == 0 or c.size == 0:
        raise ValueError("bootstrap_ratio_ci needs at least one sample on each side")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        raise ValueError("samples must be finite numbers")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    base_median = float(np.median(b))
    if base_median <= 0:
        raise ValueError(f"base median must be positive, got {base_median}")
    point = float(np.median(c)) / base_median
    rng = np.random.default_rng(seed)
    mb = _bootstrap_medians(b, n_resamples, rng)
    mc = _bootstrap_medians(c, n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mc / mb
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    # the percentile interval always contains the point when one side has a single value;
    # keep it so for degenerate cases (all samples equal) where quantiles round off.
    return point, float(min(low, point)), float(max(high, point))


def classify(low: Optional[float], high: Optional[float], threshold: float, lower_is_better: bool = True) -> str:
    """``regression`` when the whole interval is beyond ``1 + threshold`` in the bad direction,
    ``improvement`` when it is wholly beyond ``1 - threshold`` in the good one, else ``unchanged``."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return UNDEFINED
    worse = low > 1.0 + threshold if lower_is_better else high < 1.0 - threshold
    better = high < 1.0 - threshold if lower_is_better else low > 1.0 + threshold
    if worse:
        return REGRESSION
    if better:
        return IMPROVEMENT
    return UNCHANGED


def metric_ratio(base_row: Mapping[str, Any], cand_row: Mapping[str, Any], spec: MetricSpec,
                 n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                 seed: int = DEFAULT_SEED) -> Optional[Dict[str, Any]]:
    """Compare one metric of two rows. ``None`` when neither column is filled on both rows."""
    column = None
    for col in spec.columns:
        if as_float(base_row.get(col)) is not None and as_float(cand_row.get(col)) is not None:
            column = col
            break
    if column is None:
        return None
    base_value, cand_value = as_float(base_row.get(column)), as_float(cand_row.get(column))
    out: Dict[str, Any] = {"metric": spec.name, "column": column, "unit": spec.unit, "base": base_value,
                           "candidate": cand_value, "ratio": None, "ci_low": None, "ci_high": None,
                           "method": "exact", "n_base": None, "n_candidate": None, "note": ""}
    bs = row_samples(base_row, spec.samples)
    cs = row_samples(cand_row, spec.samples)
    if bs and cs:
        try:
            point, low, high = bootstrap_ratio_ci(bs, cs, n_resamples, confidence, seed)
        except ValueError as exc:
            out["note"] = str(exc)
            return out
        out.update(ratio=point, ci_low=low, ci_high=high, method="bootstrap", n_base=len(bs), n_candidate=len(cs))
        return out
    if spec.samples:
        out["note"] = "no raw samples: exact ratio of medians"
    if base_value == 0:
        if cand_value == 0:
            out.update(ratio=1.0, ci_low=1.0, ci_high=1.0)
        else:
            out["note"] = "base value is 0: ratio undefined"
        return out
    ratio = cand_value / base_value
    out.update(ratio=ratio, ci_low=ratio, ci_high=ratio)
    return out


# ---------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------
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
    keys: List[str]
    pairs: List[Tuple[Tuple[Any, ...], Dict[str, Any], Dict[str, Any]]]
    unmatched_base: List[Dict[str, Any]]
    unmatched_candidate: List[Dict[str, Any]]
    ambiguous_base: List[Dict[str, Any]]
    ambiguous_candidate: List[Dict[str, Any]]


def _index(rows: List[Dict[str, Any]], keys: Sequence[str]):
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(row_key(r, keys), []).append(r)
    unique = {k: v[0] for k, v in groups.items() if len(v) == 1}
    ambiguous = [r for v in groups.values() if len(v) > 1 for r in v]
    return unique, ambiguous


def match_rows(base_rows: List[Dict[str, Any]], cand_rows: List[Dict[str, Any]], keys: Sequence[str]) -> Matching:
    """Pair rows with equal values of ``keys`` (normalised, so CSV and Parquet reads agree)."""
    keys = list(keys)
    b_idx, b_amb = _index(base_rows, keys)
    c_idx, c_amb = _index(cand_rows, keys)
    pairs = [(k, b_idx[k], c_idx[k]) for k in b_idx if k in c_idx]
    c_amb_keys = {row_key(r, keys) for r in c_amb}
    b_amb_keys = {row_key(r, keys) for r in b_amb}
    unmatched_b = [r for k, r in b_idx.items() if k not in c_idx and k not in c_amb_keys]
    unmatched_c = [r for k, r in c_idx.items() if k not in b_idx and k not in b_amb_keys]
    return Matching(keys, pairs, unmatched_b, unmatched_c, b_amb, c_amb)


# ---------------------------------------------------------------------------------------
# comparing two tables
# ---------------------------------------------------------------------------------------
#: Columns that say which software stack and device measured a row: when they differ between the
#: two sides, a ratio mixes a code change with a stack change, so compare says so.
STACK_COLUMNS = ("device_name", "env_torch", "env_transformers", "env_timm", "env_lock_sha256", "env_stack_sha256")


def stack_differences(base_df, cand_df) -> List[str]:
    """One line per stack/device column whose values differ between the ok rows of both sides."""
    out = []
    for col in STACK_COLUMNS:
        if col not in base_df.columns or col not in cand_df.columns:
            continue
        vals = []
        for df in (base_df, cand_df):
            ok = df[df["status"] == "ok"] if "status" in df.columns else df
            vals.append(sorted({str(v) for v in ok[col].dropna()}))
        if vals[0] and vals[1] and vals[0] != vals[1]:
            out.append(f"{col} differs: base {', '.join(vals[0])} vs candidate {', '.join(vals[1])}")
    return out


def compare_tables(base_df, cand_df, match_on: Sequence[str] = DEFAULT_MATCH_ON,
                   metrics: Sequence[str] = DEFAULT_METRICS, threshold: float = DEFAULT_THRESHOLD,
                   metric_thresholds: Optional[Mapping[str, float]] = None,
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                   seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Compare two results tables; returns a JSON-ready dict (see :func:`render_text`)."""
    for df, side in ((base_df, "BASE"), (cand_df, "CANDIDATE")):
        if "status" not in df.columns:
            raise InputError(f"{side} has no 'status' column: not a fastvlm-bench results table")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    metric_thresholds = dict(metric_thresholds or {})
    keys, dropped = effective_match_keys(base_df, cand_df, match_on)
    if not keys:
        raise InputError(f"none of the match keys {', '.join(match_on)} is a column of both tables")
    b_ok, c_ok = ok_rows(base_df), ok_rows(cand_df)
    m = match_rows(b_ok, c_ok, keys)
    all_rows = b_ok + c_ok
    extra = varying_keys(all_rows, [k for k in keys if k not in ("encoder", "resolution")])

    comparisons = []
    for key, b_row, c_row in m.pairs:
        label = row_label(b_row, extra)
        for name in metrics:
            spec = METRICS[name]
            res = metric_ratio(b_row, c_row, spec, n_resamples, confidence, seed)
            if res is None:
                continue
            thr = metric_thresholds.get(name, threshold)
            res.update(config=dict(zip(keys, key)), label=label, threshold=thr,
                       lower_is_better=spec.lower_is_better,
                       verdict=classify(res["ci_low"], res["ci_high"], thr, spec.lower_is_better))
            comparisons.append(res)

    b_bad = {row_key(r, keys): r for r in not_ok_rows(base_df)}
    c_bad = {row_key(r, keys): r for r in not_ok_rows(cand_df)}

    def describe(rows, other_bad):
        out = []
        for r in rows:
            other = other_bad.get(row_key(r, keys))
            out.append({"config": {k: normalize_value(r.get(k)) for k in keys}, "label": row_label(r, extra),
                        "other_side_status": normalize_value(other.get("status")) if other else None,
                        "other_side_message": normalize_value(other.get("message")) if other else None})
        return out

    regressions = sum(1 for c in comparisons if c["verdict"] == REGRESSION)
    improvements = sum(1 for c in comparisons if c["verdict"] == IMPROVEMENT)
    return json_safe({
        "match_on": keys,
        "dropped_match_keys": dropped,
        "metrics": list(metrics),
        "threshold": threshold,
        "metric_thresholds": metric_thresholds,
        "resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
        "matched": len(m.pairs),
        "comparisons": comparisons,
        "regressions": regressions,
        "improvements": improvements,
        "unmatched_base": describe(m.unmatched_base, c_bad),
        "unmatched_candidate": describe(m.unmatched_candidate, b_bad),
        "ambiguous_base": describe(m.ambiguous_base, {}),
        "ambiguous_candidate": describe(m.ambiguous_candidate, {}),
        "not_ok_base": len(not_ok_rows(base_df)),
        "not_ok_candidate": len(not_ok_rows(cand_df)),
        "stack_differences": stack_differences(base_df, cand_df),
    })


# ---------------------------------------------------------------------------------------
# encoder speed-ups inside one result set
# ---------------------------------------------------------------------------------------
def _speedup(base_row, other_row, metric, n_resamples, confidence, seed) -> Dict[str, Any]:
    """Speed-up ``baseline / other`` of one timed metric, with interval."""
    spec = METRICS[metric]
    # ratio(candidate=baseline row, base=other row) = baseline / other
    res = metric_ratio(other_row, base_row, spec, n_resamples, confidence, seed)
    if res is None:
        return {"speedup": None, "ci_low": None, "ci_high": None, "baseline_ms": as_float(base_row.get(spec.columns[0])),
                "ms": as_float(other_row.get(spec.columns[0])), "method": None, "note": "missing"}
    return {"speedup": res["ratio"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
            "baseline_ms": res["candidate"], "ms": res["base"], "method": res["method"], "note": res["note"]}


def encoder_speedups(df, baseline_encoder: str, context_keys: Optional[Sequence[str]] = None,
                     metrics: Sequence[str] = SPEEDUP_METRICS, n_resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Each encoder's speed-up over ``baseline_encoder`` inside one result set.

    ``by_resolution`` pairs rows with the same resolution and context keys (default: the
    compare match keys other than encoder and resolution, i.e. llm, dtype, device, batch
    size, prompt tokens, ...); ``by_tokens`` pairs rows with the same ``visual_tokens`` and
    context keys, whatever their resolution. Speed-up = baseline median / other median.
    """
    if "status" not in df.columns or "encoder" not in df.columns:
        raise InputError("results table lacks 'status'/'encoder' columns")
    if context_keys is None:
        context_keys = [k for k in DEFAULT_MATCH_ON if k not in ("encoder", "resolution")]
    context_keys = [k for k in context_keys if k in df.columns]
    rows = ok_rows(df)
    encoders = sorted({str(normalize_value(r.get("encoder"))) for r in rows})
    base_rows = [r for r in rows if normalize_value(r.get("encoder")) == baseline_encoder]
    if not base_rows:
        raise InputError(f"baseline encoder {baseline_encoder!r} has no ok rows; encoders with ok rows: "
                         f"{', '.join(encoders) or 'none'}")
    others = [r for r in rows if normalize_value(r.get("encoder")) != baseline_encoder]
    extra = varying_keys(rows, context_keys)

    def entries(group_keys: List[str], mode: str) -> List[Dict[str, Any]]:
        out = []
        for o in others:
            if any(normalize_value(o.get(k)) is None for k in group_keys if k in ("visual_tokens", "resolution")):
                continue
            ok = row_key(o, group_keys)
            for b in base_rows:
                if row_key(b, group_keys) != ok:
                    continue
                e = {"mode": mode, "encoder": normalize_value(o.get("encoder")),
                     "baseline_encoder": baseline_encoder,
                     "context": {k: normalize_value(o.get(k)) for k in context_keys},
                     "context_label": row_label({k: o.get(k) for k in context_keys}, extra),
                     "resolution": normalize_value(o.get("resolution")),
                     "baseline_resolution": normalize_value(b.get("resolution")),
                     "visual_tokens": normalize_value(o.get("visual_tokens")),
                     "baseline_visual_tokens": normalize_value(b.get("visual_tokens"))}
                for metric in metrics:
                    e[metric] = _speedup(b, o, metric, n_resamples, confidence, seed)
                out.append(e)
        out.sort(key=lambda e: (e["context_label"], str(e["resolution"]), str(e["visual_tokens"]), str(e["encoder"])))
        return out

    return json_safe({
        "baseline_encoder": baseline_encoder,
        "encoders": encoders,
        "context_keys": list(context_keys),
        "metrics": list(metrics),
        "by_resolution": entries(context_keys + ["resolution"], "resolution"),
        "by_tokens": entries(context_keys + ["visual_tokens"], "visual_tokens") if "visual_tokens" in df.columns else [],
    })


# ---------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A plain fixed-width text table. ``align``: one of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)
    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    align = align or "l" * len(headers)
    esc = lambda c: ("" if c is None else str(c)).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "tokens":
        return f"{value:.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def fmt_ci(low: Optional[float], high: Optional[float]) -> str:
    if low is None or high is None:
        return "-"
    return f"[{low:.3f}, {high:.3f}]"


def fmt_change(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


VERDICT_TEXT = {REGRESSION: "REGRESSION", IMPROVEMENT: "improved", UNCHANGED: "", UNDEFINED: "n/a"}
VERDICT_MD = {REGRESSION: ":x: regression", IMPROVEMENT: ":rocket: improved", UNCHANGED: "", UNDEFINED: "n/a"}

_CMP_HEADERS = ("Configuration", "Metric", "Base", "Candidate", "Ratio", "Change", "CI", "Verdict")
_CMP_ALIGN = "llrrrrll"


def _cmp_rows(result: Dict[str, Any], verdicts: Mapping[str, str]) -> List[List[str]]:
    rows = []
    for c in result["comparisons"]:
        unit = c["unit"]
        metric = c["metric"] + ("" if c["column"] in (METRICS[c["metric"]].columns[0],) else f" ({c['column']})")
        note = f" ({c['note']})" if c.get("note") and c["verdict"] == UNDEFINED else ""
        rows.append([c["label"], metric, fmt_value(c["base"], unit), fmt_value(c["candidate"], unit),
                     fmt_ratio(c["ratio"]), fmt_change(c["ratio"]), fmt_ci(c["ci_low"], c["ci_high"]),
                     verdicts[c["verdict"]] + note])
    return rows


def _threshold_text(result: Dict[str, Any]) -> str:
    text = f"{result['threshold'] * 100:g}%"
    per = result.get("metric_thresholds") or {}
    if per:
        text += " (" + ", ".join(f"{k}: {v * 100:g}%" for k, v in sorted(per.items())) + ")"
    return text


def _unmatched_lines(items: List[Dict[str, Any]]) -> List[str]:
    out = []
    for u in items:
        line = u["label"]
        if u.get("other_side_status"):
            line += f" (other side: status={u['other_side_status']}"
            if u.get("other_side_message"):
                line += f": {str(u['other_side_message']).splitlines()[0][:160]}"
            line += ")"
        out.append(line)
    return out


def summary_line(result: Dict[str, Any]) -> str:
    n_reg, n_imp = result["regressions"], result["improvements"]
    head = f"{n_reg} regression{'s' if n_reg != 1 else ''}" if n_reg else "no regressions"
    return (f"{head}, {n_imp} improvement{'s' if n_imp != 1 else ''} over {result['matched']} matched "
            f"configuration{'s' if result['matched'] != 1 else ''} (threshold {_threshold_text(result)})")


def render_text(result: Dict[str, Any], base_name: str = "BASE", cand_name: str = "CANDIDATE") -> str:
    conf = int(round(result["confidence"] * 100))
    lines = [f"compare: base {base_name}  vs  candidate {cand_name}",
             f"ratio = candidate/base (lower is better); {conf}% bootstrap CI of the ratio of medians "
             f"({result['resamples']} resamples, seed {result['seed']}); matched on {', '.join(result['match_on'])}"]
    if result.get("dropped_match_keys"):
        lines.append(f"warning: not matched on {', '.join(result['dropped_match_keys'])} (column missing in a table)")
    lines += [f"warning: {d}: ratios mix the change with a different stack" for d in result.get("stack_differences", [])]
    lines.append("")
    if result["comparisons"]:
        lines.append(format_table(_CMP_HEADERS, _cmp_rows(result, VERDICT_TEXT), _CMP_ALIGN))
    else:
        lines.append("(no matched configurations)")
    for key, title in (("unmatched_base", "only in base"), ("unmatched_candidate", "only in candidate"),
                       ("ambiguous_base", "ambiguous in base (several rows share a key)"),
                       ("ambiguous_candidate", "ambiguous in candidate (several rows share a key)")):
        if result.get(key):
            lines.append("")
            lines.append(f"{title} ({len(result[key])}):")
            lines += [f"  - {line}" for line in _unmatched_lines(result[key])]
    lines.append("")
    lines.append(("FAIL: " if result["regressions"] else "OK: ") + summary_line(result))
    return "\n".join(lines)


def render_markdown(result: Dict[str, Any], base_name: str = "BASE", cand_name: str = "CANDIDATE") -> str:
    """A Markdown report fit for a PR comment."""
    conf = int(round(result["confidence"] * 100))
    icon = ":x:" if result["regressions"] else ":white_check_mark:"
    lines = ["<!-- fastvlm-bench-compare -->",
             f"### {icon} fastvlm-bench compare: {summary_line(result)}", "",
             f"Base `{base_name}` vs candidate `{cand_name}`. Ratio = candidate / base (lower is better); "
             f"{conf}% bootstrap interval of the ratio of medians ({result['resamples']} resamples, seed "
             f"{result['seed']}). A regression is flagged only when the whole interval lies above "
             f"1 + threshold. Matched on: {', '.join(result['match_on'])}.", ""]
    if result["comparisons"]:
        lines.append(markdown_table(_CMP_HEADERS, _cmp_rows(result, VERDICT_MD), _CMP_ALIGN))
    else:
        lines.append("_No matched configurations._")
    for key, title in (("unmatched_base", "Only in base"), ("unmatched_candidate", "Only in candidate"),
                       ("ambiguous_base", "Ambiguous in base"), ("ambiguous_candidate", "Ambiguous in candidate")):
        if result.get(key):
            lines += ["", f"<details><summary>{title} ({len(result[key])})</summary>", ""]
            lines += [f"- {line}" for line in _unmatched_lines(result[key])]
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


_SPD_HEADERS = ("Context", "Encoder", "Res", "Tokens", "Baseline res", "Baseline tokens",
                "Vision speed-up", "Vision CI", "TTFT speed-up", "TTFT CI")
_SPD_ALIGN = "llrrrrrlrl"


def _speedup_rows(entries: List[Dict[str, Any]], metrics: Sequence[str]) -> List[List[str]]:
    rows = []
    for e in entries:
        row = [e["context_label"], e["encoder"], e["resolution"], e["visual_tokens"],
               e["baseline_resolution"], e["baseline_visual_tokens"]]
        for m in metrics:
            s = e.get(m) or {}
            row += ["-" if s.get("speedup") is None else f"{s['speedup']:.2f}x", fmt_ci(s.get("ci_low"), s.get("ci_high"))]
        rows.append(row)
    return rows


def _speedup_headers(metrics: Sequence[str]) -> Tuple[List[str], str]:
    names = {"vision_latency": "Vision", "ttft": "TTFT", "prefill": "Prefill"}
    headers = list(_SPD_HEADERS[:6])
    for m in metrics:
        headers += [f"{names.get(m, m)} speed-up", f"{names.get(m, m)} CI"]
    return headers, "llrrrr" + "rl" * len(metrics)


def render_speedups_text(sp: Dict[str, Any], name: str = "") -> str:
    headers, align = _speedup_headers(sp["metrics"])
    lines = [f"encoder speed-ups over {sp['baseline_encoder']}" + (f" in {name}" if name else "")
             + " (speed-up = baseline median / encoder median; >1 means faster than the baseline)"]
    for key, title in (("by_resolution", "at matched resolution"), ("by_tokens", "at matched visual-token count")):
        lines += ["", f"{title}:"]
        lines.append(format_table(headers, _speedup_rows(sp[key], sp["metrics"]), align) if sp[key]
                     else "  (no pairs)")
    return "\n".join(lines)


def render_speedups_markdown(sp: Dict[str, Any], name: str = "") -> str:
    headers, align = _speedup_headers(sp["metrics"])
    lines = [f"### Encoder speed-ups over `{sp['baseline_encoder']}`" + (f" in `{name}`" if name else ""), "",
             "Speed-up = baseline median / encoder median (> 1: faster than the baseline), with the "
             "bootstrap interval of the ratio of medians.", ""]
    for key, title in (("by_resolution", "At matched resolution"), ("by_tokens", "At matched visual-token count")):
        lines += [f"**{title}**", ""]
        lines.append(markdown_table(headers, _speedup_rows(sp[key], sp["metrics"]), align) if sp[key]
                     else "_No pairs._")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# input and CLI
# ---------------------------------------------------------------------------------------
def load_results(path: str, side: str):
    """Load a results table for ``side`` (BASE/CANDIDATE); any failure becomes :class:`InputError`."""
    from .store import load_table

    try:
        df = load_table(path)
    except FileNotFoundError as exc:
        raise InputError(f"{side} {path}: {exc}") from None
    except Exception as exc:  # the input boundary: malformed CSV/Parquet/JSON of any kind
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise InputError(f"{side} {path}: cannot read results ({type(exc).__name__}: {first})") from None
    if df is None or len(df) == 0:
        raise InputError(f"{side} {path}: the results table is empty")
    if "status" not in df.columns:
        raise InputError(f"{side} {path}: no 'status' column, not a fastvlm-bench results table")
    return df


def write_text(path: str, text: str) -> None:
    """Write an output file atomically (a full disk leaves the old file, and one line)."""
    from .store import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise InputError(str(exc) if str(exc).startswith("cannot write") else
                         f"cannot write {path}: {exc.strerror or exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Compare two fastvlm-bench result sets (candidate / base) with bootstrap "
        "confidence intervals, or compare encoders inside one set (--baseline-encoder).")
    p.add_argument("base", metavar="BASE", help="results folder, results.csv/.parquet or record .json")
    p.add_argument("candidate", metavar="CANDIDATE", nargs="?", help="results to compare against BASE "
                   "(optional with --baseline-encoder)")
    p.add_argument("--match-on", default=None, help="comma-separated keys rows are paired on "
                   f"(default: {','.join(DEFAULT_MATCH_ON)})")
    p.add_argument("--metrics", default=None, help=f"comma-separated metrics (default: {','.join(DEFAULT_METRICS)}; "
                   f"known: {','.join(METRICS)})")
    p.add_argument("--threshold", default=str(DEFAULT_THRESHOLD), help="regression threshold as a fraction "
                   "(0.05: flag when the whole interval lies above 1.05)")
    p.add_argument("--metric-threshold", action="append", default=[], metavar="METRIC=FRACTION",
                   help="per-metric threshold, e.g. ttft=0.10 (repeatable)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 2000)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default 0)")
    p.add_argument("--baseline-encoder", default=None, metavar="NAME",
                   help="report each encoder's speed-up over NAME inside BASE (and CANDIDATE if given)")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write a Markdown report (PR comment)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the full result as JSON")
    p.add_argument("--strict", action="store_true", help="also fail (exit 1) when a row has no partner")
    return p


def _error(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse already printed usage and a one-line error
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return _run(args)
    except InputError as exc:
        return _error(str(exc))


def _run(args) -> int:
    threshold = parse_fraction(args.threshold, "--threshold")
    per_metric = parse_threshold_overrides(args.metric_threshold)
    match_on = parse_list(args.match_on) if args.match_on is not None else list(DEFAULT_MATCH_ON)
    if not match_on:
        raise InputError("--match-on needs at least one key")
    metrics = parse_list(args.metrics) if args.metrics is not None else list(DEFAULT_METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)}")
    if args.resamples < 1:
        raise InputError("--resamples must be at least 1")
    if not 0 < args.confidence < 1:
        raise InputError("--confidence must lie strictly between 0 and 1")
    if args.candidate is None and not args.baseline_encoder:
        raise InputError("CANDIDATE is required unless --baseline-encoder is given")

    base_df = load_results(args.base, "BASE")
    cand_df = load_results(args.candidate, "CANDIDATE") if args.candidate is not None else None

    payload: Dict[str, Any] = {"base": str(args.base), "candidate": args.candidate}
    text_parts: List[str] = []
    md_parts: List[str] = []
    rc = 0
    if cand_df is not None:
        known_cols = set(base_df.columns) | set(cand_df.columns)
        bad_keys = [k for k in match_on if k not in known_cols]
        if bad_keys:
            raise InputError(f"--match-on key(s) {', '.join(bad_keys)} are columns of neither table")
        result = compare_tables(base_df, cand_df, match_on, metrics, threshold, per_metric,
                                args.resamples, args.confidence, args.seed)
        payload["comparison"] = result
        text_parts.append(render_text(result, args.base, args.candidate))
        md_parts.append(render_markdown(result, args.base, args.candidate))
        if result["matched"] == 0:
            rc = 2
        elif result["regressions"] or (args.strict and (result["unmatched_base"] or result["unmatched_candidate"])):
            rc = 1
    if args.baseline_encoder:
        payload["encoder_speedups"] = {}
        sets = [("base", args.base, base_df)] + ([("candidate", args.candidate, cand_df)] if cand_df is not None else [])
        for side, name, df in sets:
            sp = encoder_speedups(df, args.baseline_encoder, n_resamples=args.resamples,
                                  confidence=args.confidence, seed=args.seed)
            payload["encoder_speedups"][side] = sp
            shown = name if cand_df is not None else ""
            text_parts.append(render_speedups_text(sp, shown))
            md_parts.append(render_speedups_markdown(sp, shown))
    payload["exit_status"] = rc
    print("\n\n".join(text_parts))
    if args.markdown:
        write_text(args.markdown, "\n".join(md_parts))
    if args.json:
        write_text(args.json, json.dumps(json_safe(payload), indent=1) + "\n")
    if rc == 2:
        return _error(f"no ok rows matched between BASE and CANDIDATE on {', '.join(payload['comparison']['match_on'])}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
