"""Text (terminal) and Markdown (PR comment, CI summary) views of ``compare`` and ``gate``
results, built on the one table renderer (:mod:`bench.report.tables`)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..report.tables import format_table, markdown_table
from .stats import IMPROVEMENT, REGRESSION, UNCHANGED, UNDEFINED


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
    return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def fmt_change(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


# ---- compare ---------------------------------------------------------------------------------
VERDICT_TEXT = {REGRESSION: "REGRESSION", IMPROVEMENT: "improved", UNCHANGED: "", UNDEFINED: "n/a"}
VERDICT_MD = {REGRESSION: ":x: regression", IMPROVEMENT: ":rocket: improved", UNCHANGED: "", UNDEFINED: "n/a"}
_CMP_HEADERS = ("Configuration", "Metric", "Base", "Candidate", "Ratio", "Change", "CI", "Verdict")
_CMP_ALIGN = "llrrrrll"
_SECTIONS = (("unmatched_base", "only in base"), ("unmatched_candidate", "only in candidate"),
             ("ambiguous_base", "ambiguous in base (several rows of one run share a key)"),
             ("ambiguous_candidate", "ambiguous in candidate (several rows of one run share a key)"))


def _flagged(result: Dict[str, Any]) -> bool:
    return bool(result.get("flagged"))


def _cmp_headers(result: Dict[str, Any]) -> Tuple[Tuple[str, ...], str]:
    """The table's columns: a ``Quality`` column only when a compared run is flagged."""
    if _flagged(result):
        return _CMP_HEADERS + ("Quality",), _CMP_ALIGN + "l"
    return _CMP_HEADERS, _CMP_ALIGN


def _cmp_rows(result: Dict[str, Any], verdicts: Mapping[str, str]) -> List[List[str]]:
    from .quality import short

    rows = []
    for c in result["comparisons"]:
        note = f" ({c['note']})" if c.get("note") and c["verdict"] == UNDEFINED else ""
        metric = c["metric"] + (f" ({c['column']})" if c["column"] not in (f"{c['metric']}_ms", c["metric"]) else "")
        rows.append([c["label"], metric, fmt_value(c["base"], c["unit"]), fmt_value(c["candidate"], c["unit"]),
                     fmt_ratio(c["ratio"]), fmt_change(c["ratio"]), fmt_ci(c["ci_low"], c["ci_high"]),
                     verdicts[c["verdict"]] + note])
        if _flagged(result):
            rows[-1].append("; ".join(short(f) for f in c.get("quality") or []))
    return rows


def _rule_text(result: Dict[str, Any]) -> str:
    text = f"threshold {result['threshold'] * 100:g}%"
    per = result.get("metric_thresholds") or {}
    if per:
        text += " (" + ", ".join(f"{k}: {v * 100:g}%" for k, v in sorted(per.items())) + ")"
    floor = result.get("noise_floor")
    if floor is None:  # per point, from the runs it has
        floors = sorted({c["noise_floor"] for c in result["comparisons"] if c.get("noise_floor") is not None})
        from .metrics import NOISE_FLOOR_RULE

        return text + ", noise floor " + " / ".join(f"{f * 100:g}%" for f in floors) + f" ({NOISE_FLOOR_RULE})"
    return text + f", noise floor {floor * 100:g}%"


def _unmatched_lines(items: List[Dict[str, Any]]) -> List[str]:
    out = []
    for u in items:
        line = u["label"]
        if u.get("other_side_status"):
            msg = f": {str(u['other_side_message']).splitlines()[0][:160]}" if u.get("other_side_message") else ""
            line += f" (other side: status={u['other_side_status']}{msg})"
        out.append(line)
    return out


def summary_line(result: Dict[str, Any]) -> str:
    n_reg, n_imp, n = result["regressions"], result["improvements"], result["matched"]
    head = f"{n_reg} regression{'s' if n_reg != 1 else ''}" if n_reg else "no regressions"
    line = (f"{head}, {n_imp} improvement{'s' if n_imp != 1 else ''} over {n} matched configuration"
            f"{'s' if n != 1 else ''} ({_rule_text(result)})")
    if _flagged(result):
        line += (f"; but {result['flagged']} compared run(s) are disturbed or stopped on the budget far from their "
                 "target, so this verdict is not one to sign (--strict refuses)")
    return line


_METHOD_WORDS = {"paired t": "Student's t over interleaved pairs", "paired bootstrap":
                 "bootstrap of one interleaved pair's iterations", "exact": "exact ratio (no samples)"}


def _methods_text(result: Dict[str, Any]) -> str:
    """The interval methods actually used, with how many rows each (not the one the module
    would use in the general case)."""
    methods = result.get("methods") or {}
    several = min(result["runs_base"], result["runs_candidate"]) > 1
    words = dict(_METHOD_WORDS, bootstrap="hierarchical bootstrap (runs, then iterations)" if several
                 else "bootstrap over iterations (one run per side)")
    if not methods:
        return "no interval"
    if len(methods) == 1:
        return words.get(next(iter(methods)), next(iter(methods)))
    return ", ".join(f"{words.get(m, m)} ({k} rows)" for m, k in methods.items())


