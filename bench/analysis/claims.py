"""The paper's headline comparisons, measured here: claims as data, the points that measure
them, and the table of paper ratio against measured ratio.

Why claims are data (``bench/data/claims/fastvlm_paper.yaml``) and not code: a claim is two
configurations, a metric and where the paper's two numbers are; the sweep that measures them
(``sweep=paper_claims``) and the table (``fastvlm-bench claims``) both read the same list, so a
claim added there is measured and reported with no code change.

Ratios are always *baseline / FastVLM* of medians (a speed-up: > 1 means FastVLM is faster,
or smaller for ``vision_params``). The measured interval is the hierarchical bootstrap of
:func:`bench.regress.stats.ratio_ci` (the one ``compare`` uses), over each side's raw samples.
The paper's ratio comes from ``bench/data/reference`` (:mod:`bench.analysis.reference`): the
paper timed on an M1 Max (Core ML vision encoder, MLX LLM), so it is labelled as the paper's
and compared as a ratio only.

A claim whose model, LLM mode or tiling mode this install does not have, or whose point was
not measured (or was skipped for memory, or failed), is a row with ``status`` ``skipped`` and
the reason: never an exception.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


from ..config import InputError
from .claims_schema import (CLAIM_KEYS, CLAIMS_ENV, CLAIMS_FILE, ENCODER_ONLY, METRICS, SIDE_KEYS, Claim,  # noqa: F401
                            Side, load_claims)

METRIC_LABELS = {"ttft": "TTFT", "vision_latency": "vision-encoder latency", "vision_params": "encoder parameters"}
#: The paper's machine, in every label of a paper ratio.
PAPER_SETUP = "paper: M1 Max, Core ML + MLX"
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- the paper's side
def paper_value(ref: Dict[str, Any], metric: str) -> Tuple[Optional[float], str]:
    """``(value, where)`` of one side of a claim in the paper's tables, or ``(None, why not)``.

    ``ref`` is ``{row: R3}`` (Table 6: ``ttft_ms``, ``encoder_params_m``) or ``{table: T10,
    encoder, resolution[, llm]}`` (Tables 1, 4, 10: ``vision_latency_ms``, ``prefill_ms``,
    ``encoder_params_m``)."""
    from .reference import paper_encoder_table, paper_vlm_table

    col = {"ttft": "ttft_ms", "vision_latency": "vision_latency_ms", "vision_params": "encoder_params_m"}[metric]
    if not ref:
        return None, "not reported"
    if "row" in ref:
        t = paper_vlm_table()
        hit = t[t["row"] == ref["row"]]
        where = f"Table 6 {ref['row']}"
    else:
        t = paper_encoder_table()
        hit = t[(t["table"] == ref.get("table")) & (t["encoder"] == ref.get("encoder"))
                & (t["resolution"] == int(ref.get("resolution", -1)))]
        if "llm" in ref:
            hit = hit[hit["llm"] == ref["llm"]]
        table = {"T1": "Table 1", "T4": "Table 4", "T10": "Table 10"}.get(str(ref.get("table")), str(ref.get("table")))
        where = f"{table} {ref.get('encoder')}@{ref.get('resolution')}"
    if not len(hit) or col not in hit or hit[col].isna().all():
        return None, f"not reported ({where} has no {col})"
    return float(hit[col].dropna().iloc[0]), where


# ----------------------------------------------------------------------------- what can run here
def _options(group: str) -> Optional[set]:
    """The option names of a Hydra config group (encoder, llm, tiling): those in the ConfigStore
    and the YAML files of ``sweeps/<group>/``; None if there is no such group."""
    from hydra.core.config_store import ConfigStore

    from ..config import sweeps_dir

    names, found = set(), False
    try:
        names |= {n[:-5] if n.endswith(".yaml") else n for n in ConfigStore.instance().list(group)}
        found = True
    except (IOError, OSError, ValueError, KeyError):
        pass
    folder = sweeps_dir() / group
    if folder.is_dir():
        names |= {p.stem for p in folder.glob("*.yaml")}
        found = True
    return names if found else None


def _tiling_field():
    """The type of ``BenchConfig.tiling``, or None when this install has no tiling axis."""
    import dataclasses

    from ..config import BenchConfig

    for f in dataclasses.fields(BenchConfig):
        if f.name == "tiling":
            return f.type
    return None


def unavailable(side: Side) -> Optional[str]:
    """Why this install cannot measure ``side`` (a model, the encoder-only mode or a tiling mode
    it does not have), or None. Reads the config groups: call after
    :func:`bench.config.register_configs`."""
    encoders, llms = _options("encoder") or set(), _options("llm") or set()
    if side.encoder not in encoders:
        return f"encoder {side.encoder!r} is not registered here"
    if side.llm not in llms:
        if side.llm == ENCODER_ONLY:
            return "encoder-only points (llm=none) are not supported by this install"
        return f"LLM {side.llm!r} is not registered here"
    if side.reduction != "none":
        from ..models.reduction import REDUCTIONS

        if side.reduction not in REDUCTIONS:
            return f"reduction {side.reduction!r} is not registered here (methods: {', '.join(REDUCTIONS.names())})"
    if side.tiling != "none":
        modes = _options("tiling")
        if modes is None and _tiling_field() is None:
            return f"tiling {side.tiling!r}: this install has no tiling axis"
        if modes is not None and side.tiling not in modes:
            return f"tiling mode {side.tiling!r} is not registered here (modes: {', '.join(sorted(modes))})"
    return None


def _point_node(side: Side) -> Dict[str, Any]:
    """A ``claim_point`` option: the point's choices as group overrides (what ``encoder=NAME`` on
    the command line does), its resolution, and its own timing overrides."""
    defaults: List[Any] = [{"override /encoder": side.encoder}, {"override /llm": side.llm}]
    node: Dict[str, Any] = {"resolution": side.resolution}
    if side.tiling != "none":
        if _options("tiling") is not None:
            defaults.append({"override /tiling": side.tiling})
        else:
            node["tiling"] = side.tiling
    if side.reduction != "none":
        defaults.append({"override /reduction": side.reduction})
        node["reduction"] = {"tokens": side.tokens}
    if side.backend != "eager":
        defaults.append({"override /backend": side.backend})
    if side.timing:
        node["timing"] = dict(side.timing)
    node["defaults"] = defaults + ["_self_"]
    return node


def sweep_points(claims: Optional[Sequence[Claim]] = None) -> Tuple[Dict[str, Side], Dict[str, str]]:
    """``(points, left_out)``: every configuration the claims need, by point name, and those this
    install cannot measure with the reason. A point in several claims must carry the same
    timing overrides in each (a ``ValueError`` otherwise: the sweep would measure it once)."""
    claims = load_claims() if claims is None else claims
    points: Dict[str, Side] = {}
    left_out: Dict[str, str] = {}
    for c in claims:
        for s in (c.fast, c.baseline):
            name = s.point_name()
            if name in points and points[name] != s:
                raise ValueError(f"claim {c.id}: point {name} has other timing overrides in another claim")
            if name in points or name in left_out:
                continue
            why = unavailable(s)
            if why:
                left_out[name] = why
            else:
                points[name] = s
    return points, left_out


def register_claim_points() -> None:
    """The ``claim_point`` config group: one option per point of the paper's claims, which
    ``sweep=paper_claims`` sweeps with ``+claim_point=glob(*)``. Called by
    :func:`bench.config.register_configs` after the model groups exist."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    try:
        points, _ = sweep_points()
    except InputError as exc:  # a run that does not use claims must not end on them: one line
        import sys

        print(f"fastvlm-bench: warning: {exc}; sweep=paper_claims has no points until it is fixed", file=sys.stderr)
        return
    for name, side in points.items():
        cs.store(group="claim_point", name=name, node=_point_node(side), package="_global_")


