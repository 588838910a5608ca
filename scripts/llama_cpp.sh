#!/usr/bin/env bash
# Build llama.cpp's llama-server once, or reuse the one built before; print its path.
#
#   bash scripts/llama_cpp.sh            # the path of llama-server on stdout (the last line)
#
# Why a script and a cache: the endpoint mode's CI test (tests/test_endpoint.py) and the
# first run (docs/endpoint.md) need a real llama-server, and the only registry CI can reach is
# PyPI. The llama-cpp-python sdist vendors llama.cpp's source; its version and sha256 are
# pinned in constraints/llama_cpp.env. A cold build takes minutes on a 2-core machine (README:
# measured), so the binary is cached under the user cache keyed by that version, and every
# later call only checks that it still runs.
#
# Environment: FASTVLM_BENCH_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/fastvlm-bench),
# PYTHON (the interpreter whose pip downloads the sdist; default python3), LLAMA_CPP_SDIST (a
# local copy of the pinned sdist: no download), LLAMA_CPP_JOBS (build jobs; default all cores).
# Needs cmake and a C++ compiler. Exit 0 with the path, 1 when the build fails (its log named).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC1091
. "$here/constraints/llama_cpp.env"
key="llama-cpp-python-${LLAMA_CPP_PYTHON_VERSION}"
cache="${FASTVLM_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastvlm-bench}/llama.cpp/$key"
bin="$cache/llama-server"
say() { echo "llama_cpp.sh: $*" >&2; }

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
  say "reusing $bin"
  echo "$bin"
  exit 0
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null || { say "error: $tool is missing (Debian: apt-get install cmake g++)"; exit 1; }
done
mkdir -p "$cache"
work="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
sdist="${LLAMA_CPP_SDIST:-}"
if [[ -z "$sdist" ]]; then
  say "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
  "${PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$work" >&2 2>"$work/pip.log" \
    || { pip_rc=$?; cat "$work/pip.log" >&2; say "error: pip download failed ($pip_rc)"; exit 1; }
  sdist="$(ls "$work"/llama_cpp_python-*.tar.gz)"
fi
got="$(sha256sum "$sdist" | cut -d' ' -f1)"
if [[ "$got" != "$LLAMA_CPP_PYTHON_SHA256" ]]; then
  say "error: $sdist has sha256 $got, constraints/llama_cpp.env pins $LLAMA_CPP_PYTHON_SHA256"
  exit 1
fi
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
log="$cache/build.log"
say "building llama-server (log: $log); minutes on a small machine"
# UI off (else it downloads web assets), no OpenSSL (loopback only), static, no tests or examples
if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
         -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
       && cmake --build "$work/build" --target llama-server -j "${LLAMA_CPP_JOBS:-$(nproc)}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  say "error: the build failed; the whole log is $log"
  exit 1
fi
cp "$work/build/bin/llama-server" "$work/llama-server.new"
mv -f "$work/llama-server.new" "$bin"  # atomic: a concurrent caller sees the old file or the whole new one
took=$(( $(date +%s) - start ))
echo "$took" > "$cache/build_seconds"
say "built in ${took} s: $bin"
echo "$bin"
