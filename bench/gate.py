"""``fastvlm-bench gate``: the CI baseline gate on one result set.

Usage::

    fastvlm-bench gate RESULTS_DIR [--config sweeps/gate/ci_baseline.yaml]
                       [--markdown FILE] [--json FILE]

Checks, with thresholds from the YAML config (see ``sweeps/gate/ci_baseline.yaml``):

1. *visual tokens* (``check_visual_tokens: true``): every ok row's ``visual_tokens`` equals
   the analytical count ``get_encoder_spec(encoder).num_tokens(resolution)``.
2. *matched resolution*: for each ``matched_resolution`` entry, among the rows matching
   ``select``, the target encoder (``target``, FastViTHD) and every listed baseline encoder
   have an ok row at that resolution (a missing, skipped or failed row is a gate failure,
   never a silent pass); ``baseline_tokens / target_tokens`` equals each ``token_factor``;
   and ``baseline_median / target_median >= min_speedup[baseline][metric]`` for each
   metric (vision_latency, prefill, ttft; medians of the same run).
3. *token matched*: each ``token_matched`` point is present with exactly
   ``visual_tokens`` tokens; the target's speed-ups over the other points are reported
   (and gated only when the section has its own ``min_speedup``).

Exit status: 0 when every check passes, 1 when any fails, 2 for bad input (missing or
malformed results or config), each reported as one line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .compare import (InputError, as_float, bootstrap_ratio_ci, fmt_ci, format_table, json_safe, load_results,
                      markdown_table, normalize_value, ok_rows, row_label, row_samples, write_text)
from .records import POINT_KEYS, STAGES

PROG = "fastvlm-bench gate"
DEFAULT_CONFIG = "sweeps/gate/ci_baseline.yaml"
TIMED_METRICS = tuple(s for s in STAGES if s != "preprocess")  # vision_latency, projector, prefill, ttft

TokenCounter = Callable[[str, int], int]


class GateConfigError(InputError):
    """The gate configuration is missing or malformed."""


@dataclass
class Check:
    section: str  # visual_tokens | present | token_factor | speedup | token_matched
    subject: str
    measured: str
    required: str
    passed: bool
    detail: str = ""
    value: Optional[float] = None


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
def resolve_config_path(path: str) -> Path:
    """``path`` as given, else a ``sweeps/...`` path inside the package's own config tree
    (the checkout's ``sweeps/`` or the copy bundled in the wheel), so the default works from
    any folder."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    if p.parts and p.parts[0] == "sweeps":
        from .resources import sweeps_dir

        alt = sweeps_dir().joinpath(*p.parts[1:])
        if alt.exists():
            return alt
    return p


def _speedup_map(value: Any, where: str) -> Dict[str, Dict[str, float]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GateConfigError(f"{where}: expected a mapping encoder -> {{metric: ratio}}")
    out: Dict[str, Dict[str, float]] = {}
    for enc, metrics in value.items():
        if not isinstance(metrics, dict) or not metrics:
            raise GateConfigError(f"{where}.{enc}: expected a mapping metric -> minimum speed-up")
        out[str(enc)] = {}
        for metric, ratio in metrics.items():
            if metric not in TIMED_METRICS:
                raise GateConfigError(f"{where}.{enc}: unknown metric {metric!r}; known: {', '.join(TIMED_METRICS)}")
            r = as_float(ratio)
            if r is None or not math.isfinite(r) or r <= 0:
                raise GateConfigError(f"{where}.{enc}.{metric}: expected a positive number, got {ratio!r}")
            out[str(enc)][str(metric)] = r
    return out


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GateConfigError(f"{where}: expected a whole number, got {value!r}")
    return value


TOP_KEYS = ("sweep", "target", "select", "check_visual_tokens", "min_speedup", "matched_resolution",
            "token_matched")
ENTRY_KEYS = ("resolution", "baselines", "token_factor", "min_speedup")
TOKEN_MATCHED_KEYS = ("visual_tokens", "points", "min_speedup")
POINT_ENTRY_KEYS = ("encoder", "resolution")


def _known_keys(mapping: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    """Reject keys the gate does not read: a typo (``matched_resolutions``) would otherwise
    make its checks silently vanish and the gate pass."""
    unknown = [str(k) for k in mapping if k not in valid]
    if unknown:
        raise GateConfigError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                              f"valid: {', '.join(valid)}")


def validate_config(cfg: Any) -> Dict[str, Any]:
    """Check and normalise a gate config (a parsed YAML mapping); raises GateConfigError."""
    if not isinstance(cfg, dict):
        raise GateConfigError("gate config must be a YAML mapping")
    _known_keys(cfg, TOP_KEYS, "top level")
    target = cfg.get("target")
    if not isinstance(target, str) or not target:
        raise GateConfigError("gate config needs 'target' (the encoder under test, e.g. fastvithd)")
    select = cfg.get("select") or {}
    if not isinstance(select, dict):
        raise GateConfigError("'select' must be a mapping column -> value")
    _known_keys(select, POINT_KEYS, "select")
    min_speedup = _speedup_map(cfg.get("min_speedup"), "min_speedup")
    entries = cfg.get("matched_resolution") or []
    if not isinstance(entries, list):
        raise GateConfigError("'matched_resolution' must be a list of {resolution, baselines, token_factor}")
    norm_entries = []
    for i, e in enumerate(entries):
        where = f"matched_resolution[{i}]"
        if not isinstance(e, dict):
            raise GateConfigError(f"{where}: expected a mapping")
        _known_keys(e, ENTRY_KEYS, where)
        res = _int(e.get("resolution"), f"{where}.resolution")
        baselines = e.get("baselines") or []
        if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
            raise GateConfigError(f"{where}.baselines: expected a list of encoder names")
        factors = e.get("token_factor") or {}
        if not isinstance(factors, dict):
            raise GateConfigError(f"{where}.token_factor: expected a mapping encoder -> factor")
        norm_factors = {}
        for enc, f in factors.items():
            fv = as_float(f)
            if fv is None or fv <= 0:
                raise GateConfigError(f"{where}.token_factor.{enc}: expected a positive number, got {f!r}")
            norm_factors[str(enc)] = fv
        speed = dict(min_speedup)
        speed.update(_speedup_map(e.get("min_speedup"), f"{where}.min_speedup"))
        missing = [b for b in baselines if b not in speed]
        if missing:
            raise GateConfigError(f"{where}: no min_speedup for baseline(s) {', '.join(missing)}")
        norm_entries.append({"resolution": res, "baselines": list(baselines), "token_factor": norm_factors,
                             "min_speedup": {b: speed[b] for b in baselines}})
    tm = cfg.get("token_matched")
    norm_tm = None
    if tm is not None:
        if not isinstance(tm, dict):
            raise GateConfigError("'token_matched' must be a mapping {visual_tokens, points}")
        _known_keys(tm, TOKEN_MATCHED_KEYS, "token_matched")
        tokens = _int(tm.get("visual_tokens"), "token_matched.visual_tokens")
        points = tm.get("points") or []
        if not isinstance(points, list) or not points:
            raise GateConfigError("token_matched.points: expected a non-empty list of {encoder, resolution}")
        norm_points = []
        for i, pnt in enumerate(points):
            if not isinstance(pnt, dict) or not isinstance(pnt.get("encoder"), str):
                raise GateConfigError(f"token_matched.points[{i}]: expected {{encoder: NAME, resolution: N}}")
            _known_keys(pnt, POINT_ENTRY_KEYS, f"token_matched.points[{i}]")
            norm_points.append({"encoder": pnt["encoder"],
                                "resolution": _int(pnt.get("resolution"), f"token_matched.points[{i}].resolution")})
        norm_tm = {"visual_tokens": tokens, "points": norm_points,
                   "min_speedup": _speedup_map(tm.get("min_speedup"), "token_matched.min_speedup")}
    if not norm_entries and norm_tm is None and not cfg.get("check_visual_tokens", True):
        raise GateConfigError("gate config checks nothing: give matched_resolution, token_matched or "
                              "check_visual_tokens")
    return {"sweep": cfg.get("sweep"), "target": target, "select": dict(select),
            "check_visual_tokens": bool(cfg.get("check_visual_tokens", True)),
            "matched_resolution": norm_entries, "token_matched": norm_tm}


def load_gate_config(path: str) -> Dict[str, Any]:
    import yaml

    p = resolve_config_path(path)
    if not p.is_file():
        raise GateConfigError(f"gate config {path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GateConfigError(f"gate config {p}: not valid YAML ({first})") from None
    try:
        return validate_config(raw)
    except GateConfigError as exc:
        raise GateConfigError(f"gate config {p}: {exc}") from None


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------
def registry_token_count(encoder: str, resolution: int) -> int:
    """Analytical visual-token count from the encoder registry (no model is built)."""
    from bench.models.encoders import get_encoder_spec  # lazy: keeps the gate import light

    return int(get_encoder_spec(encoder).num_tokens(int(resolution)))


def check_visual_tokens(rows: Sequence[Mapping[str, Any]], count: TokenCounter = registry_token_count) -> List[Check]:
    """One check per ok row: recorded visual_tokens == analytical count."""
    checks = []
    for r in rows:
        enc, res = normalize_value(r.get("encoder")), normalize_value(r.get("resolution"))
        got = normalize_value(r.get("visual_tokens"))
        subject = row_label(r)
        required, detail, passed = "?", "", False
        try:
            expected = count(str(enc), int(res))
            required = str(expected)
            passed = got is not None and int(got) == expected
            if got is None:
                detail = "no visual_tokens recorded"
            elif not passed:
                detail = f"recorded {got} but the architecture gives {expected}"
        except Exception as exc:  # unknown encoder, invalid resolution, registry not importable
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            detail = f"no analytical count ({type(exc).__name__}: {first})"
        checks.append(Check("visual_tokens", subject, "-" if got is None else str(got), f"== {required}",
                            passed, detail, None if got is None else float(got)))
    return checks


def _matches_select(row: Mapping[str, Any], select: Mapping[str, Any]) -> bool:
    return all(normalize_value(row.get(k)) == normalize_value(v) for k, v in select.items())


class RowFinder:
    """Looks up the one ok row of (encoder, resolution) among selected rows, explaining misses."""

    def __init__(self, df, select: Mapping[str, Any]):
        self.select = dict(select)
        self.all_rows = df.to_dict("records")
        self.ok = [r for r in ok_rows(df) if _matches_select(r, self.select)]
        self._reported: set = set()

    def find(self, encoder: str, resolution: int) -> Tuple[Optional[Dict[str, Any]], str]:
        hits = [r for r in self.ok if normalize_value(r.get("encoder")) == encoder
                and normalize_value(r.get("resolution")) == resolution]
        if len(hits) == 1:
            return hits[0], ""
        if len(hits) > 1:
            return None, f"{len(hits)} ok rows match (ambiguous): narrow the gate's 'select'"
        others = [r for r in self.all_rows if normalize_value(r.get("encoder")) == encoder
                  and normalize_value(r.get("resolution")) == resolution]
        sel_others = [r for r in others if _matches_select(r, self.select)]
        if sel_others:
            r = sel_others[0]
            msg = str(normalize_value(r.get("message")) or "").strip().splitlines()
            return None, f"row has status={normalize_value(r.get('status'))}" + (f": {msg[0][:200]}" if msg else "")
        if others:
            return None, "rows exist but none matches select " + json.dumps(self.select, default=str)
        return None, "no row in the results"

    def presence(self, encoder: str, resolution: int, checks: List[Check], context: str
                 ) -> Optional[Dict[str, Any]]:
        """The row, or None after adding one failing 'present' check (once per point)."""
        row, why = self.find(encoder, resolution)
        if row is None and (encoder, resolution) not in self._reported:
            self._reported.add((encoder, resolution))
            checks.append(Check("present", f"{encoder}@{resolution}", "missing", "ok row", False,
                                f"{why} (needed for {context})"))
        return row


def median_ms(row: Mapping[str, Any], metric: str) -> Optional[float]:
    v = as_float(row.get(f"{metric}_ms"))
    if v is None:
        s = row_samples(row, f"{metric}_samples_ms")
        if s:
            s = sorted(s)
            n = len(s)
            v = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return v


def speedup_check(target_row, base_row, metric: str, minimum: float, section: str, subject: str) -> Check:
    t, b = median_ms(target_row, metric), median_ms(base_row, metric)
    if t is None or b is None or t <= 0:
        return Check(section, subject, "-", f">= {minimum:g}x", False,
                     f"no {metric} median on {'target' if t is None or t <= 0 else 'baseline'} row")
    ratio = b / t
    detail = f"{metric}: baseline {b:.2f} ms / target {t:.2f} ms"
    ts, bs = row_samples(target_row, f"{metric}_samples_ms"), row_samples(base_row, f"{metric}_samples_ms")
    if ts and bs:
        try:
            _, lo, hi = bootstrap_ratio_ci(ts, bs)
            detail += f"; 95% CI {fmt_ci(lo, hi)}"
        except ValueError:
            pass
    return Check(section, subject, f"{ratio:.2f}x", f">= {minimum:g}x", ratio >= minimum, detail, ratio)


def check_matched_resolution(finder: RowFinder, target: str, entries: Sequence[Mapping[str, Any]]) -> List[Check]:
    checks: List[Check] = []
    for e in entries:
        res = e["resolution"]
        ctx = f"matched resolution {res}"
        t_row = finder.presence(target, res, checks, ctx)
        for b in e["baselines"]:
            b_row = finder.presence(b, res, checks, ctx)
            if t_row is None or b_row is None:
                continue
            if b in e["token_factor"]:
                want = e["token_factor"][b]
                tt, bt = as_float(t_row.get("visual_tokens")), as_float(b_row.get("visual_tokens"))
                subject = f"{b}/{target} tokens @{res}"
                if not tt or bt is None:
                    checks.append(Check("token_factor", subject, "-", f"== {want:g}x", False, "visual_tokens missing"))
                else:
                    f = bt / tt
                    checks.append(Check("token_factor", subject, f"{f:g}x", f"== {want:g}x",
                                        math.isclose(f, want, rel_tol=1e-6),
                                        f"{b} {bt:.0f} tokens / {target} {tt:.0f} tokens", f))
            for metric, minimum in e["min_speedup"][b].items():
                checks.append(speedup_check(t_row, b_row, metric, minimum, "speedup",
                                            f"{target} vs {b} @{res} {metric}"))
    return checks


def check_token_matched(finder: RowFinder, target: str, tm: Optional[Mapping[str, Any]]
                        ) -> Tuple[List[Check], List[Dict[str, Any]]]:
    """Presence and token checks of the token-matched points, plus their speed-up table."""
    if not tm:
        return [], []
    checks: List[Check] = []
    want = tm["visual_tokens"]
    ctx = f"token-matched set ({want} tokens)"
    rows = {}
    for p in tm["points"]:
        r = finder.presence(p["encoder"], p["resolution"], checks, ctx)
        if r is None:
            continue
        rows[(p["encoder"], p["resolution"])] = r
        got = normalize_value(r.get("visual_tokens"))
        checks.append(Check("token_matched", f"{p['encoder']}@{p['resolution']}", "-" if got is None else str(got),
                            f"== {want}", got is not None and int(got) == want,
                            "" if got == want else f"point is not at {want} tokens"))
    info: List[Dict[str, Any]] = []
    targets = [(k, r) for k, r in rows.items() if k[0] == target]
    for (t_enc, t_res), t_row in targets:
        for (enc, res), r in rows.items():
            if enc == target:
                continue
            entry = {"encoder": enc, "resolution": res, "target_resolution": t_res,
                     "visual_tokens": normalize_value(r.get("visual_tokens"))}
            for metric in ("vision_latency", "ttft"):
                t, b = median_ms(t_row, metric), median_ms(r, metric)
                entry[f"{metric}_ms"] = b
                entry[f"target_{metric}_ms"] = t
                entry[f"{metric}_speedup"] = (b / t) if (t and b is not None) else None
            info.append(entry)
            for metric, minimum in (tm.get("min_speedup") or {}).get(enc, {}).items():
                checks.append(speedup_check(t_row, r, metric, minimum, "speedup",
                                            f"{target}@{t_res} vs {enc}@{res} {metric} ({want} tokens)"))
    return checks, info


def run_gate(df, config: Mapping[str, Any], count: TokenCounter = registry_token_count) -> Dict[str, Any]:
    """All checks of a validated config on one results table; returns a JSON-ready dict."""
    checks: List[Check] = []
    if config.get("check_visual_tokens", True):
        checks += check_visual_tokens(ok_rows(df), count)
    finder = RowFinder(df, config.get("select") or {})
    checks += check_matched_resolution(finder, config["target"], config.get("matched_resolution") or [])
    tm_checks, tm_info = check_token_matched(finder, config["target"], config.get("token_matched"))
    checks += tm_checks
    if not checks:
        checks.append(Check("present", "results", "0 ok rows", "rows to check", False, "nothing to check"))
    failed = [c for c in checks if not c.passed]
    return json_safe({"passed": not failed, "n_checks": len(checks), "n_failed": len(failed),
                      "target": config["target"], "select": config.get("select") or {},
                      "checks": [asdict(c) for c in checks], "token_matched": tm_info,
                      "token_matched_tokens": (config.get("token_matched") or {}).get("visual_tokens")})


# ---------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------
_HEADERS = ("Result", "Check", "Subject", "Measured", "Required", "Detail")


def _check_rows(result: Mapping[str, Any], md: bool) -> List[List[str]]:
    ordered = sorted(result["checks"], key=lambda c: c["passed"])  # failures first, stable
    mark = (lambda ok: ":white_check_mark: PASS" if ok else ":x: FAIL") if md else (lambda ok: "PASS" if ok else "FAIL")
    return [[mark(c["passed"]), c["section"], c["subject"], c["measured"], c["required"], c["detail"]]
            for c in ordered]


def _tm_rows(result: Mapping[str, Any]) -> List[List[str]]:
    def f(x, suffix=""):
        return "-" if x is None else f"{x:.2f}{suffix}"
    return [[f"{e['encoder']}@{e['resolution']}", e["visual_tokens"], f"{result['target']}@{e['target_resolution']}",
             f(e["vision_latency_ms"]), f(e["target_vision_latency_ms"]), f(e["vision_latency_speedup"], "x"),
             f(e["ttft_ms"]), f(e["target_ttft_ms"]), f(e["ttft_speedup"], "x")] for e in result["token_matched"]]


_TM_HEADERS = ("Encoder", "Tokens", "Target", "Vision ms", "Target vision ms", "Vision speed-up",
               "TTFT ms", "Target TTFT ms", "TTFT speed-up")


def verdict_line(result: Mapping[str, Any]) -> str:
    if result["passed"]:
        return f"GATE PASS: all {result['n_checks']} checks passed"
    return f"GATE FAIL: {result['n_failed']} of {result['n_checks']} checks failed"


def render_gate_text(result: Mapping[str, Any], results_path: str = "") -> str:
    lines = [f"fastvlm-bench gate: {results_path} (target {result['target']})", "",
             format_table(_HEADERS, _check_rows(result, False))]
    if result["token_matched"]:
        lines += ["", f"token-matched ({result['token_matched_tokens']} visual tokens), speed-up = other median / target median "
                  "(> 1: target faster; informational unless the config gates it):",
                  format_table(_TM_HEADERS, _tm_rows(result), "lrlrrrrrr")]
    lines += ["", verdict_line(result)]
    return "\n".join(lines)


def render_gate_markdown(result: Mapping[str, Any], results_path: str = "") -> str:
    icon = ":white_check_mark:" if result["passed"] else ":x:"
    lines = ["<!-- fastvlm-bench-gate -->", f"## {icon} fastvlm-bench CI gate: {'PASS' if result['passed'] else 'FAIL'} "
             f"({result['n_checks'] - result['n_failed']} of {result['n_checks']} checks passed)", "",
             f"Results `{results_path}`, target encoder `{result['target']}`. Speed-up = baseline median / "
             f"target median from the same run.", "",
             markdown_table(_HEADERS, _check_rows(result, True))]
    if result["token_matched"]:
        lines += ["", f"### Token-matched configurations ({result['token_matched_tokens']} visual tokens)", "",
                  markdown_table(_TM_HEADERS, _tm_rows(result), "lrlrrrrrr")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="CI baseline gate: analytical token counts and the target "
                                "encoder's speed-ups over baseline encoders in one result set.")
    p.add_argument("results", metavar="RESULTS_DIR", help="results folder (results/<sweep>), .csv or .parquet")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"gate thresholds (default {DEFAULT_CONFIG})")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the gate report as Markdown")
    p.add_argument("--json", default=None, metavar="FILE", help="write the gate result as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        config = load_gate_config(args.config)
        df = load_results(args.results, "RESULTS")
        result = run_gate(df, config)
        result["results"] = str(args.results)
        result["config"] = str(resolve_config_path(args.config))
        print(render_gate_text(result, args.results))
        if args.markdown:
            write_text(args.markdown, render_gate_markdown(result, args.results))
        if args.json:
            write_text(args.json, json.dumps(result, indent=1) + "\n")
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
