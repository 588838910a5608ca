"""Which rows ``compare`` and ``gate`` must not decide on silently: runs that their own records
call disturbed, and runs that stopped on the budget far from their target interval.

A record says how trustworthy its numbers are: ``disturbed_iterations`` counts the timed
iterations during which another process used the CPUs (or the GPU throttled), and
``stop_reason`` says whether the timed loop reached its target interval or ran out of budget
(``ttft_ci_rel`` etc. then say how wide it stayed). On a CI runner shared with other jobs both
happen, and a ratio of two such runs is mostly the other jobs' load: six interleaved pairs made
while another job loaded a 2-core machine had 4-7 disturbed iterations per run and TTFT
intervals of +-65-119 %, and still compared as "OK: no regressions". The report has flagged
such points since it existed; this module gives ``compare`` and ``gate`` the same facts, per
row and per run, so that they say so (and refuse with ``--strict``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from .rows import RUN_COLUMN, SOURCE_COLUMN, as_float, normalize_value, row_label

#: A run that stopped on its budget is "far from its target" when the half-width of its target
#: stage's interval is more than this many times ``timing.target`` (default 2 %: +-4 %).
FAR_FROM_TARGET = 2.0
#: The target stage when a row does not say (``setting_timing_target_stage``), then fallbacks.
_TARGET_STAGES = ("ttft", "vision_latency")


def row_issues(row: Mapping[str, Any]) -> List[str]:
    """What makes a row's timings doubtful, in words (empty: nothing)."""
    out = []
    disturbed = as_float(row.get("disturbed_iterations"))
    if disturbed:
        out.append(f"{int(disturbed)} disturbed iteration{'s' if disturbed != 1 else ''}")
    reason = normalize_value(row.get("stop_reason"))
    if reason in ("budget", "partner_left"):
        when = "on the budget" if reason == "budget" else "when its interleaved partner finished"
        stage = normalize_value(row.get("setting_timing_target_stage"))
        stages = ([stage] if stage else []) + [s for s in _TARGET_STAGES if s != stage]
        rel = next((as_float(row.get(f"{s}_ci_rel")) for s in stages if as_float(row.get(f"{s}_ci_rel")) is not None),
                   None)
        target = as_float(row.get("setting_timing_target"))
        if rel is None:
            out.append(f"stopped {when} without an interval")
        elif target is not None and rel > FAR_FROM_TARGET * target:
            out.append(f"stopped {when} at +-{rel * 100:.0f}% (target +-{target * 100:g}%)")
    return out


def flag(row: Mapping[str, Any], side: str) -> Optional[Dict[str, Any]]:
    """The row's flag (side, run, source, label, issues), or None when it is clean."""
    issues = row_issues(row)
    if not issues:
        return None
    run = normalize_value(row.get(RUN_COLUMN))
    return {"side": side, "run": 0 if run is None else run, "source": normalize_value(row.get(SOURCE_COLUMN)),
            "label": row_label(row), "issues": issues}


def flags(rows, side: str) -> List[Dict[str, Any]]:
    return [f for f in (flag(r, side) for r in rows) if f is not None]


def short(f: Mapping[str, Any]) -> str:
    """``base run 0: 5 disturbed iterations`` (for a table cell)."""
    return f"{f['side']} run {f['run']}: {', '.join(f['issues'])}"


def describe(f: Mapping[str, Any]) -> str:
    """One line naming the run, its source and what is wrong."""
    src = f" ({f['source']})" if f.get("source") else ""
    return f"{f['side']} run {f['run']}{src}, {f['label']}: {', '.join(f['issues'])}"