def _method(result: Dict[str, Any]) -> str:
    conf = int(round(result["confidence"] * 100))
    return (f"ratio = candidate/base (lower is better); {conf}% interval of the ratio of medians by "
            f"{_methods_text(result)}, over {result['runs_base']} base and {result['runs_candidate']} candidate "
            f"run(s) ({result['resamples']} resamples, seed {result['seed']}); matched on "
            f"{', '.join(result['match_on'])}")


def _warnings(result: Dict[str, Any]) -> List[str]:
    out = []
    if result.get("dropped_match_keys"):
        out.append(f"not matched on {', '.join(result['dropped_match_keys'])} (column missing in a table)")
    out += [f"{d}: sides are not comparable (--strict refuses)" for d in result.get("incomparable", [])]
    out += [f"{d}: ratios mix the change with a different stack" for d in result.get("stack_differences", [])]
    if _flagged(result):
        out.append(f"{result['flagged']} compared run(s) are disturbed or stopped on the budget far from their target "
                   "(listed below; --strict refuses)")
    return out


def _flagged_lines(result: Mapping[str, Any], bullet: str) -> List[str]:
    from .quality import describe

    runs = result.get("flagged_runs") or []
    if not runs:
        return []
    return ["", f"runs their records call disturbed or stopped on the budget far from the target ({len(runs)}):"] + \
        [bullet + describe(f) for f in runs]


def render_compare_text(result: Dict[str, Any], base_name: str = "BASE", cand_name: str = "CANDIDATE") -> str:
    lines = [f"compare: base {base_name}  vs  candidate {cand_name}", _method(result)]
    lines += [f"warning: {w}" for w in _warnings(result)] + [""]
    headers, align = _cmp_headers(result)
    lines.append(format_table(headers, _cmp_rows(result, VERDICT_TEXT), align) if result["comparisons"]
                 else "(no matched configurations)")
    for key, title in _SECTIONS:
        if result.get(key):
            lines += ["", f"{title} ({len(result[key])}):"] + [f"  - {x}" for x in _unmatched_lines(result[key])]
    lines += _flagged_lines(result, "  - ")
    verdict = "FAIL: " if result["regressions"] else "OK (unreliable runs): " if _flagged(result) else "OK: "
    lines += ["", verdict + summary_line(result)]
    return "\n".join(lines)


def render_compare_markdown(result: Dict[str, Any], base_name: str = "BASE", cand_name: str = "CANDIDATE") -> str:
    icon = ":x:" if result["regressions"] else ":warning:" if _flagged(result) else ":white_check_mark:"
    lines = ["<!-- fastvlm-bench-compare -->", f"### {icon} fastvlm-bench compare: {summary_line(result)}", "",
             f"Base `{base_name}` vs candidate `{cand_name}`: {_method(result)}. A regression needs a ratio above "
             "1 + threshold and an interval wholly above 1 + noise floor.", ""]
    lines += [f"> warning: {w}" for w in _warnings(result)]
    headers, align = _cmp_headers(result)
    lines.append(markdown_table(headers, _cmp_rows(result, VERDICT_MD), align) if result["comparisons"]
                 else "_No matched configurations._")
    lines += _flagged_lines(result, "- ")
    for key, title in _SECTIONS:
        if result.get(key):
            lines += ["", f"<details><summary>{title[0].upper() + title[1:]} ({len(result[key])})</summary>", ""]
            lines += [f"- {x}" for x in _unmatched_lines(result[key])] + ["", "</details>"]
    return "\n".join(lines) + "\n"


# ---- encoder speed-ups -----------------------------------------------------------------------
def _speedup_table(sp: Dict[str, Any], key: str) -> Tuple[List[str], List[List[str]], str]:
    names = {"vision_latency": "Vision", "ttft": "TTFT", "prefill": "Prefill"}
    headers = ["Context", "Encoder", "Res", "Tokens", "Baseline res", "Baseline tokens"]
    for m in sp["metrics"]:
        headers += [f"{names.get(m, m)} speed-up", f"{names.get(m, m)} CI"]
    rows = []
    for e in sp[key]:
        row = [e["context_label"], e["encoder"], e["resolution"], e["visual_tokens"], e["baseline_resolution"],
               e["baseline_visual_tokens"]]
        for m in sp["metrics"]:
            s = e.get(m) or {}
            row += ["-" if s.get("speedup") is None else f"{s['speedup']:.2f}x", fmt_ci(s.get("ci_low"), s.get("ci_high"))]
        rows.append(row)
    return headers, rows, "llrrrr" + "rl" * len(sp["metrics"])


_SPEEDUP_SECTIONS = (("by_resolution", "at matched resolution"), ("by_tokens", "at matched visual-token count"))


