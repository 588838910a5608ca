"""The import contract of bench/ (pyproject.toml [tool.importlinter]): no circle between modules,
every import down the stages. Runs the real checker, on this checkout and on copies of it with
one bad import added."""
import shutil
import subprocess
import sys

from conftest import ROOT

CHECK = [sys.executable, str(ROOT / "scripts" / "check_imports.py")]


def _check(root):
    return subprocess.run([*CHECK, "--root", str(root)], capture_output=True, text=True, timeout=120)


def _copy(tmp_path):
    shutil.copytree(ROOT / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__", "_bundled"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_this_checkout_keeps_the_contract():
    p = _check(ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no circle, every import downwards" in p.stdout


def test_an_upward_import_inside_a_function_fails(tmp_path):
    root = _copy(tmp_path)
    cfg = root / "bench" / "config.py"
    cfg.write_text(cfg.read_text() + "\n\ndef _late():\n    from .analysis.claims import load_claims\n    return load_claims\n")
    p = _check(root)
    assert p.returncode == 1
    assert "upward import (stages import downwards only): bench.config -> bench.analysis.claims" in p.stdout, p.stdout


def test_a_circle_inside_one_stage_fails(tmp_path):
    root = _copy(tmp_path)
    errors = root / "bench" / "models" / "backends" / "errors.py"  # what circle 2 of issue 28 was
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from .numerics import check_outputs\n    return check_outputs\n")
    p = _check(root)
    assert p.returncode == 1
    assert p.stdout.strip() == "import circle: bench.models.backends.errors <-> bench.models.backends.numerics", p.stdout
