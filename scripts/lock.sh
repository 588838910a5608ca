#!/usr/bin/env bash
# Re-resolve the lock, reinstall into a fresh virtual env and run the tests: upgrading the
# stack is a deliberate, tested step.
#
#   bash scripts/lock.sh            # re-resolve to today's newest allowed versions
#   bash scripts/lock.sh --check    # only re-resolve into a temp folder and show what would move
#
# Inputs: pyproject.toml (dependencies + the `test`, `runtimes` and `docs` extras), constraints/lock.in (torch,
# lmms-eval and deliberate caps, each with its reason) and constraints/overrides.txt (the
# antlr pin Hydra needs, which wins over latex2sympy2's). Outputs: constraints/lock.txt (the
# full stack: what scripts/install.sh installs) and constraints/lock-base.txt (the package's
# runtime alone: what the README's first command installs; its versions are taken from
# lock.txt, so the two never disagree). Both are for Python 3.11 on Linux x86_64.
#
# The tool is uv's `pip compile` at a pinned version, installed into a throw-away venv.
# After a re-resolve the script installs the new lock into a fresh venv (.venv-lock) with
# scripts/install.sh and runs the test suite there; commit the lock files only if it passes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/constraints/uv.env"  # UV_VERSION
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "uv==$UV_VERSION"
UV="$tools/venv/bin/uv"

out="constraints"
[[ $CHECK == 1 ]] && out="$tools/out" && mkdir -p "$out"
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --upgrade)
"$UV" pip compile -q pyproject.toml --extra test --extra runtimes --extra docs constraints/lock.in --override constraints/overrides.txt \
  "${common[@]}" -o "$out/lock.txt.new"
"$UV" pip compile -q pyproject.toml -c "$out/lock.txt.new" "${common[@]}" -o "$out/lock-base.txt.new"
sed -i "s#$out/lock.txt.new#constraints/lock.txt#" "$out/lock-base.txt.new"

pins() { grep -E '^[A-Za-z0-9].*==' "$1" | sort; }
echo "[lock] packages that move (old -> new):"
diff <(pins constraints/lock.txt) <(pins "$out/lock.txt.new") | grep -E '^[<>]' || echo "  none"
echo "[lock] $(pins "$out/lock.txt.new" | wc -l) pins in lock.txt, $(pins "$out/lock-base.txt.new" | wc -l) in lock-base.txt"
if [[ $CHECK == 1 ]]; then exit 0; fi
mv "$out/lock.txt.new" constraints/lock.txt
mv "$out/lock-base.txt.new" constraints/lock-base.txt

echo "[lock] installing the new lock into a fresh .venv-lock and running the tests"
rm -rf .venv-lock
python3 -m venv .venv-lock
# shellcheck disable=SC1091
. .venv-lock/bin/activate
bash scripts/install.sh
python -m pytest -q
echo "[lock] the new lock passes the tests: review 'git diff constraints/' and commit it"