# ----------------------------------------------------------------------------- the measured side
#: Knobs that change what is measured and that a claim side takes at their default values.
DEFAULT_KNOBS = {"decode_tokens": 0, "compile": False, "channels_last": False, "extra_work_matmuls": 0,
                 "tf32": False}
#: Knobs whose every value is a measurement of its own: a claim is evaluated per combination
#: measured on both sides, never pooled across them.
SPLIT_KNOBS = ("device", "dtype", "threads", "prompt_tokens", "attn_implementation", "timing_mode")


def _setting(sel: Dict[str, str]) -> str:
    """The split knobs of a claim row beyond device and dtype, where they say something."""
    usual = {"prompt_tokens": "32", "attn_implementation": "sdpa", "timing_mode": "pipelined"}
    text = {k: v[:-2] if v.endswith(".0") else v for k, v in sel.items() if k not in ("device", "dtype")}
    return ", ".join(f"{k}={v}" for k, v in text.items() if v not in ("nan", "None", "") and usual.get(k) != v)


def _as_text(df, keys):
    """``df[keys]`` as plain strings, a missing value as ``"nan"`` (pandas' ``astype(str)``
    keeps it missing, and a missing value never equals itself)."""
    return df[keys].apply(lambda col: col.map(str)).astype(object)


def _default_like(v: Any, default: Any) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return str(v) in (str(default), "", "none", "None")


