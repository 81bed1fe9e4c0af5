"""The ``ebt-vision`` command (also ``python -m ebt_vision``): ``parser`` defines the options, ``commands`` calls the
library."""

from __future__ import annotations

import os
import sys
import warnings

from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (bad config, bad input, missing files) and failed file operations (a folder that
    cannot be written, a full disk) print one line and exit 2; anything else is a bug and keeps its traceback.
    Warnings print as one line each too."""
    from ..core.errors import UserError

    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import os

        import torch  # only here: --help and argument errors stay instant

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # and in the processes a command spawns (bench's cases)
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


def run() -> None:
    """The ``ebt-vision`` program (and ``python -m ebt_vision``): ``main`` on the command line, then exit with its code.

    A torchrun worker has destroyed its process group by then (``core.distributed.shutdown``), but interpreter
    finalisation would still destroy gloo's C++ objects, and a worker once aborted there after a complete run
    ("terminate called without an active exception", exit -6, in CI); a worker ends without that teardown."""
    code = main()
    from ..core.distributed import launched_by_torchrun  # torch is loaded by now (--help never gets here)

    if launched_by_torchrun():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warning: <message>`` (Python's default adds the source file and line, which say nothing to a user)."""
    return f"warning: {message}\n"
