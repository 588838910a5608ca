"""The gate's checks: one function each, registered by name.

A check takes the :class:`GateContext` (the results table, the validated config, a row finder)
and returns :class:`Check` results; adding a gate check is one function with
``@CHECKS.register("name")``. Every speed-up is decided on the **lower bound** of its 95 %
interval (hierarchical bootstrap of the ratio of medians), never on the point ratio, and every
token check uses the token count measured on the real forward pass
(``visual_tokens_measured``), never the analytical formula it is checked against.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..registry import Registry
from .gate_config import GateConfig
from .render import fmt_ci
from .rows import as_float, median_ms, normalize_value, ok_rows, row_label, row_samples
from .stats import ratio_ci

TokenCounter = Callable[[str, int], int]


@dataclass
class Check:
    section: str  # visual_tokens | present | token_factor | speedup | token_matched
    subject: str
    measured: str
    required: str
    passed: bool
    detail: str = ""
    value: Optional[float] = None


def registry_token_count(encoder: str, resolution: int) -> int:
    """Analytical visual-token count from the encoder registry (no model is built)."""
    from ..models.encoders import get_encoder_spec

    return int(get_encoder_spec(encoder).num_tokens(int(resolution)))


def row_token_count(row: Mapping[str, Any], count: "TokenCounter") -> int:
    """A row's analytical count: ``count(encoder, resolution)`` untiled; a tiled row's merged
    count from its tiling knobs (bench.models.tiling), which the encoder's formula does not know."""
    if normalize_value(row.get("hf")) or normalize_value(row.get("endpoint")):  # a transformers point: its
        # processor's placeholder count, which its forward must fill; a server: the image tokens it counted
        return int(normalize_value(row.get("visual_tokens")))
    tiling = normalize_value(row.get("tiling")) or "none"
    enc, res = str(normalize_value(row.get("encoder"))), int(normalize_value(row.get("resolution")))
    if tiling == "none":
        return int(count(enc, res))
    from ..models.tiling import visual_tokens

    tile = normalize_value(row.get("tile_size"))
    return int(visual_tokens(enc, res, str(tiling), None if tile is None else int(tile),
                             normalize_value(row.get("image_size"))))


def reduced_token_count(row: Mapping[str, Any], n: int) -> int:
    """The tokens reaching the LLM after the row's token reduction (``reduction=pool tokens=4``
    keeps 4 of 16): the method's own count from the encoder's ``n``; ``n`` without one."""
    name = normalize_value(row.get("reduction")) or "none"
    if str(name) == "none":
        return n
    from types import SimpleNamespace

    from ..models.encoders import get_encoder_spec
    from ..models.reduction.base import method_of

    point = SimpleNamespace(reduction=str(name), reduction_params=normalize_value(row.get("reduction_params")))
    method, conf = method_of(point)
    return int(method.tokens_to_llm(conf, n, get_encoder_spec(str(normalize_value(row.get("encoder"))))))


def _matches(row: Mapping[str, Any], select: Mapping[str, Any]) -> bool:
    return all(normalize_value(row.get(k)) == normalize_value(v) for k, v in select.items())


class RowFinder:
    """The one ok row of (encoder, resolution) among the selected rows, explaining any miss."""

    def __init__(self, df, select: Mapping[str, Any]):
        self.select = dict(select)
        self.all_rows = df.to_dict("records")
        self.ok = [r for r in ok_rows(df) if _matches(r, self.select)]
        self._reported: set = set()

    def find(self, encoder: str, resolution: int) -> Tuple[Optional[Dict[str, Any]], str]:
        same = lambda r: normalize_value(r.get("encoder")) == encoder and normalize_value(r.get("resolution")) == resolution  # noqa: E731,E501
        hits = [r for r in self.ok if same(r)]
        if len(hits) == 1:
            return hits[0], ""
        if hits:
            return None, f"{len(hits)} ok rows match (ambiguous): narrow the gate's 'select'"
        others = [r for r in self.all_rows if same(r)]
        selected = [r for r in others if _matches(r, self.select)]
        if selected:
            msg = str(normalize_value(selected[0].get("message")) or "").strip().splitlines()
            return None, f"row has status={normalize_value(selected[0].get('status'))}" + (f": {msg[0][:200]}" if msg else "")
        if others:
            return None, "rows exist but none matches select " + json.dumps(self.select, default=str)
        return None, "no row in the results"

    def presence(self, encoder: str, resolution: int, checks: List[Check], context: str) -> Optional[Dict[str, Any]]:
        """The row, or None after adding one failing 'present' check (once per point)."""
        row, why = self.find(encoder, resolution)
        if row is None and (encoder, resolution) not in self._reported:
            self._reported.add((encoder, resolution))
            checks.append(Check("present", f"{encoder}@{resolution}", "missing", "ok row", False,
                                f"{why} (needed for {context})"))
        return row


