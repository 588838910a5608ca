"""Every record is checked when it is read: a record that parses is not yet a record to trust.

A record file is read back by ``collect``, by a resumed sweep (which skips the point when its
record says ``ok``), and by ``report``/``compare``/``gate``. A file edited by hand, copied under
another name, or written by a newer version used to be trusted as long as it parsed: a stage
median that is a string became a traceback in ``to_row``, a TTFT that contradicts its own
stages was resumed as measured, and a copy under another name gave the table two rows for one
point. :func:`check_record` checks the parsed JSON against the one schema
(:mod:`bench.results.records`) before any other code sees it:

- **types**: every field of :class:`~bench.results.records.Record`,
  :class:`~bench.results.records.PointConfig` and :class:`~bench.results.records.StageStats`
  has the type its annotation says (an ``int`` is not a ``bool``, a ``float`` may be written as
  an integer, ``Optional`` fields may be null). The types come from the dataclasses themselves,
  so a field another feature adds is checked without an entry here. Unknown top-level fields
  are allowed (ignored when read, as before); unknown stage names are allowed and checked like
  the others;
- **enums**: ``status``, ``config.dtype``, ``config.attn_implementation``,
  ``config.timing_mode``;
- **schema version**: an integer from 1 to :data:`~bench.results.records.SCHEMA_VERSION`
  (a newer one was written by a newer fastvlm-bench, whose fields this one cannot read);
- **name = id**: inside a store, ``records/<id>.json`` must hold the record of point ``<id>``;
- **consistency**, within :data:`ABS_TOL_MS` + :data:`REL_TOL` x value (samples are stored
  rounded to 1e-6 ms; the statistics come from the unrounded values): per stage,
  ``n == len(samples)``, ``median`` is the median of the samples, ``min <= p10 <= median <=
  p90 <= max``, ``ci_low <= median <= ci_high``, ``mean`` within the samples' range, and
  ``std``, ``iqr`` >= 0, every number finite; TTFT is a span from the start of
  ``vision_latency`` to the end of ``prefill`` (:mod:`bench.measure.timer`), so its median is
  at least the median of each of ``vision_latency``, ``projector`` and ``prefill`` (checked on
  medians only, not per iteration or on their sum: records made for tests and by other tools,
  with independently drawn samples per stage, need not hold more); ``disturbed_iterations`` are indices of timed iterations; an
  ``ok`` record that has an LLM has a ``ttft`` stage. Counts and durations are not negative.
  Null stays null: a missing TTFT (encoder-only points, ``llm=none``) is not a zero.

A record that fails is :class:`~bench.results.store.CorruptRecordError`, handled exactly like a
file that does not parse: named, moved to ``records/corrupt/`` by the commands that may change
a results folder, and its point measured again on the next run.
"""
from __future__ import annotations

import math
import typing
from dataclasses import MISSING, fields
from typing import Any, Dict, List, Optional

from .records import DECODE_STAGES, SCHEMA_VERSION, STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, PointConfig, Record, StageStats

#: Absolute tolerance of the consistency checks, in ms (samples are rounded to 1e-6 ms, and
#: CUDA event times to about 0.5 us each).
ABS_TOL_MS = 1e-2
#: Relative tolerance of the consistency checks.
REL_TOL = 1e-3
#: TTFT contains these stages, back to back, in every iteration (the span vision_latency..prefill).
TTFT_PARTS = ("vision_latency", "projector", "prefill")

ENUMS: Dict[str, tuple] = {
    "status": (STATUS_OK, STATUS_ERROR, STATUS_SKIPPED),
    "config.dtype": ("fp32", "bf16", "fp16", "auto", "server"),  # server: an endpoint point (the server's own)
    "config.attn_implementation": ("sdpa", "eager"),
    "config.timing_mode": ("pipelined", "isolated"),
    "config.allocator": ("glibc", "glibc_held", "tcmalloc", "jemalloc"),  # bench.measure.allocator
}
#: Top-level numbers that are durations, sizes, energies or counts: never negative.
NON_NEGATIVE = ("visual_tokens", "visual_tokens_measured", "encoder_channels", "llm_hidden", "peak_memory_mb",
                "peak_rss_mb", "energy_per_inference_j", "avg_power_w", "build_s", "compile_s", "timed_s",
                "warmup_s", "wall_s", "device_peak_tflops", "warmup_iterations", "turns_taken", "idle_power_w",
                "energy_loop_s", "visual_tokens_encoder", "reduction_overhead_ms", "kv_cache_bytes",
                "decode_bytes_per_step")


