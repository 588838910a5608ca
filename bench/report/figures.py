"""Report figures (matplotlib, Agg backend). Each figure is saved as PNG and SVG.

Every function takes plain DataFrames (already filtered by :mod:`bench.report.render`) and
returns the PNG path(s) it wrote (the SVG sits next to each PNG). Paper-reported points are
always drawn with their own marker, colour and legend entry.

Adding a figure to every report is one function here with :func:`register_figure`: it gets
the measured (status ok) rows and the figures folder and returns ``(png, caption)`` pairs;
the report puts them in the section it names (a new section title makes a new section).
Nothing here touches matplotlib's global state at import: :func:`plotting` selects the Agg
backend and this module's style only while a report renders.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..analysis.pareto import pareto_front
from ..results.io import atomic_write_bytes

PAPER_LEGEND = "paper-reported (M1 Max, not measured here)"
MEASURED_COLOR = "#1f5fbf"
PAPER_COLOR = "#9a9a9a"
STAGE_COLORS = {"vision_latency_ms": "#4c72b0", "projector_ms": "#dd8452", "merge_ms": "#8172b3",
                "prefill_ms": "#55a868"}
STAGE_NAMES = {"vision_latency_ms": "vision encoder", "projector_ms": "projector",
               "merge_ms": "tile merge (tiling)", "prefill_ms": "LLM prefill"}
X_LABELS = {"ttft_ms": "time to first token, TTFT (ms, log scale)",
            "vision_latency_ms": "vision-encoder latency (ms, log scale)",
            "visual_tokens": "visual tokens (count, log scale)"}
DPI = 110

STYLE = {"font.size": 9, "axes.titlesize": 11, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
         "svg.fonttype": "none", "axes.grid": True, "grid.alpha": 0.3}


@contextlib.contextmanager
def plotting() -> Iterator[None]:
    """The Agg backend (no display needed) and the report style, for one rendering."""
    matplotlib.use("Agg")
    with matplotlib.rc_context(STYLE):
        yield


def save(fig, out_dir: Path, name: str) -> Path:
    """Save ``fig`` as ``name.png`` and ``name.svg`` in ``out_dir``; return the PNG path."""
    import io

    png = out_dir / f"{name}.png"
    for path, kwargs in ((png, {"dpi": DPI}), (out_dir / f"{name}.svg", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], bbox_inches="tight", **kwargs)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return png


# ---- the figures every report draws ------------------------------------------------------
Caption = Tuple[Path, str]  # (png, caption)


@dataclass
class FigureSpec:
    name: str
    section: str  # the report section it goes in
    draw: Callable[[pd.DataFrame, Path], List[Caption]]  # (ok rows, figures folder) -> (png, caption)s


#: Registered figures, in the order they appear in the report.
FIGURES: Dict[str, FigureSpec] = {}


def register_figure(section: str) -> Callable:
    """Decorator: draw this figure in every report, in ``section``."""
    def deco(fn: Callable[[pd.DataFrame, Path], List[Caption]]):
        if fn.__name__ in FIGURES:
            raise ValueError(f"report figure {fn.__name__!r} registered twice")
        FIGURES[fn.__name__] = FigureSpec(fn.__name__, section, fn)
        return fn
    return deco


def _ms_formatter(time: bool = True):
    def fmt(v, _pos):
        if v <= 0:
            return ""
        if not time:
            return f"{v:,.0f}" if v >= 1 else f"{v:g}"
        return f"{v:,.0f}" if v >= 1000 else f"{v:g}"
    return FuncFormatter(fmt)


def _log_axis(ax, axis: str = "x", time: bool = True) -> None:
    getattr(ax, f"set_{axis}scale")("log")
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(_ms_formatter(time))
    a.set_minor_formatter(NullFormatter())


def finish_lines(fig, ax, values: pd.Series, log_axis: str, xlabel: str, ylabel: str, title: str) -> None:
    """The common end of a line figure (one line per system): a log scale on ``log_axis`` when
    ``values`` (that axis's data) spans more than 20x, so that a small system's line is not
    flattened against the axis by a large one's, then labels, title and the legend."""
    if values.max() / max(values.min(), 1e-9) > 20:
        _log_axis(ax, log_axis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", framealpha=0.9, fontsize=7.5)
    fig.tight_layout()


def _overlaps(bb, others, pad: float = 2.0) -> bool:
    for o in others:
        if not (bb.x1 + pad < o.x0 or o.x1 + pad < bb.x0 or bb.y1 + pad < o.y0 or o.y1 + pad < bb.y0):
            return True
    return False


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 max_labels: int = 14, fontsize: float = 7.5, color: str = "black",
                 avoid_xy: Optional[np.ndarray] = None) -> int:
    """Annotate points with small offsets, skipping any label that would overlap another.

    Tries a few offsets around each point and keeps the first whose box overlaps neither an
    earlier label, a marker nor the axes edge. Returns how many labels were drawn.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axbb = ax.get_window_extent(renderer)
    pts = ax.transData.transform(np.column_stack([xs, ys])) if len(xs) else np.zeros((0, 2))
    from matplotlib.transforms import Bbox

    allpts = pts
    if avoid_xy is not None and len(avoid_xy):
        allpts = np.vstack([pts, ax.transData.transform(np.asarray(avoid_xy, dtype=float))])
    marker_boxes = [Bbox.from_extents(px - 3, py - 3, px + 3, py + 3) for px, py in allpts]
    placed: List = []
    legend = ax.get_legend()
    if legend is not None:
        placed.append(legend.get_window_extent(renderer))
    for other in ax.texts:  # labels placed by earlier calls
        placed.append(other.get_window_extent(renderer))
    drawn = 0
    offsets = [(6, 5, "left", "bottom"), (6, -5, "left", "top"), (-6, 5, "right", "bottom"),
               (-6, -5, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"),
               (10, 14, "left", "bottom"), (-10, -14, "right", "top")]
    for x, y, text in zip(xs, ys, texts):
        if drawn >= max_labels:
            break
        for dx, dy, ha, va in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=fontsize, color=color)
            bb = ann.get_window_extent(renderer)
            inside = (bb.x0 >= axbb.x0 and bb.x1 <= axbb.x1 and bb.y0 >= axbb.y0 and bb.y1 <= axbb.y1)
            own = [m for m, (px, py) in zip(marker_boxes, allpts)
                   if not (abs(px - ax.transData.transform((x, y))[0]) < 1e-6
                           and abs(py - ax.transData.transform((x, y))[1]) < 1e-6)]
            if inside and not _overlaps(bb, placed) and not _overlaps(bb, own, pad=0):
                placed.append(bb)
                drawn += 1
                break
            ann.remove()
    return drawn


def _frontier_line(ax, df: pd.DataFrame, x: str, color: str, style: str, label: str) -> None:
    front = df[pareto_front(df, x=x, y="accuracy")].sort_values([x, "accuracy"])
    if len(front) >= 1:
        ax.step(front[x], front["accuracy"], where="post", color=color, linestyle=style, lw=1.3,
                alpha=0.9, label=label)


def accuracy_vs_x(measured: pd.DataFrame, paper: pd.DataFrame, x: str, title: str,
                  out_dir: Path, name: str, note: str = "", measured_label: str = "measured here") -> Path:
    """Accuracy (%) against ``x`` (log axis) with Pareto frontiers for both layers.

    ``measured_label`` names the first layer in the legend: ``measured here``, or what exactly
    was measured when only the latency was (paper accuracy joined with measured latency).

    ``measured`` and ``paper`` need columns ``x``, ``accuracy`` and ``label``. The two layers
    get separate frontiers: they were timed on different machines.
    """
    fig, ax = plt.subplots(figsize=(8.4, 5.4))
    measured = measured.dropna(subset=[x, "accuracy"])
    paper = paper.dropna(subset=[x, "accuracy"])
    if len(paper):
        ax.scatter(paper[x], paper["accuracy"], marker="^", s=36, facecolors="none",
                   edgecolors=PAPER_COLOR, linewidths=1.2, label=PAPER_LEGEND, zorder=2)
        _frontier_line(ax, paper, x, PAPER_COLOR, "--", "paper-reported frontier")
    if len(measured):
        ax.scatter(measured[x], measured["accuracy"], marker="o", s=42, color=MEASURED_COLOR,
                   edgecolors="white", linewidths=0.6, label=measured_label, zorder=3)
        _frontier_line(ax, measured, x, MEASURED_COLOR, "-", "measured frontier")
    if len(measured) or len(paper):
        _log_axis(ax, "x", time=x.endswith("_ms"))
        allx = pd.concat([measured[x], paper[x]]).astype(float)
        ally = pd.concat([measured["accuracy"], paper["accuracy"]]).astype(float)
        lo, hi = allx.min(), allx.max()
        ax.set_xlim(lo / 1.6, hi * 1.9)
        ylo, yhi = ally.min(), ally.max()
        span = max(yhi - ylo, 2.0)
        ax.set_ylim(ylo - 0.12 * span, yhi + 0.15 * span)
    else:
        ax.text(0.5, 0.5, "no points with both accuracy and " + x, transform=ax.transAxes,
                ha="center", va="center", color="0.4")
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    if len(measured) or len(paper):
        ax.legend(loc="lower right", framealpha=0.9)
        # Measured points are labelled first (frontier first), then the paper frontier.
        m = measured.assign(_f=pareto_front(measured, x=x, y="accuracy")) if len(measured) else measured
        m = m.sort_values("_f", ascending=False) if len(m) else m
        p = paper[pareto_front(paper, x=x, y="accuracy")] if len(paper) else paper
        fig.tight_layout()
        every = np.vstack([measured[[x, "accuracy"]].to_numpy(dtype=float),
                           paper[[x, "accuracy"]].to_numpy(dtype=float)])
        if len(m):
            place_labels(ax, m[x].tolist(), m["accuracy"].tolist(), m["label"].tolist(), max_labels=12,
                         avoid_xy=every)
        if len(p):
            place_labels(ax, p[x].tolist(), p["accuracy"].tolist(), p["label"].tolist(),
                         max_labels=8, color="0.35", fontsize=7, avoid_xy=every)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7.5, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    return save(fig, out_dir, name)


def vs_resolution(ok: pd.DataFrame, y: str, ylabel: str, title: str, out_dir: Path, name: str,
                  err: Optional[Sequence[str]] = None, log_y: bool = False) -> Path:
    """One line per encoder (and setting, if several) of ``y`` against resolution."""
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    data = ok.dropna(subset=[y])
    with_setting = data["setting"].nunique() > 1 if len(data) else False
    if len(data):
        agg = {y: "median"}
        if err:
            agg.update({e: "median" for e in err})
        g = data.groupby(["encoder", "setting", "resolution"], as_index=False).agg(agg)
        markers = "osD^vP*X"
        for i, ((enc, setting), grp) in enumerate(g.groupby(["encoder", "setting"], sort=True)):
            grp = grp.sort_values("resolution")
            label = f"{enc} ({setting})" if with_setting else str(enc)
            yerr = None
            if err and grp[list(err)].notna().all().all():
                yerr = np.vstack([grp[y] - grp[err[0]], grp[err[1]] - grp[y]]).clip(min=0)
            ax.errorbar(grp["resolution"], grp[y], yerr=yerr, marker=markers[i % len(markers)],
                        capsize=3, lw=1.5, ms=5, label=label)
        res = sorted(g["resolution"].unique())
        ax.set_xticks(res)
        ax.set_xticklabels([str(int(r)) for r in res], rotation=45 if len(res) > 6 else 0)
        if log_y and g[y].max() / max(g[y].min(), 1e-9) > 20:
            _log_axis(ax, "y", time=y.endswith("_ms"))
        ax.legend(title="encoder", loc="best", framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "no measured (status ok) rows", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, out_dir, name)


def ttft_breakdown(ok: pd.DataFrame, out_dir: Path, name: str = "ttft_breakdown") -> Path:
    """Stacked horizontal bars: vision encoder + projector + LLM prefill medians per config,
    with the end-to-end TTFT median (and p10-p90) as a black marker."""
    data = ok.dropna(subset=["ttft_ms"], how="all").copy()
    # merge only where some row is tiled (older tables have no merge column at all)
    stages = [st for st in STAGE_COLORS if st in data and (st != "merge_ms" or data[st].notna().any())]
    n = max(len(data), 1)
    fig, ax = plt.subplots(figsize=(8.6, 1.4 + 0.36 * n))
    if len(data):
        data = data.sort_values("ttft_ms", ascending=False, na_position="first")
        ypos = np.arange(len(data))
        left = np.zeros(len(data))
        for st in stages:
            vals = data[st].astype(float).fillna(0).to_numpy()
            ax.barh(ypos, vals, left=left, color=STAGE_COLORS[st], label=STAGE_NAMES[st] + " (median)",
                    height=0.65)
            left += vals
        t = data["ttft_ms"].astype(float).to_numpy()
        lo = (t - data.get("ttft_p10_ms", pd.Series(t, index=data.index)).astype(float).to_numpy())
        hi = (data.get("ttft_p90_ms", pd.Series(t, index=data.index)).astype(float).to_numpy() - t)
        ax.errorbar(t, ypos, xerr=np.vstack([np.nan_to_num(lo).clip(min=0), np.nan_to_num(hi).clip(min=0)]),
                    fmt="o", color="black", ms=4, capsize=2, lw=1, label="TTFT end to end (median, p10-p90)")
        ax.set_yticks(ypos)
        ax.set_yticklabels(data["label"].tolist(), fontsize=8)
        ax.set_xlim(0, max(np.nanmax(left), np.nanmax(t) if np.isfinite(t).any() else 0) * 1.08 or 1)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, framealpha=0.9,
                  title="TTFT broken down into stages")
    else:
        ax.text(0.5, 0.5, "no measured (status ok) rows", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    ax.set_xlabel("time (ms)")
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return save(fig, out_dir, name)


def ttft_heatmap(ok: pd.DataFrame, out_dir: Path, name: str = "ttft_heatmap") -> List[Path]:
    """TTFT median over LLM (rows, by size) x resolution (columns), one panel per encoder;
    one figure per setting (dtype/device/batch) when there are several."""
    out: List[Path] = []
    data = ok.dropna(subset=["ttft_ms"])
    settings = sorted(data["setting"].unique()) if len(data) else [""]
    for si, setting in enumerate(settings):
        d = data[data["setting"] == setting] if len(data) else data
        encoders = sorted(d["encoder"].unique()) if len(d) else ["(none)"]
        ncols = min(len(encoders), 2)
        nrows = math.ceil(len(encoders) / ncols)
        llms_all = d["llm"].nunique() if len(d) else 1
        res_all = d["resolution"].nunique() if len(d) else 1
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                 figsize=(max(4.2, 1.2 + 0.9 * res_all) * ncols + 1.4,
                                          (1.5 + 0.5 * llms_all) * nrows + 0.8))
        vmin = d["ttft_ms"].min() if len(d) else 1
        vmax = d["ttft_ms"].max() if len(d) else 10
        norm = mcolors.LogNorm(vmin=max(vmin, 1e-3), vmax=max(vmax, vmin * 1.01, 1e-3))
        cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
        im = None
        for ax, enc in zip(axes.flat, encoders):
            e = d[d["encoder"] == enc] if len(d) else d
            if not len(e):
                ax.text(0.5, 0.5, "no measured rows", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            size = e.groupby("llm")["llm_params"].max() if "llm_params" in e else pd.Series(dtype=float)
            llms = sorted(e["llm"].unique(), key=lambda n: (size.get(n, np.nan) if pd.notna(size.get(n, np.nan))
                                                            else float("inf"), n))
            res = sorted(e["resolution"].unique())
            grid = e.pivot_table(index="llm", columns="resolution", values="ttft_ms", aggfunc="median")
            grid = grid.reindex(index=llms, columns=res)
            arr = np.ma.masked_invalid(grid.to_numpy(dtype=float))
            im = ax.imshow(arr, cmap=cmap, norm=norm, aspect="auto")
            ax.set_xticks(range(len(res)))
            ax.set_xticklabels([str(int(r)) for r in res])
            ax.set_yticks(range(len(llms)))
            ax.set_yticklabels(llms)
            ax.set_xlabel("input resolution (px)")
            if ax in axes[:, 0]:
                ax.set_ylabel("LLM (by parameter count)")
            ax.set_title(f"{enc}")
            ax.grid(False)
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    rgba = cmap(norm(v))
                    lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                    ax.text(j, i, (f"{v:,.0f}" if v >= 10 else f"{v:.2g}"), ha="center", va="center", fontsize=8,
                            color="black" if lum > 0.5 else "white")
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.45")
        for ax in list(axes.flat)[len(encoders):]:
            ax.set_axis_off()
        if im is not None:
            cb = fig.colorbar(im, ax=axes.ravel().tolist(), label="TTFT median (ms, log colour scale)",
                              shrink=0.9)
            cb.ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            cb.ax.yaxis.set_major_formatter(_ms_formatter())
            cb.ax.yaxis.set_minor_formatter(NullFormatter())
        fig.suptitle("TTFT over LLM size x resolution" + (f" [{setting}]" if setting else ""))
        out.append(save(fig, out_dir, name if len(settings) == 1 else f"{name}_{si}"))
    return out


def in_process(ok: pd.DataFrame) -> pd.DataFrame:
    """The rows measured in this process (not ``endpoint=`` servers): only they have the
    vision, projector and prefill stages that the stage figures and tables draw; a server's TTFT
    has its own section (bench.report.endpoint_figures)."""
    return ok[ok["endpoint"].isna()] if "endpoint" in ok.columns else ok


@register_figure("Vision-encoder latency vs resolution")
def vision_latency_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    ok = in_process(ok)
    if "vision_latency_ms" not in ok or not ok["vision_latency_ms"].notna().any():
        return []
    return [(vs_resolution(ok, "vision_latency_ms", "vision-encoder latency (ms, median)",
                           "Vision-encoder latency vs input resolution", fig_dir, "vision_latency_vs_resolution",
                           err=("vision_latency_p10_ms", "vision_latency_p90_ms"), log_y=True),
             "Vision-encoder latency (ms) by input resolution, one line per encoder.")]


@register_figure("Visual tokens vs resolution")
def visual_tokens_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    return [(vs_resolution(ok, "visual_tokens", "visual tokens (count)", "Visual tokens vs input resolution",
                           fig_dir, "visual_tokens_vs_resolution", log_y=True),
             "Number of visual tokens passed to the LLM, by input resolution.")]


def _has_ttft(ok: pd.DataFrame) -> bool:
    """Any row with a TTFT? Encoder-only rows (``llm=none``) have none: no TTFT figure for them."""
    return "ttft_ms" in ok and bool(ok["ttft_ms"].notna().any())


@register_figure("TTFT breakdown")
def ttft_breakdown_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    ok = in_process(ok)
    if not _has_ttft(ok):
        return []
    return [(ttft_breakdown(ok, fig_dir),
             "TTFT (ms) split into vision encoder, projector and LLM prefill, per configuration.")]


@register_figure("TTFT over LLM size x resolution")
def ttft_heatmap_figure(ok: pd.DataFrame, fig_dir: Path) -> List[Caption]:
    ok = in_process(ok)
    if not _has_ttft(ok):
        return []
    return [(png, "TTFT median (ms) per LLM and input resolution; grey cells were not measured.")
            for png in ttft_heatmap(ok, fig_dir)]
