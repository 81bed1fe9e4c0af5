"""What each command does: call the library with the parsed options (``ebt_vision.cli.parser`` defines them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_EBT = "checkpoints/ebt-image-s"
DEFAULT_DIT = "checkpoints/dit-image-s"
SIGMAS = [15.0, 25.0, 50.0, 75.0, 100.0]


def _config(path: str | None, overrides: list[str]):
    from ..core.config import load_config
    from ..core.paths import resolve_path

    return load_config(resolve_path(path, "config file") if path else None, overrides)


def _trainer(task: str, model: str):
    """The training recipe of a workload (the config's ``task``) for one model family."""
    from ..core.errors import UserError

    if task == "image":
        from ..experiments.training import train_denoiser as recipe

        families = ("ebt", "dit")
    elif task == "video":
        from ..experiments.video.contenders import train_video_model as recipe

        families = ("ebt", "transformer", "dit")
    else:
        from ..experiments.text import train_text_model as recipe

        families = ("ebt", "transformer")
    if model not in families:
        raise UserError(f"--model {model} is not a {task} model; choose from {', '.join(families)}")
    return recipe


def train(args: argparse.Namespace) -> int:
    from ..core import distributed
    from ..core.errors import UserError
    from ..core.runs import check_run_folder, move_aside
    from ..core.train import TrainingDiverged

    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite moves it aside: choose one")
    cfg = _config(args.config, args.set)
    run_dir = Path(args.out or f"runs/{cfg.name}")
    recipe = _trainer(cfg.task, args.model)
    ctx = distributed.init_from_environment(cfg.train.device)  # under torchrun: join the process group
    try:
        if args.overwrite and ctx.is_main:
            backup = move_aside(run_dir)
            if backup is not None:
                print(f"moved the earlier content of {run_dir} to {backup}", file=sys.stderr)
        distributed.barrier(ctx)
        check_run_folder(run_dir, args.resume)  # before the recipe reads its data (train checks again)
        result = recipe(cfg, run_dir, resume=args.resume, progress=not args.quiet, model=args.model)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    finally:
        distributed.shutdown(ctx)
    if ctx.is_main:
        processes = f" on {ctx.world_size} processes" if ctx.enabled else ""
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        print(f"trained {result.step} steps{processes}{resumed} in {result.seconds:.0f} s -> {run_dir} (a loadable "
              "model folder)")  # fmt: skip
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ..experiments.evaluation import run_evaluation

    report = run_evaluation(
        args.checkpoint, args.out, args.stem, tuple(args.sigmas), args.steps, args.max_side, args.split, args.limit,
        args.seed, not args.no_bm3d, args.device, not args.quiet, args.dit_checkpoint or None, not args.no_schedule,
        tuple(args.dit_steps),
    )  # fmt: skip
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def compare(args: argparse.Namespace) -> int:
    from ..experiments.compare.run import CompareOptions, run_comparison

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


def paper(args: argparse.Namespace) -> int:
    from ..core.config import with_overrides
    from ..core.reports import make_meta
    from ..core.train import resolve_device
    from ..experiments import paper as protocol

    cfg = _config(args.config, args.set)
    device = resolve_device(args.device if args.device != "auto" else cfg.train.device)
    cfg = with_overrides(cfg, [f"train.device={device}"]) if args.device != "auto" else cfg
    runs = Path(args.runs or f"runs/{cfg.name}")
    models = protocol.train_models(cfg, runs, progress=not args.quiet)
    rows = []
    for split in ("validation", "test"):
        rows += protocol.evaluate(models, split, args.eval_size, args.ebt_steps, tuple(args.dit_passes), args.reruns,
                                  args.seed, args.limit, progress=not args.quiet)  # fmt: skip
    images = {s: len({r["image"] for r in rows if r["eval_split"] == s}) for s in ("validation", "test")}
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops at diffusion level {cfg.data.level_max} "
        f"(t = {round(cfg.data.level_max * 1000) - 1}), one crop stream for all models; settings chosen on "
        f"{images['validation']} validation photos, reported on {images['test']} test photos ({args.eval_size}px)"
    )
    budget = f"each model {cfg.train.steps} steps of batch {cfg.data.batch_size}; " + ", ".join(
        f"{name} {info['seconds'] / 60:.1f} min" for name, info in models.items()
    )
    meta = make_meta(device, args.seed, data, budget)
    report = protocol.write_paper_report(rows, models, meta, Path(args.out or runs), args.stem)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def adaptive(args: argparse.Namespace) -> int:
    from ..core.reports import make_meta
    from ..core.train import resolve_device
    from ..experiments.adaptive import run_adaptive, write_adaptive_report
    from ..image.inference import load_denoiser

    device = resolve_device(args.device)
    objective = load_denoiser(args.checkpoint, device)
    rows = run_adaptive(objective, tuple(args.sigmas), args.max_steps, args.max_side, limit=args.limit,
                        progress=not args.quiet)  # fmt: skip
    data = f"held-out photos (validation to choose, test to report) downscaled to {args.max_side} px, Gaussian noise"
    budget = f"{args.checkpoint}; up to {args.max_steps} descent steps per patch"
    report = write_adaptive_report(rows, make_meta(device, 0, data, budget), args.out, args.stem)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    from ..core.train import resolve_device
    from ..experiments.calibration import run_calibration
    from ..image.inference import load_denoiser

    device = resolve_device(args.device)
    objective = load_denoiser(args.checkpoint, device)
    schedule, report = run_calibration(objective, device, args.checkpoint, args.out, args.stem, args.crop,
                                       args.per_photo, args.max_steps, not args.no_save, not args.quiet)  # fmt: skip
    print(report.read_text())
    saved = "" if args.no_save else f"; schedule saved beside {args.checkpoint}"
    print(f"report: {report} (+ .json, .png){saved}")
    return 0


