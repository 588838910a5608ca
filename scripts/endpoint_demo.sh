#!/usr/bin/env bash
# The endpoint mode end to end on this machine, from a fresh clone (docs/endpoint.md):
#
#   bash scripts/endpoint_demo.sh [hydra overrides...]
#
# 1. builds llama.cpp's llama-server, or reuses the cached build (scripts/llama_cpp.sh);
# 2. writes the tiny random-weight Qwen2-VL GGUF and its mmproj (scripts/tiny_gguf.py);
# 3. runs sweep=endpoint_tiny: the harness starts llama-server on a loopback port, sends the
#    sample photo at 224x224, 448x448 and 896x672 with 1 and 2 requests in flight, writes the
#    records to results/endpoint_tiny/ and the report to reports/endpoint_tiny/, and stops it.
# Needs the project installed (scripts/install.sh, with the gguf package: the `endpoint` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
bin="$(PYTHON="$PY" bash scripts/llama_cpp.sh | tail -n 1)"
models="${FASTVLM_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastvlm-bench}/tiny-gguf"
"$PY" scripts/tiny_gguf.py "$models" >/dev/null
exec "$PY" -m bench sweep=endpoint_tiny endpoint.server_bin="$bin" \
  endpoint.gguf="$models/tiny-qwen2vl.gguf" endpoint.mmproj="$models/tiny-qwen2vl-mmproj.gguf" "$@"
