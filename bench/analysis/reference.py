"""The paper-reported layer: figures copied from the FastVLM paper, never measured here.

Every frame returned by this module carries ``source="paper-reported"`` so that it cannot be
mistaken for a measurement once mixed into a plot or table. The paper timed on a MacBook Pro
M1 Max (Core ML vision encoder, MLX LLM); compare ratios with it, not milliseconds.

Column names follow the results tables: ``vision_encoder`` becomes ``encoder``,
``encoder_latency_ms`` becomes ``vision_latency_ms`` and ``llm_prefill_ms`` becomes ``prefill_ms``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..accuracy.schema import ACCURACY_COLUMNS, SOURCE_PAPER, normalize_accuracy

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"  # bench/data/reference
VLM_CSV = "fastvlm_paper_vlm.csv"
ENCODERS_CSV = "fastvlm_paper_encoders.csv"
PAPER = "FastVLM paper (arXiv 2412.13303v2)"
#: Where and how the paper measured; use it in every legend or caption of paper figures.
PAPER_DEVICE = "M1 Max, not measured here"

#: Benchmark columns of the paper's tables (already canonical lowercase names).
VLM_BENCHMARKS = ("gqa", "sqa", "textvqa", "pope", "llava_bench_w", "mmvet", "vqav2", "docvqa",
                  "mmmu", "seedbench_img")
ENCODER_BENCHMARKS = ("gqa", "textvqa", "pope", "docvqa", "seedbench_img")
_RENAME = {"vision_encoder": "encoder", "encoder_latency_ms": "vision_latency_ms",
           "llm_prefill_ms": "prefill_ms"}
_TABLE_NAMES = {"T1": "Table 1", "T4": "Table 4", "T10": "Table 10"}
#: Table 6 rows whose image-to-token pipeline tiles the image (the rest feed one square image):
#: LLaVA-OneVision's anyres_max_9 and LLaVA-NeXT's AnyRes, by the names of the tiling axis.
PAPER_TILING = {"R2": "anyres_max_9", "R39": "anyres_next"}


def paper_tiling(origin: str) -> str:
    """The tiling mode of a paper configuration, from its ``origin`` (``... Table 6 R2``)."""
    last = str(origin).split()[-1] if str(origin).split() else ""
    return PAPER_TILING.get(last, "none") if " Table 6 " in f" {origin} " else "none"


def _read(name: str) -> pd.DataFrame:
    df = pd.read_csv(REFERENCE_DIR / name).rename(columns=_RENAME)
    df["resolution"] = df["resolution"].astype("int64")
    df["source"] = SOURCE_PAPER
    return df


def paper_vlm_table() -> pd.DataFrame:
    """The paper's Table 6 rows (whole VLMs): ids in ``row``, TTFT in ms, accuracies in percent."""
    return _read(VLM_CSV)


def paper_encoder_table() -> pd.DataFrame:
    """Tables 1, 4 and 10 (encoder level); ``table`` says which, latencies in ms."""
    return _read(ENCODERS_CSV)


def _vlm_origin(row_id: str) -> str:
    return f"{PAPER} Table 6 {row_id}"


def _encoder_origin(r: pd.Series) -> str:
    return f"{PAPER} {_TABLE_NAMES.get(r['table'], r['table'])} {r['encoder']}@{r['resolution']}+{r['llm']}"


