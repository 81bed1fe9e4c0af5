"""Held-out PSNR/SSIM of a checkpoint vs noisy input and CBM3D. Same as ``ebt-vision eval``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["eval", *sys.argv[1:]]))
