"""The lent-GPU checks of the landscape and video issues, each one timed call of under 10 minutes on one H100/H200.

A lent GPU comes as one short slot, so this driver plans every training from the throughput it measures there:

- **--part image (configs/gpu-image.yaml, EBT-M/2).** A 10-second probe run measures the EBT's training steps per
  second. The EBT then trains for the steps that fill its slot, so its learning-rate schedule ends where the slot
  does, and fine-tunes on long randomised descents like the shipped EBT's second stage. The diffusers DiT and the
  plain transformer of the same size train for the same number of steps on the same crops. The EBT's step schedule
  is calibrated on the validation photos, and ``ebt-vision eval`` measures all three on the full-resolution held-out
  photos (DDIM step counts and EBT steps chosen on validation, quoted on test).
- **--part video (configs/gpu-video-mmnist.yaml).** A probe run measures the video EBT's throughput.
  ``ebt-vision video`` then trains the EBT, the transformer and the DiT for the steps that fill the EBT's slot (early
  stopping on the validation clips) and reports them on the test clips against copy-last.

Every stage is a separate ``python -m ebt_vision`` process with its own time limit, so a stage that fails or runs
over leaves the others standing. ``gpu_check.json`` and ``.md`` record each stage's command, outcome and wall-clock,
the card and the library versions. Results come back as at most 8 files under ``--out`` (the lent machine's limit):
tar files of each model folder (weights, config, step schedule, curves), of the reports and of the logs. Unpacked
into one folder, they rebuild the work folder's layout, and ``--report`` writes the committed report from it.

    bash scripts/gpu-check.sh [--part video]                          # on the lent GPU (BUDGET=540 s by default)
    python -m ebt_vision.experiments.gpu_check --out /tmp/gpu --tiny --budget 300     # every stage, tiny, on a CPU
    python -m ebt_vision.experiments.gpu_check --report RESULTS --out reports         # reports/gpu_check.*
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.reports import git_commit, markdown_table, write_report

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
# Seconds each part spends outside training, measured on an H200 on 2026-12-04 (reports/gpu_check.md): about 17 s
# of start-up per process (imports, CUDA, photos), 29 s of calibration and 140 s of full-resolution evaluation of
# three models on both photo splits; the video evaluation is given what its settings below are expected to need.
# What is left of a part's budget is training, split by these weights.
FIXED = {"image": 330.0, "video": 230.0}
IMAGE_SLOTS = {"ebt": 0.55, "ebt_long": 0.12, "dit": 0.2, "transformer": 0.13}
PROBE_SECONDS = {"image": 10.0, "video": 8.0}
# The video EBT's slot, as a share of the video training pool: the transformer and the DiT train the same steps at
# about three times the EBT's speed (measured), so the three together take about 1.7 EBT slots.
VIDEO_EBT_SHARE = 1 / 1.7
VIDEO_EVAL = ["--ebt-steps", "4", "--dit-steps", "1", "2", "5", "--best-of", "2"]
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


def logged_rows(run_dir: Path) -> list[dict]:
    """The logged rows of a run's metrics.csv (clear errors when it is missing or holds no steps)."""
    path = run_dir / "metrics.csv"
    try:
        with path.open() as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("step")]
    except OSError as error:
        raise UserError(f"{path}: no training log ({error})") from None
    if not rows:
        raise UserError(f"{path} has no logged steps")
    return rows


def measured_rate(rows: list[dict]) -> float:
    """Training steps per second from a run's logged rows (the first logged interval, which holds start-up costs,
    left out when there are two or more rows)."""
    points = [(float(r["step"]), float(r["seconds"])) for r in rows if r.get("seconds")]
    if not points or points[-1][1] <= 0:
        raise UserError("the training log has no logged steps with their seconds")
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
    return int(float(logged_rows(run_dir)[-1]["step"]))


class Runner:
    def __init__(self, work: Path, budget: float) -> None:
        self.work, self.budget = work, budget
        self.started = time.perf_counter()
        self.stages: list[Stage] = []
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def run(self, name: str, args: list[str], timeout: float) -> Stage:
        """``python -m ebt_vision ARGS`` with its output in logs/NAME.log, killed after ``timeout`` seconds."""
        command = [sys.executable, "-m", "ebt_vision", *args, "--quiet"]
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


def _train(config: str, out: Path, sets: list[str], model: str = "ebt") -> list[str]:
    return ["train", "--config", config, *(["--model", model] if model != "ebt" else []), "--out", str(out),
            "--set", *sets]  # fmt: skip