def _rows(df, side: Side):
    """The ok-or-not rows of ``df`` that measured ``side`` (batch 1, no other axis changed)."""
    import pandas as pd

    m = (df["encoder"].astype(str) == side.encoder) & (pd.to_numeric(df["resolution"], errors="coerce") == side.resolution) \
        & (df["llm"].astype(str) == side.llm)
    if "tiling" in df.columns:
        m &= df["tiling"].map(lambda v: str(v) == side.tiling if side.tiling != "none" else _default_like(v, "none"))
    elif side.tiling != "none":
        m &= False
    if "reduction" in df.columns:  # a token reduction (and its budget) is another configuration
        def reduced(r) -> bool:
            if side.reduction == "none":
                return _default_like(r["reduction"], "none")
            params = r.get("reduction_params")
            tokens = json.loads(params).get("tokens") if isinstance(params, str) and params else None
            return str(r["reduction"]) == side.reduction and tokens == side.tokens

        m &= df.apply(reduced, axis=1) if len(df) else m
    elif side.reduction != "none":
        m &= False
    if "batch_size" in df.columns:
        m &= pd.to_numeric(df["batch_size"], errors="coerce").fillna(1) == 1
    if "backend" in df.columns:  # ONNX Runtime or OpenVINO rows are other points, not runs of this one
        m &= df["backend"].map(lambda v: str(v) == side.backend if side.backend != "eager" else _default_like(v, "eager"))
    elif side.backend != "eager":
        m &= False
    for col, default in DEFAULT_KNOBS.items():  # knobs a claim side leaves at their defaults
        if col in df.columns:
            m &= df[col].map(lambda v, d=default: _default_like(v, d))
    if "image_size" in df.columns:  # a non-square input is another configuration
        m &= df["image_size"].map(lambda v: _default_like(v, None))
    return df[m]


def _samples(rows, metric: str) -> List[List[float]]:
    from ..results.records import samples_from_cell

    return [s for s in (samples_from_cell(c) for c in rows[f"{metric}_samples_ms"]) if s] \
        if f"{metric}_samples_ms" in rows.columns else []


def _why_missing(rows, side: Side) -> str:
    if not len(rows):
        return f"{side.label()}: not measured in this results folder"
    bad = rows[rows["status"] != "ok"]
    r = bad.iloc[0]
    msg = str(r.get("message") or "").strip().splitlines()[0] if str(r.get("message") or "").strip() else ""
    return f"{side.label()}: {r['status']}" + (f" ({msg})" if msg else "")


def _fmt_ratio(v: Optional[float]) -> str:
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.3g}x" if v < 100 else f"{v:.0f}x"


