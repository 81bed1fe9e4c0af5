"""Next-frame video prediction: EBT vs baselines on Moving MNIST or real clips. Same as ``ebt-vision video``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["video", *sys.argv[1:]]))
