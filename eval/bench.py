"""Train-step time and peak memory, EBT vs plain transformer. Same as ``ebt-vision bench``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
