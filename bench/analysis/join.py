"""Join measured efficiency rows with accuracy rows on (encoder, resolution, llm)."""
from __future__ import annotations

from typing import Tuple

import pandas as pd

from ..accuracy.schema import ACCURACY_COLUMNS, normalize_accuracy
from ..results.records import CONFIG_KEYS, STATUS_OK

KEYS = list(CONFIG_KEYS)


def _normalize_keys(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["encoder"] = out["encoder"].astype(str).str.strip()
    out["llm"] = out["llm"].astype(str).str.strip()
    out["resolution"] = pd.to_numeric(out["resolution"], errors="coerce").astype("Int64")
    return out


def join_efficiency_accuracy(results_df: pd.DataFrame, acc_long: pd.DataFrame
                             ) -> Tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return ``(joined, unmatched_results, unmatched_accuracy)``.

    Only results with ``status == "ok"`` take part. ``joined`` has one row per (result row,
    accuracy row) pair: every results column plus ``benchmark``, ``metric``, ``accuracy``,
    ``source`` and ``origin`` (an accuracy ``source`` column never collides: results have none).
    ``unmatched_results`` are ok results with no accuracy row; ``unmatched_accuracy`` are
    accuracy rows whose configuration has no ok result.
    """
    missing = [k for k in KEYS + ["status"] if k not in results_df.columns]
    if missing and not results_df.empty:
        raise KeyError(f"results table lacks column(s) {missing}")
    acc = normalize_accuracy(acc_long) if acc_long is not None else normalize_accuracy(
        pd.DataFrame(columns=list(ACCURACY_COLUMNS)))
    if results_df.empty:
        ok = pd.DataFrame(columns=KEYS)
    else:
        ok = _normalize_keys(results_df[results_df["status"] == STATUS_OK])
    acc = _normalize_keys(acc)
    acc_cols = [c for c in acc.columns if c not in KEYS]
    clash = [c for c in acc_cols if c in ok.columns]
    acc_side = acc.rename(columns={c: f"{c}_acc" for c in clash})
    joined = ok.merge(acc_side, on=KEYS, how="inner")
    # an hf= model's lmms-eval score (resolution 0: the model's processor on the benchmark's own
    # images, bench.accuracy.lmms_import.ANY_RESOLUTION) holds for every image size measured of it
    anyres = acc_side[(acc_side["resolution"] == 0) & acc_side["encoder"].astype(str).str.startswith("hf:")]
    models = set()
    if len(anyres) and len(ok):
        extra = ok.merge(anyres.drop(columns=["resolution"]), on=["encoder", "llm"], how="inner")
        joined = pd.concat([joined, extra], ignore_index=True) if len(joined) else extra
        models = set(zip(extra["encoder"], extra["llm"]))
    acc_keys = set(map(tuple, acc[KEYS].astype(object).itertuples(index=False, name=None)))
    acc_keys |= {k for k in ok[KEYS].astype(object).itertuples(index=False, name=None) if (k[0], k[2]) in models}
    ok_keys = set(map(tuple, ok[KEYS].astype(object).itertuples(index=False, name=None)))
    um_res = ok[[tuple(k) not in acc_keys for k in ok[KEYS].astype(object).itertuples(index=False, name=None)]]
    um_acc = acc[[tuple(k) not in ok_keys and not (k[1] == 0 and (k[0], k[2]) in models)
                  for k in acc[KEYS].astype(object).itertuples(index=False, name=None)]]
    return (joined.reset_index(drop=True), um_res.reset_index(drop=True), um_acc.reset_index(drop=True))


def paper_accuracy_measured_latency(ok: pd.DataFrame, benchmarks) -> pd.DataFrame:
    """Paper-reported accuracy (the average over ``benchmarks``, per paper row) joined with the
    latency measured here, for configurations that match exactly: encoder, resolution, LLM and
    tiling (the paper's OneVision and LLaVA-NeXT rows tile; a square-image point of the same
    encoder and resolution is another configuration). One row per (measured row, paper row);
    columns of ``ok`` plus ``accuracy``, ``origin`` (the paper row) and ``source``."""
    from .pareto import avg_accuracy
    from .reference import PAPER, paper_accuracy_long, paper_tiling

    avg = avg_accuracy(paper_accuracy_long(), benchmarks).dropna(subset=["accuracy"])
    if ok is None or not len(ok) or not len(avg):
        return pd.DataFrame(columns=list(ok.columns if ok is not None else []) + ["accuracy", "origin", "source"])
    avg = _normalize_keys(avg)
    avg["tiling"] = avg["origin"].map(paper_tiling)
    avg["paper_row"] = avg["origin"].astype(str).str.replace(PAPER, "", regex=False).str.strip()
    m = _normalize_keys(ok)
    m["tiling"] = m["tiling"].fillna("none").astype(str) if "tiling" in m.columns else "none"
    joined = m.merge(avg[KEYS + ["tiling", "accuracy", "origin", "source", "paper_row"]], on=KEYS + ["tiling"], how="inner")
    return joined.reset_index(drop=True)
