#!/usr/bin/env bash
# The GPU check of issue 24 (under 10 minutes on one GPU): generates 20,000 COCO-sized JPEGs under /tmp, trains
# configs/coco-128.yaml (24 blocks of width 1536, 128x128 crops, bf16, 8 data workers) for 300 steps on them, and
# prints steps/s, the data-wait fraction and the peak GPU memory (also in /tmp/ebt-gpu-data/gpu-data-check.json).
# Extra arguments go to python -m ebt_vision.experiments.databench.gpu (e.g. --steps 200 --set data.batch_size=16).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ebt_vision.experiments.databench.gpu "$@"