class RecordInvalid(ValueError):
    """A parsed record that breaks the schema; the message lists what (one line)."""


def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass annotation (str, int, float, bool, Optional[...],
    List[...], Dict[...], Any; anything else is not checked here)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, List):
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin in (dict, Dict):
        return isinstance(value, dict)
    return True  # a dataclass (config, stages): checked on its own


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_fields(data: Dict[str, Any], cls, where: str, problems: List[str]) -> None:
    hints = _hints(cls)
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{where}{f.name} is missing")
            continue
        value = data[f.name]
        if not _type_ok(value, hints[f.name]):
            problems.append(f"{where}{f.name} must be {_type_name(hints[f.name])}, got {value!r:.60}")


def _close_or_above(a: float, b: float) -> bool:
    """``a >= b`` within the tolerances."""
    return a >= b - (ABS_TOL_MS + REL_TOL * abs(b))


def _check_stage(name: str, s: Dict[str, Any], problems: List[str]) -> None:
    where = f"stages.{name}."
    before = len(problems)
    _check_fields(s, StageStats, where, problems)
    if len(problems) > before:
        return
    nums = {k: s.get(k) for k in ("median", "mean", "p10", "p90", "iqr", "std", "ci_low", "ci_high", "ci_rel")}
    bad = [k for k, v in nums.items() if v is not None and not math.isfinite(v)]
    bad += ["samples"] if not all(math.isfinite(x) for x in s.get("samples", [])) else []
    if bad:
        problems.append(f"{where}{', '.join(bad)} must be finite numbers")
        return
    if s["n"] < 1:
        problems.append(f"{where}n must be >= 1, got {s['n']}")
    if s["std"] < 0 or s["iqr"] < 0:
        problems.append(f"{where}std and iqr must be >= 0")
    median = s["median"]
    if not (_close_or_above(median, s["p10"]) and _close_or_above(s["p90"], median)):
        problems.append(f"{where}p10 <= median <= p90 does not hold ({s['p10']}, {median}, {s['p90']})")
    if s.get("ci_low") is not None and s.get("ci_high") is not None:
        if not (_close_or_above(median, s["ci_low"]) and _close_or_above(s["ci_high"], median)):
            problems.append(f"{where}ci_low <= median <= ci_high does not hold "
                            f"({s['ci_low']}, {median}, {s['ci_high']})")
    samples = s.get("samples") or []
    if samples and min(samples) < 0:
        problems.append(f"{where}samples has negative times ({min(samples):.6g} ms)")
    if not samples and name in DECODE_STAGES and s["n"] > 0:  # decode stages always keep their samples
        problems.append(f"{where}samples is empty but n is {s['n']}")
    if samples:
        import numpy as np

        if s["n"] != len(samples):
            problems.append(f"{where}n is {s['n']} but there are {len(samples)} samples")
        m = float(np.median(samples))
        if abs(m - median) > ABS_TOL_MS + REL_TOL * abs(m):
            problems.append(f"{where}median {median} is not the median of its samples ({m:.6g})")
        lo, hi = min(samples), max(samples)
        for k in ("p10", "p90", "mean"):
            if not (_close_or_above(s[k], lo) and _close_or_above(hi, s[k])):
                problems.append(f"{where}{k} {s[k]} is outside its samples' range [{lo:.6g}, {hi:.6g}]")


