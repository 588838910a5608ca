"""``fastvlm-bench compare``: is a candidate result set slower than a base one?

    fastvlm-bench compare BASE CANDIDATE [--threshold 0.03] [--noise-floor 0.01] [--strict] ...
    fastvlm-bench compare 'runs/base_*' 'runs/cand_*'          # several runs per side
    fastvlm-bench compare BASE --baseline-encoder vit_l14       # encoder speed-ups inside one set

BASE and CANDIDATE are each one or more result sets (comma-separated, or a quoted glob): sweep
folders, ``results.csv``/``.parquet`` tables or record ``.json`` files. Each is one *run*.

**Matching.** Only ``ok`` rows are compared, paired on the point keys
(:data:`bench.results.records.POINT_KEYS`) except ``threads``, ``allocator`` and the checkpoint's path and
fingerprint, which describe the machine rather than the configuration (``--match-on``
replaces the list). The same point in several runs of a side is one point with several runs.

**Statistics** (:mod:`bench.regress.stats`). The ratio is candidate / base of the median (of
run medians), with a 95 % hierarchical bootstrap interval: runs resampled, then iterations
within runs. When the runs were made in pairs at the same time (``timing.turns``), the ratio
is taken within each pair: the drift they share cancels. One pair: the bootstrap of its
iterations (``method: paired bootstrap``); several: Student's t over the pairs, which holds
the process-to-process differences (``paired t``). Scalar metrics (visual tokens, peak
memory) get the exact ratio.

**Verdict.** A *regression* needs both an effect worth reporting (ratio above
``1 + threshold``, default 3 %) and one that is not noise (the whole interval above
``1 + noise_floor``). The noise floor depends on what the interval can see (``--noise-floor``
sets one value for all):

- both sides hold several runs of the point: 1 %. Resampling runs (or Student's t over pairs)
  puts run-to-run differences into the interval itself;
- one pair of runs measured at the same time, in turns (``timing.turns``, see
  :mod:`bench.measure.turns`): :data:`PAIR_NOISE_FLOOR`. Both saw the same drift; what is
  left is the difference between two processes of one configuration, which one pair cannot
  show;
- otherwise (a side holds one run): :data:`SINGLE_RUN_NOISE_FLOOR`. One run's interval covers
  only its own iterations, and on a shared machine the speed of the same process drifts by
  several percent over tens of seconds (measured: docs/compare-gate.md, "What compare can see"), which no
  statistic of one run can see. Interleave the two sides to resolve a few percent.

Improvements symmetrically.

**Runs their own records doubt** (:mod:`bench.regress.quality`). A run with disturbed timed
iterations (another process used the CPUs, or the GPU throttled), or that stopped on its budget
with an interval more than twice its target, is named on every row it enters (the ``Quality``
column), listed under the table with its source, and counted in the verdict line; the JSON
carries it per comparison (``quality``) and in all (``flagged_runs``, ``flagged``). With
``--strict`` such a comparison is refused (exit 2): on a CI runner shared with other jobs, a
ratio of two loaded runs is mostly the load.

**Stacks.** Ratios mix the change under test with any change of machine or software. When the
sides differ in device, threads, dtype, allocator (bench.measure.allocator) or the versions of torch, transformers, timm or a
deployment runtime (onnxruntime, openvino, onnx, onnxscript), ``compare`` warns; with ``--strict`` it refuses (exit 2), and also fails when a row has no
partner. A different lock or installed stack (``env_lock_sha256``/``env_stack_sha256``) warns.

Fractions (``--threshold``, ``--noise-floor``, ``--metric-threshold``) are fractions, 0.05 = 5 %:
a value of 1 or more is refused, and a legal but loose one (above 0.25) is warned about.

Exit status: 1 when any regression is flagged, 0 otherwise, 2 for bad input (and for runs
refused by ``--strict``).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import InputError
from ..results.records import BACKEND_VERSION_KEYS, POINT_KEYS
from .rows import (RUN_COLUMN, as_float, effective_match_keys, json_safe, load_results, match_rows, normalize_value,
                   not_ok_rows, ok_rows, parse_fraction, parse_list, row_key, row_label, row_samples, varying_keys,
                   write_output)
from .quality import describe as describe_flag
from .quality import flags as run_flags
from .metrics import (DEFAULT_METRIC_THRESHOLDS, DEFAULT_METRICS, DEFAULT_NOISE_FLOOR, DEFAULT_THRESHOLD, METRICS,  # noqa: F401
                      NOISE_FLOOR_RULE, PAIR_NOISE_FLOOR, SINGLE_RUN_NOISE_FLOOR, SPEEDUP_METRICS, MetricSpec,
                      point_noise_floor)
from .stats import IMPROVEMENT, REGRESSION, UNDEFINED, paired_ratio_ci, ratio_ci, verdict

#: Paired on: every point key but those describing the machine, not the configuration.
DEFAULT_MATCH_ON: Tuple[str, ...] = tuple(k for k in POINT_KEYS
                                          if k not in ("threads", "checkpoint", "checkpoint_fingerprint", "allocator"))
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
#: Sides that differ here are not comparable: a warning, or with --strict a refusal.
#: The deployment runtimes' versions (backend=onnxruntime/openvino) count as the torch version does.
STRICT_COLUMNS = ("device_name", "threads", "dtype", "allocator", "env_torch", "env_transformers", "env_timm") + tuple(
    f"env_{k}" for k in BACKEND_VERSION_KEYS)
#: Sides that differ here were measured on another installed stack: a warning.
STACK_COLUMNS = ("env_lock_sha256", "env_stack_sha256")


def metric_ratio(base_rows: Sequence[Mapping[str, Any]], cand_rows: Sequence[Mapping[str, Any]], spec: MetricSpec,
                 n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                 seed: int = DEFAULT_SEED,
                 pairs: Optional[Sequence[Tuple[int, int]]] = None) -> Optional[Dict[str, Any]]:
    """Compare one metric of a point's runs on both sides; None when no column is filled on both.

    ``pairs`` (indices into the two sides, from :func:`interleaved_pairs`): the runs were made in
    pairs at the same time, so the ratio is taken within pairs."""
    import numpy as np

    column = next((c for c in spec.columns if all(as_float(r.get(c)) is not None for r in [*base_rows, *cand_rows])),
                  None)
    if column is None:
        return None
    bv = float(np.median([as_float(r.get(column)) for r in base_rows]))
    cv = float(np.median([as_float(r.get(column)) for r in cand_rows]))
    out: Dict[str, Any] = {"metric": spec.name, "column": column, "unit": spec.unit, "base": bv, "candidate": cv,
                           "ratio": None, "ci_low": None, "ci_high": None, "method": "exact", "n_base": None,
                           "n_candidate": None, "runs_base": len(base_rows), "runs_candidate": len(cand_rows),
                           "note": ""}
    bs = [row_samples(r, spec.samples) for r in base_rows]
    cs = [row_samples(r, spec.samples) for r in cand_rows]
    if spec.samples and all(bs) and all(cs):
        try:
            if pairs is not None:  # measured in pairs at the same time: compare within pairs
                point, low, high = paired_ratio_ci([(bs[i], cs[j]) for i, j in pairs], n_resamples, confidence, seed)
            else:
                point, low, high = ratio_ci(bs, cs, n_resamples, confidence, seed)
        except ValueError as exc:
            out["note"] = str(exc)
            return out
        out.update(ratio=point, ci_low=low, ci_high=high, n_base=sum(map(len, bs)), n_candidate=sum(map(len, cs)),
                   method="bootstrap" if pairs is None else "paired bootstrap" if len(pairs) == 1 else "paired t")
        return out
    if spec.samples:
        out["note"] = "no raw samples: exact ratio of medians"
    if bv == 0:
        if cv == 0:
            out.update(ratio=1.0, ci_low=1.0, ci_high=1.0)
        else:
            out["note"] = "base value is 0: ratio undefined"
        return out
    out.update(ratio=cv / bv, ci_low=cv / bv, ci_high=cv / bv)
    return out


def _window(row: Mapping[str, Any]) -> Optional[Tuple[float, float]]:
    """The point's time window (timestamps have a resolution of 1 s)."""
    import datetime as dt

    try:
        start = dt.datetime.fromisoformat(str(row.get("timestamp"))).timestamp()
    except ValueError:
        return None
    wall = as_float(row.get("wall_s"))
    return None if wall is None else (start - 1.0, start + wall + 1.0)


