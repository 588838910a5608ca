"""Where the numbers were measured: library versions, git commit, host, threads."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

import torch


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> Dict[str, Any]:
    return {
        "torch": torch.__version__, "timm": _version("timm"), "transformers": _version("transformers"),
        "fastvlm_bench": _version("fastvlm-bench"), "python": platform.python_version(),
        "git_commit": git_commit(), "host": socket.gethostname(), "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
        **slurm_environment(),
    }


#: Slurm's job variables -> record env fields (null outside Slurm). An array task has its own
#: job id (``SLURM_JOB_ID``) and the array's id plus its index; ``slurm_restart_count`` > 0
#: after a requeue.
SLURM_VARS = {
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
    "slurm_node": "SLURMD_NODENAME",
    "slurm_restart_count": "SLURM_RESTART_COUNT",
}


def slurm_environment() -> Dict[str, Any]:
    """Which Slurm job, array task and node measured the point (all None outside Slurm)."""
    return {key: os.environ.get(var) or None for key, var in SLURM_VARS.items()}
