"""Fidelity: a shipped transformers system (``hf=NAME``) beside our composition of it.

Why: our composed points reproduce the paper's tables; the deployed model is transformers'.
Where the two differ (a tower's depth, a kernel, a merge), a user must see both figures and the
reason, not one silently standing in for the other. A shipped folder names its composed
counterpart (``fastvlm_bench.json``: ``composed`` = encoder, LLM, tiling; ``differs`` = what is
known to differ), and ``sweep=hf_fidelity`` measures both sides at the same image.

One row per pair of ok records that agree on everything but the model (image, dtype, device,
threads, batch, prompt, decode): both sides' visual tokens (they must be equal), and per stage
the ratio hf / ours of the medians with the same hierarchical-bootstrap interval that
``compare`` and ``claims`` use. A ratio outside [0.9, 1.1] is flagged and carries the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pandas as pd

from ..results.records import samples_from_cell

STAGES = ("vision_latency", "projector", "merge", "prefill", "ttft")
#: knobs both sides of a pair must share (the model is the only difference)
SHARED = ("resolution", "image_size", "dtype", "device", "threads", "batch_size", "prompt_tokens", "decode_tokens",
          "timing_mode")
BAND = (0.9, 1.1)


def shipped_pairs() -> Dict[str, Dict[str, Any]]:
    """Shipped name -> its ``fastvlm_bench.json`` where it names a composed counterpart."""
    from ..models.hf import shipped_meta

    return {name: meta for name, meta in shipped_meta().items() if meta.get("composed")}


def _same(a, b) -> bool:
    na, nb = pd.isna(a) if not isinstance(a, (list, dict)) else False, pd.isna(b) if not isinstance(b, (list, dict)) else False
    if na or nb:
        return bool(na and nb)
    return str(a) == str(b)


def fidelity_rows(df: pd.DataFrame) -> List[Dict[str, Any]]:
    """The fidelity table's rows for a results table (empty without ``hf`` rows)."""
    from ..regress.stats import ratio_ci

    if df is None or not len(df) or "hf" not in df.columns:
        return []
    ok = df[df["status"] == "ok"]
    hf_rows = ok[ok["hf"].notna()]
    ours = ok[ok["hf"].isna()] if len(ok) else ok
    out: List[Dict[str, Any]] = []
    pairs = shipped_pairs()
    for _, h in hf_rows.iterrows():
        meta = pairs.get(str(h["hf"]))
        if meta is None:
            continue
        c = meta["composed"]
        mine = ours[(ours["encoder"] == c["encoder"]) & (ours["llm"] == c["llm"])
                    & (ours["tiling"].fillna("none") == c.get("tiling", "none"))]
        mine = mine[[all(_same(h.get(k), r.get(k)) for k in SHARED) for _, r in mine.iterrows()]]
        if not len(mine):
            continue
        o = mine.iloc[-1]
        row: Dict[str, Any] = {"system": h["hf"], "ours": f"{c['encoder']} + {c.get('tiling', 'none')} + {c['llm']}",
                               "image": h.get("image_size") if isinstance(h.get("image_size"), str) else
                               f"{int(h['resolution'])}x{int(h['resolution'])}",
                               "dtype": h["dtype"], "tokens_hf": h.get("visual_tokens"),
                               "tokens_ours": o.get("visual_tokens"),
                               "tokens_equal": bool(h.get("visual_tokens") == o.get("visual_tokens")),
                               "vision_params_hf": h.get("vision_params"), "vision_params_ours": o.get("vision_params")}
        flagged = []
        for st in STAGES:
            xs, ys = samples_from_cell(h.get(f"{st}_samples_ms")), samples_from_cell(o.get(f"{st}_samples_ms"))
            row[f"{st}_hf_ms"], row[f"{st}_ours_ms"] = h.get(f"{st}_ms"), o.get(f"{st}_ms")
            if len(xs) < 2 or len(ys) < 2:
                row[f"{st}_ratio"] = row[f"{st}_ci_low"] = row[f"{st}_ci_high"] = None
                continue
            point, low, high = ratio_ci([ys], [xs])  # hf / ours: the candidate is the hf side
            row[f"{st}_ratio"], row[f"{st}_ci_low"], row[f"{st}_ci_high"] = point, low, high
            if not BAND[0] <= point <= BAND[1]:
                flagged.append(f"{st} {point:.2f}x")
        row["outside_band"] = ", ".join(flagged)
        row["why"] = meta.get("differs") if flagged or not row["tokens_equal"] else ""
        out.append(row)
    return out


def missing_pairs(df: pd.DataFrame) -> List[Dict[str, str]]:
    """Shipped pairs with no measured pair in this table, and what the folder has of them."""
    have = {r["system"] for r in fidelity_rows(df)}
    out = []
    for name, meta in shipped_pairs().items():
        if name in have:
            continue
        out.append({"system": name, "ours": f"{meta['composed']['encoder']} + {meta['composed'].get('tiling', 'none')}"
                                            f" + {meta['composed']['llm']}",
                    "why": "not measured in this results folder (sweep=hf_fidelity measures each pair; the "
                           "LLaVA-NeXT 7B pair runs in bf16 on CUDA only)"})
    return out


def table_of(results_dir: Path) -> pd.DataFrame:
    """For scripts and tests: the fidelity rows of a results folder's table."""
    from ..results.store import load_table

    return pd.DataFrame(fidelity_rows(load_table(results_dir)))
