"""The options of every command, with their help and defaults: one small function per command, built from option
groups that several commands share (config and overrides, run folders, the held-out evaluation, reports)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..core import defaults
from . import commands

DESCRIPTION = """\
Energy-Based Transformers: train, evaluate, compare and use them for image denoising, next-frame video prediction
and text, against diffusers DiT and transformer baselines.

Every command takes --help. Shipped checkpoints and configs are found from any directory. Commands that measure
write their report (Markdown + JSON + PNG) to a run folder under runs/ unless --out says otherwise; the committed
reports under reports/ are rewritten only when asked (--out reports)."""
SIGMAS = list(defaults.SIGMAS)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; an option's default follows its help once, and only when it says
    something (``default_text``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        shown = default_text(action)
        return help if shown is None else f"{help} (default: {shown.replace('%', '%%')})"


def default_text(action: argparse.Action) -> str | None:
    """An option's default as ``--help`` shows it, or None where showing it would say nothing or repeat the help:
    positionals, required options, flags (store_true and the like), empty defaults, and help that names its own
    default. Lists read as on the command line (``15 25 50``), not as Python lists."""
    default = action.default
    if (
        not action.option_strings
        or action.required
        or action.nargs == 0
        or default is None
        or default is argparse.SUPPRESS
        or default in ("", [], ())
        or "default" in (action.help or "")
    ):
        return None
    if isinstance(default, (list, tuple)):
        return " ".join(_plain(value) for value in default)
    return _plain(default)


def _plain(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


Options = Callable[[argparse.ArgumentParser], None]
COMMANDS: list[tuple[str, Callable, str, str, Options]] = []  # in the order ``ebt-vision --help`` lists them


def command(name: str, func: Callable, summary: str, description: str) -> Callable[[Options], Options]:
    """Registers the function that adds a command's options: ``name`` runs ``func`` (``commands``); ``summary`` is its
    line in ``ebt-vision --help``, ``description`` (its line breaks kept) follows it in ``ebt-vision NAME --help``."""

    def register(options: Options) -> Options:
        COMMANDS.append((name, func, summary, description, options))
        return options

    return register


# ---- option groups


def threads_option(p: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    """``--threads N``: PyTorch's CPU threads for the command (``torch.set_num_threads``, applied by ``main``)."""
    p.add_argument("--threads", type=positive_int, default=default, metavar="N", help=help or (
        "PyTorch CPU threads (default: one per core). On a busy machine fewer is faster: a 2-core box shared with "
        "another job ran Quick-start steps 4-6x faster with --threads 1"))  # fmt: skip


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _set_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``: several overrides after one --set, and --set repeatable."""
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help)


def _runtime(p: argparse.ArgumentParser, device: bool = True) -> None:
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(p: argparse.ArgumentParser, default: str | None, help: str, override: str = "config overrides"):
    p.add_argument("--config", default=default, help=help)
    _set_option(p, f"{override}, e.g. --set train.steps=100 data.batch_size=16 (--set repeatable)")


def _experiment(p: argparse.ArgumentParser, config: str, what: str, runs: str, load: bool = False) -> None:
    """A command that trains (or reuses) models under a run folder: --config (``config``, ``what`` it is) and --set,
    --runs (``runs``: its help), and with ``load`` --load."""
    _config(p, config, what)
    p.add_argument("--runs", help=runs)
    if load:
        p.add_argument("--load", action="store_true", help="evaluate the finished runs without training")


def _report(p: argparse.ArgumentParser, stem: str, out: str | None = None, help: str = "report file name stem"):
    p.add_argument("--out", default=out, help="report folder" if out else "report folder (default: the --runs folder)")
    p.add_argument("--stem", default=stem, help=help)


def _held_out(p: argparse.ArgumentParser, limit: str, seed: str | None = "noise seed", eval_size: bool = False):
    if eval_size:
        p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    p.add_argument("--limit", type=int, help=limit)
    if seed:
        p.add_argument("--seed", type=int, default=0, help=seed)


def _sigmas(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="noise sigmas on the 0-255 scale")


def _image_ebt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=defaults.IMAGE_EBT, help="EBT model folder or .safetensors file")


# ---- commands


@command(
    "train",
    commands.train,
    "Train an EBT (image, video or text, by the config's task) or a baseline",
    "Writes runs/<name>/: config, metrics.csv, loss.png, resumable checkpoints, and the final model\n"
    "(model.safetensors + config.json: the folder loads with --checkpoint or from_pretrained).",
)
def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/; its task: image, video or text); default: image")
    p.add_argument(
        "--model",
        choices=["ebt", "dit", "transformer"],
        default="ebt",
        help="ebt, or a baseline of the same size: dit (image, video), transformer (image: the EBT's trunk "
        "predicting directly; video, text)",
    )
    _set_option(p, "config overrides, e.g. --set train.steps=100 data.batch_size=16 (--set repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint (same config)")
    p.add_argument("--overwrite", action="store_true", help="move a model or run already in the run folder to "
                   "<folder>.backup-<date>-<time> first, then train afresh")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command(
    "prepare-text",
    commands.prepare_text,
    "Tokenise a text corpus once into memory-mapped token files for training",
    "Writes OUT/train.bin, validation.bin, test.bin (uint16, or uint32 for vocabularies over 65,536),\n"
    "the tokenizer and corpus.json. Training with data.corpus=OUT reads windows through a memory map,\n"
    "so a corpus far larger than memory works. CORPUS: sotu, folders of .txt/.jsonl files, or such files.",
)
def _prepare_text(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", nargs="+", help="sotu, or .txt/.jsonl files and folders of them (one document per .txt "
                   "file or per JSON line's 'text')")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--tokenizer", choices=["bpe", "gpt2"], default="bpe", help="bpe: trained on the training split")
    p.add_argument("--vocab-size", type=int, default=4096, help="the trained BPE's vocabulary")
    p.add_argument("--tokenizer-from", default="", help="a folder with a tokenizer.json to use instead of training")
    p.add_argument("--tokenizer-sample-mb", type=float, default=200.0, help="train the BPE on this many MB")


@command(
    "denoise",
    commands.denoise,
    "Denoise your own images with the shipped (or any) EBT or DiT",
    "Inputs: image files or folders (PNG, JPEG, TIFF, WebP, BMP, PPM/PGM; 8 or 16 bit; grey, RGB,\n"
    f"CMYK, with or without alpha; at most {defaults.MAX_FILE_PIXELS // 10**6} megapixels, what denoise holds in "
    f"{defaults.DENOISE_MEMORY_GIB} GiB).\n"
    "Results: OUT/<input name>.ebt.png (or .dit.png; .tif for TIFF inputs), 16-bit for 16-bit inputs,\n"
    "grey stays grey, alpha is kept. Inputs are never overwritten; earlier results are kept (--overwrite\n"
    "redoes them). A file that cannot be denoised is named and skipped: exit code 1 after the others.",
)
def _denoise(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", choices=["ebt", "dit"], default="ebt", help="which model family")
    p.add_argument("--checkpoint", help=f"model folder or .safetensors (default: {defaults.IMAGE_EBT} or "
                   f"{defaults.IMAGE_DIT})")  # fmt: skip
    p.add_argument("--steps", type=int, help="EBT descent steps (default: set by the estimated noise through the "
                   "checkpoint's step schedule, else as trained) or DiT DDIM steps (default 2)")  # fmt: skip
    p.add_argument("--best-of", type=int, default=1, help="EBT: N descents, keep the lowest final energy")
    p.add_argument("--sigma", type=float, help="noise sigma (0-255) for a sigma-conditioned EBT or the DiT; "
                   "default: estimated from the image (the blind EBT needs none)")  # fmt: skip
    p.add_argument("--views", type=int, choices=defaults.MIRROR_VIEWS, default=1, help="average the model over "
                   "this many mirror images of the photo (flips and transposes; that many times the time and 1/N of "
                   "the pixel limit)")  # fmt: skip
    p.add_argument("--save-steps", action="store_true", help="EBT: also write every intermediate step")
    p.add_argument("--save-energy-map", action="store_true", help="EBT: also write the per-patch energy map")
    p.add_argument("--overwrite", action="store_true", help="redo earlier results (never replace an input)")
    _runtime(p)


@command(
    "predict",
    commands.predict,
    "Predict the next frames of your own clip with a video EBT",
    "CLIP: a video file decord reads (.mp4, .avi, .mov, .mpg, .mkv, .webm, ...) or a folder of numbered\n"
    "frames, any length and size. The model reads the clip's last frames (its context, at its stride), each\n"
    "resized so the shorter side is its frame size and centre-cropped; then predicts --frames frames.\n"
    "Writes OUT/predicted_NNN.png, OUT/prediction.gif and OUT/prediction.mp4 (context + prediction beside\n"
    "the per-patch energy map) and OUT/summary.json. An earlier prediction in OUT is kept unless --overwrite.",
)
def _predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("clip", help="video file or folder of numbered frames")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--checkpoint", help=f"video EBT folder or .safetensors (default: {defaults.VIDEO_REAL_EBT} when "
                   f"shipped, else {defaults.VIDEO_EBT})")  # fmt: skip
    p.add_argument("--frames", type=int, help="frames to predict (default: the model's trained horizon)")
    p.add_argument("--steps", type=int, help="descent steps per frame (default: the count chosen on validation clips "
                   "when the model folder records one in chosen_steps.json, else as trained)")  # fmt: skip
    p.add_argument("--best-of", type=int, default=1, help="N descents per frame, the lowest energy wins")
    p.add_argument("--seed", type=int, default=0, help="best-of-N seed")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction in the output folder")
    _runtime(p)


@command(
    "eval",
    commands.evaluate,
    "PSNR/SSIM of a checkpoint on held-out photos vs the noisy input and CBM3D",
    "Full-resolution held-out photos, the EBT after every descent step.",
)
def _eval(p: argparse.ArgumentParser) -> None:
    _image_ebt(p)
    _sigmas(p)
    p.add_argument("--steps", type=int, default=4, help="descent steps (PSNR is reported after each)")
    p.add_argument("--max-side", type=int, help="downscale the photos to this longest side (default: full size)")
    p.add_argument(
        "--split",
        choices=["both", "test", "validation"],
        default="both",
        help="held-out split(s); with both, step counts are chosen on validation and quoted on test",
    )
    p.add_argument("--dit-checkpoint", default="", help="also the DiT baseline (blind, estimated sigma), e.g. "
                   f"{defaults.IMAGE_DIT}")  # fmt: skip
    p.add_argument("--dit-steps", type=int, nargs="+", default=[1, 2, 5, 10], help="the DiT's DDIM step counts")
    p.add_argument("--transformer-checkpoint", default="", help="also the plain transformer: the EBT's trunk "
                   "predicting the clean photo in one pass (ebt-vision train --model transformer)")  # fmt: skip
    p.add_argument(
        "--no-schedule",
        action="store_true",
        help="leave out the 'auto steps' row of the checkpoint's step schedule (ebt-vision calibrate)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        choices=(1, 2, 4),
        default=2,
        help="tiles covering each pixel along each side, for every model alike (4: 4x the FLOPs of 2 per pass)",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=defaults.MIRROR_VIEWS,
        default=1,
        help="average every model's passes over this many mirror images of the photo (flips, transposes; that many "
        "times the FLOPs)",
    )
    p.add_argument("--limit", type=int, help="only the first N photos")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D (slow on big photos)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    _report(p, "denoise_eval", out="runs/eval")
    _runtime(p)


def _compare_options(p: argparse.ArgumentParser, config: str, dit_steps: list[int], ebt_steps: int) -> None:
    _experiment(
        p,
        config,
        "one config for all the models (see configs/)",
        "folder of the trained models ebt/, ebt-cond/, dit/, dit-compute/ (and ebt-warm-trunk/, ebt-warm/ with "
        "--warm-config; default: runs/<config name>)",
    )
    p.add_argument("--load", action="store_true", help="evaluate the finished runs in --runs without training")
    p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    _sigmas(p)
    p.add_argument("--ebt-steps", type=int, default=ebt_steps, help="most EBT descent steps (PSNR after each)")
    p.add_argument("--dit-steps", type=int, nargs="+", default=dit_steps, help="DDIM step counts; 0 = all")
    p.add_argument("--best-of", type=int, nargs="+", default=[2, 4], help="N values of the EBT's best-of-N")
    p.add_argument("--no-bm3d", action="store_true", help="skip CBM3D")
    p.add_argument("--no-paper", action="store_true", help="skip the diffusion-level (original protocol) table")
    p.add_argument("--warm-config", default="none",
                   help="also train the warm EBT (runs ebt-warm-trunk/, ebt-warm/) at the blind EBT's training FLOPs: "
                   "its trunk as a plain one-pass denoiser, then this config's EBT stage started from it (e.g. "
                   "configs/cpu-small-warm.yaml, the shipped recipe); 'none' (default): not")  # fmt: skip
    _held_out(p, "only the first N photos of each held-out split")
    _report(p, "denoise_compare")
    _runtime(p)


@command(
    "compare",
    commands.compare,
    "EBT (blind, sigma-conditioned) vs the diffusers DiT: same data and budget",
    "Trains four models on one crop stream (blind EBT, sigma-conditioned EBT, a step-matched and a\n"
    "compute-matched DiT), chooses every method's settings on the validation photos and reports them\n"
    "on the test photos.",
)
def _compare(p: argparse.ArgumentParser) -> None:
    _compare_options(p, "configs/compare-cpu.yaml", [1, 2, 5, 10, 25, 50, 100, 0], 8)
    p.set_defaults(summary=False)


@command(
    "paper",
    commands.paper,
    "The original work's denoising protocol: trained at diffusion level 0.1, tested at 0.1 and 0.2",
    "Trains four EBTs (energy of the candidate alone or with the noisy image; 1 or 2-3 training steps)\n"
    "and the diffusers DiT on one crop stream, chooses settings on validation, reports on test\n"
    "(PSNR, SSIM, passes, FLOPs per image) with the original's numbers beside ours.",
)
def _paper(p: argparse.ArgumentParser) -> None:
    _experiment(p, "configs/paper-cpu.yaml", "the protocol's base config", "folder of the trained models (default "
                "runs/<config name>)")  # fmt: skip
    p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    p.add_argument("--ebt-steps", type=int, default=4, help="most EBT descent steps (PSNR after each)")
    p.add_argument("--dit-passes", type=int, nargs="+", default=[1, 2, 5, 10, 25, 50, 0],
                   help="DDIM pass counts from the level's own t; 0 = all t + 1")  # fmt: skip
    p.add_argument("--reruns", type=int, default=3, help="the all-pass DiT run on its own output this many times")
    _held_out(p, "only the first N photos of each held-out split")
    _report(p, "denoise_paper")
    _runtime(p)


@command(
    "adaptive",
    commands.adaptive,
    "Adaptive per-patch compute vs uniform descent at equal patch-steps",
    "Patches whose energy has stopped falling stop descending while the others go on; the tolerance is\n"
    "chosen on the validation photos and the PSNR at equal total patch-steps reported on the test photos.",
)
def _adaptive(p: argparse.ArgumentParser) -> None:
    _image_ebt(p)
    _sigmas(p)
    p.add_argument("--max-steps", type=int, default=16, help="most descent steps per patch")
    p.add_argument("--max-side", type=int, default=128, help="photos downscaled to this longest side")
    _held_out(p, "only the first N photos of each split", seed=None)
    _report(p, "adaptive", out="runs/adaptive")
    _runtime(p)


@command(
    "calibrate",
    commands.calibrate,
    "Fit a blind EBT's step schedule: descent steps and step scale per estimated noise level",
    "On full-resolution crops of the validation photos, at a grid of noise levels, finds the step count and\n"
    "step-size scale (or re-anchored passes) with the best PSNR and files it under the sigma estimated from the\n"
    "noisy crops. Saved as step_schedule.json beside the weights: denoise, eval and the app then let the\n"
    "estimated noise set the steps.",
)
def _calibrate(p: argparse.ArgumentParser) -> None:
    _image_ebt(p)
    p.add_argument("--crop", type=int, default=96, help="calibration crop side (full-resolution pixels)")
    p.add_argument("--per-photo", type=int, default=2, help="crops per validation photo")
    p.add_argument("--max-steps", type=int, default=8, help="most descent steps tried")
    p.add_argument(
        "--passes",
        type=int,
        default=3,
        help="most re-anchored passes tried (each pass's estimate is the next one's noisy image; 1: none)",
    )
    p.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=list(defaults.CALIBRATION_SIGMAS),
        help="the calibration noise levels (0-255); a photo takes the setting of the nearest estimated level",
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=list(defaults.CALIBRATION_SCALES),
        help="the step-size scales tried with one pass (times the learned step size; each > 0)",
    )
    p.add_argument("--views", type=int, choices=defaults.MIRROR_VIEWS, default=1, help="average every descent over "
                   "this many mirror images of the crop (report only, with --no-save: denoise and eval take the "
                   "one-view schedule at every view count)")  # fmt: skip
    p.add_argument("--no-save", action="store_true", help="report only; do not write step_schedule.json")
    _report(p, "step_schedule", out="runs/calibrate")
    _runtime(p)


@command(
    "generate",
    commands.generate,
    "Continue a prompt with the shipped text EBT (or the Transformer++ baseline)",
    "Prints the continuation; with --energies each EBT token with its energy (its uncertainty).\n"
    "Greedy at temperature 0, sampled otherwise; the seed makes both reproducible.",
)
def _generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the text to continue (UTF-8, at most 4,000 characters)")
    p.add_argument("--model", choices=["ebt", "transformer"], default="ebt", help="which model family")
    p.add_argument("--checkpoint", help=f"model folder with its tokenizer.json (default: {defaults.TEXT_EBT} or "
                   f"{defaults.TEXT_TRANSFORMER})")  # fmt: skip
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (1-512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling and best-of-N seed")
    p.add_argument("--steps", type=int, help="EBT descent steps per token (default: as trained)")
    p.add_argument("--best-of", type=int, default=1, help="EBT: N descents per token, the lowest energy wins")
    p.add_argument("--energies", action="store_true", help="EBT: also print every token with its energy")


@command(
    "quickstart",
    commands.compare,
    "The main job: the EBT vs DiT comparison at toy scale (about 10 minutes on a 2-core CPU)",
    "configs/quickstart.yaml: four ~0.16M-parameter models (blind EBT, sigma-conditioned EBT, the DiT for\n"
    "the same 800 steps and the DiT for the blind EBT's training FLOPs); DDIM up to 25 steps, 4 EBT steps,\n"
    "no diffusion-level table. Prints the comparison table.",
)
def _quickstart(p: argparse.ArgumentParser) -> None:
    _compare_options(p, "configs/quickstart.yaml", [1, 2, 5, 10, 25], 4)
    p.set_defaults(summary=True, no_paper=True)


@command(
    "ablate",
    commands.ablate,
    "Blind-EBT training variants (step size, steps, loss, Langevin) vs the DiT",
    "Every variant trains on the same crops; step counts are chosen on validation, reported on test.",
)
def _ablate(p: argparse.ArgumentParser) -> None:
    _config(p, "configs/quickstart.yaml", "the base config", override="override of the base config")
    p.add_argument("--variants", nargs="+", help="variant names (default: all; see experiments/image/ablation.py)")
    p.add_argument("--max-steps", type=int, default=16, help="test-time descent steps (PSNR after each)")
    p.add_argument("--best-of", type=int, default=4, help="N of best-of-N at the validation-chosen step count")
    p.add_argument("--runs", default="runs/ablation", help="folder of the trained variants")
    p.add_argument("--eval-size", type=int, default=64, help="held-out photos resized and centre-cropped to this")
    _sigmas(p)
    _held_out(p, "only the first N photos of each split")
    _report(p, "ablation")
    p.add_argument(
        "--equal-flops",
        action="store_true",
        help="train every variant for the base config's training FLOPs (not the same step count)",
    )
    _runtime(p, device=False)


@command(
    "bench",
    commands.bench,
    "Training-step time and memory: EBT (K descent steps) vs a plain transformer",
    "Every case runs in a fresh process; FLOPs are counted in every pass.",
)
def _bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets", nargs="+", default=["EBT-S/4"], help="model sizes (see image/config.py PRESETS)")
    p.add_argument("--image-sizes", type=int, nargs="+", default=[32], help="square image sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[32], help="batch sizes")
    p.add_argument("--descent-steps", type=int, nargs="+", default=[1, 2, 4], help="EBT descent steps K")
    p.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per case (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--variants", nargs="+", default=["naive", "fast", "checkpoint", "truncated"],
                   choices=["naive", "fast", "checkpoint", "truncated", "compiled"],
                   help="EBT training paths to time (compiled takes minutes to compile on a CPU)")  # fmt: skip
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"], help="what to time")
    _report(p, "bench", out="runs/bench")


@command(
    "bench-data",
    commands.bench_data,
    "The streaming data loaders: throughput, memory, data wait and resume on generated data",
    "Generates (once, under --tmp) 20,000 COCO-sized JPEGs and their tar shards, 20,000 clips and a 1 GB\n"
    "token file; measures samples/s with 0/1/2 workers, the training process's memory at 1,000 vs 20,000\n"
    "files, the data-wait fraction of Quick-start-sized training runs and kill -9 resume (bitwise).",
)
def _bench_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tmp", default="/tmp/ebt-bench-data", help="where the generated data and runs go")
    p.add_argument("--photos", type=int, default=20_000, help="generated photos")
    p.add_argument("--clips", type=int, default=20_000, help="clip entries")
    p.add_argument("--repeats", type=int, default=3, help="throughput measurements per case (median reported)")
    p.add_argument("--image-steps", type=int, default=150, help="steps of each photo data-wait training run")
    _report(p, "data", out="runs/bench-data")


@command(
    "video",
    commands.video,
    "Next-frame video prediction: EBT vs plain transformer, DiT and copy-last",
    "Trains every contender on the same clips for the same budget (configs/video-*.yaml: Moving MNIST or\n"
    "real footage), chooses settings on validation clips, reports per-horizon metrics on test clips.",
)
def _video(p: argparse.ArgumentParser) -> None:
    _experiment(p, "configs/video-mmnist-cpu.yaml", "video config (task: video)", "folder of the trained contenders "
                "(default runs/<config name>)", load=True)  # fmt: skip
    p.add_argument("--ebt-steps", type=int, default=8, help="most EBT descent steps per predicted frame")
    p.add_argument("--dit-steps", type=int, nargs="+", default=[1, 2, 5, 10], help="DDIM step counts of the DiT")
    p.add_argument("--best-of", type=int, nargs="+", default=[2, 4], help="N values of the EBT's best-of-N")
    p.add_argument(
        "--no-compute-matched", action="store_true", help="skip the transformer and the DiT trained for the EBT's FLOPs"
    )
    p.add_argument("--strips", type=int, default=3, help="test clips written as GIF strips")
    _held_out(p, "only the first N clips of each split", seed="evaluation seed")
    _report(p, "", help="report stem (default video_mmnist or video_real)")
    _runtime(p)


@command(
    "text",
    commands.text,
    "Text: an autoregressive EBT vs a same-size Transformer++ on the same tokens",
    "Trains both (configs/text-cpu.yaml), measures perplexity in distribution (held-out State of the\n"
    "Union years) and out of it (Shakespeare, the World English Bible) as descent steps grow.",
)
def _text(p: argparse.ArgumentParser) -> None:
    _experiment(p, "configs/text-cpu.yaml", "text config (task: text)", "folder of the trained models (default "
                "runs/<config name>)", load=True)  # fmt: skip
    p.add_argument("--windows", type=int, default=64, help="evaluation windows per corpus and split")
    p.add_argument("--models", nargs=2, metavar=("EBT", "TRANSFORMER"), help="with --load: the two model folders "
                   "to evaluate instead of <runs>/ebt and <runs>/transformer (the shipped ones: "
                   "checkpoints/text-sotu-s checkpoints/text-sotu-s-transformer)")  # fmt: skip
    _report(p, "text")
    _runtime(p)


@command(
    "probe",
    commands.probe,
    "Linear probing of frozen EBT and DiT features (offline on Fashion-MNIST)",
    "Pre-trains both backbones by denoising (resumable), caches features, sweeps layers and noise levels\n"
    "on a validation split, reports top-1/top-5 (full and 10/100-shot) on the test set.",
)
def _probe(p: argparse.ArgumentParser) -> None:
    _experiment(p, "configs/probe-cpu.yaml", "pre-training config of both backbones", "folder of the pre-trained "
                "backbones and cached features (default runs/<name>)")  # fmt: skip
    p.add_argument("--data", help="an ImageFolder tree (train/ and val/ of class sub-folders, e.g. ImageNet) "
                   "instead of Fashion-MNIST; the backbones pre-train on its train/ images")  # fmt: skip
    p.add_argument("--probe-steps", type=int, default=2000, help="optimiser steps of every linear probe")
    p.add_argument("--dit-steps", type=int, nargs="+", default=(), metavar="N",
                   help="the DiT's pre-training steps, one DiT per count (rows dit-N; default: the config's "
                   "train.steps), e.g. a DiT given the EBT's training FLOPs")  # fmt: skip
    p.add_argument("--warm-config", default="configs/cpu-small-warm.yaml",
                   help="the EBT is pre-trained as the shipped denoiser is: its trunk as a plain denoiser with "
                   "--config, then this config's EBT stage started from it (the probe's images and channels); "
                   "'none': the EBT is sigma-conditioned and pre-trained with --config alone")  # fmt: skip
    _held_out(p, "only the first N training images (a quick look)", seed=None)
    _report(p, "probe")
    _runtime(p, device=False)


@command(
    "demo",
    commands.demo,
    "The Gradio app: watch the model think (ebt_vision/app)",
    "Serves on http://HOST:PORT; offline, from the shipped checkpoints unless told otherwise.",
)
def _demo(p: argparse.ArgumentParser) -> None:
    from ..app.demo import add_arguments

    add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; every command also takes ``--threads`` (the app its own, default 1)."""
    parser = argparse.ArgumentParser(prog="ebt-vision", description=DESCRIPTION, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, summary, description, options in COMMANDS:
        p = sub.add_parser(name, help=summary, description=f"{summary}.\n\n{description}", formatter_class=_Formatter)
        p.set_defaults(func=func)
        options(p)
        if "--threads" not in p._option_string_actions:
            threads_option(p)
    return parser
