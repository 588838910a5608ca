"""The report's opening table: what the user measured, summarised as a performance engineer
reads it first. Per token budget, the fastest configuration, and its speed-up over the fastest
ViT and the fastest ConvNeXt of the same budget, with 95 % intervals.

Why token budgets: the paper's comparisons are at matched visual-token counts (an encoder that
is fast because it emits few tokens also makes the prefill short), so a configuration is
compared with the baselines that give the LLM about as many tokens. The budgets are the
paper's token counts (16, 64, 144, 256, 576, 1024, 2880 tokens) as upper edges.

Only rows measured in the same setting are compared (device, dtype, LLM, batch size, threads,
prompt length): a speed-up across devices or LLMs is not a speed-up. A configuration's label
names what else makes it one (tiling, token reduction and budget, a backend other than eager,
torch.compile), so an ONNX Runtime row is never read as an eager one. Rows without an LLM (encoder-only points)
are ranked by vision-encoder latency, the rest by TTFT. Intervals: the median's own 95 %
interval (order statistics, from the record) and, for speed-ups, the hierarchical bootstrap of
:func:`bench.regress.stats.ratio_ci` over both rows' samples.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import pandas as pd

#: Upper edges of the token budgets (the paper's visual-token counts).
BUDGET_EDGES = (16, 64, 144, 256, 576, 1024, 2880)
FAMILIES = ("ViT", "ConvNeXt")
GROUP = ("device", "dtype", "llm", "batch_size", "threads", "prompt_tokens")
#: A missing column's value in :data:`GROUP` (records from before it existed).
GROUP_DEFAULTS = {"batch_size": 1, "threads": -1, "prompt_tokens": -1}
#: Name prefixes of the zoo's transformer encoders (CLIP ViT-L/14, SigLIP, ViTamin, the tiny ViT).
VIT_NAMES = ("vit", "siglip", "clip", "tiny_vit")


def budget_label(tokens: float) -> str:
    """``17-64 tokens`` for 40; ``> 2880 tokens`` beyond the last edge."""
    lo = 1
    for edge in BUDGET_EDGES:
        if tokens <= edge:
            return f"{lo}-{edge} tokens"
        lo = edge + 1
    return f"> {BUDGET_EDGES[-1]} tokens"


def family(encoder: str) -> Optional[str]:
    """``ViT`` for a transformer encoder, ``ConvNeXt`` for the ConvNeXt family (ConvNeXt-L/XXL,
    ConvLLaVA's ConvNeXt), else None (FastViT, FastViTHD, others).

    The encoder spec's ``kind`` decides when the model registry is loaded already (the report
    at the end of a sweep); a standalone report does not import torch and timm for it, and
    goes by the zoo's names."""
    import sys

    name = str(encoder)
    if "convnext" in name or "convllava" in name:
        return "ConvNeXt"
    if "bench.models.encoders" in sys.modules:
        try:
            from ..models.encoders import get_encoder_spec

            return "ViT" if get_encoder_spec(name).kind == "vit" else None
        except Exception:  # an encoder this install does not have: its name is all there is
            pass
    return "ViT" if name.startswith(VIT_NAMES) else None


def _set(v) -> bool:
    return isinstance(v, str) and v not in ("", "none", "None", "eager", "nan")


def _label(r) -> str:
    tiling, reduction, backend = r.get("tiling"), r.get("reduction"), r.get("backend")
    tiles = f" {tiling}" if _set(tiling) else ""
    if _set(reduction):
        import json

        params = r.get("reduction_params")
        tokens = json.loads(params).get("tokens") if isinstance(params, str) and params.startswith("{") else None
        tiles += f" {reduction}" + (f"->{tokens}" if tokens else "")
    if _set(backend):
        tiles += f" [{backend}]"
    elif str(r.get("compile")) in ("True", "true", "1"):
        tiles += " [compile]"
    return f"{r['encoder']}@{int(r['resolution'])}{tiles}"


def _fmt_ms(v) -> str:
    if v is None or not np.isfinite(v):
        return ""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 1 else f"{v:.3g}"