def ablate(args: argparse.Namespace) -> int:
    from ..core.reports import make_meta
    from ..core.train import resolve_device
    from ..experiments.ablation import VARIANTS, run_ablation
    from ..experiments.ablation_report import write_ablation_report

    cfg = _config(args.config, args.set)
    sigmas = tuple(args.sigmas)
    result = run_ablation(cfg, args.variants or list(VARIANTS), args.runs, sigmas, args.eval_size, args.max_steps,
                          seed=args.seed, limit=args.limit, progress=not args.quiet, best_of=args.best_of,
                          equal_flops=args.equal_flops)  # fmt: skip
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, one crop stream for all; step counts chosen "
        f"on the validation photos, reported on the test photos, resized/centre-cropped to {args.eval_size}px"
    )
    budget = f"each variant {cfg.train.steps} steps of batch {cfg.data.batch_size} ({cfg.model.width}-wide EBT)"
    if args.equal_flops:
        budget = f"each variant the training FLOPs of {cfg.train.steps} base steps of batch {cfg.data.batch_size}"
    meta = make_meta(resolve_device(cfg.train.device), args.seed, data, budget)
    report = write_ablation_report(result, cfg, sigmas, meta, args.out or args.runs, args.stem)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def bench(args: argparse.Namespace) -> int:
    from ..experiments.bench import run_bench

    report, table = run_bench(args.out, args.stem, args.presets, args.image_sizes, args.batches, args.descent_steps,
                              args.devices, args.repeats, args.warmup, args.variants, args.modes)  # fmt: skip
    print(table)
    print(f"report: {report} (+ .json, .png)")
    return 0


def denoise(args: argparse.Namespace) -> int:
    from ..core.checkpoint import load_trained
    from ..core.train import resolve_device
    from ..image.denoise_files import DenoiseOptions, denoise_files
    from ..image.dit import DiTObjective
    from ..image.objective import DenoisingObjective
    from ..image.schedule import StepSchedule

    checkpoint = args.checkpoint or (DEFAULT_DIT if args.model == "dit" else DEFAULT_EBT)
    build, what = (DiTObjective, "a DiT baseline") if args.model == "dit" else (DenoisingObjective, "an image EBT")
    model, _ = load_trained(checkpoint, build, what, resolve_device(args.device))
    schedule = StepSchedule.load(checkpoint) if args.model == "ebt" else None
    options = DenoiseOptions(args.steps, args.best_of, args.sigma, args.save_steps, args.save_energy_map,
                             args.overwrite, schedule)  # fmt: skip
    written = denoise_files(model, args.inputs, args.output, options, progress=not args.quiet)
    print("\n".join(str(path) for path in written))
    return 0


