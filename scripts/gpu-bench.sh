#!/usr/bin/env bash
# The speed goals' reference setting on one GPU, in one run: EBT-R/2 (21M parameters, patch 2) on 32x32 images,
# bf16 autocast, batch 64 and 256, every training path of the EBT against the plain transformer of the same size.
# A row that runs out of GPU memory is reported as OOM. Writes reports/bench_gpu.{md,json}.
#   bash scripts/gpu-bench.sh            # about 5-8 minutes on an H100
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ebt_vision bench --devices cuda --presets EBT-R/2 --image-sizes 32 --batches 64 256 \
  --descent-steps 1 2 4 --variants naive fast checkpoint compiled --modes train infer \
  --repeats 5 --warmup 3 --out reports --stem bench_gpu "$@"
