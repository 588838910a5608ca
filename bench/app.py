"""The Hydra application: one call of :func:`run` per sweep point.

``fastvlm-bench [overrides]`` composes ``sweeps/config.yaml`` (which defaults to a multirun of
the ``default`` sweep), and Hydra's launcher calls :func:`run` once per point, in-process or
through any launcher plugin (``hydra/launcher=submitit_local`` / ``submitit_slurm``).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import BenchConfig, ConfigError, register_configs, validate
from .records import STATUS_OK
from .resources import sweeps_dir
from .store import ResultsStore

log = logging.getLogger("fastvlm_bench")
SWEEPS_DIR = str(sweeps_dir())  # the checkout's sweeps/, or the copy bundled in the wheel

register_configs()


def _to_bench_config(cfg: DictConfig) -> BenchConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def run_point(cfg: BenchConfig) -> Dict[str, Any]:
    """Measure one point unless the store already has it; returns a small summary."""
    from .scenario import measure_point, resolve_point

    validate(cfg)
    point = resolve_point(cfg)
    store = ResultsStore(Path(cfg.results_dir) / cfg.name)
    pid = point.point_id()
    if not cfg.force and store.is_done(pid):
        rec = store.get(pid)
        log.info("already measured (%s, %s): %s; use force=true to re-measure", rec.status, pid, point.label())
        return {"point_id": pid, "status": rec.status, "resumed": True}
    rec = measure_point(cfg, point)
    path = store.put(rec)
    store.consolidate()
    if rec.status == STATUS_OK:
        s = rec.stages
        log.info("%s: %d tokens | vision %.1f ms | projector %.2f ms | prefill %.1f ms | TTFT %.1f ms (n=%d) -> %s",
                 point.label(), rec.visual_tokens, s["vision_latency"].median, s["projector"].median,
                 s["prefill"].median, s["ttft"].median, s["ttft"].n, path)
    else:
        log.warning("%s: %s: %s", point.label(), rec.status, rec.message)
    return {"point_id": pid, "status": rec.status, "resumed": False}


@hydra.main(version_base="1.3", config_path=SWEEPS_DIR, config_name="config")
def run(cfg: DictConfig) -> Dict[str, Any]:
    try:
        return run_point(_to_bench_config(cfg))
    except ConfigError as exc:
        print(f"fastvlm-bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2)


class FinishCallback(Callback):
    """At the end of a multirun: consolidate the table, print a summary, render the report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.results_dir) / config.name
        store = ResultsStore(root)
        df = store.consolidate()
        if df.empty:
            print(f"fastvlm-bench: no records in {root}", file=sys.stderr)
            return
        counts = df["status"].value_counts().to_dict()
        print(f"\nfastvlm-bench: {len(df)} records in {root}/results.csv ({counts})", file=sys.stderr)
        cols = ["encoder", "resolution", "llm", "dtype", "visual_tokens", "vision_latency_ms", "projector_ms",
                "prefill_ms", "ttft_ms", "status"]
        with_cols = [c for c in cols if c in df]
        print(df[with_cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=sys.stderr)
        for _, row in df[df["status"] != STATUS_OK].iterrows():
            print(f"  {row['status']}: {row['encoder']}@{row['resolution']} {row['llm']}: {row['message']}",
                  file=sys.stderr)
        if config.get("report", False):
            try:
                from .report.render import render_report

                out = render_report(root, Path(config.reports_dir) / config.name)
                print(f"fastvlm-bench: report written to {out}", file=sys.stderr)
            except Exception as exc:  # a report problem must not lose the measurements
                print(f"fastvlm-bench: report not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