def interleaved_pairs(base_rows: Sequence[Mapping[str, Any]],
                      cand_rows: Sequence[Mapping[str, Any]]) -> Optional[List[Tuple[int, int]]]:
    """``[(base index, candidate index), ...]`` when the two sides were measured in pairs at the
    same time, in turns (``timing.turns``): each base run with exactly one candidate run that
    names the same turn file and whose time window overlaps its own; else None. Every run must
    have seen another process take turns."""
    if len(base_rows) != len(cand_rows) or not base_rows:
        return None
    if not all((as_float(r.get("turns_taken")) or 0) >= 1 for r in [*base_rows, *cand_rows]):
        return None
    turn = lambda r: normalize_value(r.get("setting_timing_turns"))  # noqa: E731
    overlaps = lambda x, y: x[0] < y[1] and y[0] < x[1]  # noqa: E731
    wc = [_window(r) for r in cand_rows]
    pairs: List[Tuple[int, int]] = []
    for i, b in enumerate(base_rows):
        w = _window(b)
        if w is None or turn(b) is None:
            return None
        hits = [j for j, c in enumerate(cand_rows)
                if turn(c) == turn(b) and wc[j] is not None and overlaps(w, wc[j])]
        if len(hits) != 1 or any(j == hits[0] for _, j in pairs):
            return None
        pairs.append((i, hits[0]))
    return pairs