def paper_accuracy_long() -> pd.DataFrame:
    """Paper accuracies in the accuracy long format (Table 6, plus Tables 1 and 4).

    ``origin`` names the paper table and row; one configuration may appear several times
    (different training data in Table 6, or Table 4 repeating a Table 6 row).
    """
    rows = []
    for _, r in paper_vlm_table().iterrows():
        for b in VLM_BENCHMARKS:
            if pd.notna(r.get(b)):
                rows.append(dict(encoder=r["encoder"], resolution=int(r["resolution"]), llm=r["llm"],
                                 benchmark=b, metric="paper", accuracy=float(r[b]),
                                 source=SOURCE_PAPER, origin=_vlm_origin(r["row"])))
    enc = paper_encoder_table()
    for _, r in enc[enc["table"].isin(["T1", "T4"])].iterrows():
        for b in ENCODER_BENCHMARKS:
            if pd.notna(r.get(b)):
                rows.append(dict(encoder=r["encoder"], resolution=int(r["resolution"]), llm=r["llm"],
                                 benchmark=b, metric="paper", accuracy=float(r[b]),
                                 source=SOURCE_PAPER, origin=_encoder_origin(r)))
    return normalize_accuracy(pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS)), where="paper reference")


def paper_vlm_points() -> pd.DataFrame:
    """One efficiency point per Table 6 row, with ``origin`` matching :func:`paper_accuracy_long`.

    ``vision_latency_ms`` and ``prefill_ms`` come from Table 10 where it has the configuration
    (the paper's Table 6 TTFTs add up from Table 10).
    """
    vlm = paper_vlm_table()
    t10 = paper_encoder_table()
    t10 = t10[t10["table"] == "T10"]
    vis = t10.groupby(["encoder", "resolution"], as_index=False)["vision_latency_ms"].first()
    pre = t10.dropna(subset=["prefill_ms"]).groupby(["encoder", "resolution", "llm"],
                                                     as_index=False)["prefill_ms"].first()
    out = vlm[["row", "method", "encoder", "resolution", "llm", "data_pt_it_m", "visual_tokens",
               "encoder_params_m", "ttft_ms"]].merge(vis, on=["encoder", "resolution"], how="left")
    out = out.merge(pre, on=["encoder", "resolution", "llm"], how="left")
    out["origin"] = [_vlm_origin(r) for r in out["row"]]
    out["source"] = SOURCE_PAPER
    return out


def paper_points() -> pd.DataFrame:
    """One efficiency point per paper configuration (encoder, resolution, llm).

    Columns: encoder, resolution, llm, visual_tokens, ttft_ms (Table 6), vision_latency_ms and
    prefill_ms (Table 10), each only where the paper reports it, plus origin and
    ``source="paper-reported"``. Tables 1 and 4 latencies are left out: they were taken in a
    different setting (Table 4's FastViTHD latencies are about twice Table 10's).
    """
    keys = ["encoder", "resolution", "llm"]
    v = paper_vlm_points()
    v = (v.groupby(keys, as_index=False, sort=False)
         .agg(visual_tokens=("visual_tokens", "first"), ttft_ms=("ttft_ms", "first"),
              vision_latency_ms=("vision_latency_ms", "first"), prefill_ms=("prefill_ms", "first"),
              origin=("row", lambda s: "Table 6 " + ",".join(s))))
    t10 = paper_encoder_table()
    t10 = t10[t10["table"] == "T10"][keys + ["visual_tokens", "vision_latency_ms", "prefill_ms"]]
    t10 = t10.groupby(keys, as_index=False, sort=False).first()
    merged = v.merge(t10, on=keys, how="outer", suffixes=("", "_t10"), indicator=True)
    for col in ("visual_tokens", "vision_latency_ms", "prefill_ms"):
        merged[col] = merged[col].combine_first(merged[f"{col}_t10"])
    merged["origin"] = [
        (o if isinstance(o, str) else "") + ("; " if isinstance(o, str) and ind == "both" else "")
        + ("Table 10" if ind in ("both", "right_only") else "")
        for o, ind in zip(merged["origin"], merged["_merge"])]
    merged["origin"] = PAPER + " " + merged["origin"]
    merged["visual_tokens"] = merged["visual_tokens"].astype("int64")
    merged["source"] = SOURCE_PAPER
    cols = keys + ["visual_tokens", "ttft_ms", "vision_latency_ms", "prefill_ms", "origin", "source"]
    return merged[cols].sort_values(keys, kind="stable").reset_index(drop=True)
