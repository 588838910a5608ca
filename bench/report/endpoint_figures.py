"""Report figures of endpoint points (``endpoint=``, docs/endpoint.md): a server's TTFT against
the image it is sent, one line per server, model and concurrency.

Why a figure of its own: in process, the report draws TTFT against our own encoders'
resolutions; a server's image size is the client's (the sample photo resized), and its cost
shows as the server's image tokens and prompt time, which this figure labels. The throughput
curve of endpoint points (requests in flight as the batch) is
:func:`bench.report.decode_figures.latency_throughput_figure`, the same as in process.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import matplotlib.pyplot as plt
import pandas as pd

from .figures import Caption, finish_lines, register_figure, save

SECTION = "Endpoints: a running server's TTFT against image size"


def _pixels(row) -> int:
    size = row.get("image_size")
    if isinstance(size, str) and "x" in size:
        w, h = size.split("x")
        return int(w) * int(h)
    return int(row["resolution"]) ** 2


@register_figure(SECTION)
def endpoint_ttft_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    if "endpoint" not in ok.columns or "ttft_ms" not in ok.columns:
        return []
    data = ok[ok["endpoint"].notna() & pd.to_numeric(ok["ttft_ms"], errors="coerce").notna()].copy()
    if data.empty:
        return []
    data["pixels"] = data.apply(_pixels, axis=1)
    keys = [k for k in ("endpoint", "endpoint_server", "llm", "batch_size", "decode_tokens") if k in data.columns]
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    markers = "osD^vP*X"
    for i, (line, grp) in enumerate(data.groupby(keys, sort=True, dropna=False)):
        grp = grp.sort_values("pixels")
        d = dict(zip(keys, line))
        ax.plot(grp["pixels"] / 1e6, grp["ttft_ms"], marker=markers[i % len(markers)], lw=1.5, ms=5,
                label=f"{d['endpoint']} {d['llm'].split(':', 1)[-1]}, {d['batch_size']} in flight")
        if {"ttft_ci_low_ms", "ttft_ci_high_ms"} <= set(grp.columns):
            lo = pd.to_numeric(grp["ttft_ci_low_ms"], errors="coerce")
            hi = pd.to_numeric(grp["ttft_ci_high_ms"], errors="coerce")
            ax.fill_between(grp["pixels"] / 1e6, lo, hi, alpha=0.15)
        for _, r in grp.iterrows():
            tok = r.get("endpoint_image_tokens")
            size = r.get("image_size")
            size = size if isinstance(size, str) and size else f"{int(r['resolution'])}x{int(r['resolution'])}"
            text = size + (f"\n{int(tok)} tok" if pd.notna(tok) else "")
            ax.annotate(text, (r["pixels"] / 1e6, r["ttft_ms"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points", color="0.3")
    finish_lines(fig, ax, data["ttft_ms"], "y", "image sent (megapixels; labels: size and the server's image tokens)",
                 "TTFT, request sent -> first chunk (ms, median, 95 % interval)",
                 "Endpoint TTFT against image size, one line per server and concurrency")
    return [(save(fig, fig_dir, "endpoint_ttft"),
             "Client TTFT of a running server against the size of the image sent (the sample photo resized), "
             "median and its 95 % interval; each point is labelled with its size and the image tokens the server "
             "counted (its prompt tokens less a text-only request's).")]
