"""The ``ebt-vision`` command: ``train``, ``eval``, ``bench``, ``quickstart``. Also ``python -m ebt_vision ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .recipes import train_denoiser
    from .train import TrainingDiverged

    cfg = load_config(args.config, args.set)
    run_dir = Path(args.out or f"runs/{cfg.name}")
    try:
        result = train_denoiser(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(f"trained {result.step} steps in {result.seconds:.0f} s -> {run_dir / 'model.safetensors'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebt-vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train an image EBT denoiser")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=100")
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