def side_differences(base_df, cand_df, columns: Sequence[str]) -> List[str]:
    """One line per column whose values differ between the ok rows of the two sides."""
    out = []
    for col in columns:
        if col not in base_df.columns or col not in cand_df.columns:
            continue
        vals = [sorted({str(normalize_value(v)) for v in (df[df["status"] == "ok"] if "status" in df else df)[col]
                        if normalize_value(v) is not None}) for df in (base_df, cand_df)]
        if vals[0] and vals[1] and vals[0] != vals[1]:
            out.append(f"{col} differs: base {', '.join(vals[0])} vs candidate {', '.join(vals[1])}")
    return out


def compare_tables(base_df, cand_df, match_on: Sequence[str] = DEFAULT_MATCH_ON,
                   metrics: Sequence[str] = DEFAULT_METRICS, threshold: float = DEFAULT_THRESHOLD,
                   metric_thresholds: Optional[Mapping[str, float]] = None, noise_floor: Optional[float] = None,
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                   seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Compare two results tables (each may hold several runs); returns a JSON-ready dict.

    ``noise_floor=None`` picks it per point from the runs it has (see the module docstring)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    metric_thresholds = {**{m: max(threshold, t) for m, t in DEFAULT_METRIC_THRESHOLDS.items()},
                         **(metric_thresholds or {})}
    keys, dropped = effective_match_keys(base_df, cand_df, match_on)
    if not keys:
        raise InputError(f"none of the match keys {', '.join(match_on)} is a column of both tables")
    b_ok, c_ok = ok_rows(base_df), ok_rows(cand_df)
    m = match_rows(b_ok, c_ok, keys)
    extra = varying_keys(b_ok + c_ok, [k for k in keys if k not in ("encoder", "resolution")])
    comparisons = []
    flagged: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
    for key, b_rows, c_rows in m.pairs:
        label = row_label(b_rows[0], extra)
        pairs = interleaved_pairs(b_rows, c_rows)
        quality = run_flags(b_rows, "base") + run_flags(c_rows, "candidate")
        for f in quality:
            flagged[(f["side"], f["run"], f["label"])] = f
        floor = noise_floor if noise_floor is not None else point_noise_floor(len(b_rows), len(c_rows),
                                                                               pairs is not None)
        for name in metrics:
            spec = METRICS[name]
            res = metric_ratio(b_rows, c_rows, spec, n_resamples, confidence, seed, pairs)
            if res is None:
                continue
            thr = metric_thresholds.get(name, threshold)
            res.update(config=dict(zip(keys, key)), label=label, threshold=thr, lower_is_better=spec.lower_is_better,
                       noise_floor=floor, interleaved=pairs is not None, quality=quality,
                       verdict=verdict(res["ratio"], res["ci_low"], res["ci_high"], thr, floor, spec.lower_is_better))
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

    n_runs = lambda df: int(df[RUN_COLUMN].nunique()) if RUN_COLUMN in df.columns else 1  # noqa: E731
    return json_safe({
        "match_on": keys, "dropped_match_keys": dropped, "metrics": list(metrics), "threshold": threshold,
        "metric_thresholds": metric_thresholds, "noise_floor": noise_floor, "resamples": n_resamples,
        "confidence": confidence, "seed": seed, "runs_base": n_runs(base_df), "runs_candidate": n_runs(cand_df),
        "matched": len(m.pairs), "comparisons": comparisons,
        "methods": {meth: sum(1 for c in comparisons if c["method"] == meth)
                    for meth in sorted({c["method"] for c in comparisons})},
        "flagged_runs": list(flagged.values()), "flagged": len(flagged),
        "regressions": sum(1 for c in comparisons if c["verdict"] == REGRESSION),
        "improvements": sum(1 for c in comparisons if c["verdict"] == IMPROVEMENT),
        "undefined": sum(1 for c in comparisons if c["verdict"] == UNDEFINED),
        "unmatched_base": describe(m.unmatched_base, c_bad), "unmatched_candidate": describe(m.unmatched_candidate, b_bad),
        "ambiguous_base": describe(m.ambiguous_base, {}), "ambiguous_candidate": describe(m.ambiguous_candidate, {}),
        "not_ok_base": len(not_ok_rows(base_df)), "not_ok_candidate": len(not_ok_rows(cand_df)),
        "incomparable": side_differences(base_df, cand_df, STRICT_COLUMNS),
        "stack_differences": side_differences(base_df, cand_df, STACK_COLUMNS),
    })


def encoder_speedups(df, baseline_encoder: str, context_keys: Optional[Sequence[str]] = None,
                     metrics: Sequence[str] = SPEEDUP_METRICS, n_resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Each encoder's speed-up (baseline median / encoder median) over ``baseline_encoder`` inside
    one result set, at matched resolution and at matched visual-token count (same remaining
    configuration keys: llm, dtype, device, batch size, ...)."""
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

    def speedup(b, o, metric):
        res = metric_ratio([o], [b], METRICS[metric], n_resamples, confidence, seed)  # baseline / other
        if res is None:
            return {"speedup": None, "ci_low": None, "ci_high": None, "note": "missing"}
        return {"speedup": res["ratio"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                "baseline_ms": res["candidate"], "ms": res["base"], "method": res["method"], "note": res["note"]}

    def entries(group_keys: List[str], mode: str) -> List[Dict[str, Any]]:
        out = []
        for o in others:
            if any(normalize_value(o.get(k)) is None for k in group_keys if k in ("visual_tokens", "resolution")):
                continue
            for b in (b for b in base_rows if row_key(b, group_keys) == row_key(o, group_keys)):
                e = {"mode": mode, "encoder": normalize_value(o.get("encoder")), "baseline_encoder": baseline_encoder,
                     "context": {k: normalize_value(o.get(k)) for k in context_keys},
                     "context_label": row_label({k: o.get(k) for k in context_keys}, extra),
                     "resolution": normalize_value(o.get("resolution")),
                     "baseline_resolution": normalize_value(b.get("resolution")),
                     "visual_tokens": normalize_value(o.get("visual_tokens")),
                     "baseline_visual_tokens": normalize_value(b.get("visual_tokens"))}
                e.update({metric: speedup(b, o, metric) for metric in metrics})
                out.append(e)
        out.sort(key=lambda e: (e["context_label"], str(e["resolution"]), str(e["visual_tokens"]), str(e["encoder"])))
        return out

    return json_safe({"baseline_encoder": baseline_encoder, "encoders": encoders, "context_keys": list(context_keys),
                      "metrics": list(metrics), "by_resolution": entries(context_keys + ["resolution"], "resolution"),
                      "by_tokens": (entries(context_keys + ["visual_tokens"], "visual_tokens")
                                    if "visual_tokens" in df.columns else [])})


# ---- command line ------------------------------------------------------------------------
def parse_threshold_overrides(items: Sequence[str]) -> Dict[str, float]:
    """``["ttft=0.10", "prefill=0.2,peak_memory=0.1"]`` -> ``{"ttft": 0.1, ...}``."""
    out: Dict[str, float] = {}
    for part in (p.strip() for item in items for p in item.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in METRICS:
            raise InputError(f"bad --metric-threshold {part!r}: expected METRIC=FRACTION with METRIC in "
                             f"{', '.join(METRICS)}")
        out[name.strip()] = parse_fraction(value, f"--metric-threshold {name.strip()}")
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="regression check between result sets (candidate / base)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", metavar="BASE", help="results (folder, .csv, .parquet, record .json); "
                   "several runs: comma-separated or a quoted glob")
    p.add_argument("candidate", metavar="CANDIDATE", nargs="?", help="as BASE (optional with --baseline-encoder)")
    p.add_argument("--match-on", default=None, help=f"keys rows are paired on (default: {','.join(DEFAULT_MATCH_ON)})")
    p.add_argument("--metrics", default=None, help=f"default: {','.join(DEFAULT_METRICS)}; known: {','.join(METRICS)}")
    p.add_argument("--threshold", default=str(DEFAULT_THRESHOLD), help="smallest change reported, as a fraction "
                   f"(default {DEFAULT_THRESHOLD})")
    # argparse formats help with %: the rule's own % signs must be doubled
    p.add_argument("--noise-floor", default=None, help="the interval must also clear 1 +- this, a fraction "
                   f"(default, per point: {NOISE_FLOOR_RULE.replace('%', '%%')})")
    p.add_argument("--metric-threshold", action="append", default=[], metavar="METRIC=FRACTION",
                   help="per-metric threshold, e.g. ttft=0.10 (repeatable)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 2000)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default 0)")
    p.add_argument("--baseline-encoder", default=None, metavar="NAME",
                   help="each encoder's speed-up over NAME inside BASE (and CANDIDATE if given)")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write a Markdown report (PR comment)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the full result as JSON")
    p.add_argument("--strict", action="store_true", help="refuse sides measured on different devices, threads, "
                   "dtypes or library versions, or holding runs whose records call them disturbed or stopped on the "
                   "budget far from their target (exit 2), and fail (exit 1) when a row has no partner")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .render import render_compare_markdown, render_compare_text, render_speedups_markdown, render_speedups_text

    threshold = parse_fraction(args.threshold, "--threshold")
    noise_floor = parse_fraction(args.noise_floor, "--noise-floor") if args.noise_floor is not None else None
    per_metric = parse_threshold_overrides(args.metric_threshold)
    match_on = parse_list(args.match_on) if args.match_on is not None else list(DEFAULT_MATCH_ON)
    metrics = parse_list(args.metrics) if args.metrics is not None else list(DEFAULT_METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if not match_on:
        raise InputError("--match-on needs at least one key")
    if unknown or not metrics:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)}")
    if args.resamples < 1 or not 0 < args.confidence < 1:
        raise InputError(f"--resamples must be at least 1 and --confidence strictly between 0 and 1 (a fraction, "
                         f"0.95 = 95 %), got {args.resamples} and {args.confidence:g}")
    if args.candidate is None and not args.baseline_encoder:
        raise InputError("CANDIDATE is required unless --baseline-encoder is given")

    base_df = load_results(args.base, "BASE")
    cand_df = load_results(args.candidate, "CANDIDATE") if args.candidate is not None else None
    payload: Dict[str, Any] = {"base": str(args.base), "candidate": args.candidate}
    text, md = [], []
    rc = 0
    if cand_df is not None:
        bad_keys = [k for k in match_on if k not in set(base_df.columns) | set(cand_df.columns)]
        if bad_keys:
            raise InputError(f"--match-on key(s) {', '.join(bad_keys)} are columns of neither table")
        result = compare_tables(base_df, cand_df, match_on, metrics, threshold, per_metric, noise_floor,
                                args.resamples, args.confidence, args.seed)
        if args.strict and result["incomparable"]:
            raise InputError("refusing to compare (--strict): " + "; ".join(result["incomparable"]))
        if result["matched"] == 0:
            twice = [(side, a) for side in ("base", "candidate") for a in result[f"ambiguous_{side}"]]
            if twice:
                side, a = twice[0]
                raise InputError(f"{side.upper()} holds the same point more than once in one run ({a['label']}; "
                                 f"{len(twice)} such row(s)): give each run its own folder or table, or add the "
                                 "key that tells them apart to --match-on")
            raise InputError(f"no ok rows matched between BASE and CANDIDATE on {', '.join(result['match_on'])}")
        if args.strict and result["flagged"]:
            raise InputError(f"refusing to decide (--strict): {result['flagged']} compared run(s) are disturbed or "
                             "stopped on the budget far from their target: "
                             + "; ".join(describe_flag(f) for f in result["flagged_runs"][:3])
                             + (" ..." if result["flagged"] > 3 else ""))
        absent = [m for m in metrics if not any(c["metric"] == m for c in result["comparisons"])]
        if len(absent) == len(metrics):  # nothing was compared: never an OK (issue 29)
            raise InputError(f"no matched row has {', '.join(absent)} (--metrics); e.g. tpot and e2e need rows "
                             "measured with decode_tokens")
        for m_name in absent:
            print(f"fastvlm-bench compare: warning: --metrics {m_name}: no matched row has it; not compared",
                  file=sys.stderr)
        payload["comparison"] = result
        text.append(render_compare_text(result, args.base, args.candidate))
        md.append(render_compare_markdown(result, args.base, args.candidate))
        if result["regressions"] or (args.strict and (result["unmatched_base"] or result["unmatched_candidate"])):
            rc = 1
    if args.baseline_encoder:
        payload["encoder_speedups"] = {}
        for side, name, df in [("base", args.base, base_df)] + ([("candidate", args.candidate, cand_df)]
                                                                 if cand_df is not None else []):
            sp = encoder_speedups(df, args.baseline_encoder, n_resamples=args.resamples, confidence=args.confidence,
                                  seed=args.seed)
            payload["encoder_speedups"][side] = sp
            text.append(render_speedups_text(sp, name if cand_df is not None else ""))
            md.append(render_speedups_markdown(sp, name if cand_df is not None else ""))
    payload["exit_status"] = rc
    print("\n\n".join(text))
    if args.markdown:
        write_output(args.markdown, "\n".join(md))
    if args.json:
        write_output(args.json, json.dumps(json_safe(payload), indent=1) + "\n")
    return rc
