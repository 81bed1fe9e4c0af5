"""What each command does: turn the parsed options (``ebt_vision.cli.parser``) into the library's options and call it.
Report text and metadata are written by the experiments, not here."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..core import defaults


def _config(path: str | None, overrides: list[str]):
    from ..core.config import load_config
    from ..core.paths import resolve_path

    return load_config(resolve_path(path, "config file") if path else None, overrides)


def _task_config(args: argparse.Namespace, task: str):
    """The config of ``--config``/``--set``, which must be of ``task``."""
    return _of_task(_config(args.config, args.set), args.config, task)


def _of_task(cfg, path: str, task: str, command: str | None = None):
    from ..core.errors import UserError

    if cfg.task != task:
        raise UserError(f"{path} is a {cfg.task} config; the {command or task} command takes task: {task}")
    return cfg


def _warm_config(path: str, command: str):
    """``--warm-config``: an image EBT-stage config, or None for 'none'."""
    return None if path.lower() == "none" else _of_task(_config(path, []), path, "image", f"{command} --warm-config")


def _print_report(report: Path, extra: str = "(+ .json, .png)", text: str | None = None) -> int:
    print(report.read_text() if text is None else text)
    print(f"report: {report} {extra}")
    return 0


def train(args: argparse.Namespace) -> int:
    from ..core import distributed
    from ..core.config import training_recipe
    from ..core.data_check import check_data
    from ..core.errors import UserError
    from ..core.runs import check_run_folder, move_aside
    from ..core.train import TrainingDiverged

    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite moves it aside: choose one")
    cfg = _config(args.config, args.set)
    run_dir = Path(args.out or f"runs/{cfg.name}")
    recipe = training_recipe(cfg.task, args.model)
    ctx = distributed.init_from_environment(cfg.train.device)  # under torchrun: join the process group
    try:
        if args.overwrite and ctx.is_main:
            backup = move_aside(run_dir)
            if backup is not None:
                print(f"moved the earlier content of {run_dir} to {backup}", file=sys.stderr)
        distributed.barrier(ctx)
        check_run_folder(run_dir, args.resume)  # before the recipe reads its data (train checks again)
        check_data(cfg)  # every split's data, before the first step
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


def prepare_text(args: argparse.Namespace) -> int:
    from ..text.prepare import PrepareOptions, prepare_corpus

    options = PrepareOptions(args.tokenizer, args.vocab_size, args.tokenizer_from, args.tokenizer_sample_mb)
    meta = prepare_corpus(args.corpus, args.output, options)
    tokens = ", ".join(f"{split} {count:,}" for split, count in meta["tokens"].items())
    print(f"{args.output}: {tokens} tokens ({meta['dtype']}, {meta['tokenizer']} of {meta['vocab_size']}); train with "
          f"--set data.corpus={args.output}")  # fmt: skip
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ..core.memory import fix_mmap_threshold
    from ..experiments.image.evaluation import EvalOptions, run_evaluation

    fix_mmap_threshold()  # tiled full-resolution photos: at --views 8 the heap of the retina photo grew past 16 GiB

    options = EvalOptions(
        sigmas=tuple(args.sigmas), steps=args.steps, max_side=args.max_side, split=args.split, limit=args.limit,
        seed=args.seed, with_bm3d=not args.no_bm3d, dit_checkpoint=args.dit_checkpoint or None,
        dit_steps=tuple(args.dit_steps), transformer_checkpoint=args.transformer_checkpoint or None,
        use_schedule=not args.no_schedule, tile_overlap=args.tile_overlap, views=args.views, device=args.device,
        stem=args.stem, progress=not args.quiet,
    )  # fmt: skip
    return _print_report(run_evaluation(args.checkpoint, args.out, options))


def compare(args: argparse.Namespace) -> int:
    from ..experiments.image.compare.run import CompareOptions, run_comparison

    cfg = _config(args.config, args.set)
    runs = Path(args.runs or f"runs/{cfg.name}")
    options = CompareOptions(
        eval_size=args.eval_size, sigmas=tuple(args.sigmas), ebt_steps=args.ebt_steps, dit_steps=tuple(args.dit_steps),
        best_of=tuple(args.best_of), seed=args.seed, with_bm3d=not args.no_bm3d, with_paper_protocol=not args.no_paper,
        limit=args.limit, load=args.load, device=args.device, stem=args.stem,
        warm=_warm_config(args.warm_config, "compare"),
    )  # fmt: skip
    report = run_comparison(cfg, runs, Path(args.out or runs), options, progress=not args.quiet)
    text = report.read_text()
    return _print_report(report, text=text[text.index("| model |") :] if args.summary else text)


def paper(args: argparse.Namespace) -> int:
    from ..experiments.image.paper import PaperOptions, run_paper

    cfg = _config(args.config, args.set)
    runs = Path(args.runs or f"runs/{cfg.name}")
    options = PaperOptions(eval_size=args.eval_size, ebt_steps=args.ebt_steps, dit_passes=tuple(args.dit_passes),
                           reruns=args.reruns, seed=args.seed, limit=args.limit, device=args.device,
                           stem=args.stem)  # fmt: skip
    return _print_report(run_paper(cfg, runs, Path(args.out or runs), options, progress=not args.quiet))


def adaptive(args: argparse.Namespace) -> int:
    from ..experiments.image.adaptive import AdaptiveOptions, report_adaptive

    options = AdaptiveOptions(sigmas=tuple(args.sigmas), max_steps=args.max_steps, max_side=args.max_side,
                              limit=args.limit)  # fmt: skip
    return _print_report(report_adaptive(args.checkpoint, args.out, options, args.device, args.stem, not args.quiet))


def calibrate(args: argparse.Namespace) -> int:
    from ..experiments.image.calibration import CalibrationOptions, run_calibration

    options = CalibrationOptions(crop=args.crop, per_photo=args.per_photo, max_steps=args.max_steps,
                                 save=not args.no_save, passes=args.passes, sigmas=tuple(args.sigmas),
                                 scales=tuple(args.scales), views=args.views)  # fmt: skip
    _, report = run_calibration(args.checkpoint, args.out, options, args.device, args.stem, not args.quiet)
    saved = "" if args.no_save else f"; schedule saved beside {args.checkpoint}"
    return _print_report(report, f"(+ .json, .png){saved}")


def ablate(args: argparse.Namespace) -> int:
    from ..experiments.image.ablation import VARIANTS, AblationOptions
    from ..experiments.image.ablation_report import ablate as run_ablate

    cfg = _config(args.config, args.set)
    options = AblationOptions(sigmas=tuple(args.sigmas), eval_size=args.eval_size, max_steps=args.max_steps,
                              best_of=args.best_of, seed=args.seed, limit=args.limit,
                              equal_flops=args.equal_flops)  # fmt: skip
    names = args.variants or list(VARIANTS)
    report = run_ablate(cfg, names, args.runs, args.out or args.runs, options, args.stem, progress=not args.quiet)
    return _print_report(report)


def bench(args: argparse.Namespace) -> int:
    from ..experiments.image.bench import BenchOptions, run_bench

    options = BenchOptions(
        presets=tuple(args.presets), image_sizes=tuple(args.image_sizes), batches=tuple(args.batches),
        descent_steps=tuple(args.descent_steps), devices=tuple(args.devices or ()), repeats=args.repeats,
        warmup=args.warmup, variants=tuple(args.variants), modes=tuple(args.modes),
    )  # fmt: skip
    report, table = run_bench(args.out, options, args.stem)
    return _print_report(report, text=table)


def bench_data(args: argparse.Namespace) -> int:
    from ..experiments.databench.run import DataBenchOptions, run_data_bench

    options = DataBenchOptions(tmp=args.tmp, photos=args.photos, clips=args.clips, repeats=args.repeats,
                               image_steps=args.image_steps, stem=args.stem)  # fmt: skip
    return _print_report(run_data_bench(args.out, options))


def denoise(args: argparse.Namespace) -> int:
    from ..core.checkpoint import load_trained
    from ..core.memory import fix_mmap_threshold
    from ..core.train import resolve_device
    from ..image.denoise_files import DenoiseOptions, plan_denoise, run_denoise
    from ..image.objective import DenoisingObjective
    from ..image.schedule import StepSchedule

    is_dit = args.model == "dit"
    checkpoint = args.checkpoint or (defaults.IMAGE_DIT if is_dit else defaults.IMAGE_EBT)
    options = DenoiseOptions(args.steps, args.best_of, args.sigma, args.save_steps, args.save_energy_map,
                             args.overwrite, views=args.views)  # fmt: skip
    options.check(dit=is_dit)
    plan = plan_denoise(args.inputs, args.output, args.model, args.overwrite, options.best_of, options.views)
    if plan.jobs:
        fix_mmap_threshold()  # the memory the pixel limit was measured with
        if is_dit:
            from ..image.dit import DiTObjective  # diffusers: only for the DiT

            build, what = DiTObjective, "a DiT baseline"
        else:
            build, what = DenoisingObjective, "an image EBT"
        model, _ = load_trained(checkpoint, build, what, resolve_device(args.device))
        schedule = None if is_dit else StepSchedule.load(checkpoint)
        run = run_denoise(model, plan, replace(options, schedule=schedule), progress=not args.quiet)
    else:
        run = plan.nothing_done()
    print("\n".join(str(path) for path in run.written))
    for line in run.summary():
        print(line, file=sys.stderr)
    return 1 if run.failed else 0


def predict(args: argparse.Namespace) -> int:
    from ..core.train import resolve_device
    from ..video.loading import chosen_steps, default_video_checkpoint, load_video_model
    from ..video.predict_files import PredictOptions, check_output, predict_clip

    options = PredictOptions(args.frames, args.steps, args.best_of, args.seed, args.overwrite)
    check_output(args.output, args.overwrite)  # before the model loads
    if args.checkpoint:
        checkpoint, which = args.checkpoint, f"the video EBT {args.checkpoint}"
    else:
        checkpoint, which = default_video_checkpoint()
    print(f"model: {which}", file=sys.stderr)
    recorded = chosen_steps(checkpoint) if args.steps is None else None
    if recorded is not None:  # the model folder says which step count won on validation clips
        options = replace(options, steps=recorded[0], steps_from=f"chosen on {recorded[1]}")
        print(f"descent steps: {recorded[0]} per frame, chosen on {recorded[1]}", file=sys.stderr)
    objective = load_video_model(checkpoint, "ebt", resolve_device(args.device))
    summary = predict_clip(objective, args.clip, args.output, options, str(checkpoint), progress=not args.quiet)
    print(f"{summary['predicted_frames']} frames predicted from frames {summary['context_frame_indices'][0]}-"
          f"{summary['context_frame_indices'][-1]} of {args.clip} -> {args.output} (predicted_*.png, "
          f"prediction.gif, prediction.mp4, summary.json)")  # fmt: skip
    return 0


def video(args: argparse.Namespace) -> int:
    from ..experiments.video.evaluation import EvalOptions
    from ..experiments.video.run import VideoCompareOptions, run_video_comparison

    cfg = _task_config(args, "video")
    runs = Path(args.runs or f"runs/{cfg.name}")
    evaluation = EvalOptions(ebt_steps=args.ebt_steps, dit_steps=tuple(args.dit_steps), best_of=tuple(args.best_of),
                             limit=args.limit, seed=args.seed)  # fmt: skip
    options = VideoCompareOptions(evaluation, compute_matched=not args.no_compute_matched, strip_clips=args.strips,
                                  load=args.load, device=args.device, stem=args.stem)  # fmt: skip
    report = run_video_comparison(cfg, runs, Path(args.out or runs), options, progress=not args.quiet)
    return _print_report(report, "(+ .json, .png, GIF strips)")


def text(args: argparse.Namespace) -> int:
    from ..core.errors import UserError
    from ..experiments.text.run import TextOptions, run_text_experiment

    cfg = _task_config(args, "text")
    runs = Path(args.runs or f"runs/{cfg.name}")
    if args.models and not args.load:
        raise UserError("--models names finished models to evaluate: add --load (nothing is trained into them)")
    models = tuple(args.models) if args.models else None
    options = TextOptions(windows=args.windows, load=args.load, models=models, device=args.device, stem=args.stem)
    return _print_report(run_text_experiment(cfg, runs, Path(args.out or runs), options, progress=not args.quiet))


def probe(args: argparse.Namespace) -> int:
    from ..experiments.image.probe import ProbeSettings
    from ..experiments.image.probe_run import ProbeOptions, run_probe

    cfg = _config(args.config, args.set)
    warm = _warm_config(args.warm_config, "probe")
    options = ProbeOptions(ProbeSettings(steps=args.probe_steps), args.limit, args.data, args.stem, warm,
                           tuple(args.dit_steps))  # fmt: skip
    return _print_report(run_probe(cfg, args.runs, args.out, options, progress=not args.quiet))


def generate(args: argparse.Namespace) -> int:
    from ..core.inference import Thinking
    from ..text.checkpoints import load_text_ebt, load_transformer
    from ..text.generate import Sampling, check_prompt, generate_ebt, generate_transformer

    check_prompt(args.prompt)  # the inputs before the models load (seconds)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.seed)
    sampling.check()
    if args.model == "ebt":
        objective, tokenizer = load_text_ebt(args.checkpoint or defaults.TEXT_EBT)
        thinking = Thinking(num_steps=args.steps, n_candidates=args.best_of)
        result = generate_ebt(objective, tokenizer, args.prompt, sampling, thinking)
    else:
        objective, tokenizer = load_transformer(args.checkpoint or defaults.TEXT_TRANSFORMER)
        result = generate_transformer(objective, tokenizer, args.prompt, sampling)
    print(result.prompt + result.text)
    if args.energies and result.energies is not None:
        print("\ntoken\tenergy")
        for piece, energy in zip(result.pieces, result.energies, strict=True):
            print(f"{piece!r}\t{energy:.4f}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from ..app.demo import launch

    return launch(args)
