"""Terminal progress for Hydra multiruns: which point, how many left, estimated time left.

A Hydra callback (configured in ``sweeps/config.yaml``). The total is computed the way
Hydra's basic sweeper expands the grid: the sweep config's ``hydra.sweeper.params`` with the
command line's overrides taking precedence key by key. The estimate uses only points that
were really measured (points resumed from the store finish at once).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def count_jobs(sweeper_params: Dict[str, Any], task_overrides: List[str]) -> int:
    """How many jobs a basic-sweeper multirun will launch."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    args = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(task_overrides or [])
    parsed = OverridesParser.create().parse_overrides(args)
    sizes: Dict[str, int] = {}
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override() and isinstance(ov.value(), Glob):
            sizes[key] = len(ov.value().filter(_group_options(ov.key_or_group)))
        else:
            sizes[key] = len(list(ov.sweep_string_iterator())) if ov.is_sweep_override() else 1
    return math.prod(sizes.values()) if sizes else 1


def _group_options(group: str) -> List[str]:
    """The options of a config group for a ``glob(...)`` sweep (``+claim_point=glob(*)``): those
    in Hydra's ConfigStore and the YAML files of ``sweeps/<group>/``."""
    from hydra.core.config_store import ConfigStore

    from ..config import sweeps_dir

    names = set()
    try:
        names |= {n[:-5] if n.endswith(".yaml") else n for n in ConfigStore.instance().list(group)}
    except (IOError, OSError, ValueError, KeyError):
        pass
    folder = sweeps_dir() / group
    if folder.is_dir():
        names |= {p.stem for p in folder.glob("*.yaml")}
    return sorted(names)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressCallback(Callback):
    def __init__(self) -> None:
        self.total = 0
        self.started = 0
        self.measured_s: List[float] = []
        self.t0 = time.perf_counter()
        self._job_t0 = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params") or {}
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=False)
        try:
            self.total = count_jobs(params, list(config.hydra.overrides.task))
        except Exception:  # progress must never break a sweep
            self.total = 0
        self.t0 = time.perf_counter()
        print(f"fastvlm-bench: sweep '{config.get('name')}' with {self.total or '?'} points", file=sys.stderr,
              flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started += 1
        self._job_t0 = time.perf_counter()
        left = max(0, self.total - self.started + 1) if self.total else None
        eta = ""
        if self.measured_s and left is not None:
            eta = f" | ETA {_fmt(sum(self.measured_s) / len(self.measured_s) * left)}"
        tiling = config.get("tiling") or {}
        tiled = tiling.get("name", "none") != "none"
        size = config.get("image_size") if tiled and config.get("image_size") else f"{config.resolution}"
        red = config.get("reduction") if hasattr(config, "get") else getattr(config, "reduction", None)
        red = (f" {red.name}->{red.get('tokens', 0) or ''}" if red is not None and red.get("name", "none") != "none" else "")
        point = f"{config.encoder.name}@{size}px{' ' + tiling.get('name') if tiled else ''}{red} + {config.llm.name}"
        if config.get("hf"):  # a transformers model: its name and image, encoder/llm do not apply
            point = f"hf={config.hf}@{config.get('image_size') or config.resolution}px"
        ep = config.get("endpoint") or {}
        if ep.get("name", "none") != "none":  # a server: its kind, model, image and requests in flight
            model = ep.get("model") or (str(ep.get("gguf") or "").rsplit("/", 1)[-1]) or "default"
            point = (f"endpoint={ep.name} {model}@{config.get('image_size') or config.resolution}px "
                     f"c{ep.get('concurrency', 1)}")
        print(f"[{self.started}/{self.total or '?'}] {point} | elapsed {_fmt(time.perf_counter() - self.t0)}"
              f"{eta}", file=sys.stderr, flush=True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        rv = getattr(job_return, "_return_value", None)
        if isinstance(rv, dict) and not rv.get("resumed") and rv.get("status") == "ok":
            self.measured_s.append(time.perf_counter() - self._job_t0)
