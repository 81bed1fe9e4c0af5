"""The ``ebt-vision`` command (also ``python -m ebt_vision``): ``parser`` defines the options, ``commands`` calls the
library."""

from __future__ import annotations

import sys

from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (bad config, bad input, missing files) print one line and exit 2; anything else
    is a bug and keeps its traceback."""
    from ..core.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
