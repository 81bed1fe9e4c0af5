"""The ``ebt-vision`` command: train, eval, compare, ablate, demo, bench, quickstart (also ``python -m ebt_vision``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from .core import distributed
    from .core.config import load_config
    from .core.train import TrainingDiverged
    from .experiments.training import train_denoiser

    cfg = load_config(args.config, args.set)
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
        print(f"trained {result.step} steps{processes} in {result.seconds:.0f} s -> {run_dir / 'model.safetensors'}")
    return 0


DEFAULT_CHECKPOINT = "checkpoints/ebt-image-s.safetensors"


def _evaluate(checkpoint: str, args: argparse.Namespace, out_dir: Path, stem: str, budget: str) -> Path:
    from .core.reports import make_meta
    from .core.train import resolve_device
    from .experiments.evaluation import evaluate_denoiser, write_denoise_report
    from .image.data import held_out_photos
    from .image.inference import load_denoiser

    device = resolve_device(args.device)
    objective = load_denoiser(checkpoint, device)
    photos = held_out_photos(args.max_side, args.split)[: args.limit]
    sizes = ", ".join(f"{p.image.shape[2]}x{p.image.shape[1]}" for p in photos)
    scale = f"downscaled to at most {args.max_side}px" if args.max_side else "full resolution"
    data = f"held-out {args.split} split: {len(photos)} photos ({', '.join(p.name for p in photos)}), {scale} ({sizes})"
    rows = evaluate_denoiser(objective, photos, tuple(args.sigmas), args.steps, args.seed, not args.no_bm3d)
    meta = make_meta(device, args.seed, data, budget)
    return write_denoise_report(rows, meta, out_dir, stem)


def _eval(args: argparse.Namespace) -> int:
    from .core.checkpoint import read_metadata

    cfg, extra = read_metadata(args.checkpoint)
    budget = f"{cfg.name}: {extra.get('step', '?')} steps of batch {cfg.data.batch_size}, crops {cfg.data.crop_size}px"
    if "train_seconds" in extra:
        budget += f", {extra['train_seconds'] / 60:.1f} min training"
    report = _evaluate(args.checkpoint, args, Path(args.out), args.stem, budget)
    print(report.read_text())
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Train (or load) the blind EBT, the sigma-conditioned EBT and the DiTs on one budget, evaluate, report."""
    from .core.config import ConfigError, load_config, with_overrides
    from .core.reports import make_meta
    from .core.train import resolve_device
    from .experiments.compare.contenders import load_contenders, train_contenders
    from .experiments.compare.costs import pass_costs
    from .experiments.compare.protocols import evaluate_gaussian, evaluate_paper_protocol
    from .experiments.compare.report import write_compare_report

    cfg = load_config(args.config, args.set)
    if cfg.data.noise != "gaussian":
        raise ConfigError(
            "compare trains on Gaussian noise (data.noise: gaussian); the diffusion-level protocol is "
            "evaluated on those models as a second table"
        )
    runs = Path(args.runs or f"runs/{cfg.name}")
    device = resolve_device(args.device if args.device != "auto" else cfg.train.device)
    if args.load:
        contenders = load_contenders(runs, device)
    else:
        run_cfg = cfg if args.device == "auto" else with_overrides(cfg, [f"train.device={device}"])
        contenders = train_contenders(run_cfg, runs, progress=not args.quiet)
    costs = pass_costs(contenders["ebt"].objective, contenders["dit"].objective)
    best_of = tuple(args.best_of)
    rows = []
    for split in ("validation", "test"):
        rows += evaluate_gaussian(
            contenders, costs, split, tuple(args.sigmas), args.eval_size, args.ebt_steps, tuple(args.dit_steps),
            best_of, args.seed, with_bm3d=not args.no_bm3d and split == "test", limit=args.limit,
            progress=not args.quiet,
        )  # fmt: skip
        if not args.no_paper:
            rows += evaluate_paper_protocol(
                contenders, costs, split, args.eval_size, ebt_steps=args.ebt_steps, dit_steps=tuple(args.dit_steps),
                seed=args.seed, limit=args.limit,
            )  # fmt: skip
    first = contenders["ebt"]
    splits = ("validation", "test")
    images = {split: len({r["image"] for r in rows if r["eval_split"] == split}) for split in splits}
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, sigma U[{cfg.data.sigma_min:g}, "
        f"{cfg.data.sigma_max:g}], one crop stream for all models; settings chosen on {images['validation']} "
        f"validation photos, reported on {images['test']} test photos, resized and centre-cropped to "
        f"{args.eval_size}x{args.eval_size}, the same noise for every method"
    )
    budget = (
        f"step-matched: {first.steps} steps of batch {cfg.data.batch_size} ({first.steps * cfg.data.batch_size} crops) "
        f"each; compute-matched DiT: {contenders['dit-compute'].steps} steps (the blind EBT's training FLOPs); "
        + ", ".join(f"{c.name} {c.seconds / 60:.1f} min" for c in contenders.values())
    )
    out = Path(args.out or runs)
    meta = make_meta(device, args.seed, data, budget)
    report = write_compare_report(rows, contenders, costs, meta, out, args.stem, max(best_of))
    text = report.read_text()
    print(text[text.index("| model |") :] if args.summary else text)
    print(f"report: {report} (+ .json, .png)")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    """Train blind-EBT variants of one config and the DiT reference on the same crops; PSNR per variant."""
    from .core.config import load_config
    from .core.reports import make_meta
    from .core.train import resolve_device
    from .experiments.ablation import VARIANTS, run_ablation, write_ablation_report

    cfg = load_config(args.config, args.set)
    names = args.variants or list(VARIANTS)
    sigmas = tuple(args.sigmas)
    result = run_ablation(
        cfg, names, args.runs, sigmas, args.eval_size, seed=args.seed, limit=args.limit, progress=not args.quiet
    )
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, one crop stream for all; step counts chosen "
        f"on the validation photos, reported on the test photos, resized/centre-cropped to {args.eval_size}px"
    )
    budget = f"each variant {cfg.train.steps} steps of batch {cfg.data.batch_size} ({cfg.model.width}-wide EBT)"
    meta = make_meta(resolve_device(cfg.train.device), args.seed, data, budget)
    report = write_ablation_report(result, cfg, sigmas, meta, args.out, args.stem)
    print(report.read_text())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from apps.demo import main as demo_main

    return demo_main(args.demo_args)


