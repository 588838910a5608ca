"""Build hook: bundle the top-level ``sweeps/`` and ``constraints/`` folders into the wheel.

Everything else is in pyproject.toml. The repository keeps one copy of each folder at its top
(the layout the project is designed around); a built wheel carries them as
``bench/_bundled/{sweeps,constraints}`` so that a non-editable install, run from any folder,
has its Hydra config tree and its lock (see ``resource_dir`` in bench/config.py).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("sweeps", "constraints")


class build_py(_build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        for name in BUNDLED:
            src, dst = ROOT / name, Path(self.build_lib) / "bench" / "_bundled" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py})