def render_speedups_text(sp: Dict[str, Any], name: str = "") -> str:
    lines = [f"encoder speed-ups over {sp['baseline_encoder']}" + (f" in {name}" if name else "")
             + " (speed-up = baseline median / encoder median; >1 means faster than the baseline)"]
    for key, title in _SPEEDUP_SECTIONS:
        headers, rows, align = _speedup_table(sp, key)
        lines += ["", f"{title}:", format_table(headers, rows, align) if rows else "  (no pairs)"]
    return "\n".join(lines)


def render_speedups_markdown(sp: Dict[str, Any], name: str = "") -> str:
    lines = [f"### Encoder speed-ups over `{sp['baseline_encoder']}`" + (f" in `{name}`" if name else ""), "",
             "Speed-up = baseline median / encoder median (> 1: faster than the baseline), with the "
             "bootstrap interval of the ratio of medians.", ""]
    for key, title in _SPEEDUP_SECTIONS:
        headers, rows, align = _speedup_table(sp, key)
        lines += [f"**{title[0].upper() + title[1:]}**", "", markdown_table(headers, rows, align) if rows
                  else "_No pairs._", ""]
    return "\n".join(lines)


# ---- gate ------------------------------------------------------------------------------------
_GATE_HEADERS = ("Result", "Check", "Subject", "Measured", "Required", "Detail")
_TM_HEADERS = ("Encoder", "Tokens", "Target", "Vision ms", "Target vision ms", "Vision speed-up", "TTFT ms",
               "Target TTFT ms", "TTFT speed-up")


def _check_rows(result: Mapping[str, Any], md: bool) -> List[List[str]]:
    mark = (lambda ok: ":white_check_mark: PASS" if ok else ":x: FAIL") if md else (lambda ok: "PASS" if ok else "FAIL")
    return [[mark(c["passed"]), c["section"], c["subject"], c["measured"], c["required"], c["detail"]]
            for c in sorted(result["checks"], key=lambda c: c["passed"])]  # failures first, stable


def _tm_rows(result: Mapping[str, Any]) -> List[List[str]]:
    f = lambda x, suffix="": "-" if x is None else f"{x:.2f}{suffix}"  # noqa: E731
    return [[f"{e['encoder']}@{e['resolution']}", e["visual_tokens"], f"{result['target']}@{e['target_resolution']}",
             f(e["vision_latency_ms"]), f(e["target_vision_latency_ms"]), f(e["vision_latency_speedup"], "x"),
             f(e["ttft_ms"]), f(e["target_ttft_ms"]), f(e["ttft_speedup"], "x")] for e in result["token_matched"]]


def gate_verdict_line(result: Mapping[str, Any]) -> str:
    note = (f" (but {result['flagged']} row(s) are disturbed or stopped far from their target)"
            if result.get("flagged") else "")
    if result["passed"]:
        return f"GATE PASS: all {result['n_checks']} checks passed{note}"
    return f"GATE FAIL: {result['n_failed']} of {result['n_checks']} checks failed"


def _gate_flag_lines(result: Mapping[str, Any], bullet: str) -> List[str]:
    from .quality import describe

    rows = result.get("flagged_rows") or []
    if not rows:
        return []
    return ["", f"warning: {len(rows)} row(s) their records call disturbed or stopped on the budget far from the "
            "target; the checks below them are not ones to sign (--strict refuses):"] + [bullet + describe(f) for f in rows]


def render_gate_text(result: Mapping[str, Any], results_path: str = "") -> str:
    lines = [f"fastvlm-bench gate: {results_path} (target {result['target']}); speed-ups are decided on the lower "
             "bound of their 95% interval", "", format_table(_GATE_HEADERS, _check_rows(result, False))]
    if result["token_matched"]:
        lines += ["", f"token-matched ({result['token_matched_tokens']} visual tokens), speed-up = other median / "
                  "target median (> 1: target faster; informational unless the config gates it):",
                  format_table(_TM_HEADERS, _tm_rows(result), "lrlrrrrrr")]
    lines += _gate_flag_lines(result, "  - ")
    return "\n".join(lines + ["", gate_verdict_line(result)])


def render_gate_markdown(result: Mapping[str, Any], results_path: str = "") -> str:
    icon = ":white_check_mark:" if result["passed"] else ":x:"
    lines = ["<!-- fastvlm-bench-gate -->", f"## {icon} fastvlm-bench CI gate: {'PASS' if result['passed'] else 'FAIL'} "
             f"({result['n_checks'] - result['n_failed']} of {result['n_checks']} checks passed)", "",
             f"Results `{results_path}`, target encoder `{result['target']}`. Speed-up = baseline median / target "
             "median from the same run; a speed-up check passes when the lower bound of its 95% interval "
             "reaches the minimum.", "", markdown_table(_GATE_HEADERS, _check_rows(result, True))]
    lines += _gate_flag_lines(result, "- ")
    if result["token_matched"]:
        lines += ["", f"### Token-matched configurations ({result['token_matched_tokens']} visual tokens)", "",
                  markdown_table(_TM_HEADERS, _tm_rows(result), "lrlrrrrrr")]
    return "\n".join(lines) + "\n"


