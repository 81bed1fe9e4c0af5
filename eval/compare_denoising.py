"""EBT (blind and sigma-conditioned) vs the diffusers DiT on the held-out photos. Same as ``ebt-vision compare``."""

import sys

from ebt_vision.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["compare", *sys.argv[1:]]))
