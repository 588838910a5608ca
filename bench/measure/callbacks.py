"""The Hydra callbacks of a sweep (configured in ``sweeps/config.yaml``).

:class:`ValidateCallback` rejects bad input before Hydra makes any folder;
:class:`FinishCallback` consolidates the table, prints a summary and renders the report when
a multirun ends. (:class:`bench.measure.progress.ProgressCallback` prints progress.)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import BenchConfig, ConfigError, validate
from ..results.io import ResultsWriteError
from ..results.records import STATUS_OK
from ..results.store import ResultsStore
from .runner import STATUS_CLAIMED, STATUS_OVER_BUDGET, STATUS_UNAVAILABLE, check_results_dir, fail


def to_bench_config(cfg: DictConfig) -> BenchConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _grid_size(config: DictConfig) -> int:
    """How many points this Hydra run has (1 for a single run); 2 when it cannot tell."""
    from hydra.types import RunMode

    from .progress import count_jobs

    try:
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return 1
        params = hc.sweeper.get("params") or {}
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=False)
        return count_jobs(params, list(hc.overrides.task))
    except Exception:  # unknown sweeper: treat as a grid (never abort other points)
        return 2


#: Points in this process's Hydra run, set by ValidateCallback when the run starts (a job's
#: own config only holds its own overrides). None in a launcher's worker process.
_GRID_SIZE = None


def in_grid() -> bool:
    """True when this job is one of several points of a run; unknown (a submitit worker)
    counts as a grid, so one point's problem never aborts the others."""
    return _GRID_SIZE is None or _GRID_SIZE > 1


class ValidateCallback(Callback):
    """Before Hydra makes any folder: reject a bad name or results folder and a missing
    checkpoint, so a rejected run leaves nothing behind (``name=../x`` would otherwise get
    its hydra/ folder outside results_dir before the job's own validation)."""

    def _check(self, config: DictConfig) -> None:
        global _GRID_SIZE
        _GRID_SIZE = _grid_size(config)
        params = config.hydra.sweeper.get("params") or {}
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=False)
        swept = set(params or {})
        for ov in config.hydra.overrides.task:
            key, _, value = str(ov).partition("=")
            if "," in value:
                swept.add(key.lstrip("+~"))
        try:
            # the composed config holds every value but the swept ones (those keep their valid
            # config-file values), so this rejects a bad non-swept value before any folder exists
            base = config.copy()
            with open_dict(base):
                del base["hydra"]
            validate(to_bench_config(base), swept)
            name, results_dir = str(config.name), str(config.results_dir)
            if "name" not in swept and "results_dir" not in swept:
                cfg = BenchConfig(name=name, results_dir=results_dir)
                check_results_dir(cfg)
            ckpt = config.get("checkpoint")
            if ckpt and "checkpoint" not in swept:
                from .checkpoint_id import checkpoint_identity

                checkpoint_identity(str(ckpt))
            if "device" not in swept and _GRID_SIZE == 1:
                from .plan import DeviceUnavailableError
                from ..models.vlm import resolve_device

                try:
                    resolve_device(str(config.device))
                except ValueError as exc:
                    raise DeviceUnavailableError(str(exc)) from None
        except ConfigError as exc:
            fail(str(exc), 2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


def _stop_servers() -> None:
    """Stop the llama-servers the sweep's endpoint points started; imports nothing when none did."""
    mod = sys.modules.get("bench.measure.endpoint_server")
    if mod is not None:
        mod.stop_all()


class FinishCallback(Callback):
    """At the end of a multirun: consolidate the table, print a summary, render the report."""

    def __init__(self) -> None:
        self.unrecorded: List[str] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        rv = getattr(job_return, "_return_value", None)
        if isinstance(rv, dict) and rv.get("status") in (STATUS_CLAIMED, STATUS_UNAVAILABLE, STATUS_OVER_BUDGET):
            self.unrecorded.append(f"  {rv['status']}: {config.encoder.name}@{config.resolution} "
                                   f"{config.llm.name}: {rv.get('message', '')}")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_servers()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_servers()  # a server the endpoint points launched (bench.measure.endpoint_server)
        root = Path(config.results_dir) / config.name
        store = ResultsStore(root)
        try:
            df = store.consolidate()
        except ResultsWriteError as exc:
            fail(str(exc), 1)
        for path, msg in store.corrupt:
            print(f"fastvlm-bench: warning: corrupt record {msg}", file=sys.stderr)
        if self.unrecorded:
            print(f"fastvlm-bench: {len(self.unrecorded)} point(s) not measured by this run:", file=sys.stderr)
            for line in self.unrecorded:
                print(line, file=sys.stderr)
        if df.empty:
            print(f"fastvlm-bench: no records in {root}", file=sys.stderr)
            return
        counts = df["status"].value_counts().to_dict()
        print(f"\nfastvlm-bench: {len(df)} records in {root}/results.csv ({counts})", file=sys.stderr)
        reduced = "reduction" in df and bool((df["reduction"].fillna("none") != "none").any())
        cols = ["encoder", "resolution", "llm", "dtype"] + (["reduction"] if reduced else []) + [
                "visual_tokens", "vision_latency_ms", "projector_ms", "prefill_ms", "ttft_ms", "status"]
        if "e2e_ms" in df and df["e2e_ms"].notna().any():  # points that decoded (decode_tokens)
            cols[4:4] = ["batch_size", "decode_tokens"]
            cols[-1:-1] = ["tpot_ms", "e2e_ms", "output_tokens_per_s"]
        with_cols = [c for c in cols if c in df]
        print(df[with_cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=sys.stderr)
        for _, row in df[df["status"] != STATUS_OK].iterrows():
            print(f"  {row['status']}: {row['encoder']}@{row['resolution']} {row['llm']}: {row['message']}",
                  file=sys.stderr)
        if config.get("report", False):
            try:
                from ..report.render import render_report

                out = render_report(root, Path(config.reports_dir) / config.name)
                print(f"fastvlm-bench: report written to {out}", file=sys.stderr)
            except Exception as exc:  # a report problem must not lose the measurements
                print(f"fastvlm-bench: report not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
