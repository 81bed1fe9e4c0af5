"""The ebt-vision command line: train, evaluate, compare and use Energy-Based Transformers for image denoising.

Every command takes --help. Shipped checkpoints and configs are found from any directory. Commands that measure
write their report (Markdown + JSON + PNG) to a run folder under runs/ unless --out says otherwise; the committed
reports under reports/ are rewritten only when asked (--out reports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_EBT = "checkpoints/ebt-image-s"
DEFAULT_DIT = "checkpoints/dit-image-s"
SIGMAS = [15.0, 25.0, 50.0, 75.0, 100.0]


def _config(path: str | None, overrides: list[str]):
    from .core.config import load_config
    from .core.paths import resolve_path

    return load_config(resolve_path(path, "config file") if path else None, overrides)


def _train(args: argparse.Namespace) -> int:
    from .core import distributed
    from .core.train import TrainingDiverged
    from .experiments.training import train_denoiser

    cfg = _config(args.config, args.set)
    run_dir = Path(args.out or f"runs/{cfg.name}")
    ctx = distributed.init_from_environment(cfg.train.device)  # under torchrun: join the process group
    try:
        result = train_denoiser(cfg, run_dir, resume=args.resume, progress=not args.quiet, model=args.model)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    finally:
        distributed.shutdown(ctx)
    if ctx.is_main:
        processes = f" on {ctx.world_size} processes" if ctx.enabled else ""
        print(
            f"trained {result.step} steps{processes} in {result.seconds:.0f} s -> {run_dir} (a loadable model folder)"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .experiments.evaluation import run_evaluation

    report = run_evaluation(
        args.checkpoint, args.out, args.stem, tuple(args.sigmas), args.steps, args.max_side, args.split, args.limit,
        args.seed, not args.no_bm3d, args.device, not args.quiet, args.dit_checkpoint or None,
    )  # fmt: skip
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .experiments.compare.run import CompareOptions, run_comparison

    cfg = _config(args.config, args.set)
    runs = Path(args.runs or f"runs/{cfg.name}")
    options = CompareOptions(
        eval_size=args.eval_size, sigmas=tuple(args.sigmas), ebt_steps=args.ebt_steps, dit_steps=tuple(args.dit_steps),
        best_of=tuple(args.best_of), seed=args.seed, with_bm3d=not args.no_bm3d, with_paper_protocol=not args.no_paper,
        limit=args.limit, load=args.load, device=args.device, stem=args.stem,
    )  # fmt: skip
    report = run_comparison(cfg, runs, Path(args.out or runs), options, progress=not args.quiet)
    text = report.read_text()
    print(text[text.index("| model |") :] if args.summary else text)
    print(f"report: {report} (+ .json, .png)")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from .core.reports import make_meta
    from .core.train import resolve_device
    from .experiments.ablation import VARIANTS, run_ablation, write_ablation_report

    cfg = _config(args.config, args.set)
    sigmas = tuple(args.sigmas)
    result = run_ablation(cfg, args.variants or list(VARIANTS), args.runs, sigmas, args.eval_size, args.max_steps,
                          seed=args.seed, limit=args.limit, progress=not args.quiet, best_of=args.best_of)  # fmt: skip
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, one crop stream for all; step counts chosen "
        f"on the validation photos, reported on the test photos, resized/centre-cropped to {args.eval_size}px"
    )
    budget = f"each variant {cfg.train.steps} steps of batch {cfg.data.batch_size} ({cfg.model.width}-wide EBT)"
    meta = make_meta(resolve_device(cfg.train.device), args.seed, data, budget)
    report = write_ablation_report(result, cfg, sigmas, meta, args.out or args.runs, args.stem)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .experiments.bench import run_bench

    report, table = run_bench(args.out, args.stem, args.presets, args.image_sizes, args.batches, args.descent_steps,
                              args.devices, args.repeats, args.warmup, args.variants, args.modes)  # fmt: skip
    print(table)
    print(f"report: {report} (+ .json, .png)")
    return 0


def _denoise(args: argparse.Namespace) -> int:
    from .core.checkpoint import load_trained
    from .core.train import resolve_device
    from .image.denoise_files import DenoiseOptions, denoise_files
    from .image.dit import DiTObjective
    from .image.objective import DenoisingObjective

    checkpoint = args.checkpoint or (DEFAULT_DIT if args.model == "dit" else DEFAULT_EBT)
    build, what = (DiTObjective, "a DiT baseline") if args.model == "dit" else (DenoisingObjective, "an image EBT")
    model, _ = load_trained(checkpoint, build, what, resolve_device(args.device))
    options = DenoiseOptions(args.steps, args.best_of, args.sigma, args.save_steps, args.save_energy_map,
                             args.overwrite)  # fmt: skip
    written = denoise_files(model, args.inputs, args.output, options, progress=not args.quiet)
    print("\n".join(str(path) for path in written))
    return 0


def _probe(args: argparse.Namespace) -> int:
    from .experiments.probe import ProbeSettings
    from .experiments.probe_run import run_probe

    cfg = _config(args.config, args.set)
    runs = Path(args.runs or f"runs/{cfg.name}")
    report = run_probe(cfg, runs, Path(args.out or runs), ProbeSettings(steps=args.probe_steps), args.limit,
                       not args.quiet, args.stem)  # fmt: skip
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from apps.demo import launch

    return launch(args)


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_compare_options(p: argparse.ArgumentParser, config: str, dit_steps: list[int], ebt_steps: int) -> None:
    p.add_argument("--config", default=config, help="one config for all the models (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--runs", help="folder of the trained models ebt/, ebt-cond/, dit/, dit-compute/ "
                   "(default: runs/<config name>)")  # fmt: skip
    p.add_argument("--load", action="store_true", help="evaluate the finished runs in --runs without training")
    p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    p.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="noise sigmas on the 0-255 scale")
    p.add_argument("--ebt-steps", type=int, default=ebt_steps, help="most EBT descent steps (PSNR after each)")
    p.add_argument("--dit-steps", type=int, nargs="+", default=dit_steps, help="DDIM step counts; 0 = all")
    p.add_argument("--best-of", type=int, nargs="+", default=[2, 4], help="N values of the EBT's best-of-N")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D")
    p.add_argument("--no-paper", action="store_true", help="skip the diffusion-level (original protocol) table")
    p.add_argument("--limit", type=int, help="only the first N photos of each held-out split")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", help="report folder (default: the --runs folder)")
    p.add_argument("--stem", default="denoise_compare", help="report file name stem")
    _common(p)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; descriptions keep their line breaks."""


