#!/usr/bin/env bash
# Install fastvlm-bench with its tests and lmms-eval 0.7.3 into the ACTIVE virtual env, at the
# exact versions of constraints/lock.txt (Python 3.11, Linux x86_64), so that every machine
# measures with the same stack:
#
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
#
# The lock is made by scripts/lock.sh (uv pip compile); never edit it by hand. It is installed
# with --no-deps: the lock already holds the complete, resolved closure, and one conflict in it
# is deliberate (constraints/overrides.txt):
#   hydra-core 1.3 needs antlr4-python3-runtime==4.9.* (its override grammar is generated with
#   ANTLR 4.9; with the 4.7.2 runtime every `fastvlm-bench key=value` fails to parse), while
#   lmms-eval 0.7.3 -> latex2sympy2 1.9.1 pins antlr4-python3-runtime==4.7.2.
# The lock keeps 4.9.3. latex2sympy2 is imported only by the task utils of lmms-eval's
# mathvision, emma and stare tasks (none of the FastVLM paper's tasks); its 4.7.2-generated
# parser still loads under the 4.9.3 runtime, and this script checks that it parses a formula.
# `pip check` must report exactly that one conflict and nothing else.
#
# The lock also holds the deployment runtimes of backend=onnxruntime/openvino (the `runtimes`
# extra: onnx, onnxscript, onnxruntime, openvino), which the tests need. Left to themselves they
# would pull protobuf 7.x, which wandb (an lmms-eval requirement) refuses; constraints/lock.in
# caps protobuf<7, which every one of their locked releases accepts, so there is no conflict to
# allow. This script checks that the runtimes import and that protobuf stayed below 7.
#
# The lock holds the documentation tools too (the `docs` extra: mkdocs, mkdocs-material), so that
# `mkdocs build --strict` (.ci/run, tests/test_docs.py) builds the site with the locked versions.
#
# Idempotent: when the environment already matches the lock and the project is installed
# (editable, from this checkout), nothing is installed and the checks take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/constraints/lock.txt"
PY="${PYTHON:-python}"

say() { printf '[install] %s\n' "$*"; }

if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
  echo "install.sh: activate a virtual env first (python3 -m venv .venv && . .venv/bin/activate)" >&2
  exit 2
fi
pyver="$("$PY" -c 'import sys, platform; print(f"{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}")')"
if [[ "$pyver" != "3.11 x86_64" ]]; then
  echo "install.sh: the lock is for Python 3.11 on x86_64; this is Python $pyver." >&2
  echo "install.sh: use 'pip install -e .[test]' (loose ranges of pyproject.toml) or re-lock with scripts/lock.sh" >&2
  exit 2
fi
start=$(date +%s)

# Prints the packages whose installed version differs from the lock (nothing: it matches).
drift() {
  "$PY" -I - "$LOCK" <<'PYEOF'
import re, sys
from importlib import metadata
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {}
for d in metadata.distributions():
    if d.metadata["Name"]:
        have.setdefault(canon(d.metadata["Name"]), d.version)
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line.strip())
    if m and have.get(canon(m.group(1))) != m.group(2):
        print(f"{m.group(1)} {have.get(canon(m.group(1)), 'missing')} -> {m.group(2)}")
PYEOF
}
# 0 when fastvlm-bench is installed editable from this checkout with the current metadata.
project_ok() {
  "$PY" -I - "$ROOT" <<'PYEOF'
import json, sys, tomllib
from importlib import metadata
from pathlib import Path
root = Path(sys.argv[1])
try:
    dist = metadata.distribution("fastvlm-bench")
except metadata.PackageNotFoundError:
    sys.exit(1)
direct = dist.read_text("direct_url.json")
if not direct or Path(json.loads(direct)["url"].removeprefix("file://")).resolve() != root.resolve():
    sys.exit(1)
proj = tomllib.loads((root / "pyproject.toml").read_text())["project"]
eps = {(e.group, e.name, e.value) for e in dist.entry_points}
want = {("console_scripts", n, v) for n, v in proj.get("scripts", {}).items()}
want |= {(g, n, v) for g, d in proj.get("entry-points", {}).items() for n, v in d.items()}
sys.exit(0 if dist.version == proj["version"] and want <= eps else 1)
PYEOF
}

# ---- 1. the locked stack ----------------------------------------------------------------------
moved="$(drift)"
if [[ -z "$moved" ]]; then
  say "environment already matches constraints/lock.txt: kept"