def _check_ttft(stages: Dict[str, Dict[str, Any]], problems: List[str]) -> None:
    ttft = stages.get("ttft")
    parts = [stages[p] for p in TTFT_PARTS if stages.get(p)]
    if not ttft or not parts:
        return
    for p_name, p in zip([p for p in TTFT_PARTS if stages.get(p)], parts):
        if not _close_or_above(ttft["median"], p["median"]):
            problems.append(f"stages.ttft.median {ttft['median']} is below stages.{p_name}.median {p['median']}: "
                            "TTFT contains that stage")
            return


def _check_decode(cfg: Dict[str, Any], stages: Dict[str, Dict[str, Any]], problems: List[str]) -> None:
    """The decode stages against the point's ``decode_tokens``: ``itl`` holds at most one sample
    per decode step of every timed iteration; ``tpot`` (the mean step) times the steps is the
    ``decode`` stage (medians within a factor of 2: the same iterations' marks)."""
    n_out = int(cfg.get("decode_tokens") or 0)
    present = [k for k in DECODE_STAGES if k in stages]
    if not n_out:
        if present:
            problems.append(f"stages.{present[0]} is a decode stage but config.decode_tokens is 0")
        return
    iterations = max((stages[k]["n"] for k in ("e2e", "tpot", "decode", "ttft") if k in stages), default=0)
    itl = stages.get("itl")
    # an endpoint iteration has batch_size requests in flight, each with its own steps
    per = int(cfg.get("batch_size") or 1) if cfg.get("endpoint") else 1
    if itl and iterations and itl["n"] > n_out * per * iterations:
        problems.append(f"stages.itl.n is {itl['n']}, more than decode_tokens {n_out} x {iterations} timed iterations"
                        + (f" x {per} requests" if per > 1 else ""))
    tpot, dec = stages.get("tpot"), stages.get("decode")
    # an endpoint's steps are the gaps between streamed chunks, and a chunk may carry several tokens
    if tpot and dec and n_out > 1 and dec["median"] > 0 and not cfg.get("endpoint"):
        implied = tpot["median"] * (n_out - 1)
        if not 0.5 <= implied / dec["median"] <= 2.0 and abs(implied - dec["median"]) > ABS_TOL_MS * n_out:
            problems.append(f"stages.tpot.median {tpot['median']} x {n_out - 1} decode steps = {implied:.6g} ms "
                            f"contradicts stages.decode.median {dec['median']}")


def _check_reduction(data: Dict[str, Any], cfg: Dict[str, Any], problems: List[str]) -> None:
    """A reduced point keeps at most its encoder's tokens; its per-layer counts are counts."""
    enc, kept = data.get("visual_tokens_encoder"), data.get("visual_tokens")
    if isinstance(enc, int) and isinstance(kept, int) and kept > enc:
        problems.append(f"visual_tokens {kept} exceed visual_tokens_encoder {enc}: a reduction keeps fewer")
    if str(cfg.get("reduction") or "none") != "none":
        import json

        try:
            params = json.loads(cfg.get("reduction_params") or "")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            problems.append(f"config.reduction_params must be a JSON object for reduction={cfg.get('reduction')}, "
                            f"got {cfg.get('reduction_params')!r:.60}")
    per_layer = data.get("llm_visual_tokens_per_layer") or []
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in per_layer):
        problems.append(f"llm_visual_tokens_per_layer must be whole numbers >= 0, got {per_layer[:5]!r:.60}")


def _check_backend(info: Dict[str, Any], problems: List[str]) -> None:
    """A runtime stage's numerics and times are finite numbers >= 0: NaN would read as an
    eager row's null, and a NaN error passes no tolerance."""
    stages = info.get("stages") if isinstance(info, dict) else None
    for name, st in (stages or {}).items():
        if not isinstance(st, dict):
            problems.append(f"backend_info.stages.{name} must be an object, got {st!r:.60}")
            continue
        for k in ("max_abs_err", "max_rel_err", "tolerance", "ref_scale", "export_s", "load_s", "cache_check_s"):
            v = st.get(k)
            if k in st and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                problems.append(f"backend_info.stages.{name}.{k} must be a finite number >= 0, got {v!r:.60}")
        if all(isinstance(st.get(k), (int, float)) for k in ("max_rel_err", "tolerance")) \
                and st["max_rel_err"] > st["tolerance"] and not problems:
            problems.append(f"backend_info.stages.{name}.max_rel_err {st['max_rel_err']} is above its tolerance "
                            f"{st['tolerance']}: such a point is an error, not a result")


