#!/usr/bin/env bash
# Install fastvlm-bench, its test extra and lmms-eval 0.7.3 into the ACTIVE virtual env,
# keeping Hydra's command-line overrides working.
#
#   python3 -m venv .venv && . .venv/bin/activate && scripts/install.sh
#
# The one dependency conflict, settled on purpose:
#   hydra-core 1.3 needs antlr4-python3-runtime==4.9.*  (its override grammar is generated
#   with ANTLR 4.9; with the 4.7.2 runtime every `fastvlm-bench key=value` fails to parse).
#   lmms-eval 0.7.3 -> latex2sympy2 1.9.1 pins antlr4-python3-runtime==4.7.2.
# We keep 4.9.3. lmms-eval itself is installed with --no-deps and its requirements (read from
# its own metadata, minus latex2sympy2) are installed under constraints/lmms.txt, which pins
# antlr 4.9.3, so the runtime Hydra uses is never downgraded, not even for a moment.
# latex2sympy2 is installed with --no-deps; `pip check` then reports exactly one conflict:
#   latex2sympy2 1.9.1 has requirement antlr4-python3-runtime==4.7.2, but you have 4.9.3
# latex2sympy2 is imported only by the task utils of lmms-eval's mathvision, emma and stare
# tasks (lmms_eval/tasks/{mathvision/eval_utils.py,emma/utils.py,stare/utils.py}); nothing in
# lmms-eval imports it at start-up. Its 4.7.2-generated parser still loads under the 4.9.3
# runtime (same ATN serialisation) with a "versions disagree" warning; this script checks that
# it parses a formula. The math_verify-based tasks use latex2sympy2_extended, which supports
# antlr 4.9.3 natively. No task of the FastVLM paper (gqa, textvqa, pope, docvqa, chartqa,
# mmmu, seedbench, scienceqa, vqav2, mmvet, llava-bench) touches latex2sympy2.
#
# Idempotent: steps whose result is already in place are skipped (a second run takes seconds).
# Environment: FASTVLM_SKIP_LMMS=1 skips lmms-eval (project + tests only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$ROOT/constraints/lmms.txt"
LMMS_VERSION=0.7.3
ANTLR_VERSION=4.9.3
PY="${PYTHON:-python}"

say() { printf '[install] %s\n' "$*"; }

if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
  echo "install.sh: activate a virtual env first (python3 -m venv .venv && . .venv/bin/activate)" >&2
  exit 2
fi
PIP=("$PY" -m pip)
start=$(date +%s)

# ---- 1. torch ---------------------------------------------------------------------------------
if torch_version="$("$PY" -c "import torch, torchvision; print(torch.__version__)" 2>/dev/null)"; then
  say "torch $torch_version already importable: kept"
else
  say "installing torch==2.14.1 torchvision==0.29.1"
  "${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1"
fi

