"""The package as a user gets it: a built wheel in a fresh venv, run from an unrelated folder,
and the lock that pins the stack.

The wheel test builds fastvlm-bench's wheel from this checkout and installs it (and nothing else)
into a new virtual env, then runs a tiny sweep, ``report``, ``compare`` and ``gate`` with their
defaults from a temporary folder outside the repository. The stack it needs (torch, Hydra, ...)
is borrowed from the test's own environment through a ``.pth`` path entry, so the test installs
one wheel instead of 5 GB; the borrowed site-packages is added as a plain path, so the editable
install of this checkout living there is NOT activated (``.pth`` files are processed only in
site directories) and ``bench`` must come from the wheel. The test checks that it does.
"""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure.environment import canonical_name, lock_drift, read_lock, stack_info

ROOT = Path(__file__).resolve().parent.parent


#: The environment of every subprocess here: without PYTHONPATH, which would put a checkout's
#: ``bench`` in front of the wheel's.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(cmd, cwd, env=None, timeout=600, ok=(0,)):
    proc = subprocess.run(cmd, cwd=cwd, env=env or CLEAN_ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in ok, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout ---\n"
                                   f"{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh venv holding only the freshly built fastvlm-bench wheel (deps borrowed via .pth)."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    # Build from a copy of the sources: setuptools builds in-tree (build/), and a build/ left
    # by an earlier build would carry modules that no longer exist into the wheel.
    src = tmp / "src"
    top = {".git", "build", "dist", "results", "reports", "ci-artifacts", ".gl", ".whl"}  # at the top only

    def ignore(folder, names):
        at_top = Path(folder).resolve() == ROOT
        return [n for n in names if (at_top and (n in top or n.startswith(".venv")))
                or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(ROOT, src, ignore=ignore)
    # --no-build-isolation: build offline with the setuptools of this environment.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(src)], cwd=tmp)
    wheels = sorted(dist.glob("fastvlm_bench-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp).stdout.strip())
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "_borrowed_stack.pth").write_text("\n".join(borrowed) + "\n")
    # --force-reinstall: the borrowed site-packages holds this checkout's editable install,
    # which pip would otherwise take for "already satisfied"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "--force-reinstall",
          "-q", str(wheels[0])], cwd=tmp)
    env = dict(CLEAN_ENV)
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    work = tmp / "elsewhere"
    work.mkdir()
    return {"py": py, "bin": venv / "bin", "env": env, "work": work, "wheel": wheels[0], "purelib": purelib}


def test_wheel_bundles_config_tree_and_lock(wheel_env):
    import zipfile

    names = set(zipfile.ZipFile(wheel_env["wheel"]).namelist())
    for required in ("bench/_bundled/sweeps/config.yaml", "bench/_bundled/sweeps/sweep/default.yaml",
                     "bench/_bundled/sweeps/gate/ci_baseline.yaml", "bench/_bundled/constraints/lock.txt",
                     "bench/_bundled/constraints/lock-base.txt", "bench/data/reference/fastvlm_paper_vlm.csv",
                     "bench/report/templates/report.html.j2", "bench/report/templates/report.md.j2"):
        assert required in names, f"{required} missing from {wheel_env['wheel'].name}"
    where = _run([str(wheel_env["py"]), "-c", "import bench, bench.config as r; print(bench.__file__); "
                  "print(r.sweeps_dir())"], cwd=wheel_env["work"], env=wheel_env["env"]).stdout.split()
    assert Path(where[0]).is_relative_to(wheel_env["purelib"]), f"bench imported from {where[0]}, not the wheel"
    assert Path(where[1]) == wheel_env["purelib"] / "bench" / "_bundled" / "sweeps"


def test_wheel_runs_sweep_report_compare_gate_from_elsewhere(wheel_env):
    exe, env, work = str(wheel_env["bin"] / "fastvlm-bench"), wheel_env["env"], wheel_env["work"]
    tiny = ["sweep=none", "encoder=tiny_vit", "llm=qwen2_tiny", "resolution=64", "device=cpu",
            "timing.warmup=0", "timing.min_repeats=2", "count_flops=false", "measure_peak=false"]
    _run([exe, *tiny, "name=a"], cwd=work, env=env)
    _run([exe, *tiny, "name=b", "report=false"], cwd=work, env=env)
    # relative defaults resolve against the current folder, not the repository
    rec = json.loads(next((work / "results" / "a" / "records").glob("*.json")).read_text())
    assert rec["status"] == "ok", rec["message"]
    assert rec["env"]["git_commit"] is None  # an installed wheel is no checkout
    assert rec["env"]["lock_sha256"] == stack_info()["lock_sha256"], "the wheel must carry the same lock"
    assert (work / "reports" / "a" / "index.html").is_file(), "the multirun's report was not written"
    assert not (work / "reports" / "b").exists()
    _run([exe, "report", "results/b"], cwd=work, env=env)
    assert (work / "reports" / "b" / "index.html").is_file()
    cmp = _run([exe, "compare", "results/a", "results/b"], cwd=work, env=env, ok=(0, 1))
    assert "tiny_vit" in cmp.stdout
    # the gate's default config (sweeps/gate/ci_baseline.yaml, bundled) is found from here; these
    # tiny results lack its encoders, so its checks fail (exit 1) -- not a missing config (exit 2)
    gate = _run([exe, "gate", "results/a"], cwd=work, env=env, ok=(1,))
    assert "FAIL" in gate.stdout + gate.stderr and "ci_baseline.yaml" not in gate.stderr.split("error:")[-1]
    assert not any(p.name == "sweeps" for p in work.iterdir())


def test_lock_files_agree_and_pin_the_fixes():
    """lock-base.txt is the runtime subset of lock.txt, at the same versions, and the pins that
    settle known breakages are in place."""
    full = read_lock(ROOT / "constraints" / "lock.txt")
    base = read_lock(ROOT / "constraints" / "lock-base.txt")
    assert len(full) > 100 and len(base) > 50
    assert {k: full.get(k) for k in base} == base, "lock-base.txt disagrees with lock.txt"
    assert full["antlr4-python3-runtime"].startswith("4.9."), "Hydra needs the antlr 4.9 runtime"
    assert full["lmms-eval"] == "0.7.3"
    major, minor = map(int, full["filelock"].split(".")[:2])
    assert (major, minor) < (4, 3), "filelock 4.3 removed filelock._api, which lmms-eval 0.7.3 imports"
    for name in ("torch", "transformers", "timm", "hydra-core", "numpy"):
        assert canonical_name(name) in base, f"{name} is not pinned"
    # the deployment runtimes (the `runtimes` extra) are in the full lock only, with protobuf < 7,
    # which wandb (lmms-eval) needs and which they accept
    for name in ("onnx", "onnxscript", "onnxruntime", "openvino"):
        assert canonical_name(name) in full and canonical_name(name) not in base, name
    assert int(full["protobuf"].split(".")[0]) < 7, "wandb (lmms-eval) needs protobuf<7"
    # the manual's tools (the `docs` extra: mkdocs build --strict in .ci/run) are in the full lock only
    for name in ("mkdocs", "mkdocs-material"):
        assert canonical_name(name) in full and canonical_name(name) not in base, name


def test_records_know_the_stack(tmp_path):
    """The environment the tests run in was installed from the lock (scripts/install.sh), and a
    record says so; a drifted environment is named, package by package."""
    info = stack_info()
    if os.environ.get("CI"):
        assert info["lock"] == "lock.txt", f"CI must run in the locked stack, drift: {info['lock_drift']}"
    assert info["lock"] in ("lock.txt", "lock-base.txt", "differs") and len(info["stack_sha256"]) == 16
    pins = read_lock(ROOT / "constraints" / "lock-base.txt")
    drifted = dict(pins, torch="0.0.1")
    assert lock_drift(pins, drifted) == [f"torch 0.0.1 (lock {pins['torch']})"]
    assert lock_drift(pins, {}) and len(lock_drift(pins, {})) == len(pins)


def test_compare_names_a_stack_change(tmp_path, good):
    """Two sides measured on different stacks: compare says which column differs. (The two sides
    are copies of the shared real sweep, ``good`` in conftest.py; b's stack hash is edited.)"""
    import shutil

    from conftest import run_cli

    for name in ("a", "b"):
        shutil.copytree(good, tmp_path / name)
    import pandas as pd

    b = tmp_path / "b" / "results.csv"
    df = pd.read_csv(b)
    df["env_stack_sha256"] = "0000000000000000"  # as a record from another environment would say
    df.to_csv(b, index=False)
    same = run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert "differs" not in same.stdout
    p = run_cli(["compare", str(tmp_path / "a" / "results.csv"), str(b)])
    assert "warning: env_stack_sha256 differs" in p.stdout, p.stdout
