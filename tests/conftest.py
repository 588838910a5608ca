"""Shared test helpers: run the real CLI in a subprocess, tiny configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args, cwd=None, timeout=600, env=None):
    """Run ``python -m bench ARGS`` for real; returns the CompletedProcess."""
    e = dict(os.environ)
    e.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


TINY = ["sweep=none", "llm=qwen2_tiny", "report=false", "timing=quick"]


#: The tiny sweep of tests/test_reliability.py and tests/test_read_checks.py: no FLOP count, no
#: matmul peak, 64 px.
FAST = ["sweep=none", "llm=qwen2_tiny", "report=false", "timing=quick",
        "count_flops=false", "measure_peak=false", "resolution=64"]


@pytest.fixture(scope="session")
def good(tmp_path_factory):
    """A real two-point sweep (tiny_vit, tiny_convnext at 64 px): the good data to protect.
    Shared by every test module that needs one (it is read-only: copy it before changing it)."""
    base = tmp_path_factory.mktemp("good")
    p = run_cli(["-m", *FAST, "name=good", f"results_dir={base}", "encoder=tiny_vit,tiny_convnext"], cwd=base)
    assert p.returncode == 0, p.stderr[-3000:]
    return base / "good"


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
