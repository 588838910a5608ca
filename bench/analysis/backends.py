"""Deployment runtimes side by side: per encoder configuration, vision latency by backend, the
speed-up of each backend over eager with an interval, export times and numerics errors; and
whether the ranking of encoder configurations by vision latency changes between backends.

Why a ranking: a performance engineer choosing an encoder for a server deploys it through
ONNX Runtime or OpenVINO, whose graph optimisations (conv+BN+activation fusion, attention
fusion, constant folding) treat a conv/hybrid encoder and a ViT differently. Eager rankings
are statements about PyTorch; the deployed one is what they choose by.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pandas as pd

from ..regress.stats import ratio_ci
from ..results.records import samples_from_cell

#: Columns that say which encoder configuration a row is (the backend aside).
CONFIG = ("encoder", "resolution", "llm")


def _config(r) -> str:
    return f"{r['encoder']}@{int(r['resolution'])}"


def backend_table(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (encoder configuration, backend): vision latency median and 95 % interval,
    the speed-up over eager (eager / backend, bootstrap 95 % interval over both sides'
    iterations), export and first-load seconds, whether the export was cached, max errors."""
    if "backend" not in ok or ok["backend"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for keys, grp in ok.groupby(list(CONFIG), sort=True):
        eager = grp[grp["backend"] == "eager"]
        base = samples_from_cell(eager.iloc[0]["vision_latency_samples_ms"]) if len(eager) else []
        for _, r in grp.sort_values("backend").iterrows():
            cand = samples_from_cell(r.get("vision_latency_samples_ms"))
            sp = lo = hi = None
            if base and cand and r["backend"] != "eager":
                ratio, rlo, rhi = ratio_ci([cand], [base])  # eager / backend: > 1 is faster
                sp, lo, hi = ratio, rlo, rhi
            rows.append({"config": _config(r), "llm": r["llm"], "backend": r["backend"],
                         "backend_stages": r.get("backend_stages"),
                         "vision_latency_ms": r.get("vision_latency_ms"),
                         "vision_ci_low_ms": r.get("vision_latency_ci_low_ms"),
                         "vision_ci_high_ms": r.get("vision_latency_ci_high_ms"),
                         "vision_n": r.get("vision_latency_n"),
                         "speedup_vs_eager": sp, "speedup_ci_low": lo, "speedup_ci_high": hi,
                         "ttft_ms": r.get("ttft_ms"), "export_s": r.get("export_s"),
                         "load_s": r.get("backend_load_s"), "compile_s": r.get("compile_s"),
                         "max_rel_err": r.get("backend_max_rel_err"),
                         "disturbed_iterations": r.get("disturbed_iterations")})
    return pd.DataFrame(rows)


def rankings(ok: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """Encoder configurations ranked by vision latency (1 = fastest) under each backend, over
    the configurations every backend measured; and one line per backend whose order differs
    from eager's, naming the pairs that swap (``[]``: no ranking changed)."""
    if "backend" not in ok or ok["backend"].nunique() < 2:
        return pd.DataFrame(), []
    d = ok.assign(config=[_config(r) for _, r in ok.iterrows()])
    piv = d.pivot_table(index="config", columns="backend", values="vision_latency_ms", aggfunc="median").dropna()
    if piv.empty or "eager" not in piv:
        return pd.DataFrame(), []
    ranks = piv.rank(method="min").astype(int)
    table = pd.concat([piv.add_suffix("_ms"), ranks.add_suffix("_rank")], axis=1).reset_index()
    changes = []
    order = list(piv["eager"].sort_values().index)
    for b in piv.columns:
        if b == "eager":
            continue
        swaps = [f"{x} vs {y}" for i, x in enumerate(order) for y in order[i + 1:]
                 if np.sign(piv.at[x, b] - piv.at[y, b]) > 0]
        if swaps:
            changes.append(f"{b}: the ranking differs from eager ({'; '.join(swaps)} swap)")
    return table, changes
