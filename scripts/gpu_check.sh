#!/usr/bin/env bash
# One-shot GPU check: CUDA tests, the paper-style sweep and its report, all into one folder.
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: gpu-check/)
# Sweep: FastViTHD at 256/512/768/1024 px, ViT-L/14 at 336 px, ConvLLaVA at 768/1024/1536 px,
# SigLIP at 384 px, each with Qwen2 0.5B/1.5B/7B, bf16 on the GPU. Four Hydra multiruns write
# into one sweep (results/gpu_paper), then one report is rendered.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi | tee "$OUT/nvidia-smi.txt" || { echo "gpu_check: no NVIDIA GPU visible" >&2; exit 2; }
python -m pytest -q -m cuda tests/ 2>&1 | tee "$OUT/cuda-tests.txt"
common=(name=gpu_paper device=cuda dtype=bf16 results_dir="$OUT/results" reports_dir="$OUT/reports" report=false
        timing.min_repeats=20 timing.min_seconds=2 llm=qwen2_0.5b,qwen2_1.5b,qwen2_7b)
fastvlm-bench sweep=none encoder=fastvithd resolution=256,512,768,1024 "${common[@]}" 2>&1 | tee "$OUT/sweep.log"
fastvlm-bench sweep=none encoder=vit_l14 resolution=336 "${common[@]}" 2>&1 | tee -a "$OUT/sweep.log"
fastvlm-bench sweep=none encoder=convllava_l resolution=768,1024,1536 "${common[@]}" 2>&1 | tee -a "$OUT/sweep.log"
fastvlm-bench sweep=none encoder=siglip_so400m resolution=384 "${common[@]}" 2>&1 | tee -a "$OUT/sweep.log"
fastvlm-bench report "$OUT/results/gpu_paper" --out "$OUT/reports/gpu_paper"
python - "$OUT" <<'PY'
import sys
from bench.results.store import load_table
out = sys.argv[1]
df = load_table(f"{out}/results/gpu_paper")
cols = ["encoder", "resolution", "llm", "visual_tokens", "vision_latency_ms", "prefill_ms", "ttft_ms",
        "vision_latency_roofline_frac", "peak_memory_mb", "energy_per_inference_j", "device_name", "status"]
table = df[[c for c in cols if c in df]].to_string(index=False, float_format=lambda v: f"{v:.2f}")
open(f"{out}/gpu_table.md", "w").write(table + "\n")
print(table)
PY
