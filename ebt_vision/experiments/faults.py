"""Fault injection for training runs: kill -9 at named and at random moments (inside a checkpoint's write and between
its two renames too), damaged checkpoint files, run folders copied half-way. Every case must resume to the bitwise
result of an uninterrupted run or stop with one line, and lose no complete checkpoint.

    python -m ebt_vision.experiments.faults --out reports        # the matrix in reports/faults.md and .json

Each run is a tiny ``ebt-vision train`` (the command line's own ``main``) in a child forked from this process: the
imports are paid once, and a killed child dies by a real SIGKILL, leaving on disk exactly what a killed run leaves.
This process runs torch on one thread, so forking it is safe.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from ..core.checkpoint import STATE, WEIGHTS, non_finite, read_training_state, read_weights, step_folders

STEPS, EVERY, KEEP = 12, 2, 2  # a run of 12 steps, a checkpoint every 2, the newest 2 kept
TINY_RUN = {
    "name": "faults",
    "model": {"patch_size": 4, "width": 16, "depth": 1, "heads": 2},
    "descent": {"num_steps": 2, "step_size": 5.0},
    "data": {"crop_size": 16, "batch_size": 4},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "train": {"steps": STEPS, "log_every": 1, "checkpoint_every": EVERY, "keep_checkpoints": KEEP, "seed": 0,
              "ema_decay": 0.9, "device": "cpu"},
}  # fmt: skip
# Where a run is killed: the checkpoint's write (its two files, its folder's rename, then the ``latest`` swap),
# pruning, a training step and the final model folder. -> a predicate on (event, path) given the chosen step.
KILL_POINTS = (
    "in a training step",
    "writing model.safetensors",
    "writing train_state.pt",
    "before the checkpoint folder's rename",
    "between the two renames",
    "after the latest swap, before pruning",
    "while pruning an old checkpoint",
    "writing the final model folder",
)
RANDOM_KILLS = 4  # kills at a random moment, per seed
DAMAGES = ("truncated", "zeroed", "garbage", "missing")


@dataclass
class Case:
    family: str  # "kill", "damage", "copy"
    fault: str
    outcome: str = ""  # "resumed exact" | "refused clearly" | "inexact" | "traceback" | "not killed"
    resumed_from: int = 0
    newest_before: int = 0  # the newest complete, readable checkpoint before the resume
    lost: int = 0  # complete checkpoints lost by the fault or the resume
    silent: bool = False  # a newer checkpoint skipped without a warning
    said: str = ""  # what the resume printed on stderr (warnings and the error)
    seed: int | None = None


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _half_written(path: Path) -> None:
    """Cut a file just written to half its bytes and die: a kill in the middle of writing it."""
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    _die()


def arm(point: str, step: int, run_dir: Path) -> None:
    """Patch this (child) process so that it kills itself at ``point`` of checkpoint ``step`` (or training step)."""
    from ..core import checkpoint

    tmp, final = f".tmp_step_{step:07d}", f"step_{step:07d}"
    replace, rmtree, save, save_file = os.replace, shutil.rmtree, torch.save, checkpoint.save_file
    clip, calls = torch.nn.utils.clip_grad_norm_, 0

    def patched_replace(src, dst):
        if point == "before the checkpoint folder's rename" and Path(src).name == tmp:
            _die()
        replace(src, dst)
        if point == "between the two renames" and Path(dst).name == final:
            _die()
        if point == "after the latest swap, before pruning" and Path(dst).name == "latest":
            if Path(dst).read_text().strip() == final:
                _die()
        if point == "writing the final model folder" and Path(dst) == run_dir / WEIGHTS:
            _die()

    def patched_rmtree(path, *args, **kwargs):
        path = Path(path)
        pruning = path.is_dir() and path.name.startswith("step_") and path.name != final
        if point == "while pruning an old checkpoint" and pruning and (path.parent / "latest").read_text() == final:
            (path / WEIGHTS).unlink()  # half of the folder's files are gone when the kill comes
            _die()
        rmtree(path, *args, **kwargs)

    def patched_save(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        if point == "writing train_state.pt" and Path(path).parent.name == tmp:
            _half_written(Path(path))

    def patched_save_file(tensors, path, *args, **kwargs):
        save_file(tensors, path, *args, **kwargs)
        if point == "writing model.safetensors" and Path(path).parent.name == tmp:
            _half_written(Path(path))

    def patched_clip(*args, **kwargs):
        nonlocal calls
        calls += 1
        if point == "in a training step" and calls == step:
            _die()  # after the step's backward pass, before its optimiser step
        return clip(*args, **kwargs)

    os.replace, shutil.rmtree, torch.save = patched_replace, patched_rmtree, patched_save
    checkpoint.save_file, torch.nn.utils.clip_grad_norm_ = patched_save_file, patched_clip


class Bench:
    """The photos, the config, the uninterrupted reference run and the helpers every case uses, under ``work``."""

    def __init__(self, work: Path) -> None:
        if work.exists() and any(work.iterdir()):
            raise FileExistsError(f"{work} is not empty: the fault matrix needs a folder of its own")
        self.work = work
        photos = work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        from PIL import Image

        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photos / f"photo{i}.png")
        self.config = work / "tiny.yaml"
        self.config.write_text(yaml.safe_dump({**TINY_RUN, "data": {**TINY_RUN["data"], "source": str(photos)}}))
        self.reference = work / "reference"
        from ..cli import main

        with contextlib.redirect_stdout(io.StringIO()):  # here, not in a child: every child inherits the imports
            if main(self.train_args(self.reference, False)) != 0:
                raise RuntimeError("the reference run failed")
        again = work / "reference-again"
        killed, self.seconds = self.killed(again, None, 0, None)
        if killed or not self.same_weights(again):
            raise RuntimeError("a second uninterrupted run differs from the first: training is not deterministic here")

    def child(self, action: Callable[[], int], logs: Path) -> int:
        """Fork a child running ``action`` with stdout/stderr to ``logs``.out/.err -> its pid."""
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            with open(f"{logs}.out", "w") as out, open(f"{logs}.err", "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                try:
                    code = action()
                except BaseException:  # what the interpreter would print for an uncaught error
                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
        finally:
            os._exit(code)

    def train_args(self, run_dir: Path, resume: bool) -> list[str]:
        return ["train", "--config", str(self.config), "--out", str(run_dir), "--quiet"] + (["--resume"] * resume)

    def train(self, run_dir: Path, resume: bool) -> tuple[int, str, str]:
        """One run of ``ebt-vision train`` in a child -> (exit code, stdout, stderr)."""
        from ..cli import main

        logs = run_dir.with_name(run_dir.name + (".resume" if resume else ".run"))
        pid = self.child(lambda: main(self.train_args(run_dir, resume)), logs)
        status = os.waitpid(pid, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        return code, Path(f"{logs}.out").read_text(), Path(f"{logs}.err").read_text()

    def killed(self, run_dir: Path, point: str | None, step: int, delay: float | None) -> tuple[bool, float]:
        """Run until ``point`` of ``step`` kills it, or (without a point) until SIGKILL ``delay`` seconds after the run
        folder appears (never with ``delay`` None) -> (whether it died by SIGKILL, seconds from the run folder's
        appearance to the final model file's: the training proper)."""
        from ..cli import main

        def action() -> int:
            if point is not None:
                arm(point, step, run_dir)
            return main(self.train_args(run_dir, False))

        pid = self.child(action, run_dir.with_name(run_dir.name + ".run"))
        done, status = 0, 0
        while point is None and not (run_dir / "config.yaml").exists() and not done:
            time.sleep(0.001)
            done, status = os.waitpid(pid, os.WNOHANG)  # a child that fails before training starts
        started = time.perf_counter()
        if point is None and delay is not None and not done:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)  # a child that has finished stays a zombie until waited for: still there
        trained = None
        while not done:  # until it ends; the training proper ends when the final model file appears
            time.sleep(0.001)
            done, status = os.waitpid(pid, os.WNOHANG)
            if trained is None and (run_dir / WEIGHTS).exists():
                trained = time.perf_counter() - started
        return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, trained or 0.0

    def same_weights(self, run_dir: Path) -> bool:
        """The final model and the last checkpoint's weights equal the reference's, bit for bit."""
        last = f"checkpoints/step_{STEPS:07d}/{WEIGHTS}"
        for name in (WEIGHTS, last):
            if not (run_dir / name).is_file():
                return False
            want, got = load_file(self.reference / name), load_file(run_dir / name)
            if want.keys() != got.keys() or not all(torch.equal(want[k], got[k]) for k in want):
                return False
        return True

    def resume(self, case: Case, run_dir: Path) -> Case:
        """Resume ``run_dir`` and judge the outcome against the checkpoints it held before."""
        readable = readable_checkpoints(run_dir)
        folders = {f.name: fingerprint(f) for f in step_folders(run_dir)}
        case.newest_before = max(readable, default=0)
        code, out, err = self.train(run_dir, resume=True)
        case.said = " | ".join(line for line in err.splitlines() if line.strip()).replace(f"{self.work}/", "")
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:
            found = re.search(r"resumed from step (\d+)", out)
            case.resumed_from = int(found.group(1)) if found else 0
            case.outcome = "resumed exact" if self.same_weights(run_dir) else "inexact"
            case.lost = sum(step > case.resumed_from for step in readable)  # a newer readable one was skipped
            newer = [f for f in folders if int(f[5:]) > case.resumed_from]
            case.silent = bool(newer) and not any(line.startswith("warning:") for line in lines)
        elif code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err:
            case.outcome = "refused clearly"
            after = {f.name: fingerprint(f) for f in step_folders(run_dir)}
            case.lost = sum(after.get(name) != print_ for name, print_ in folders.items() if int(name[5:]) in readable)
        else:
            case.outcome = "traceback"
        return case


