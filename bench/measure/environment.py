"""Where the numbers were measured: library versions, the locked stack, git commit, host, threads.

Two records are only comparable when their software stacks are known. Besides the versions of
the libraries that set the kernels (torch, timm, transformers), every record says whether the
environment is the one pinned by ``constraints/lock.txt`` (the full lock: project, tests,
lmms-eval) or ``constraints/lock-base.txt`` (what ``pip install -r constraints/lock-base.txt -e .``
installs), the lock's hash, and a hash of the versions actually installed for the lock's
packages, so that ``compare`` can tell two stacks apart even when neither matches a lock.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .allocator import process_facts

LOCK_FILES = ("lock.txt", "lock-base.txt")  # full first: an env matching it matches the base too
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def canonical_name(name: str) -> str:
    """PEP 503 normalisation (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> Dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a pip requirements lock."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonical_name(m.group(1))] = m.group(2)
    return pins


@lru_cache(maxsize=1)
def installed_versions() -> Dict[str, str]:
    """``name -> version`` of every distribution importable in this environment."""
    out: Dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical_name(name), dist.version)
    return out


def lock_drift(pins: Dict[str, str], installed: Dict[str, str]) -> List[str]:
    """Human-readable differences between a lock and the environment (empty: it matches)."""
    drift = []
    for name, want in sorted(pins.items()):
        have = installed.get(name)
        if have != want:
            drift.append(f"{name} {have or 'missing'} (lock {want})")
    return drift


@lru_cache(maxsize=1)
def stack_info() -> Dict[str, Any]:
    """Which lock the environment matches, the lock's hash, and a hash of what is installed."""
    try:
        from ..config import constraints_dir

        folder: Optional[Path] = constraints_dir()
    except FileNotFoundError:
        folder = None
    installed = installed_versions()
    info: Dict[str, Any] = {"lock": None, "lock_sha256": None, "lock_drift": None, "stack_sha256": None}
    if folder is None or not (folder / LOCK_FILES[-1]).is_file():
        return info
    base_pins = read_lock(folder / LOCK_FILES[-1])
    # What actually ran: the installed versions of the runtime stack's packages.
    stack = "\n".join(f"{n}=={installed.get(n)}" for n in sorted(base_pins))
    info["stack_sha256"] = hashlib.sha256(stack.encode()).hexdigest()[:16]
    for name in LOCK_FILES:
        path = folder / name
        if path.is_file() and not lock_drift(read_lock(path), installed):
            info["lock"] = name
            info["lock_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            info["lock_drift"] = []
            return info
    info["lock"] = "differs"
    info["lock_sha256"] = hashlib.sha256((folder / LOCK_FILES[-1]).read_bytes()).hexdigest()[:16]
    info["lock_drift"] = lock_drift(base_pins, installed)
    return info


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` with local changes); None for an installed wheel."""
    from ..config import _checkout_root

    root = _checkout_root()
    if root is None:
        return None
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
    stack = stack_info()
    return {
        "torch": torch.__version__, "timm": _version("timm"), "transformers": _version("transformers"),
        "fastvlm_bench": _version("fastvlm-bench"), "python": platform.python_version(),
        "git_commit": git_commit(), "host": socket.gethostname(), "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
        "lock": stack["lock"], "lock_sha256": stack["lock_sha256"], "lock_drift": stack["lock_drift"],
        "stack_sha256": stack["stack_sha256"],
        **slurm_environment(),
        **process_facts(),  # allocator, THP, OpenMP, affinity, governor (bench.measure.allocator)
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
