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


DEFAULT_CHECKPOINT = "checkpoints/ebt-image-s.safetensors"


def _evaluate(checkpoint: str, args: argparse.Namespace, out_dir: Path, stem: str, budget: str) -> Path:
    from .data import held_out_photos
    from .evaluation import evaluate_denoiser, write_denoise_report
    from .inference import load_denoiser
    from .reports import make_meta
    from .train import resolve_device

    device = resolve_device(args.device)
    objective = load_denoiser(checkpoint, device)
    photos = held_out_photos(args.max_side)[: args.limit]
    sizes = ", ".join(f"{p.image.shape[2]}x{p.image.shape[1]}" for p in photos)
    scale = f"downscaled to at most {args.max_side}px" if args.max_side else "full resolution"
    data = f"held-out set: {len(photos)} photos ({', '.join(p.name for p in photos)}), {scale} ({sizes})"
    rows = evaluate_denoiser(objective, photos, tuple(args.sigmas), args.steps, args.seed, not args.no_bm3d)
    meta = make_meta(device, args.seed, data, budget)
    return write_denoise_report(rows, meta, out_dir, stem)


def _eval(args: argparse.Namespace) -> int:
    from .checkpoint import read_weights

    _, cfg, extra = read_weights(args.checkpoint)
    budget = f"{cfg.name}: {extra.get('step', '?')} steps of batch {cfg.data.batch_size}, crops {cfg.data.crop_size}px"
    if "train_seconds" in extra:
        budget += f", {extra['train_seconds'] / 60:.1f} min training"
    report = _evaluate(args.checkpoint, args, Path(args.out), args.stem, budget)
    print(report.read_text())
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    """The main job: train a small EBT on the packaged photos (CPU, minutes), evaluate it, print the table."""
    from .config import load_config
    from .recipes import train_denoiser

    cfg = load_config(args.config, args.set)
    run_dir = Path(args.out)
    result = train_denoiser(cfg, run_dir, resume=True, progress=not args.quiet)
    budget = f"{result.step} steps of batch {cfg.data.batch_size}, {result.seconds / 60:.1f} min training on CPU"
    report = _evaluate(str(run_dir / "model.safetensors"), args, run_dir, "denoise_eval", budget)
    print(report.read_text())
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Train-step time and peak memory, EBT vs plain transformer, in one run; writes reports/bench.{md,json}."""
    import torch
    from tqdm.auto import tqdm

    from .bench import bench_cases, bench_table, run_isolated, with_ratios
    from .reports import make_meta, write_report

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cases = bench_cases(args.presets, args.image_sizes, args.batches, args.descent_steps, devices, repeats=args.repeats)
    rows = with_ratios([run_isolated(case) for case in tqdm(cases, desc="bench")])
    table = bench_table(rows)
    data = "random images (timing does not depend on content)"
    budget = f"{args.repeats} timed training steps after 2 warm-up steps, AdamW, bf16 autocast on CUDA"
    body = (
        "Training-step time and peak memory. An EBT step runs K descent steps with a second-order graph "
        "(math attention) and backpropagates through them; the plain transformer predicts the clean image in one "
        "forward pass. CPU memory: growth of the process's peak resident set during the timed steps (each row in a "
        "fresh process); CUDA memory: torch.cuda.max_memory_allocated.\n\n" + table
    )
    write_report(args.out, args.stem, make_meta(",".join(devices), 0, data, budget), rows, body)
    print(table)
    return 0


def _add_eval_options(p: argparse.ArgumentParser, max_side: int | None, steps: int) -> None:
    p.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50, 75, 100], help="0-255 noise sigmas")
    p.add_argument("--steps", type=int, default=steps, help="descent steps (PSNR is reported after each)")
    p.add_argument("--max-side", type=int, default=max_side, help="downscale held-out photos (default: full size)")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D (slow on big photos)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out photos")


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

    p = sub.add_parser("eval", help="PSNR/SSIM of a checkpoint on the held-out photos vs noisy input and CBM3D")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    _add_eval_options(p, max_side=None, steps=4)
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--stem", default="denoise_eval", help="report file name stem")
    p.set_defaults(func=_eval)

    p = sub.add_parser("quickstart", help="main job: train a small EBT on CPU (~10 min), evaluate, print the table")
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--quiet", action="store_true")
    _add_eval_options(p, max_side=128, steps=4)
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("bench", help="train-step time and memory: EBT (K descent steps) vs a plain transformer")
    p.add_argument("--presets", nargs="+", default=["EBT-S/4"])
    p.add_argument("--image-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--batches", type=int, nargs="+", default=[32])
    p.add_argument("--descent-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="reports")
    p.add_argument("--stem", default="bench")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
