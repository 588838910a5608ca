"""Build a sweep report: figures, the tables behind them, ``index.html`` and ``report.md``.

Layout of ``reports/<sweep>/``::

    index.html      self-contained (PNGs embedded as base64 data URIs, inline CSS, no scripts)
    report.md       the same tables in Markdown, linking to figures/*.png
    figures/        every figure as PNG and SVG
    tables/         every table as CSV

Paper-reported figures are kept in their own tables, always with ``source=paper-reported``,
and drawn with their own marker and legend entry.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..accuracy.schema import SOURCE_PAPER, empty_accuracy, read_accuracy_files
from ..analysis.backends import backend_table, rankings
from ..analysis.join import join_efficiency_accuracy
from ..analysis.pareto import AVG5, avg_accuracy, avg_label, pareto_front
from ..analysis.reference import PAPER_DEVICE, paper_accuracy_long, paper_vlm_points
from ..results.store import load_table
from . import figures as F
from . import decode_figures  # noqa: F401  (registers the decode and throughput figures)
from . import endpoint_figures  # noqa: F401  (registers the endpoint TTFT figure)
from . import reduction_figures  # noqa: F401  (registers the token-reduction figures)
from . import fidelity_figures  # (registers the hf= fidelity figure; its tables below)
from .frames import Section, _cols, _with_labels
from .output import _slug, _write  # noqa: F401  (_slug: re-exported, tests/test_report.py)
from .sections import (CLAIMS_TITLE, HEADLINE_TITLE, JOINED_LABEL, JOINED_TITLE,  # noqa: F401  (re-exported)
                       _claims_section, _headline_section, _paper_accuracy_measured_latency_section)
from .allocator_table import SECTION as ALLOCATOR_SECTION
from .allocator_table import TEXT as ALLOCATOR_TEXT
from .allocator_table import allocator_table

log = logging.getLogger(__name__)

X_CHOICES = ("ttft_ms", "vision_latency_ms", "visual_tokens")
ENV_COLUMNS = ("device_name", "device", "dtype", "threads", "attn_implementation", "compile", "backend",
               "backend_options", "allocator", "thp", "openmp_runtime", "cpu_governor")
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- report
def sweep_name(results_dir: PathLike) -> str:
    """``results/<sweep>`` -> ``<sweep>``; a table or records folder inside it -> the same name."""
    p = Path(results_dir)
    if p.is_file() or p.name == "records":
        return p.parent.name
    return p.name


#: Columns a results table needs for a report (ok rows are drawn from these).
REQUIRED_COLUMNS = ("encoder", "resolution", "llm", "status", "visual_tokens", "vision_latency_ms",
                    "projector_ms", "prefill_ms", "ttft_ms")


def render_report(results_dir: PathLike, out_dir: Optional[PathLike] = None,
                  accuracy_files: Sequence[PathLike] = (), benchmarks: Sequence[str] = AVG5,
                  x: str = "ttft_ms", include_paper: bool = True) -> Path:
    """Render the report of one sweep folder; return the path of ``index.html``.

    The table is checked first (a missing column is a ``ValueError`` naming the table and
    the columns), then the report is rendered into a hidden sibling folder and swapped in
    at the end, so a failure half-way never leaves a partial ``figures/`` folder or mixes a
    new figure with an old ``index.html``.
    """
    import os
    import shutil

    results_dir = Path(results_dir)
    final = Path(out_dir) if out_dir is not None else Path("reports") / sweep_name(results_dir)
    df = load_table(results_dir)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"{results_dir}: not a fastvlm-bench results table, missing column(s) {', '.join(missing)}")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with F.plotting():
            _render_report(results_dir, stage, accuracy_files, benchmarks, x, include_paper)
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final / "index.html"


def _render_report(results_dir: PathLike, out_dir: Optional[PathLike] = None,
                  accuracy_files: Sequence[PathLike] = (), benchmarks: Sequence[str] = AVG5,
                  x: str = "ttft_ms", include_paper: bool = True) -> Path:
    """Render the report of one sweep folder; return the path of ``index.html``.

    ``accuracy_files`` are CSVs in the accuracy long format; with none given,
    ``RESULTS_DIR/accuracy.csv`` is used if it exists. The report renders without any
    accuracy (efficiency figures only, and it says that accuracy is missing).
    """
    if x not in X_CHOICES:
        raise ValueError(f"x must be one of {X_CHOICES}, got {x!r}")
    results_dir = Path(results_dir)
    sweep = sweep_name(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path("reports") / sweep
    fig_dir = out_dir / "figures"
    benchmarks = tuple(b.strip().lower() for b in benchmarks if b.strip())
    alabel = avg_label(benchmarks)
    atitle = "Avg-5 (GQA, TextVQA, POPE, DocVQA, SeedBench-I)" if benchmarks == AVG5 else \
        "average of " + ", ".join(benchmarks)

    df = load_table(results_dir)
    for col in ("encoder", "resolution", "llm", "status", "message"):
        if col not in df:
            df[col] = pd.Series(dtype=object)
    df = _with_labels(df)
    ok = df[df["status"] == "ok"].copy()
    # encoder-only rows (llm=none) have no TTFT: the TTFT sections show the rows that have one,
    # and a report of encoder-only rows alone plots accuracy against vision latency
    inproc = F.in_process(ok)  # endpoint= servers have no stages here: their TTFT has its own section
    llm_rows = inproc[pd.to_numeric(inproc["ttft_ms"], errors="coerce").notna()] if "ttft_ms" in ok else ok.iloc[:0]
    no_ttft = "Every measured row is encoder-only (llm=none): there is no TTFT to show." if len(inproc) and \
        not len(llm_rows) else ""

    accuracy_files = list(accuracy_files)
    if not accuracy_files and (results_dir / "accuracy.csv").is_file():
        accuracy_files = [results_dir / "accuracy.csv"]
    acc = read_accuracy_files(accuracy_files) if accuracy_files else empty_accuracy()
    joined, um_res, um_acc = join_efficiency_accuracy(ok, acc)
    has_accuracy = len(joined) > 0

    sections: List[Section] = []
    warnings: List[str] = []
    if no_ttft and x == "ttft_ms":
        x = "vision_latency_ms"
        warnings.append(no_ttft + " Accuracy is drawn against vision-encoder latency.")
    if not accuracy_files:
        warnings.append("Accuracy is missing: no accuracy file was given and the results folder has no "
                        "accuracy.csv. Only efficiency figures of measured points are shown; accuracy "
                        "plots show paper-reported points only.")
    elif not has_accuracy:
        warnings.append(f"Accuracy is missing for every measured configuration: none of the {len(acc)} "
                        f"accuracy row(s) in {', '.join(map(str, accuracy_files))} matches a measured "
                        "(status ok) encoder/resolution/llm.")

    # -------- 1. what the user measured, first
    sections.append(_headline_section(ok))
    # -------- 2. the paper's claims, when this folder measured any of them
    claims = _claims_section(df, sweep)
    if claims is not None:
        sections.append(claims)
    # -------- 3. paper accuracy x latency measured here, exactly matching configurations
    if include_paper:
        sections.append(_paper_accuracy_measured_latency_section(ok, benchmarks, atitle, x, fig_dir))

    # -------- accuracy vs x: plots with measured accuracy here, paper-only plots last
    paper_pts = paper_vlm_points() if include_paper else pd.DataFrame()
    paper_acc = paper_accuracy_long() if include_paper else empty_accuracy()
    paper_acc = paper_acc[paper_acc["origin"].str.contains("Table 6")] if include_paper else paper_acc
    if include_paper:
        paper_pts["label"] = [f"{r['row']} {r['encoder']}@{r['resolution']}+{r['llm']}"
                              for _, r in paper_pts.iterrows()]
    measured_bench = sorted(set(joined["benchmark"])) if has_accuracy else []
    plot_bench = list(benchmarks) + [b for b in measured_bench if b not in benchmarks]
    frontier_text = ("Pareto frontier: a point is on it when no other point of the same layer is both "
                     "faster (or equal) and at least as accurate. Measured points and paper-reported "
                     f"points get separate frontiers: the paper timed on another machine ({PAPER_DEVICE}).")
    xname = F.X_LABELS[x].split(" (")[0]
    sec = Section("Accuracy vs " + xname + " (accuracy measured or imported for your configurations)",
                  text=frontier_text)
    paper_sec = Section(f"Paper-reported only: accuracy vs {xname} ({PAPER_DEVICE})",
                        text="Configurations and timings copied from the FastVLM paper, none of them measured "
                             "here; plots of a benchmark without measured accuracy show only this layer. "
                             + frontier_text)
    avg_measured = avg_accuracy(acc[acc["source"] != SOURCE_PAPER] if len(acc) else acc, benchmarks)
    avg_paper = avg_accuracy(paper_acc, benchmarks) if include_paper else avg_accuracy(empty_accuracy())
    entries = [(alabel, atitle)] + [(b, b) for b in plot_bench]
    for bench, title in entries:
        if bench == alabel:
            m_acc = avg_measured.dropna(subset=["accuracy"])
            p_acc = avg_paper.dropna(subset=["accuracy"])
        else:
            m_acc = acc[(acc["benchmark"] == bench) & (acc["source"] != SOURCE_PAPER)] if len(acc) else acc
            p_acc = paper_acc[paper_acc["benchmark"] == bench]
        mj = join_efficiency_accuracy(ok, m_acc.drop(columns=["n_benchmarks", "missing", "n_values"],
                                                     errors="ignore"))[0] if len(m_acc) else pd.DataFrame()
        pj = paper_pts.merge(p_acc[["origin", "accuracy"]], on="origin") if include_paper and len(p_acc) \
            else pd.DataFrame(columns=["label", x, "accuracy"])
        if not len(mj) and not len(pj):
            continue
        if len(mj):
            mj = mj.dropna(subset=[x])
            mj["on_frontier"] = pareto_front(mj, x=x, y="accuracy")
        if len(pj):
            pj = pj.dropna(subset=[x])
            pj["on_frontier"] = pareto_front(pj, x=x, y="accuracy")
        note = "" if len(mj) else "No measured accuracy for this benchmark: only paper-reported points are shown."
        target = sec if len(mj) else paper_sec
        png = F.accuracy_vs_x(mj if len(mj) else pd.DataFrame(columns=["label", x, "accuracy"]),
                              pj, x, f"{title}: accuracy vs {xname}", fig_dir,
                              f"accuracy_{bench.replace('(', '_').replace(')', '').replace(',', '_')}_vs_{x}",
                              note=note)
        target.figures.append((png, f"{title} accuracy (%) vs {F.X_LABELS[x]}."))
        if len(mj):
            sec.tables.append((f"{title}: measured points (efficiency measured here, accuracy from its source)",
                               mj[_cols(mj, ["label", x, "accuracy", "on_frontier", "source", "origin"])]))
        if len(pj):
            target.tables.append((f"{title}: paper-reported points ({PAPER_DEVICE})",
                                  pj[_cols(pj, ["label", "method", "data_pt_it_m", x, "accuracy", "on_frontier",
                                                "source"])]))
    avg_tab = pd.concat([avg_measured, avg_paper], ignore_index=True)
    if len(avg_tab):
        (sec if len(avg_measured) else paper_sec).tables.append(
            (f"{alabel} per configuration (missing = benchmarks absent, no average computed)",
             avg_tab[["encoder", "resolution", "llm", "source", "origin", "accuracy", "n_benchmarks", "missing"]]))
    if len(um_res) and len(acc):
        sec.tables.append(("Measured configurations without accuracy",
                           um_res[_cols(um_res, ["label", "encoder", "resolution", "llm"])].drop_duplicates()))
    if len(um_acc):
        sec.tables.append(("Accuracy rows without a measured configuration",
                           um_acc[["encoder", "resolution", "llm", "benchmark", "accuracy", "source", "origin"]]))
    if sec.figures or sec.tables:
        sections.append(sec)

    # -------- vision latency vs resolution
    sec = Section("Vision-encoder latency vs resolution",
                  text="Median per point with p10-p90 bars; measured rows with status ok only.")
    vcols = _cols(ok, ["encoder", "setting", "resolution", "llm", "vision_latency_ms", "vision_latency_p10_ms",
                       "vision_latency_p90_ms", "vision_latency_n", "vision_latency_gflops",
                       "vision_latency_achieved_tflops", "vision_params"])
    if len(inproc):
        sec.tables.append(("Vision-encoder latency (ms)", inproc[vcols].sort_values(["encoder", "resolution"])))
        sections.append(sec)

    # -------- deployment runtimes (bench.models.backends): only when the sweep has several
    bt = backend_table(ok)
    if len(bt):
        rank_tab, changes = rankings(ok)
        sec = Section("Vision latency by backend",
                      text=("Each encoder configuration through every backend (eager PyTorch, torch.compile, "
                            "ONNX Runtime, OpenVINO). Speed-up = eager / backend vision latency, with a 95 % "
                            "bootstrap interval over both points' iterations. Export and first-load times "
                            "are recorded apart, never timed; max_rel_err is the first call's error against "
                            "eager on the same input (max |diff| / max |eager|). "
                            + ("Ranking of encoder configurations by vision latency: "
                               + (" ".join(changes) if changes else "the same under every backend as eager.")
                               if len(rank_tab) else "")))
        sec.tables.append(("Vision latency (ms) by encoder configuration and backend", bt))
        if len(rank_tab):
            sec.tables.append(("Ranking by vision latency (1 = fastest) per backend", rank_tab))
        sections.append(sec)

    # -------- allocators (sweep=allocators): only when the rows hold several
    at = allocator_table(df)
    if len(at):
        sec = Section(ALLOCATOR_SECTION, text=ALLOCATOR_TEXT)
        sec.tables.append(("Latency (ms) per allocator, medians [95 % interval]", at))
        sections.append(sec)

    # -------- visual tokens
    sec = Section("Visual tokens vs resolution")
    tcols = _cols(ok, ["encoder", "resolution", "visual_tokens", "encoder_channels"])
    sec.tables.append(("Visual tokens", ok[tcols].drop_duplicates().sort_values(["encoder", "resolution"])))
    sections.append(sec)

    # -------- TTFT breakdown
    sec = Section("TTFT breakdown",
                  text=no_ttft or "Stage medians stacked (vision encoder, projector, the tile merge of tiled "
                       "points, a token-reduction stage, LLM prefill); the black marker is the end-to-end TTFT median "
                       "measured in the same iterations, so a gap shows overhead outside the stages.")
    merged = "merge_ms" in ok and ok["merge_ms"].notna().any()  # a tiled point's merge stage
    reduced = "reduce_ms" in ok and ok["reduce_ms"].notna().any()  # a reduction method's own stage
    stage_cols = (["vision_latency_ms", "projector_ms"] + (["merge_ms"] if merged else [])
                  + (["reduce_ms"] if reduced else []) + ["prefill_ms"])
    bd = llm_rows[_cols(ok, ["label"] + stage_cols + ["ttft_ms", "ttft_p10_ms", "ttft_p90_ms", "ttft_n"])].copy()
    if len(bd):
        bd.insert(list(bd.columns).index("ttft_ms"), "sum_of_stages_ms",
                  bd[_cols(bd, stage_cols)].sum(axis=1, min_count=1))
    sec.tables.append(("TTFT breakdown (ms, medians)", bd.sort_values("ttft_ms") if len(bd) else bd))
    if len(inproc):
        sections.append(sec)

    # -------- heat map
    sec = Section("TTFT over LLM size x resolution", text=no_ttft)
    if len(llm_rows):
        piv = llm_rows.pivot_table(index=["encoder", "setting", "llm"], columns="resolution", values="ttft_ms",
                             aggfunc="median").reset_index()
        piv.columns = [f"ttft_ms@{c}px" if isinstance(c, (int, np.integer)) else c for c in piv.columns]
        sec.tables.append(("TTFT median (ms) by LLM and resolution", piv))
    if len(inproc):
        sections.append(sec)

    # -------- decode: TTFT and E2E side by side (only where points decoded)
    dec = ok[pd.to_numeric(ok["e2e_ms"], errors="coerce").notna()] if "e2e_ms" in ok.columns else ok.iloc[0:0]
    if len(dec):
        sec = Section(decode_figures.SECTION,
                      text="With decode_tokens N: each timed iteration is prefill (the first token) and N-1 greedy "
                           "decode steps (EOS ignored). TTFT and E2E (image tensor in -> last token out) are spans of "
                           "the same iterations; TPOT is the mean step after the first token, ITL percentiles are "
                           "over every step. decode_bandwidth_frac: bytes one step reads (parameters + KV cache, "
                           "analytic) per TPOT, over the measured copy bandwidth.")
        sec.tables.append(("TTFT and E2E side by side (ms, medians with 95 % intervals), TPOT and ITL",
                           dec[_cols(dec, ["label", "batch_size", "decode_tokens", "visual_tokens", "ttft_ms",
                                           "ttft_ci_low_ms", "ttft_ci_high_ms", "e2e_ms", "e2e_ci_low_ms",
                                           "e2e_ci_high_ms", "ttst_ms", "tpot_ms", "tpot_ci_low_ms",
                                           "tpot_ci_high_ms", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms"])]))
        sec.tables.append(("Throughput and decode memory traffic",
                           dec[_cols(dec, ["label", "batch_size", "requests_per_s", "output_tokens_per_s",
                                           "decode_tokens_per_s", "kv_cache_bytes", "decode_bytes_per_step",
                                           "decode_achieved_gbps", "decode_bandwidth_frac", "peak_memory_mb",
                                           "peak_rss_mb"])]))
        sections.append(sec)

    # -------- token reduction (bench.models.reduction): one row per point, methods' overheads
    if reduced:
        sec = Section(reduction_figures.SECTION,
                      text="Visual tokens reaching the LLM against TTFT, for encoders scaled by resolution and for "
                           "token-reduction methods; `reduction_overhead_ms` is the method's own time, "
                           "`reduction_overhead_in` the stage that time is part of.")
        rcols = _cols(ok, ["encoder", "resolution", "reduction", "reduction_params", "visual_tokens_encoder",
                           "visual_tokens", "visual_tokens_llm_mean", "vision_latency_ms", "reduce_ms", "prefill_ms",
                           "ttft_ms", "reduction_overhead_ms", "reduction_overhead_in", "ttft_gflops"])
        sec.tables.append(("TTFT (ms, medians) and tokens per point",
                           ok[rcols].sort_values(["reduction", "encoder", "visual_tokens"])))
        sections.append(sec)

    # -------- hf= points beside our compositions of them (bench.analysis.fidelity)
    fid = fidelity_figures.section_tables(ok)
    if fid is not None and fid[1]:
        sections.append(Section(fidelity_figures.SECTION, text=fid[0], tables=fid[1]))

    # -------- the registered figures (figures.register_figure), each in its section
    by_title = {s.title: s for s in sections}
    for spec in F.FIGURES.values():
        drawn = spec.draw(ok, fig_dir)
        if spec.section not in by_title:
            if not drawn:  # a figure with nothing to draw adds no empty section
                continue
            by_title[spec.section] = Section(spec.section)
            sections.append(by_title[spec.section])
        by_title[spec.section].figures.extend(drawn)

    # -------- environment and failures
    sec = Section("Measurement environment",
                  text="Where the measured numbers come from. Paper-reported figures were measured by the "
                       f"paper's authors ({PAPER_DEVICE}).")
    env_cols = _cols(df, list(ENV_COLUMNS) + sorted(c for c in df.columns if c.startswith("env_"))
                     + ["device_peak_tflops"])
    if env_cols:
        env = df[env_cols].astype(object).where(df[env_cols].notna(), None)
        env = env.astype(str).replace("None", "").drop_duplicates().reset_index(drop=True)
        counts = df[env_cols].astype(object).where(df[env_cols].notna(), None).astype(str) \
            .replace("None", "").value_counts(dropna=False).rename("rows").reset_index()
        sec.tables.append(("Environments (one row per distinct combination, with its number of result rows)",
                           counts if len(counts) else env))
    # points whose numbers deserve a second look: the interval missed its target, or the
    # per-iteration probe saw contended (CPU) or throttled (GPU) iterations
    if "stop_reason" in ok.columns:
        disturbed = ok["disturbed_iterations"].fillna(0) if "disturbed_iterations" in ok.columns else 0
        # a table read from CSV with no stop reasons at all has a float (NaN) column: compare as text
        wide = ok[(ok["stop_reason"].astype(object).fillna("") != "target") | (disturbed > 0)]
        if len(wide):
            warnings.append(f"{len(wide)} point(s) with a wide interval (the stopping rule hit its budget) or "
                            "disturbed iterations: see 'Measurement quality'")
        sec.tables.append(("Measurement quality: points that did not reach the target interval or had disturbed "
                           "iterations", wide[_cols(wide, ["label", "stop_reason", "ttft_n", "ttft_ci_rel",
                                                           "disturbed_iterations", "warmup_iterations"])]))
    statuses = df["status"].value_counts().rename_axis("status").rename("rows").reset_index()
    sec.tables.append(("Points by status", statuses))
    bad = df[df["status"].isin(["error", "skipped"])]
    sec.tables.append(("Points with status error or skipped",
                       bad[_cols(bad, ["label", "status", "message", "point_id"])]))
    sections.append(sec)
    if paper_sec.figures or paper_sec.tables:
        sections.append(paper_sec)  # paper-only plots come last

    return _write(out_dir, sweep, results_dir, accuracy_files, sections, warnings, x, benchmarks)


