"""Where llama.cpp's ``llama-server`` binary is, and which version it is (``endpoint.launch``).

Apart from the kind (:mod:`.llama_cpp`) because the plan needs it (:func:`.base.plan_part`)
while the kind module needs the registry of :mod:`.base`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

from ...config import ConfigError, constraints_dir

SERVER_ENV = "FASTVLM_BENCH_LLAMA_SERVER"


def pin() -> Dict[str, str]:
    """constraints/llama_cpp.env: the llama.cpp that scripts/llama_cpp.sh builds."""
    out = {}
    for line in (constraints_dir() / "llama_cpp.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def cached_server() -> Path:
    """Where scripts/llama_cpp.sh puts the pinned build."""
    root = os.environ.get("FASTVLM_BENCH_CACHE") or \
        str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastvlm-bench")
    return Path(root) / "llama.cpp" / f"llama-cpp-python-{pin()['LLAMA_CPP_PYTHON_VERSION']}" / "llama-server"


def find_server(given: Optional[str]) -> str:
    """``endpoint.server_bin``, else $FASTVLM_BENCH_LLAMA_SERVER, else ``llama-server`` on PATH,
    else the pinned build in the user cache; :class:`ConfigError` naming the way to get one."""
    for cand in (given, os.environ.get(SERVER_ENV)):
        if cand:
            p = Path(cand).expanduser()
            if p.is_file() and os.access(p, os.X_OK):
                return str(p.resolve())
            raise ConfigError(f"llama-server {cand}: not an executable file")
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    cached = cached_server()
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    raise ConfigError("endpoint.launch=llama_cpp: no llama-server (endpoint.server_bin, $FASTVLM_BENCH_LLAMA_SERVER, "
                      f"PATH, {cached}); build it with: bash scripts/llama_cpp.sh")


def server_version(path: str) -> str:
    """``llama-server --version``'s ``version: N (commit)``, the launched server's identity."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"llama-server {path} does not run: {exc}") from None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip().replace(" ", "")
    raise ConfigError(f"llama-server {path} --version printed no version (exit {out.returncode})")
