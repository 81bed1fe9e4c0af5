"""Text EBT vs Transformer++, perplexity in and out of distribution. Same as ``ebt-vision text``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["text", *sys.argv[1:]]))
