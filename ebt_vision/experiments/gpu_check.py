"""The lent-GPU check of the landscape and video issues in one timed run of under 10 minutes on one H100/H200.

A lent GPU comes as one short slot, so this driver plans every training from throughput it measures there:

1. **Image (configs/gpu-image.yaml, EBT-M/2).** A 10-second probe run measures the EBT's training steps per second;
   the EBT then trains for the steps that fill its slot (so its learning-rate schedule ends where the slot does),
   fine-tunes on long randomised descents like the shipped EBT's second stage, and the diffusers DiT and the plain
   transformer of the same size train for the same number of steps on the same crops. The EBT's step schedule is
   calibrated on the validation photos, and ``ebt-vision eval`` measures all three on the full-resolution held-out
   photos (DDIM step counts and EBT steps chosen on validation, quoted on test).
2. **Video (configs/gpu-video-mmnist.yaml).** A probe run measures the video EBT's throughput;
   ``ebt-vision video`` then trains the EBT, the transformer and the DiT for the steps that fill the EBT's slot (early
   stopping on the validation clips) and reports them on the test clips against copy-last.

Every stage is a separate ``python -m ebt_vision`` process with its own time limit, so a stage that fails or runs
over leaves the others standing; ``gpu_check.json``/``.md`` record each stage's command, outcome and wall-clock, the
card and the library versions. Results are packed into at most 8 files under ``--out`` (the lent machine's limit):
each model folder (weights, config, step schedule, curves) and each report folder as a tar file, plus the logs.

    python -m ebt_vision.experiments.gpu_check --out "$OUT" --budget 540       # on the lent GPU
    python -m ebt_vision.experiments.gpu_check --out /tmp/gpu --tiny --budget 400  # the same stages on a CPU, tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.reports import markdown_table

IMAGE_CONFIG = "configs/gpu-image.yaml"
VIDEO_CONFIG = "configs/gpu-video-mmnist.yaml"
# The EBT's second stage: configs/cpu-small-long.yaml's settings (long randomised descents, graph through the last
# two steps, the objective through the descent) on top of the first stage's weights.
STAGE_TWO = [
    "descent.num_steps=8",
    "descent.min_steps=1",
    "descent.graph_steps=2",
    "optim.lr=1.5e-4",
    "optim.warmup_steps=50",
    "train.objective=unrolled",
    "train.equilibrium_visited=0",
    "train.seed=1",
]
# Shares of the budget (seconds of training per slot, as fractions of --budget).
SHARES = {
    "probe": 0.018,
    "ebt": 0.15,
    "ebt_long": 0.045,
    "dit": 0.085,
    "transformer": 0.05,
    "image_end": 0.66,
    "video_probe": 0.015,
    "video_ebt": 0.07,
}
# Tiny sizes for a CPU rehearsal: the same stages and files, on settings that run in a few minutes on two cores.
TINY_IMAGE = ["preset=EBT-T/4", "data.batch_size=4", "data.crop_size=16", "optim.warmup_steps=2"]
TINY_EVAL = ["--max-side", "48", "--limit", "1", "--sigmas", "25", "75", "--steps", "2", "--dit-steps", "1", "2"]
TINY_CALIBRATE = ["--crop", "32", "--per-photo", "1", "--max-steps", "2"]
TINY_VIDEO = [
    "model.width=32",
    "model.depth=1",
    "model.heads=2",
    "model.patch_size=16",
    "data.batch_size=2",
    "data.validation_clips=4",
    "data.test_clips=4",
    "optim.warmup_steps=2",
]
TINY_VIDEO_EVAL = ["--limit", "4", "--ebt-steps", "2", "--dit-steps", "1", "--best-of", "2", "--strips", "1"]
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "config.yaml",
    "step_schedule.json",
    "chosen_steps.json",
    "metrics.csv",
    "validation.csv",
)


@dataclass
class Stage:
    name: str
    command: list[str]
    timeout: float
    status: str = "not run"  # ok | failed (exit N) | timed out | skipped: why
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)


def measured_rate(run_dir: Path) -> float:
    """Training steps per second of a run, from its metrics.csv (the first logged interval, which holds start-up
    costs, left out when there are two or more rows)."""
    path = run_dir / "metrics.csv"
    try:
        rows = list(csv.DictReader(path.open()))
    except OSError as error:
        raise UserError(f"{path}: no training log to measure throughput from ({error})") from None
    points = [(float(r["step"]), float(r["seconds"])) for r in rows if r.get("step") and r.get("seconds")]
    if not points or points[-1][1] <= 0:
        raise UserError(f"{path} has no logged steps with their seconds")
    if len(points) >= 2 and points[-1][1] > points[0][1]:
        (s0, t0), (s1, t1) = points[0], points[-1]
        return (s1 - s0) / (t1 - t0)
    return points[-1][0] / points[-1][1]


def planned_steps(rate: float, seconds: float, floor: int = 20) -> int:
    """The steps that fill ``seconds`` of training at ``rate`` steps/s, with a 10% margin, at least ``floor``."""
    if rate <= 0 or seconds <= 0:
        raise UserError(f"cannot plan steps from rate {rate} steps/s and {seconds} s")
    return max(floor, int(rate * seconds * 0.9))


def trained_steps(run_dir: Path) -> int:
    """The step a finished run reached: the last row of its metrics.csv (the loop logs the step it stops at)."""
    path = run_dir / "metrics.csv"
    try:
        rows = [r for r in csv.DictReader(path.open()) if r.get("step")]
    except OSError as error:
        raise UserError(f"{path}: no training log ({error})") from None
    if not rows:
        raise UserError(f"{path} has no logged steps")
    return int(float(rows[-1]["step"]))


class Runner:
    def __init__(self, work: Path, budget: float, quiet: bool = True) -> None:
        self.work, self.budget, self.quiet = work, budget, quiet
        self.started = time.perf_counter()
        self.stages: list[Stage] = []
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def run(self, name: str, args: list[str], timeout: float) -> Stage:
        """``python -m ebt_vision ARGS`` with its output in logs/NAME.log, killed after ``timeout`` seconds."""
        command = [sys.executable, "-m", "ebt_vision", *args, *(["--quiet"] if self.quiet else [])]
        timeout = min(timeout, self.left())
        stage = Stage(name, command, round(timeout, 1))
        self.stages.append(stage)
        if timeout < 5:
            stage.status = "skipped: the budget is spent"
            return stage
        started = time.perf_counter()
        print(f"[{self.elapsed():6.1f} s] {name}: {shlex.join(args)} (limit {timeout:.0f} s)", flush=True)
        with (self.work / "logs" / f"{name}.log").open("w") as log:
            try:
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
                stage.status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                stage.status = "timed out"
        stage.seconds = round(time.perf_counter() - started, 1)
        print(f"[{self.elapsed():6.1f} s] {name}: {stage.status} in {stage.seconds} s", flush=True)
        return stage

    def skip(self, name: str, why: str) -> None:
        self.stages.append(Stage(name, [], 0, f"skipped: {why}"))


def _sets(values: list[str]) -> list[str]:
    return ["--set", *values] if values else []


def image_part(r: Runner, tiny: bool) -> dict:
    """Probe, EBT (two stages), DiT, transformer, calibration and evaluation; -> what was planned and measured."""
    w, b, extra = r.work, r.budget, TINY_IMAGE if tiny else []
    out: dict = {}
    probe = r.run(
        "image_probe",
        [
            "train",
            "--config",
            IMAGE_CONFIG,
            "--out",
            str(w / "image_probe"),
            *_sets(
                [
                    *extra,
                    f"train.max_seconds={SHARES['probe'] * b:g}",
                    "train.steps=1000000",
                    "train.checkpoint_every=1000000",
                    "train.log_every=5",
                ]
            ),
        ],
        120,
    )
    if probe.status != "ok":
        return out
    rate = measured_rate(w / "image_probe")
    steps = planned_steps(rate, SHARES["ebt"] * b)
    # a sixth of the first stage's steps, as the shipped EBT's stages; fewer if its slot (at a guessed 1.7x the cost
    # of a first-stage step: longer descents) would not hold them
    long_steps = max(10, min(steps // 6, int(rate / 1.7 * SHARES["ebt_long"] * b)))
    out.update(probe_steps_per_s=round(rate, 2), ebt_steps=steps, ebt_long_steps=long_steps)
    every = max(10, steps // 4)
    ebt1 = r.run(
        "ebt",
        [
            "train",
            "--config",
            IMAGE_CONFIG,
            "--out",
            str(w / "ebt1"),
            *_sets(
                [
                    *extra,
                    f"train.steps={steps}",
                    f"train.checkpoint_every={every}",
                    f"train.max_seconds={1.3 * SHARES['ebt'] * b:g}",
                ]
            ),
        ],
        1.6 * SHARES["ebt"] * b + 60,
    )
    if ebt1.status != "ok":
        return out
    first = trained_steps(w / "ebt1")
    ebt = r.run(
        "ebt_long",
        [
            "train",
            "--config",
            IMAGE_CONFIG,
            "--out",
            str(w / "ebt"),
            *_sets(
                [
                    *extra,
                    *STAGE_TWO,
                    f"train.init_from={w / 'ebt1'}",
                    f"train.steps={long_steps}",
                    f"train.checkpoint_every={long_steps}",
                    f"train.max_seconds={SHARES['ebt_long'] * b:g}",
                ]
            ),
        ],
        SHARES["ebt_long"] * b + 60,
    )
    ebt_dir = w / "ebt" if ebt.status == "ok" else w / "ebt1"
    total = first + (trained_steps(w / "ebt") if ebt.status == "ok" else 0)
    out["ebt_total_steps"] = total
    for model in ("dit", "transformer"):
        r.run(
            model,
            [
                "train",
                "--config",
                IMAGE_CONFIG,
                "--model",
                model,
                "--out",
                str(w / model),
                *_sets(
                    [
                        *extra,
                        f"name=ebt-image-gpu-{model}",
                        f"train.steps={total}",
                        f"train.checkpoint_every={max(10, total // 4)}",
                        f"train.max_seconds={SHARES[model] * b:g}",
                    ]
                ),
            ],
            SHARES[model] * b + 60,
        )
        if (w / model / "config.json").is_file():
            out[f"{model}_steps"] = trained_steps(w / model)
    r.run(
        "calibrate",
        [
            "calibrate",
            "--checkpoint",
            str(ebt_dir),
            "--out",
            str(w / "image_report"),
            *(TINY_CALIBRATE if tiny else []),
        ],
        60,
    )
    baselines = []
    for model, flag in (("dit", "--dit-checkpoint"), ("transformer", "--transformer-checkpoint")):
        if (w / model / "model.safetensors").is_file():
            baselines += [flag, str(w / model)]
    eval_time = max(60.0, SHARES["image_end"] * b - r.elapsed())
    r.run(
        "eval",
        [
            "eval",
            "--checkpoint",
            str(ebt_dir),
            *baselines,
            "--no-bm3d",
            "--split",
            "both",
            *(TINY_EVAL if tiny else ["--steps", "4", "--dit-steps", "1", "2", "5"]),
            "--out",
            str(w / "image_report"),
            "--stem",
            "denoise_gpu",
        ],
        eval_time,
    )
    out["ebt_dir"] = ebt_dir.name
    return out


def video_part(r: Runner, tiny: bool) -> dict:
    """Probe the video EBT's throughput, then ``ebt-vision video`` for the steps that fill the EBT's slot."""
    w, b, extra = r.work, r.budget, TINY_VIDEO if tiny else []
    out: dict = {}
    probe = r.run(
        "video_probe",
        [
            "train",
            "--config",
            VIDEO_CONFIG,
            "--out",
            str(w / "video_probe"),
            *_sets(
                [
                    *extra,
                    f"train.max_seconds={SHARES['video_probe'] * b:g}",
                    "train.steps=1000000",
                    "train.checkpoint_every=1000000",
                    "train.early_stopping=0",
                    "train.log_every=5",
                ]
            ),
        ],
        120,
    )
    if probe.status != "ok":
        return out
    rate = measured_rate(w / "video_probe")
    steps = planned_steps(rate, SHARES["video_ebt"] * b)
    out.update(probe_steps_per_s=round(rate, 2), steps=steps)
    r.run(
        "video",
        [
            "video",
            "--config",
            VIDEO_CONFIG,
            "--runs",
            str(w / "video"),
            "--out",
            str(w / "video_report"),
            "--stem",
            "video_mmnist_gpu",
            "--no-compute-matched",
            *(TINY_VIDEO_EVAL if tiny else []),
            *_sets(
                [
                    *extra,
                    f"train.steps={steps}",
                    f"train.checkpoint_every={max(5, steps // 12)}",
                    f"train.max_seconds={1.5 * SHARES['video_ebt'] * b:g}",
                ]
            ),
        ],
        r.left() - 15,
    )
    return out


def environment() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            card=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda_version=torch.version.cuda
        )
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        info["nvidia_smi"] = f"unavailable: {error}"
    for name in ("diffusers", "timm", "numpy", "skimage", "pywt"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001 - recorded, not fatal: the stage that needs it will say so
            info[name] = f"unavailable: {error}"
    return info


def _pack(sources: list[Path], target: Path) -> str | None:
    """Tar the given files (those that exist) into ``target``; -> its name, or None when nothing was there."""
    present = [p for p in sources if p.is_file()]
    if not present:
        return None
    with tarfile.open(target, "w:gz" if target.name.endswith(".gz") else "w") as tar:
        for path in present:
            tar.add(path, arcname=f"{target.name.split('.')[0]}/{path.name}")
    return target.name


def collect(work: Path, out: Path, ebt_dir: str | None) -> list[str]:
    """At most 8 files into ``out``: the summary is written by the caller; here each model folder and report folder."""

    def model(folder: Path) -> list[Path]:
        return [folder / f for f in MODEL_FILES] + sorted(folder.glob("*.png"))

    packs = [
        (model(work / ebt_dir) if ebt_dir else [], "ebt-image-gpu.tar.gz"),
        (model(work / "dit"), "dit-image-gpu.tar.gz"),
        (model(work / "transformer"), "transformer-image-gpu.tar.gz"),
        (sorted((work / "image_report").glob("*")) + model(work / "ebt1"), "image-report.tar.gz"),
        (
            sorted((work / "video_report").glob("*"))
            + [p for d in sorted((work / "video").glob("*")) if d.is_dir() for p in model(d)],
            "video.tar.gz",
        ),
        (sorted((work / "logs").glob("*.log")), "logs.tar.gz"),
    ]
    written = []
    for sources, name in packs:
        if name == "video.tar.gz":  # contenders share file names: keep each under its own folder
            present = [p for p in sources if p.is_file()]
            if present:
                with tarfile.open(out / name, "w:gz") as tar:
                    for path in present:
                        tar.add(path, arcname=str(path.relative_to(work)))
                written.append(name)
            continue
        packed = _pack(sources, out / name)
        if packed:
            written.append(packed)
    return written


def summary_markdown(summary: dict) -> str:
    env = summary["environment"]
    card = env.get("card", "no GPU (CPU rehearsal)")
    rows = [[s["name"], s["status"], s["seconds"], s["timeout"]] for s in summary["stages"]]
    return (
        f"# gpu_check\n\n- **card**: {card}\n- **budget**: {summary['budget_s']:g} s, used {summary['used_s']:g} s\n"
        f"- **environment**: `{json.dumps(env)}`\n- **image plan**: `{json.dumps(summary['image'])}`\n"
        f"- **video plan**: `{json.dumps(summary['video'])}`\n\n"
        + markdown_table(["stage", "outcome", "seconds", "limit (s)"], rows)
        + "\n\n"
        + "\n".join(f"- {s['name']}: `{shlex.join(s['command'][3:])}`" for s in summary["stages"] if s["command"])
        + "\n"
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where the (at most 8) result files go")
    parser.add_argument("--work", default="", help="working folder for the runs (default: <out>/../gpu-check-work)")
    parser.add_argument("--budget", type=float, default=540, help="seconds every stage together may take")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a rehearsal of every stage on a CPU")
    parser.add_argument("--parts", nargs="+", choices=("image", "video"), default=["image", "video"])
    args = parser.parse_args(argv)
    if args.budget < 60:
        parser.error("--budget must be at least 60 seconds")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out.resolve().parent / "gpu-check-work"
    runner = Runner(work, args.budget)
    summary = {"budget_s": args.budget, "environment": environment(), "image": {}, "video": {}, "stages": []}

    def write() -> Path:
        summary["used_s"] = round(runner.elapsed(), 1)
        summary["stages"] = [asdict(s) for s in runner.stages]
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
        (out / "gpu_check.md").write_text(summary_markdown(summary))
        return out / "gpu_check.md"

    write()  # the environment comes back even if a stage takes the whole machine down
    for part in args.parts:
        try:
            summary[part] = (image_part if part == "image" else video_part)(runner, args.tiny)
        except Exception as error:  # noqa: BLE001 - one part's failure must not lose the other's results
            summary[part]["error"] = f"{type(error).__name__}: {error}"
        write()
    summary["files"] = collect(work, out, summary["image"].get("ebt_dir"))
    path = write()
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