def _command(sub, name: str, func, summary: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=summary, description=f"{summary}.\n\n{description}", formatter_class=_Formatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from apps.demo import add_arguments as add_demo_arguments

    parser = argparse.ArgumentParser(prog="ebt-vision", description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "train", _train, "Train an image EBT denoiser (or the DiT baseline with --model dit)",
                 "Writes runs/<name>/: config, metrics.csv, loss.png, resumable checkpoints, and the final model\n"
                 "(model.safetensors + config.json: the folder loads with --checkpoint or from_pretrained).",
                 )  # fmt: skip
    p.add_argument("--config", help="YAML config (see configs/); without one, the library defaults")
    p.add_argument("--model", choices=["ebt", "dit"], default="ebt", help="dit: the diffusers DiT of the same size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=100")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint (same config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = _command(sub, "denoise", _denoise, "Denoise your own images with the shipped (or any) EBT or DiT",
                 "Inputs: image files or folders (PNG, JPEG, TIFF, WebP, BMP, PPM/PGM; 8 or 16 bit; grey, RGB,\n"
                 "with or without alpha). Results: OUT/<name>.ebt.png (or .dit.png; 16-bit inputs give 16-bit .tif),\n"
                 "grey stays grey, alpha is kept. Inputs are never overwritten.")  # fmt: skip
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", choices=["ebt", "dit"], default="ebt", help="which model family")
    p.add_argument("--checkpoint", help=f"model folder or .safetensors (default: {DEFAULT_EBT} or {DEFAULT_DIT})")
    p.add_argument("--steps", type=int, help="EBT descent steps (default: as trained) or DiT DDIM steps (default 2)")
    p.add_argument("--best-of", type=int, default=1, help="EBT: N descents, keep the lowest final energy")
    p.add_argument("--sigma", type=float, help="noise sigma (0-255) for a sigma-conditioned EBT or the DiT; "
                   "default: estimated from the image (the blind EBT needs none)")  # fmt: skip
    p.add_argument("--save-steps", action="store_true", help="EBT: also write every intermediate step")
    p.add_argument("--save-energy-map", action="store_true", help="EBT: also write the per-patch energy map")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results (never an input)")
    _common(p)

    p = _command(sub, "eval", _eval, "PSNR/SSIM of a checkpoint on held-out photos vs the noisy input and CBM3D",
                 "Full-resolution held-out photos, the EBT after every descent step.")  # fmt: skip
    p.add_argument("--checkpoint", default=DEFAULT_EBT, help="EBT model folder or .safetensors file")
    p.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="noise sigmas on the 0-255 scale")
    p.add_argument("--steps", type=int, default=4, help="descent steps (PSNR is reported after each)")
    p.add_argument("--max-side", type=int, help="downscale the photos to this longest side (default: full size)")
    p.add_argument(
        "--split",
        choices=["both", "test", "validation"],
        default="both",
        help="held-out split(s); with both, step counts are chosen on validation and quoted on test",
    )
    p.add_argument("--dit-checkpoint", default="", help="also the DiT baseline (blind, estimated sigma), e.g. "
                   f"{DEFAULT_DIT}")  # fmt: skip
    p.add_argument("--limit", type=int, help="only the first N photos")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D (slow on big photos)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", default="runs/eval", help="report folder")
    p.add_argument("--stem", default="denoise_eval", help="report file name stem")
    _common(p)

    p = _command(sub, "compare", _compare, "EBT (blind, sigma-conditioned) vs the diffusers DiT: same data and budget",
                 "Trains four models on one crop stream (blind EBT, sigma-conditioned EBT, a step-matched and a\n"
                 "compute-matched DiT), chooses every method's settings on the validation photos and reports them\n"
                 "on the test photos.")  # fmt: skip
    _add_compare_options(p, "configs/compare-cpu.yaml", [1, 2, 5, 10, 25, 50, 100, 0], 8)
    p.set_defaults(summary=False)

    p = _command(sub, "quickstart", _compare, "The main job: the EBT vs DiT comparison at toy scale (~12 min on CPU)",
                 "configs/quickstart.yaml: 0.16M-parameter models, 800 steps each; DDIM up to 25 steps, 4 EBT\n"
                 "steps, no diffusion-level table.")  # fmt: skip
    _add_compare_options(p, "configs/quickstart.yaml", [1, 2, 5, 10, 25], 4)
    p.set_defaults(summary=True, no_paper=True)

    p = _command(
        sub,
        "ablate",
        _ablate,
        "Blind-EBT training variants (step size, steps, loss, Langevin) vs the DiT",
        "Every variant trains on the same crops; step counts are chosen on validation, reported on test.",
    )
    p.add_argument("--config", default="configs/quickstart.yaml", help="the base config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the base config")
    p.add_argument("--variants", nargs="+", help="variant names (default: all; see experiments/ablation.py)")
    p.add_argument("--max-steps", type=int, default=16, help="test-time descent steps (PSNR after each)")
    p.add_argument("--best-of", type=int, default=4, help="N of best-of-N at the validation-chosen step count")
    p.add_argument("--runs", default="runs/ablation", help="folder of the trained variants")
    p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    p.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="noise sigmas on the 0-255 scale")
    p.add_argument("--limit", type=int, help="only the first N photos of each split")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", help="report folder (default: the --runs folder)")
    p.add_argument("--stem", default="ablation", help="report file name stem")
    _common(p, device=False)

    p = _command(
        sub,
        "bench",
        _bench,
        "Training-step time and memory: EBT (K descent steps) vs a plain transformer",
        "Every case runs in a fresh process; FLOPs are counted in every pass.",
    )
    p.add_argument("--presets", nargs="+", default=["EBT-S/4"], help="model sizes (see image/config.py PRESETS)")
    p.add_argument("--image-sizes", type=int, nargs="+", default=[32], help="square image sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[32], help="batch sizes")
    p.add_argument("--descent-steps", type=int, nargs="+", default=[1, 2, 4], help="EBT descent steps K")
    p.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per case (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--variants", nargs="+", default=["naive", "fast", "checkpoint"],
                   choices=["naive", "fast", "checkpoint", "compiled"],
                   help="EBT training paths to time (compiled takes minutes to compile on a CPU)")  # fmt: skip
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"], help="what to time")
    p.add_argument("--out", default="runs/bench", help="report folder")
    p.add_argument("--stem", default="bench", help="report file name stem")

    p = _command(sub, "probe", _probe, "Linear probing of frozen EBT and DiT features (offline on Fashion-MNIST)",
                 "Pre-trains both backbones by denoising (resumable), caches features, sweeps layers and noise levels\n"
                 "on a validation split, reports top-1/top-5 (full and 10/100-shot) on the test set.")  # fmt: skip
    p.add_argument("--config", default="configs/probe-cpu.yaml", help="pre-training config of both backbones")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--runs", help="folder of the pre-trained backbones and cached features (default runs/<name>)")
    p.add_argument("--probe-steps", type=int, default=2000, help="optimiser steps of every linear probe")
    p.add_argument("--limit", type=int, help="only the first N training images (a quick look)")
    p.add_argument("--out", help="report folder (default: the --runs folder)")
    p.add_argument("--stem", default="probe", help="report file name stem")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = _command(
        sub,
        "demo",
        _demo,
        "The Gradio app: watch the model think (apps/demo.py)",
        "Serves on http://HOST:PORT; offline, from the shipped checkpoints unless told otherwise.",
    )
    add_demo_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (bad config, bad input, missing files) print one line and exit 2; anything else
    is a bug and keeps its traceback."""
    from .core.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