def problems_of(data: Any, expected_id: Optional[str] = None) -> List[str]:
    """Everything wrong with a parsed record (empty: a record to trust)."""
    if not isinstance(data, dict):
        return [f"a record is a JSON object, got {type(data).__name__}"]
    problems: List[str] = []
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        return [f"schema_version {version!r} is not one this fastvlm-bench reads (1 to {SCHEMA_VERSION}; "
                "a newer one was written by a newer version)"]
    _check_fields(data, Record, "", problems)
    cfg = data.get("config")
    if isinstance(cfg, dict):
        unknown = sorted(set(cfg) - {f.name for f in fields(PointConfig)})
        if unknown:
            problems.append(f"config has unknown key(s) {', '.join(unknown)}")
        _check_fields(cfg, PointConfig, "config.", problems)
        for key in ("resolution", "batch_size"):
            if isinstance(cfg.get(key), int) and cfg[key] < 1:
                problems.append(f"config.{key} must be >= 1, got {cfg[key]}")
    if problems:  # wrong types: the checks below would only repeat them
        return problems
    for key, allowed in ENUMS.items():
        obj, _, name = key.rpartition(".")
        value = (data[obj] if obj else data).get(name)
        if value is not None and value not in allowed:
            problems.append(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key in NON_NEGATIVE:
        if data.get(key) is not None and (not math.isfinite(data[key]) or data[key] < 0):
            problems.append(f"{key} must be a finite number >= 0, got {data[key]!r}")
    stages = data.get("stages") or {}
    good = {}
    for name, s in stages.items():
        if s is None:  # null, not measured
            continue
        if not isinstance(s, dict):
            problems.append(f"stages.{name} must be an object, got {s!r:.60}")
            continue
        before = len(problems)
        _check_stage(name, s, problems)
        if len(problems) == before:
            good[name] = s
    _check_ttft(good, problems)
    _check_decode(cfg, good, problems)
    _check_reduction(data, cfg, problems)
    _check_backend(data.get("backend_info") or {}, problems)
    n_timed = max((s["n"] for s in good.values()), default=0)
    bad_idx = [i for i in data.get("disturbed_iterations") or [] if i < 0 or (n_timed and i >= n_timed)]
    if bad_idx:
        problems.append(f"disturbed_iterations {bad_idx[:5]} are not indices of the {n_timed} timed iterations")
    for part, v in (data.get("params") or {}).items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            problems.append(f"params.{part} must be a whole number >= 0 or null, got {v!r:.60}")
    for stage, v in (data.get("flops") or {}).items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            problems.append(f"flops.{stage} must be a number >= 0 or null, got {v!r:.60}")
    if data.get("status") == STATUS_OK and isinstance(cfg, dict) and cfg.get("llm") not in (None, "none") \
            and "ttft" not in good and not [p for p in problems if p.startswith("stages.")]:
        problems.append("an ok record of a point with an LLM has no ttft stage")
    if expected_id is not None and not problems:
        actual = PointConfig(**cfg).point_id()
        if actual != expected_id:
            problems.append(f"the file is named for point {expected_id} but holds point {actual} "
                            "(a copy or a hand edit): one file per point, named by its id")
    return problems


def check_record(data: Any, expected_id: Optional[str] = None) -> Record:
    """The :class:`Record` of parsed JSON ``data``, or :class:`RecordInvalid` saying what is wrong.

    ``expected_id``: the point id the file's name says (``records/<id>.json``)."""
    problems = problems_of(data, expected_id)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RecordInvalid("; ".join(problems[:3]) + more)
    return Record.from_dict(data)