def probe(r: Runner, part: str, config: str, extra: list[str]) -> float | None:
    """A short time-capped run of the part's EBT -> its training steps per second (None if the run failed)."""
    sets = [*extra, f"train.max_seconds={PROBE_SECONDS[part]:g}", "train.steps=1000000",
            "train.checkpoint_every=1000000", "train.early_stopping=0", "train.log_every=5"]  # fmt: skip
    folder = r.work / f"{part}_probe"
    if r.run(f"{part}_probe", _train(config, folder, sets), 120).status != "ok":
        return None
    return measured_rate(logged_rows(folder))


def training_pool(part: str, budget: float, tiny: bool) -> float:
    """Seconds of training a part's budget leaves after its fixed costs (30% of it in a tiny rehearsal)."""
    pool = budget * 0.3 if tiny else budget - FIXED[part]
    if pool < 20:
        raise UserError(
            f"the {part} part needs more than {FIXED[part]:.0f} s of budget to train at all, got {budget:.0f}"
        )
    return pool


def image_part(r: Runner, budget: float, tiny: bool) -> dict:
    """Probe, EBT (two stages), DiT, transformer, calibration and evaluation; -> what was planned and measured."""
    w, extra, end = r.work, TINY_IMAGE if tiny else [], r.elapsed() + budget
    slot = {k: v * training_pool("image", budget, tiny) for k, v in IMAGE_SLOTS.items()}
    out: dict = {"slots_s": {k: round(v, 1) for k, v in slot.items()}}
    rate = probe(r, "image", IMAGE_CONFIG, extra)
    if rate is None:
        return out
    steps = planned_steps(rate, slot["ebt"])
    # a sixth of the first stage's steps, as the shipped EBT's stages; fewer if its slot would not hold them (a
    # second-stage step cost 1.65x a first-stage one on the H200: longer descents)
    long_steps = max(10, min(steps // 6, int(rate / 1.7 * slot["ebt_long"])))
    out.update(probe_steps_per_s=round(rate, 2), ebt_steps=steps, ebt_long_steps=long_steps)
    sets = [*extra, f"train.steps={steps}", f"train.checkpoint_every={max(10, steps // 4)}",
            f"train.max_seconds={1.3 * slot['ebt']:g}"]  # fmt: skip
    if r.run("ebt", _train(IMAGE_CONFIG, w / "ebt1", sets), 1.6 * slot["ebt"] + 60).status != "ok":
        return out
    sets = [*extra, *STAGE_TWO, f"train.init_from={w / 'ebt1'}", f"train.steps={long_steps}",
            f"train.checkpoint_every={long_steps}", f"train.max_seconds={1.3 * slot['ebt_long']:g}"]  # fmt: skip
    second = r.run("ebt_long", _train(IMAGE_CONFIG, w / "ebt", sets), 1.6 * slot["ebt_long"] + 60).status == "ok"
    ebt_dir = w / "ebt" if second else w / "ebt1"
    total = trained_steps(w / "ebt1") + (trained_steps(w / "ebt") if second else 0)
    out.update(ebt_total_steps=total, ebt_dir=ebt_dir.name)
    for model in ("dit", "transformer"):  # the same steps as the EBT's two stages together, on the same crops
        sets = [*extra, f"name=ebt-image-gpu-{model}", f"train.steps={total}",
                f"train.checkpoint_every={max(10, total // 4)}", f"train.max_seconds={slot[model]:g}"]  # fmt: skip
        r.run(model, _train(IMAGE_CONFIG, w / model, sets, model), slot[model] + 60)
        if (w / model / "metrics.csv").is_file():
            out[f"{model}_steps"] = trained_steps(w / model)
    calibrate = ["calibrate", "--checkpoint", str(ebt_dir), "--out", str(w / "image_report")]
    r.run("calibrate", [*calibrate, *(TINY_CALIBRATE if tiny else [])], 90)
    baselines = []
    for model, flag in (("dit", "--dit-checkpoint"), ("transformer", "--transformer-checkpoint")):
        if (w / model / "model.safetensors").is_file():
            baselines += [flag, str(w / model)]
    evaluate = ["eval", "--checkpoint", str(ebt_dir), *baselines, "--no-bm3d", "--split", "both",
                *(TINY_EVAL if tiny else ["--steps", "4", "--dit-steps", "1", "2", "5"]),
                "--out", str(w / "image_report"), "--stem", "denoise_gpu"]  # fmt: skip
    r.run("eval", evaluate, end - r.elapsed())
    return out


def video_part(r: Runner, budget: float, tiny: bool) -> dict:
    """Probe the video EBT's throughput, then ``ebt-vision video`` for the steps that fill the EBT's slot."""
    w, extra, end = r.work, TINY_VIDEO if tiny else [], r.elapsed() + budget
    slot = VIDEO_EBT_SHARE * training_pool("video", budget, tiny)
    out: dict = {"ebt_slot_s": round(slot, 1)}
    rate = probe(r, "video", VIDEO_CONFIG, extra)
    if rate is None:
        return out
    steps = planned_steps(rate, slot)
    out.update(probe_steps_per_s=round(rate, 2), steps=steps)
    sets = [*extra, f"train.steps={steps}", f"train.checkpoint_every={max(5, steps // 8)}",
            f"train.max_seconds={1.5 * slot:g}"]  # fmt: skip
    video = ["video", "--config", VIDEO_CONFIG, "--runs", str(w / "video"), "--out", str(w / "video_report"),
             "--stem", "video_mmnist_gpu", "--no-compute-matched"]  # fmt: skip
    video += TINY_VIDEO_EVAL if tiny else VIDEO_EVAL
    r.run("video", [*video, "--set", *sets], end - r.elapsed())
    return out


def environment() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
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


def collect(work: Path, out: Path, ebt_dir: str | None) -> list[str]:
    """Tar files into ``out``, at most 6 for one part (the caller writes 2 summary files): each model's weights, config,
    step schedule, logs and curves (no training checkpoints), the reports and the logs, with paths relative to the
    work folder, so unpacking them all into one folder rebuilds its layout (what ``--report`` reads)."""

    def model(folder: Path) -> list[Path]:
        return [folder / f for f in MODEL_FILES] + sorted(folder.glob("*.png"))

    packs = [(model(work / ebt_dir) if ebt_dir else [], "ebt-image-gpu.tar.gz"),
             (model(work / "dit"), "dit-image-gpu.tar.gz"),
             (model(work / "transformer"), "transformer-image-gpu.tar.gz"),
             (sorted((work / "image_report").glob("*")) + model(work / "ebt1") + model(work / "image_probe"),
              "image-report.tar.gz"),
             (sorted((work / "video_report").glob("*")) + model(work / "video_probe"), "video-report.tar.gz"),
             *((model(work / "video" / m), f"video-{m}.tar.gz") for m in ("ebt", "transformer", "dit")),
             (sorted((work / "logs").glob("*.log")), "logs.tar.gz")]  # fmt: skip
    written = []
    for sources, name in packs:
        present = [p for p in sources if p.is_file()]
        if present:
            with tarfile.open(out / name, "w:gz") as tar:
                for path in present:
                    tar.add(path, arcname=str(path.relative_to(work)))
            written.append(name)
    return written


def stage_table(stages: list[dict]) -> str:
    rows = [[s["name"], s["status"], s["seconds"], s["timeout"]] for s in stages]
    return markdown_table(["stage", "outcome", "seconds", "limit (s)"], rows)


def summary_markdown(summary: dict) -> str:
    env = summary["environment"]
    card = env.get("card", "no GPU (CPU rehearsal)")
    return (
        f"# gpu_check\n\n- **card**: {card}\n- **budget**: {summary['budget_s']:g} s, used {summary['used_s']:g} s\n"
        f"- **environment**: `{json.dumps(env)}`\n- **image plan**: `{json.dumps(summary['image'])}`\n"
        f"- **video plan**: `{json.dumps(summary['video'])}`\n\n"
        + stage_table(summary["stages"])
        + "\n\n"
        + "\n".join(f"- {s['name']}: `{shlex.join(s['command'][3:])}`" for s in summary["stages"] if s["command"])
        + "\n"
    )


# The trained models of a results folder (the unpacked result files), for the report: (label, folder).
TRAINED = (("image EBT, stage 1", "ebt1"), ("image EBT, stage 2", "ebt"), ("image DiT", "dit"),
           ("image transformer", "transformer"), ("video EBT", "video/ebt"), ("video transformer", "video/transformer"),
           ("video DiT", "video/dit"))  # fmt: skip


def training_rows(results: Path) -> list[dict]:
    """Per trained model of an unpacked results folder: steps, training seconds and throughput from its metrics.csv."""
    rows = []
    for label, folder in TRAINED:
        if not (results / folder / "metrics.csv").is_file():
            continue
        logged = logged_rows(results / folder)
        samples = [float(r["samples_per_s"]) for r in logged[1:] if r.get("samples_per_s")]
        rate = round(measured_rate(logged), 2)
        rows.append({"method": label, "folder": folder, "steps": int(float(logged[-1]["step"])),
                     "train_seconds": float(logged[-1]["seconds"]), "steps_per_s": rate,
                     "samples_per_s": round(sum(samples) / len(samples), 1) if samples else None})  # fmt: skip
    return rows


def report(results: Path, out: Path, stem: str = "gpu_check", note: str = "") -> Path:
    """The committed report of a lent-GPU run from its unpacked result files: the card, every stage's outcome and
    time, each model's steps and throughput (table and figure), and links to the evaluation reports beside it."""
    from matplotlib.figure import Figure

    if not (results / "gpu_check.json").is_file():
        raise UserError(f"{results}: no gpu_check.json (unpack every result file of the run there)")
    summary = json.loads((results / "gpu_check.json").read_text())
    env, rows = summary["environment"], training_rows(results)
    if not rows:
        raise UserError(f"{results}: no trained model folders with a metrics.csv (unpack every result file there)")
    card = env.get("card", "no GPU")
    meta = {"command": f"bash scripts/gpu-check.sh (BUDGET={summary['budget_s']:g}); this report: python -m "
                       f"ebt_vision.experiments.gpu_check --report RESULTS --out {out}",
            "machine": f"{card}, {env.get('cpus', '?')}-core {env.get('machine', '?')} host, torch {env.get('torch')}",
            "device": f"cuda:{card}" if env.get("cuda") else "cpu", "date": summary.get("date", ""),
            "git_commit": summary.get("git_commit", ""), "seed": 0, "data": "the packaged photos (image), Moving MNIST",
            "budget": f"{summary['budget_s']:g} s for every stage; used {summary['used_s']:g} s"}  # fmt: skip
    table = [[r["method"], r["steps"], f"{r['train_seconds']:.1f}", f"{r['steps_per_s']:.2f}", r["samples_per_s"]]
             for r in rows]  # fmt: skip
    body = (f"One run of `scripts/gpu-check.sh` on a lent **{card}** ({env.get('nvidia_smi', '')}; Python "
            f"{env.get('python')}, torch {env.get('torch')}, diffusers {env.get('diffusers')}).\n\n"
            + (f"{note}\n\n" if note else "")
            + "### Stages\n\n" + stage_table(summary["stages"])
            + "\n\n### Training on the card\n\n"
            + markdown_table(["model", "steps", "training seconds", "steps/s", "samples/s"], table)
            + f"\n\n![training throughput]({stem}.png)\n")  # fmt: skip
    figure = Figure(figsize=(7, 3.2))
    ax = figure.subplots()
    ax.barh([r["method"] for r in rows], [r["samples_per_s"] or 0 for r in rows], color="C0")
    ax.set_xlabel("training samples per second (crops or clips)")
    ax.set_title(f"training throughput on {card}")
    ax.invert_yaxis()
    figure.tight_layout()
    md = write_report(
        out, stem, meta, rows, body, stages=summary["stages"], plans={k: summary[k] for k in ("image", "video")}
    )
    figure.savefig(md.with_suffix(".png"), dpi=110)
    return md


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="where the (at most 8) result files go (with --report: the report)"
    )
    parser.add_argument("--report", default="", help="write the report of a run's unpacked result files instead")
    parser.add_argument("--note", default="", help="with --report: what else happened (the report's first paragraph)")
    parser.add_argument("--work", default="", help="working folder for the runs (default: <out>/../gpu-check-work)")
    parser.add_argument("--budget", type=float, default=540, help="seconds every stage together may take")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a rehearsal of every stage on a CPU")
    parser.add_argument("--part", choices=("image", "video"), default="image",
                        help="image (the landscape check) or video; each fills one call")  # fmt: skip
    args = parser.parse_args(argv)
    if args.report:
        path = report(Path(args.report), Path(args.out), note=args.note)
        print(path)
        return path
    if args.budget < 60:
        parser.error("--budget must be at least 60 seconds")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out.resolve().parent / "gpu-check-work"
    runner = Runner(work, args.budget)
    summary = {"budget_s": args.budget, "environment": environment(), "date": time.strftime("%Y-%m-%d"),
               "git_commit": git_commit(), "image": {}, "video": {}, "stages": []}  # fmt: skip

    def write() -> Path:
        summary["used_s"] = round(runner.elapsed(), 1)
        summary["stages"] = [asdict(s) for s in runner.stages]
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
        (out / "gpu_check.md").write_text(summary_markdown(summary))
        return out / "gpu_check.md"

    write()  # the environment comes back even if a stage takes the whole machine down
    try:
        summary[args.part] = (image_part if args.part == "image" else video_part)(runner, args.budget, args.tiny)
    except Exception as error:  # noqa: BLE001 - what was trained still comes back
        summary[args.part]["error"] = f"{type(error).__name__}: {error}"
    write()
    summary["files"] = collect(work, out, summary["image"].get("ebt_dir"))
    path = write()
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
