"""Where the package finds the files it ships beside its code: the Hydra config tree and the lock.

``sweeps/`` (the user-facing, editable config tree) and ``constraints/`` (the lock files) live at
the top of the repository, as the layout requires. A source checkout or an editable install reads
them there, so an edit to ``sweeps/`` takes effect at once. A wheel (``pip install .``) cannot
reach the repository, so ``setup.py`` copies both folders into ``bench/_bundled/`` at build time
and the installed package reads that copy. There is exactly one source of truth in git; the
bundled copy exists only inside built wheels.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"


def _checkout_root() -> Path | None:
    """The repository root when this package is imported from a source checkout, else None."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if (root / "sweeps" / "config.yaml").is_file() and pyproject.is_file() \
            and 'name = "fastvlm-bench"' in pyproject.read_text(errors="replace"):
        return root
    return None


def resource_dir(name: str) -> Path:
    """``sweeps`` or ``constraints``: the checkout's folder, else the copy bundled in the wheel."""
    root = _checkout_root()
    if root is not None:
        return root / name
    bundled = BUNDLED_DIR / name
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError(f"fastvlm-bench: no {name}/ folder: neither a source checkout at {PACKAGE_DIR.parent} "
                            f"nor a bundled copy at {bundled} (reinstall the package)")


def sweeps_dir() -> Path:
    """The Hydra config tree (``sweeps/``)."""
    return resource_dir("sweeps")


def constraints_dir() -> Path:
    """The lock files (``constraints/lock.txt``, ``constraints/lock-base.txt``)."""
    return resource_dir("constraints")