def _fmt_x(v) -> str:
    return "" if v is None or not math.isfinite(v) else (f"{v:.3g}x" if v < 100 else f"{v:.0f}x")


def headline_table(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, dtype, LLM, batch, token budget) of the ok rows: the fastest
    configuration with its median and interval, and speed-ups over the ViT and ConvNeXt
    baselines of that budget (blank where the budget has none, or the fastest is one)."""
    from ..regress.stats import ratio_ci
    from ..results.records import samples_from_cell

    cols = ["token budget", "fastest configuration", "visual tokens", "metric", "median ms", "95 % interval ms",
            "llm", "device", "dtype"] + [c for f in FAMILIES for c in (f"{f} baseline", f"speed-up over {f}")]
    if ok is None or not len(ok) or "visual_tokens" not in ok.columns:
        return pd.DataFrame(columns=cols)
    df = ok.dropna(subset=["visual_tokens"]).copy()
    for col, default in GROUP_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
        df[col] = df[col].fillna(default)
    no_llm = df["ttft_ms"].isna() if "ttft_ms" in df.columns else pd.Series(True, index=df.index)
    df["_metric"] = np.where(no_llm, "vision_latency", "ttft")
    df["_ms"] = [r[f"{m}_ms"] for (_, r), m in zip(df.iterrows(), df["_metric"])]
    df = df.dropna(subset=["_ms"])
    df["_budget_edge"] = [next((e for e in BUDGET_EDGES if t <= e), math.inf) for t in df["visual_tokens"]]
    rows: List[dict] = []
    for _, grp in df.groupby(list(GROUP) + ["_metric", "_budget_edge"], sort=True, dropna=False):
        grp = grp.sort_values("_ms", kind="stable")
        best = grp.iloc[0]
        metric = best["_metric"]
        lo, hi = best.get(f"{metric}_ci_low_ms"), best.get(f"{metric}_ci_high_ms")
        row = {"device": best["device"], "dtype": best["dtype"],
               "llm": "none (encoder only)" if metric == "vision_latency" and str(best["llm"]) == "none" else best["llm"],
               "token budget": budget_label(best["visual_tokens"]), "fastest configuration": _label(best),
               "visual tokens": int(best["visual_tokens"]),
               "metric": "TTFT" if metric == "ttft" else "vision-encoder latency",
               "median ms": _fmt_ms(best["_ms"]),
               "95 % interval ms": f"{_fmt_ms(lo)}-{_fmt_ms(hi)}" if pd.notna(lo) and pd.notna(hi) else "n < 6"}
        fam_best = family(best["encoder"])
        for fam in FAMILIES:
            row[f"{fam} baseline"], row[f"speed-up over {fam}"] = "", ""
            if fam_best == fam:
                row[f"{fam} baseline"] = "(the fastest is one)"
                continue
            cands = grp[[family(e) == fam for e in grp["encoder"]]]
            if not len(cands):
                continue
            base = cands.iloc[0]  # the fastest of the family: the strongest baseline
            xf = samples_from_cell(best.get(f"{metric}_samples_ms"))
            xb = samples_from_cell(base.get(f"{metric}_samples_ms"))
            row[f"{fam} baseline"] = f"{_label(base)} ({int(base['visual_tokens'])} tokens)"
            if xf and xb:
                point, low, high = ratio_ci([xf], [xb])
                row[f"speed-up over {fam}"] = f"{_fmt_x(point)} [{_fmt_x(low)}, {_fmt_x(high)}]"
            else:
                row[f"speed-up over {fam}"] = _fmt_x(float(base["_ms"]) / float(best["_ms"])) + " (no samples)"
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    # the speed-ups next to the fastest configuration, the setting after them
    first = ["token budget", "fastest configuration", "visual tokens", "metric", "median ms", "95 % interval ms"]
    fams = [c for f in FAMILIES for c in (f"speed-up over {f}", f"{f} baseline")]
    return out[first + fams + ["llm", "device", "dtype"]]