def video(args: argparse.Namespace) -> int:
    from ..core.errors import UserError
    from ..experiments.video.evaluation import EvalOptions
    from ..experiments.video.run import VideoCompareOptions, run_video_comparison

    cfg = _config(args.config, args.set)
    if cfg.task != "video":
        raise UserError(f"{args.config} is a {cfg.task} config; the video command takes task: video")
    runs = Path(args.runs or f"runs/{cfg.name}")
    evaluation = EvalOptions(ebt_steps=args.ebt_steps, dit_steps=tuple(args.dit_steps), best_of=tuple(args.best_of),
                             limit=args.limit, seed=args.seed)  # fmt: skip
    options = VideoCompareOptions(evaluation, compute_matched=not args.no_compute_matched, strip_clips=args.strips,
                                  load=args.load, device=args.device, stem=args.stem)  # fmt: skip
    report = run_video_comparison(cfg, runs, Path(args.out or runs), options, progress=not args.quiet)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png, GIF strips)")
    return 0


def text(args: argparse.Namespace) -> int:
    from ..core.errors import UserError
    from ..experiments.text import TextOptions, run_text_experiment

    cfg = _config(args.config, args.set)
    if cfg.task != "text":
        raise UserError(f"{args.config} is a {cfg.task} config; the text command takes task: text")
    runs = Path(args.runs or f"runs/{cfg.name}")
    options = TextOptions(windows=args.windows, load=args.load, device=args.device, stem=args.stem)
    report = run_text_experiment(cfg, runs, Path(args.out or runs), options, progress=not args.quiet)
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def probe(args: argparse.Namespace) -> int:
    from ..experiments.probe import ProbeSettings
    from ..experiments.probe_run import run_probe

    cfg = _config(args.config, args.set)
    if args.data:  # an ImageFolder tree: pre-train on its train/ images, in colour
        from ..core.config import with_overrides
        from ..core.errors import InputError

        folder = Path(args.data)
        if not (folder / "train").is_dir() or not (folder / "val").is_dir():
            raise InputError(f"--data {folder}: expected train/ and val/ folders of class sub-folders")
        cfg = with_overrides(cfg, [f"name={cfg.name}-{folder.name}", f"data.source={folder / 'train'}",
                                   "model.channels=3"])  # fmt: skip
    runs = Path(args.runs or f"runs/{cfg.name}")
    report = run_probe(cfg, runs, Path(args.out or runs), ProbeSettings(steps=args.probe_steps), args.limit,
                       not args.quiet, args.stem, folder=args.data)  # fmt: skip
    print(report.read_text())
    print(f"report: {report} (+ .json, .png)")
    return 0


def generate(args: argparse.Namespace) -> int:
    from ..text.checkpoints import load_text_ebt, load_transformer
    from ..text.generate import generate_ebt, generate_transformer
    from ..text.system2 import Thinking

    if args.model == "ebt":
        objective, tokenizer = load_text_ebt(args.checkpoint or "checkpoints/text-sotu-s")
        thinking = Thinking(num_steps=args.steps, n_candidates=args.best_of)
        result = generate_ebt(objective, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.seed,
                              thinking)  # fmt: skip
    else:
        objective, tokenizer = load_transformer(args.checkpoint or "checkpoints/text-sotu-s-transformer")
        result = generate_transformer(objective, tokenizer, args.prompt, args.max_new_tokens, args.temperature,
                                      args.seed)  # fmt: skip
    print(result.prompt + result.text)
    if args.energies and result.energies is not None:
        print("\ntoken\tenergy")
        for piece, energy in zip(result.pieces, result.energies, strict=True):
            print(f"{piece!r}\t{energy:.4f}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from apps.demo import launch

    return launch(args)
