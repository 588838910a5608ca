"""The Hydra application: one call of :func:`run` per sweep point.

``fastvlm-bench [overrides]`` composes ``sweeps/config.yaml`` (which defaults to a multirun of
the ``default`` sweep), and Hydra's launcher calls :func:`run` once per point, in-process or
through any launcher plugin (``hydra/launcher=submitit_local`` / ``submitit_slurm``). The work
of a point is :func:`bench.measure.runner.run_point`; the callbacks are in
:mod:`bench.measure.callbacks`.
"""
from __future__ import annotations

import os
import sys
import uuid
from typing import Any, Dict, List

import hydra
from omegaconf import DictConfig, OmegaConf

from . import models  # noqa: F401  (its config groups and checks: bench.models.config_groups)
from .analysis.claims import register_claim_points
from .config import ConfigError, register_configs, sweeps_dir
from .measure.callbacks import in_grid, to_bench_config
from .measure.interrupt import PointInterrupted, exit_status
from .measure.runner import fail, run_point
from .results.io import ResultsWriteError

SWEEPS_DIR = str(sweeps_dir())  # the checkout's sweeps/, or the copy bundled in the wheel

#: ``${fvb_run_id:}`` in sweeps/config.yaml: makes each run's hydra/ folder unique, so two
#: sweeps started in the same second on one results folder (or Slurm arrays submitted from
#: two hosts) never write into the same hydra/<timestamp>/ folder. Cached like Hydra's
#: ``now``, so every job of a multirun (and submitit's pickled jobs) sees the same value.
#: Registered when this module is imported, not in :func:`main`: a launcher's worker process
#: (submitit) imports this module to unpickle :func:`run` and resolves the config there
#: without going through ``main``.
_RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
OmegaConf.register_new_resolver("fvb_run_id", lambda: _RUN_ID, use_cache=True, replace=True)


def resolution_for_tokens(encoder: str, tokens: int) -> int:
    """``${fvb_resolution:ENCODER,TOKENS}``: the square input that gives ``tokens`` visual tokens
    (a square number): grid side x stride, e.g. FastViTHD 144 -> 768 px, ViT-L/14 144 -> 168 px.
    For sweep=token_reduction's resolution lines, matched to the methods' budgets."""
    import math

    from .models import get_encoder_spec

    return math.isqrt(int(tokens)) * get_encoder_spec(str(encoder)).stride


OmegaConf.register_new_resolver("fvb_resolution", resolution_for_tokens, replace=True)


#: The pid of the process that :func:`main` started: the sweep's driver, which runs the points
#: itself under Hydra's basic launcher. A launcher's worker (submitit) runs one point and must end
#: with an exception, for submitit to write the job's result. A pid, not a flag: cloudpickle
#: sends :func:`run` to the workers by value, with the globals it reads as the driver had them.
_DRIVER_PID = None

#: Exit status after SIGTERM, as a shell reports a process killed by it (128 + 15); SIGINT
#: and SIGHUP likewise 130 and 129 (bench.measure.interrupt.exit_status).
EXIT_SIGTERM = 143


@hydra.main(version_base="1.3", config_path=SWEEPS_DIR, config_name="config")
def run(cfg: DictConfig) -> Dict[str, Any]:
    try:
        return run_point(to_bench_config(cfg), in_grid=in_grid())
    except ConfigError as exc:
        fail(str(exc), 2)
    except ResultsWriteError as exc:
        fail(str(exc), 1)
    except PointInterrupted as exc:
        if os.getpid() != _DRIVER_PID:
            raise
        # Hydra's launcher catches an Exception from a job and goes on to the next point: a
        # `kill`, `timeout` or cancelled CI job would be ignored for the rest of the sweep.
        fail(f"{exc}; the points finished before it are kept", exit_status(exc.signum))
    return {}  # unreachable: fail() exits


def main(args: List[str]) -> None:
    """Run the sweep ``fastvlm-bench ARGS`` (Hydra overrides): register the structured configs
    (the ``encoder``/``llm`` groups come from the registries at this moment, so a model
    registered before this call is a valid ``encoder=NAME``), then hand over to Hydra."""
    global _DRIVER_PID
    _DRIVER_PID = os.getpid()
    register_configs()
    register_claim_points()  # last: the paper's claim points are checked against the groups above
    sys.argv = [sys.argv[0]] + list(args)
    run()