@dataclass
class GateContext:
    df: Any
    config: GateConfig
    finder: RowFinder
    count: TokenCounter = registry_token_count
    token_matched_info: List[Dict[str, Any]] = field(default_factory=list)


CHECKS: Registry[Callable[[GateContext], List[Check]]] = Registry("gate check")


def measured_tokens(row: Mapping[str, Any]) -> Optional[float]:
    """Tokens counted on the real forward pass (schema >= 2), never the analytical column."""
    return as_float(row.get("visual_tokens_measured"))


def speedup_check(target_row, base_row, metric: str, minimum: float, section: str, subject: str) -> Check:
    """``baseline / target`` of a timed metric; passes when its interval's lower bound >= minimum."""
    ts, bs = row_samples(target_row, f"{metric}_samples_ms"), row_samples(base_row, f"{metric}_samples_ms")
    t, b = median_ms(target_row, metric), median_ms(base_row, metric)
    need = f"CI low >= {minimum:g}x"
    if not ts or not bs:
        from ..models.llms import NO_LLM

        if metric != "vision_latency" and NO_LLM in (normalize_value(target_row.get("llm")),
                                                     normalize_value(base_row.get("llm"))):
            return Check(section, subject, "-", need, False, f"no {metric} on an encoder-only row (llm={NO_LLM}): "
                         "gate it on vision_latency, or select rows with an LLM")
        return Check(section, subject, "-", need, False, f"no raw {metric} samples: the speed-up cannot be bounded")
    try:
        point, low, high = ratio_ci([ts], [bs])
    except ValueError as exc:
        return Check(section, subject, "-", need, False, f"{metric}: {exc}")
    detail = f"{metric}: baseline {b:.2f} ms / target {t:.2f} ms = {point:.2f}x; 95% CI {fmt_ci(low, high)}"
    return Check(section, subject, f"{low:.2f}x", need, low >= minimum, detail, low)


@CHECKS.register("visual_tokens")
def check_visual_tokens(ctx: GateContext) -> List[Check]:
    """Every ok row: tokens measured on the real forward pass == the analytical count."""
    if not ctx.config.check_visual_tokens:
        return []
    checks = []
    for r in ok_rows(ctx.df):
        got = measured_tokens(r)
        required, detail, passed = "?", "", False
        try:
            n = row_token_count(r, ctx.count)
            expected = reduced_token_count(r, n)
            required, passed = str(expected), got is not None and int(got) == expected
            if got is None:
                detail = "no measured token count (visual_tokens_measured; results older than schema 2?)"
            elif not passed:
                detail = f"the model produced {got:.0f} tokens but the architecture's formula gives {expected}" + (
                    f" ({n} from the encoder, reduction={normalize_value(r.get('reduction'))})" if expected != n else "")
        except Exception as exc:  # unknown encoder, invalid resolution
            detail = f"no analytical count ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})"
        checks.append(Check("visual_tokens", row_label(r), "-" if got is None else f"{got:.0f}", f"== {required}",
                            passed, detail, got))
    return checks