# ---- 2. the project with its test extra -------------------------------------------------------
# Skipped when fastvlm-bench is installed (editable, from this checkout) and every requirement
# of pyproject.toml (base + test extra) is satisfied.
project_ok() {
  "$PY" -I - "$ROOT" <<'PYEOF'  # -I: do not let ./fastvlm_bench.egg-info shadow the installed metadata
import json, sys
from importlib import metadata
from pathlib import Path
root = Path(sys.argv[1])
try:
    import tomllib
except ImportError:  # Python 3.10
    sys.exit(1)
try:
    from packaging.requirements import Requirement
except ImportError:
    sys.exit(1)
try:
    dist = metadata.distribution("fastvlm-bench")
except metadata.PackageNotFoundError:
    sys.exit(1)
direct = dist.read_text("direct_url.json")
if not direct or Path(json.loads(direct)["url"].removeprefix("file://")).resolve() != root.resolve():
    sys.exit(1)
proj = tomllib.loads((root / "pyproject.toml").read_text())["project"]
if dist.version != proj["version"]:
    sys.exit(1)
installed_eps = {(e.group, e.name, e.value) for e in dist.entry_points}
for group, eps in proj.get("entry-points", {}).items():
    for name, value in eps.items():
        if (group, name, value) not in installed_eps:
            sys.exit(1)
for name, value in proj.get("scripts", {}).items():
    if ("console_scripts", name, value) not in installed_eps:
        sys.exit(1)
reqs = list(proj.get("dependencies", [])) + list(proj.get("optional-dependencies", {}).get("test", []))
for r in map(Requirement, reqs):
    if r.marker and not r.marker.evaluate():
        continue
    try:
        v = metadata.version(r.name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if not r.specifier.contains(v, prereleases=True):
        sys.exit(1)
PYEOF
}
if project_ok; then
  say "fastvlm-bench (editable, with [test]) already installed and satisfied: kept"
else
  say "installing fastvlm-bench -e '.[test]'"
  "${PIP[@]}" install -e "$ROOT[test]" -c "$CONSTRAINTS"
fi

# ---- 3. lmms-eval, without letting it downgrade antlr ----------------------------------------
lmms_reqs() {  # lmms-eval's unconditional requirements except latex2sympy2, one per line
  "$PY" - <<'PYEOF'
from importlib import metadata
from packaging.requirements import Requirement
for line in metadata.requires("lmms_eval") or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue  # optional extras
    if r.name.lower().replace("_", "-") == "latex2sympy2":
        continue  # installed --no-deps: it pins antlr 4.7.2
    print(str(r))
PYEOF
}
lmms_ok() {
  "$PY" - "$LMMS_VERSION" <<'PYEOF'
import sys
from importlib import metadata
from packaging.requirements import Requirement
try:
    if metadata.version("lmms_eval") != sys.argv[1]:
        sys.exit(1)
    metadata.version("latex2sympy2")
except metadata.PackageNotFoundError:
    sys.exit(1)
for line in metadata.requires("lmms_eval") or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    try:
        v = metadata.version(r.name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if r.name.lower() != "latex2sympy2" and not r.specifier.contains(v, prereleases=True):
        sys.exit(1)
PYEOF
}
if [[ "${FASTVLM_SKIP_LMMS:-0}" == 1 ]]; then
  say "FASTVLM_SKIP_LMMS=1: lmms-eval not installed"
elif lmms_ok; then
  say "lmms-eval $LMMS_VERSION and its requirements already installed: kept"
else
  say "installing lmms-eval==$LMMS_VERSION and latex2sympy2 (--no-deps)"
  "${PIP[@]}" install --no-deps "lmms-eval==$LMMS_VERSION" -c "$CONSTRAINTS" "latex2sympy2"
  reqfile="$(mktemp)"
  trap 'rm -f "$reqfile"' EXIT
  lmms_reqs > "$reqfile"
  say "installing lmms-eval's $(wc -l < "$reqfile") requirements under constraints/lmms.txt"
  "${PIP[@]}" install -r "$reqfile" -c "$CONSTRAINTS"
fi

# ---- 4. antlr: Hydra's runtime ----------------------------------------------------------------
have_antlr="$("$PY" -c 'from importlib.metadata import version; print(version("antlr4-python3-runtime"))' 2>/dev/null || true)"
if [[ "$have_antlr" != "$ANTLR_VERSION" ]]; then
  say "antlr4-python3-runtime is '${have_antlr:-missing}': re-pinning $ANTLR_VERSION for Hydra"
  "${PIP[@]}" install "antlr4-python3-runtime==$ANTLR_VERSION"
fi

# ---- 5. verification --------------------------------------------------------------------------
say "verifying"
check_out="$("${PIP[@]}" check 2>&1 || true)"
unexpected="$(printf '%s\n' "$check_out" | grep -v -E '^No broken requirements found|^latex2sympy2 [^ ]+ has requirement antlr4-python3-runtime==4\.7\.2, but you have antlr4-python3-runtime 4\.9\.3\.?$|^$' || true)"
known="$(printf '%s\n' "$check_out" | grep -E '^latex2sympy2 .*antlr4-python3-runtime' || true)"
if [[ -n "$known" ]]; then
  say "known, accepted conflict (affects only lmms-eval's mathvision/emma/stare tasks): $known"
fi
if [[ -n "$unexpected" ]]; then
  echo "install.sh: pip check reports unexpected problems:" >&2
  printf '%s\n' "$unexpected" >&2
  exit 1
fi
"$PY" - "${FASTVLM_SKIP_LMMS:-0}" <<'PYEOF'
import sys, warnings
from hydra.core.override_parser.overrides_parser import OverridesParser
ov = OverridesParser.create().parse_overrides(["encoder=tiny_vit", "resolution=64", "timing.min_repeats=1"])
assert [o.key_or_group for o in ov] == ["encoder", "resolution", "timing.min_repeats"], ov
print("[install] Hydra override parser OK (antlr4 runtime %s)" % __import__("importlib.metadata").metadata.version("antlr4-python3-runtime"))
if sys.argv[1] != "1":
    import lmms_eval.models as m
    assert "fastvlm_bench" in m.list_available_models(), "fastvlm_bench is not registered with lmms-eval (entry point)"
    print("[install] lmms-eval %s imports; model fastvlm_bench registered" % __import__("importlib.metadata").metadata.version("lmms_eval"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import io, contextlib
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from latex2sympy2 import latex2sympy
            val = latex2sympy(r"\frac{1}{2}+1")
    import sympy
    assert sympy.simplify(val - sympy.Rational(3, 2)) == 0, val
    print("[install] latex2sympy2 parses under antlr 4.9.3 (%s)" % val)
PYEOF
say "done in $(( $(date +%s) - start )) s"