else
  say "installing $(printf '%s\n' "$moved" | wc -l) package(s) from constraints/lock.txt"
  # uv (pinned in constraints/uv.env, the tool scripts/lock.sh makes the lock with) installs the
  # same files as pip, downloading and unpacking in parallel: 46 s for the whole lock from a cold
  # cache on the 2-core CI host, against pip's 120-150 s. It goes into a throw-away folder, not
  # into the venv, which holds exactly the lock. Where it cannot be installed, pip does the work.
  # No byte-compiling (uv's default; pip's --no-compile): compiling all ~24,000 .py files of the
  # stack took about 90 s of one CPU; Python compiles the few thousand a run imports on first
  # import instead, and caches them in the venv.
  . "$ROOT/constraints/uv.env"
  uv_dir="$(mktemp -d)"
  trap 'rm -rf "$uv_dir"' EXIT
  if "$PY" -m pip install -q --disable-pip-version-check --target "$uv_dir" "uv==$UV_VERSION" \
      && "$uv_dir/bin/uv" --version >/dev/null 2>&1; then
    "$uv_dir/bin/uv" pip install --no-deps --python "$(command -v "$PY")" -r "$LOCK"
  else
    say "uv $UV_VERSION could not be installed; pip installs the lock instead (slower)"
    "$PY" -m pip install --no-deps --no-compile --disable-pip-version-check -r "$LOCK"
  fi
fi

# ---- 2. the project itself (editable) ---------------------------------------------------------
if project_ok; then
  say "fastvlm-bench already installed editable from $ROOT: kept"
else
  say "installing fastvlm-bench -e $ROOT (--no-deps: its requirements come from the lock)"
  "$PY" -m pip install --no-deps --no-compile --disable-pip-version-check -e "$ROOT"
fi

# ---- 3. verification --------------------------------------------------------------------------
say "verifying"
moved="$(drift)"
if [[ -n "$moved" ]]; then
  echo "install.sh: the environment still differs from constraints/lock.txt:" >&2
  printf '  %s\n' "$moved" >&2
  exit 1
fi
check_out="$("$PY" -m pip check 2>&1 || true)"
unexpected="$(printf '%s\n' "$check_out" | grep -v -E '^No broken requirements found|^latex2sympy2 [^ ]+ has requirement antlr4-python3-runtime==4\.7\.2, but you have antlr4-python3-runtime 4\.9\.3\.?$|^$' || true)"
if [[ -n "$unexpected" ]]; then
  echo "install.sh: pip check reports unexpected problems:" >&2
  printf '%s\n' "$unexpected" >&2
  exit 1
fi
say "pip check: only the accepted latex2sympy2/antlr conflict (see constraints/overrides.txt)"
"$PY" - <<'PYEOF'
import contextlib, io, warnings
from importlib.metadata import version
from hydra.core.override_parser.overrides_parser import OverridesParser
ov = OverridesParser.create().parse_overrides(["encoder=tiny_vit", "resolution=64", "timing.min_repeats=1"])
assert [o.key_or_group for o in ov] == ["encoder", "resolution", "timing.min_repeats"], ov
print("[install] Hydra override parser OK (antlr4 runtime %s)" % version("antlr4-python3-runtime"))
import lmms_eval.models as m
assert "fastvlm_bench" in m.list_available_models(), "fastvlm_bench is not registered with lmms-eval (entry point)"
print("[install] lmms-eval %s imports; model fastvlm_bench registered" % version("lmms_eval"))
import filelock._api  # noqa: F401  -- lmms-eval's evaluator imports it (gone in filelock 4.3)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from latex2sympy2 import latex2sympy
        val = latex2sympy(r"\frac{1}{2}+1")
import sympy
assert sympy.simplify(val - sympy.Rational(3, 2)) == 0, val
print("[install] latex2sympy2 parses under antlr 4.9.3 (%s)" % val)
import google.protobuf, onnx, onnxruntime, onnxscript, openvino
assert int(google.protobuf.__version__.split(".")[0]) < 7, google.protobuf.__version__
assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
print("[install] runtimes: onnxruntime %s, openvino %s, onnx %s (protobuf %s)"
      % (onnxruntime.__version__, openvino.__version__.split("-")[0], onnx.__version__, google.protobuf.__version__))
import material, mkdocs  # noqa: F401  -- the docs extra: mkdocs build --strict (.ci/run)
print("[install] docs: mkdocs %s, mkdocs-material %s" % (version("mkdocs"), version("mkdocs-material")))
import gguf  # noqa: F401  -- the endpoint extra: scripts/tiny_gguf.py (docs/endpoint.md, tests/test_endpoint.py)
print("[install] endpoint: gguf %s" % version("gguf"))
from bench.measure.environment import stack_info
info = stack_info()
assert info["lock"] == "lock.txt", info
print("[install] records will say lock=%s lock_sha256=%s" % (info["lock"], info["lock_sha256"]))
PYEOF
say "done in $(( $(date +%s) - start )) s"
