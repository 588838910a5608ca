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