def readable_checkpoints(run_dir: Path) -> list[int]:
    """The steps of the run's checkpoints whose weights (all finite) and training state both read."""
    steps = []
    for folder in step_folders(run_dir):
        try:
            tensors = read_weights(folder / WEIGHTS)[0]
            read_training_state(folder)
        except ValueError:  # CheckpointError
            continue
        if not non_finite(tensors):
            steps.append(int(folder.name[5:]))
    return steps


def fingerprint(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def done_before_kill(point: str | None, step: int, run_dir: Path) -> int:
    """The newest checkpoint whose write had finished when the kill came (for a kill at a random moment: read off
    metrics.csv, whose row for step s is written after checkpoint s - 1)."""
    if point is None:
        rows = (run_dir / "metrics.csv").read_text().splitlines()[1:] if (run_dir / "metrics.csv").exists() else []
        logged = [int(float(r.split(",")[0])) for r in rows if "," in r]  # the step column of each whole row
        last = max(logged, default=0)
        step, point = last, "in a training step"
    if point == "in a training step":
        return (step - 1) // EVERY * EVERY
    if point in ("writing model.safetensors", "writing train_state.pt", "before the checkpoint folder's rename"):
        return step - EVERY
    return step


def kill_cases(bench: Bench, seed: int) -> list[Case]:
    rng = random.Random(seed)
    checkpoints = list(range(EVERY, STEPS + 1, EVERY))
    steps = {
        "in a training step": rng.randint(1, STEPS),
        "while pruning an old checkpoint": rng.choice([s for s in checkpoints if s > KEEP * EVERY]),
        "writing the final model folder": STEPS,
    }
    cases = []
    for index, point in enumerate((*KILL_POINTS, *[None] * RANDOM_KILLS)):
        step = steps.get(point, rng.choice(checkpoints))
        delay = rng.uniform(0, bench.seconds)
        fault = f"kill -9 {point} (step {step})" if point else f"kill -9 at a random moment ({delay:.3f} s in)"
        run_dir = bench.work / f"kill-{seed}-{index}"
        case = Case("kill", fault, seed=seed)
        if not bench.killed(run_dir, point, step, delay)[0] and point is not None:
            case.outcome = "not killed"
            cases.append(case)
            continue
        expected = done_before_kill(point, step, run_dir)
        bench.resume(case, run_dir)
        case.lost += int(case.newest_before < expected)  # the kill took a checkpoint that was complete
        cases.append(case)
    return cases


def damage(path: Path, kind: str, rng: random.Random) -> None:
    size = path.stat().st_size
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: size // 2])
    elif kind == "zeroed":
        path.write_bytes(bytes(size))
    elif kind == "garbage":
        path.write_bytes(rng.randbytes(size))
    else:
        path.unlink()


def damage_cases(bench: Bench, base: Path) -> list[Case]:
    """Each file of the newest checkpoint (and of the run) damaged in each way, one case each."""
    rng, cases = random.Random(0), []
    newest = step_folders(base)[-1]
    targets = [f"checkpoints/{newest.name}/{name}" for name in (WEIGHTS, STATE, "config.yaml")]
    targets += ["checkpoints/latest", "metrics.csv", "config.yaml"]
    for target in targets:
        for kind in DAMAGES:
            run_dir = bench.work / f"damage-{len(cases)}"
            shutil.copytree(base, run_dir)
            damage(run_dir / target, kind, rng)
            cases.append(bench.resume(Case("damage", f"{target} {kind}"), run_dir))

    def every(name: str, kind: str) -> Callable[[Path], None]:
        return lambda run_dir: [damage(folder / name, kind, rng) for folder in step_folders(run_dir)]

    extra = {
        f"checkpoints/{newest.name}/{WEIGHTS} with a NaN weight": nan_weight,
        "checkpoints/latest naming a checkpoint that does not exist": dangling_latest,
        f"every checkpoint's {STATE} garbage": every(STATE, "garbage"),
        f"every checkpoint's {WEIGHTS} missing": every(WEIGHTS, "missing"),
    }
    for fault, hurt in extra.items():
        run_dir = bench.work / f"damage-{len(cases)}"
        shutil.copytree(base, run_dir)
        hurt(run_dir)
        cases.append(bench.resume(Case("damage", fault), run_dir))
    return cases


def dangling_latest(run_dir: Path) -> None:
    (run_dir / "checkpoints" / "latest").write_text("step_9999999")


def nan_weight(run_dir: Path) -> None:
    """A well-formed weights file, config and all, whose first tensor holds a NaN."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = step_folders(run_dir)[-1] / WEIGHTS
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    first = sorted(name for name, t in tensors.items() if t.is_floating_point())[0]
    tensors[first].view(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


def copy_cases(bench: Bench, base: Path, fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)) -> list[Case]:
    """The run folder copied file by file (sorted paths), the copy stopped after a fraction of its bytes."""
    files = sorted(p for p in base.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    cases = []
    for fraction in fractions:
        run_dir, budget = bench.work / f"copy-{fraction}", int(total * fraction)
        for path in files:
            target = run_dir / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()[:budget]
            target.write_bytes(data)
            budget -= len(data)
            if budget <= 0:
                break
        cases.append(bench.resume(Case("copy", f"run folder copied {fraction:.0%} of its bytes"), run_dir))
    return cases


def run_matrix(work: Path, seeds: tuple[int, ...]) -> tuple[list[Case], Bench]:
    """Every case, in ``work`` (which must be empty or absent)."""
    torch.set_num_threads(1)  # before any forked child: one thread, the same results in every child
    bench = Bench(work)
    cases = [case for seed in seeds for case in kill_cases(bench, seed)]
    base = work / "base"  # a run killed in step 9: checkpoints 6 and 8 complete, latest naming 8
    if not bench.killed(base, "in a training step", 9, None)[0]:
        raise RuntimeError("the base run for the damage cases was not killed")
    cases += damage_cases(bench, base)
    cases += copy_cases(bench, base)
    return cases, bench


def summarise(cases: list[Case]) -> dict[str, int]:
    return {
        "cases tried": len(cases),
        "resumed exact": sum(c.outcome == "resumed exact" for c in cases),
        "refused clearly": sum(c.outcome == "refused clearly" for c in cases),
        "lost": sum(c.lost for c in cases),
        "tracebacks": sum(c.outcome == "traceback" for c in cases),
        "inexact": sum(c.outcome == "inexact" for c in cases),
        "silent fallbacks": sum(c.silent for c in cases),
        "not killed": sum(c.outcome == "not killed" for c in cases),
    }


def write_faults_report(cases: list[Case], bench: Bench, seeds: tuple[int, ...], out: Path, seconds: float,
                        command: str) -> Path:  # fmt: skip
    from ..core.reports import make_meta, markdown_table, write_report

    summary = summarise(cases)
    data = (
        f"a tiny image EBT run ({STEPS} steps, a checkpoint every {EVERY}, the newest {KEEP} kept, EMA of the weights) "
        "on 2 random 48x64 photos; each case resumed with `ebt-vision train --resume`"
    )
    budget = f"{len(cases)} cases in {seconds:.0f} s; an uninterrupted run trains for {bench.seconds:.2f} s"
    meta = make_meta("cpu", seeds[0] if seeds else 0, data, budget, command)
    meta["seed"] = f"kill points and moments drawn with seeds {', '.join(map(str, seeds))}"
    headers = ["family", "fault", "outcome", "resumed from", "newest readable before", "lost", "what it said"]
    rows = [[c.family, c.fault, c.outcome, c.resumed_from, c.newest_before, c.lost, c.said.replace("|", "/") or "-"]
            for c in cases]  # fmt: skip
    body = (
        "Every case either resumes to the bitwise result of an uninterrupted run (final model and last checkpoint "
        "compared with torch.equal) or stops with one line; *lost* counts complete, readable checkpoints that the "
        "fault or the resume destroyed or skipped. Resumes read no `latest` (checkpoints are ordered by step number) "
        "and no checkpoint config.yaml (a copy for people: the weights' metadata holds the config that is read), so "
        "damage to those, or to the run's config.yaml (rewritten), changes nothing; damage to metrics.csv is said and "
        "its unreadable rows dropped.\n\n"
        + markdown_table(list(summary), [list(summary.values())])
        + "\n\n"
        + markdown_table(headers, rows)
    )
    return write_report(out, "faults", meta, [asdict(c) for c in cases], body, summary=summary)


def main(argv: list[str] | None = None) -> int:
    program = "python -m ebt_vision.experiments.faults"
    parser = argparse.ArgumentParser(prog=program, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/faults", help="report folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the kill points")
    parser.add_argument("--work", help="where the runs go (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "ebt_vision.experiments.faults", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ebt-faults-") as scratch:
        cases, bench = run_matrix(Path(args.work or scratch), tuple(args.seeds))
        report = write_faults_report(cases, bench, tuple(args.seeds), Path(args.out), time.perf_counter() - started,
                                     command)  # fmt: skip
    print(report.read_text())
    summary = summarise(cases)
    return 0 if summary["lost"] == summary["tracebacks"] == summary["inexact"] == summary["silent fallbacks"] == 0 \
        and summary["not killed"] == 0 else 1  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
