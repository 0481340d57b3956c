#!/usr/bin/env bash
# The GPU run, for the first machine with one: under 10 minutes on one H100/H200. It has not run yet (README,
# "Performance"). Needs a CUDA GPU; writes JSON and markdown under OUT (default benchmarks/results/gpu-<date>).
#
#   benchmarks/gpu.sh [OUT]
#
# 1. packed SFT on a ~1B composed model (SigLIP-base-sized tower, Qwen2.5-0.5B-sized LM), bf16: tokens/s and MFU
#    on the LM's FLOPs, the tower's FLOPs separately (benchmarks/gpu_sft.py);
# 2. the harness's `gpu` preset: P1 train step, P2 packing, P5 decode and P8 memory/speed at vocab 151,936 on CUDA
#    (max_memory_allocated);
# 3. with more than one GPU, the same packed SFT under FSDP2 on all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-$(date +%Y-%m-%d)}
PY=${PYTHON:-.venv/bin/python}
nvidia-smi >/dev/null || { echo "gpu.sh needs a CUDA GPU"; exit 2; }
mkdir -p "$OUT"
"$PY" -m benchmarks.gpu_sft --out "$OUT/sft.json" | tee "$OUT/sft.txt"
"$PY" -m benchmarks.run --preset gpu --only P1 P2 P5 P8 --out "$OUT/harness.json" | tee "$OUT/harness.txt"
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -gt 1 ]; then
    "$PY" -m torch.distributed.run --nproc_per_node "$GPUS" -m benchmarks.gpu_sft --fsdp --out "$OUT/sft_fsdp.json" \
        | tee "$OUT/sft_fsdp.txt"
fi
grep -h '^|' "$OUT"/*.txt > "$OUT/table.md"
echo "wrote $OUT"