def evaluate(claims: Sequence[Claim], df, explain: bool = True) -> List[Dict[str, Any]]:
    """One row per claim and measured (device, dtype): the paper's ratio beside the measured one.

    Columns: id, claim, metric, paper_ratio, paper_source, measured_ratio, ci_low, ci_high,
    n_fast, n_baseline, device, dtype, setting (threads and other split knobs that say something), fast,
    baseline, direction_holds (yes: the interval is
    above 1; no: below 1; unclear: it holds 1; for parameters, the exact ratio against 1),
    status (measured | skipped), skipped (why), note.

    ``explain=False`` leaves out the check of what this install can build (it imports the model
    registries, and with them torch and timm): a side without rows is then only "not measured".
    """
    import pandas as pd

    from ..regress.stats import ratio_ci

    if explain:
        from ..config import register_configs

        register_configs()  # the groups (encoder, llm, tiling) come from the registries
    out: List[Dict[str, Any]] = []
    for c in claims:
        pf, wf = paper_value(c.paper_fast, c.metric)
        pb, wb = paper_value(c.paper_baseline, c.metric)
        paper_ratio = pb / pf if pf and pb is not None else None
        paper_src = f"{PAPER_SETUP}; {wb} / {wf}" if paper_ratio is not None else \
            f"{PAPER_SETUP}; " + "; ".join(w for w, v in ((wb, pb), (wf, pf)) if v is None)
        if c.says:
            paper_src += f"; the paper says: {c.says}"
        base = dict(id=c.id, claim=c.title, metric=METRIC_LABELS[c.metric], paper_ratio=paper_ratio,
                    paper_source=paper_src, measured_ratio=None, ci_low=None, ci_high=None, n_fast=None,
                    n_baseline=None, device=None, dtype=None, setting="", fast=c.fast.label(), baseline=c.baseline.label(),
                    direction_holds=None, status="skipped", skipped="", note=c.note)
        why = list(dict.fromkeys(w for w in (unavailable(c.fast), unavailable(c.baseline)) if w)) if explain else []
        if why:
            out.append(dict(base, skipped="; ".join(why)))
            continue
        if df is None or not len(df):
            out.append(dict(base, skipped="the results folder has no records"))
            continue
        rf, rb = _rows(df, c.fast), _rows(df, c.baseline)
        okf, okb = rf[rf["status"] == "ok"], rb[rb["status"] == "ok"]
        if not len(okf) or not len(okb):
            out.append(dict(base, skipped="; ".join(_why_missing(r, s) for r, ok, s in
                                                   ((rf, okf, c.fast), (rb, okb, c.baseline)) if not len(ok))))
            continue
        split = ("device", "dtype") if c.metric == "vision_params" else SPLIT_KNOBS  # counts, not times
        keys = [k for k in split if k in okf.columns and k in okb.columns]
        kf, kb = _as_text(okf, keys), _as_text(okb, keys)
        combos = sorted(set(map(tuple, kf.values)) & set(map(tuple, kb.values)))
        if not combos:
            out.append(dict(base, skipped=f"no {'/'.join(keys)} measured on both sides (fast: "
                                          f"{sorted(set(map(tuple, kf.values)))}, "
                                          f"baseline: {sorted(set(map(tuple, kb.values)))})"))
            continue
        for combo in combos:
            sel = dict(zip(keys, combo))
            sf = okf[(kf == pd.Series(sel)).all(axis=1)]
            sb = okb[(kb == pd.Series(sel)).all(axis=1)]
            device, dtype = sel.get("device"), sel.get("dtype")
            row = dict(base, device=device, dtype=dtype, setting=_setting(sel))
            if c.metric == "vision_params":
                vf, vb = sf["vision_params"].dropna(), sb["vision_params"].dropna()
                if not len(vf) or not len(vb) or float(vf.iloc[0]) <= 0:
                    out.append(dict(row, skipped="vision_params not recorded"))
                    continue
                r = float(vb.iloc[0]) / float(vf.iloc[0])
                out.append(dict(row, measured_ratio=r, ci_low=r, ci_high=r, n_fast=1, n_baseline=1, status="measured",
                                direction_holds="yes" if r > 1 else "no"))
                continue
            xf, xb = _samples(sf, c.metric), _samples(sb, c.metric)
            if not xf or not xb:
                out.append(dict(row, skipped=f"no {c.metric} samples recorded"
                                             + (" (an encoder-only point has no TTFT)" if c.metric == "ttft" else "")))
                continue
            try:
                point, low, high = ratio_ci(xf, xb)  # baseline / fast
            except ValueError as exc:
                out.append(dict(row, skipped=f"no ratio: {exc}"))
                continue
            holds = "yes" if low > 1 else "no" if high < 1 else "unclear"
            out.append(dict(row, measured_ratio=point, ci_low=low, ci_high=high, n_fast=sum(map(len, xf)),
                            n_baseline=sum(map(len, xb)), status="measured", direction_holds=holds))
    return out


def claims_table(results_dir: PathLike, claims_file: Optional[PathLike] = None):
    """The claims of ``claims_file`` evaluated on the records of ``results_dir``: a DataFrame
    with the columns of :func:`evaluate`. A folder without records gives every claim skipped."""
    import pandas as pd

    from ..results.store import load_table

    claims = load_claims(claims_file)
    try:
        df = load_table(results_dir)
    except FileNotFoundError:
        df = pd.DataFrame()
    return pd.DataFrame(evaluate(claims, df))


def display_table(table):
    """The claims table as people read it: ratios as ``12.3x``, the interval as ``[a, b]``."""
    import pandas as pd

    def text(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    rows = []
    for _, r in table.iterrows():
        measured = _fmt_ratio(r["measured_ratio"])
        ci = f"[{_fmt_ratio(r['ci_low'])}, {_fmt_ratio(r['ci_high'])}]" if measured else ""
        rows.append({"claim": r["claim"],
                     "paper ratio (M1 Max, Core ML + MLX)": _fmt_ratio(r["paper_ratio"]) or "not reported",
                     "measured ratio here": measured or "-", "95 % interval": ci,
                     "direction holds here": text(r["direction_holds"]),
                     "device, dtype": f"{text(r['device'])} {text(r['dtype'])}".strip()
                     + (f" ({text(r.get('setting'))})" if text(r.get("setting")) else ""), "metric": r["metric"],
                     "configurations (FastVLM side / baseline)": f"{r['fast']} / {r['baseline']}",
                     "skipped (why)": text(r["skipped"]), "paper source": text(r["paper_source"]),
                     "note": text(r["note"])})
    return pd.DataFrame(rows)