@CHECKS.register("matched_resolution")
def check_matched_resolution(ctx: GateContext) -> List[Check]:
    """At each matched resolution: rows present, exact token factors, speed-ups over the baselines."""
    cfg, checks = ctx.config, []
    for e in cfg.matched_resolution:
        res, ctx_name = e.resolution, f"matched resolution {e.resolution}"
        t_row = ctx.finder.presence(cfg.target, res, checks, ctx_name)
        for b in e.baselines:
            b_row = ctx.finder.presence(b, res, checks, ctx_name)
            if t_row is None or b_row is None:
                continue
            if b in e.token_factor:
                want, subject = e.token_factor[b], f"{b}/{cfg.target} tokens @{res}"
                tt, bt = measured_tokens(t_row), measured_tokens(b_row)
                if not tt or bt is None:
                    checks.append(Check("token_factor", subject, "-", f"== {want:g}x", False, "measured tokens missing"))
                else:
                    checks.append(Check("token_factor", subject, f"{bt / tt:g}x", f"== {want:g}x",
                                        math.isclose(bt / tt, want, rel_tol=1e-6),
                                        f"{b} {bt:.0f} tokens / {cfg.target} {tt:.0f} tokens (measured)", bt / tt))
            for metric, minimum in {**cfg.min_speedup.get(b, {}), **e.min_speedup.get(b, {})}.items():
                checks.append(speedup_check(t_row, b_row, metric, minimum, "speedup", f"{cfg.target} vs {b} @{res} {metric}"))
    return checks


@CHECKS.register("token_matched")
def check_token_matched(ctx: GateContext) -> List[Check]:
    """Token-matched points present at exactly that count; speed-ups reported, gated if configured."""
    tm, target, checks = ctx.config.token_matched, ctx.config.target, []
    if tm is None:
        return []
    rows = {}
    for p in tm.points:
        r = ctx.finder.presence(p.encoder, p.resolution, checks, f"token-matched set ({tm.visual_tokens} tokens)")
        if r is None:
            continue
        rows[(p.encoder, p.resolution)] = r
        got = measured_tokens(r)
        ok = got is not None and int(got) == tm.visual_tokens
        checks.append(Check("token_matched", f"{p.encoder}@{p.resolution}", "-" if got is None else f"{got:.0f}",
                            f"== {tm.visual_tokens}", ok, "" if ok else f"point is not at {tm.visual_tokens} tokens"))
    for (t_enc, t_res), t_row in ((k, r) for k, r in rows.items() if k[0] == target):
        for (enc, res), r in ((k, r) for k, r in rows.items() if k[0] != target):
            entry = {"encoder": enc, "resolution": res, "target_resolution": t_res,
                     "visual_tokens": normalize_value(r.get("visual_tokens_measured"))}
            for metric in ("vision_latency", "ttft"):
                t, b = median_ms(t_row, metric), median_ms(r, metric)
                entry.update({f"{metric}_ms": b, f"target_{metric}_ms": t,
                              f"{metric}_speedup": (b / t) if (t and b is not None) else None})
            ctx.token_matched_info.append(entry)
            for metric, minimum in tm.min_speedup.get(enc, {}).items():
                checks.append(speedup_check(t_row, r, metric, minimum, "speedup",
                                            f"{target}@{t_res} vs {enc}@{res} {metric} ({tm.visual_tokens} tokens)"))
    return checks


@CHECKS.register("unused_speedups")
def check_unused_speedups(ctx: GateContext) -> List[Check]:
    """A top-level ``min_speedup`` applies at ``matched_resolution`` entries only: a baseline no
    entry names (or a config without entries, e.g. decode rows gated on tpot) was checked by
    nothing, and used to pass silently. Said as a failing check."""
    cfg = ctx.config
    named = {b for e in cfg.matched_resolution for b in e.baselines}
    checks = []
    for base, metrics in cfg.min_speedup.items():
        if base not in named:
            checks.append(Check("speedup", f"{cfg.target} vs {base} {','.join(metrics)}", "not checked",
                                "a matched_resolution entry naming it", False,
                                f"min_speedup.{base} applies at matched_resolution entries, and none names {base}: "
                                "no speed-up was checked"))
    return checks