def _add_compare_options(
    p: argparse.ArgumentParser, config: str, eval_size: int, dit_steps: list[int], ebt_steps: int
) -> None:
    p.add_argument("--config", default=config, help="one config for all three models (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=100")
    p.add_argument("--runs", help="run folder holding ebt/, ebt-cond/, dit/ (default runs/<name>)")
    p.add_argument("--load", action="store_true", help="evaluate the finished runs in --runs without training")
    p.add_argument("--eval-size", type=int, default=eval_size, help="held-out photos resized/cropped to this square")
    p.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50, 75, 100], help="0-255 noise sigmas")
    p.add_argument("--ebt-steps", type=int, default=ebt_steps, help="EBT descent steps (PSNR after each)")
    p.add_argument("--dit-steps", type=int, nargs="+", default=dit_steps, help="DDIM step counts; 0 = all")
    p.add_argument("--best-of", type=int, nargs="+", default=[2, 4], help="N values for the EBT's best-of-N")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D")
    p.add_argument("--no-paper", action="store_true", help="skip the diffusion-level (paper protocol) table")
    p.add_argument("--limit", type=int, default=None, help="only the first N held-out photos")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quiet", action="store_true")


def _bench(args: argparse.Namespace) -> int:
    """Train-step time and peak memory, EBT vs plain transformer, in one run; writes reports/bench.{md,json}."""
    import torch

    from .core.progress import progress
    from .core.reports import make_meta, write_report
    from .experiments.bench import VARIANT_NOTES, bench_cases, bench_plot, bench_table, run_isolated, with_ratios

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cases = bench_cases(
        args.presets, args.image_sizes, args.batches, args.descent_steps, devices, repeats=args.repeats,
        variants=args.variants, modes=args.modes, warmup=args.warmup,
    )  # fmt: skip
    rows = with_ratios([run_isolated(case) for case in progress(cases, desc="bench")])
    table = bench_table(rows)
    data = "random images (timing does not depend on content)"
    budget = (
        f"median of {args.repeats} timed steps after {args.warmup} warm-up steps (compilation happens in the warm-up), "
        "AdamW (fused), bf16 autocast on CUDA"
    )
    notes = "\n".join(f"- **{name}**: {VARIANT_NOTES[name]}" for name in VARIANT_NOTES)
    body = (
        "Time and peak memory of one training step (mode train) or one prediction (mode infer). An EBT training "
        "step runs K descent steps with a second-order graph and backpropagates through them; an EBT prediction runs "
        "K descent steps with first-order gradients; the plain transformer of the same size predicts the clean image "
        "in one forward pass. `x plain`: relative to the plain transformer of the same setting and mode (the "
        "compiled one for compiled rows). CPU memory: growth of the process's peak resident set during the steps "
        "(each row in a fresh process); CUDA memory: torch.cuda.max_memory_allocated.\n\nVariants:\n\n"
        f"{notes}\n\n{table}"
    )
    body += f"\n\n![time and memory relative to the plain transformer]({args.stem}.png)"
    write_report(args.out, args.stem, make_meta(",".join(devices), 0, data, budget), rows, body)
    bench_plot(rows, Path(args.out) / f"{args.stem}.png")
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
    p.add_argument("--split", choices=["test", "validation"], default="test", help="held-out split to evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebt-vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train an image EBT denoiser (or the DiT baseline with --model dit)")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--model", choices=["ebt", "dit"], default="ebt", help="dit: the diffusers DiT of the same size")
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

    p = sub.add_parser("compare", help="EBT (blind, sigma-conditioned) vs diffusers DiT: same data and budget")
    _add_compare_options(p, "configs/compare-cpu.yaml", 64, [1, 2, 5, 10, 25, 50, 100, 0], 8)
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--stem", default="denoise_compare", help="report file name stem")
    p.set_defaults(func=_compare, summary=False)

    p = sub.add_parser("quickstart", help="main job: the EBT vs DiT comparison at small scale on CPU (~10 min)")
    # Toy scale for ~10 minutes on 2 cores: DDIM up to 25 steps, 4 EBT steps, no diffusion-level table.
    _add_compare_options(p, "configs/quickstart.yaml", 64, [1, 2, 5, 10, 25], 4)
    p.add_argument("--out", default=None, help="report folder (default: the run folder)")
    p.add_argument("--stem", default="denoise_compare")
    p.set_defaults(func=_compare, summary=True, no_paper=True)

    p = sub.add_parser("ablate", help="blind-EBT variants (step size, steps, loss, Langevin) vs the DiT")
    p.add_argument("--config", default="configs/quickstart.yaml", help="the base config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variants", nargs="+", help="default: all (see ebt_vision/ablation.py)")
    p.add_argument("--runs", default="runs/ablation")
    p.add_argument("--eval-size", type=int, default=64)
    p.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50, 75, 100])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports")
    p.add_argument("--stem", default="ablation")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_ablate)

    p = sub.add_parser("demo", help="the Gradio app: refinement steps and energy maps (apps/demo.py)", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="train-step time and memory: EBT (K descent steps) vs a plain transformer")
    p.add_argument("--presets", nargs="+", default=["EBT-S/4"])
    p.add_argument("--image-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--batches", type=int, nargs="+", default=[32])
    p.add_argument("--descent-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument(
        "--variants", nargs="+", default=["naive", "fast", "checkpoint"], choices=["naive", "fast", "checkpoint",
        "compiled"], help="EBT training paths to time (compiled takes minutes to compile on a CPU)",
    )  # fmt: skip
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--out", default="reports")
    p.add_argument("--stem", default="bench")
    p.set_defaults(func=_bench)
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
