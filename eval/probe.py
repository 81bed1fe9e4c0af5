"""Linear probing of frozen EBT and DiT features on Fashion-MNIST. Same as ``ebt-vision probe``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["probe", *sys.argv[1:]]))
