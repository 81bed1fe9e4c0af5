"""One plain PyTorch training loop for every objective.

An objective (``ebt_vision.core.objective.Objective``) is an ``nn.Module`` whose ``forward(batch)`` returns a
``StepOutput``, whose ``param_groups(optim)`` lists AdamW groups and whose ``compile_for_training()`` compiles it.
Batches are anything with ``.to(device)`` (or tuples of tensors). The loop adds the rest: warmup + cosine learning
rate, gradient clipping, bf16 autocast on CUDA, fused AdamW, ``torch.compile``, gradient accumulation, DDP under
``torchrun``, seeding, a progress bar, ``metrics.csv`` and ``loss.png``, atomic checkpoints and ``resume``, which
refuses a run whose stored config differs from the requested one (``ebt_vision.core.runs``: a folder holding a model
or a run is never replaced unasked, and resume falls back past unreadable checkpoints, never to step 0). With
``train.ema_decay`` it keeps an average of the weights (``ebt_vision.core.ema``): checkpoints hold both (the raw
weights resume training exactly), and the finished run folder, like the objective after ``train`` returns, holds the
average. Given a validation function, it scores the model at every checkpoint and, with ``train.early_stopping``,
stops when the score stops improving and keeps the best weights (``ebt_vision.core.early_stopping``).
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed
from .checkpoint import (
    CheckpointError,
    load_training_checkpoint,
    load_weights,
    read_checkpoint,
    read_weights,
    save_pretrained_folder,
    save_training_checkpoint,
    save_weights,
)
from .config import ConfigError, ExperimentConfig, OptimConfig, dump_yaml
from .distributed import Distributed
from .early_stopping import BEST_FILE, EarlyStopping, Validate, ValidationLog
from .ema import WeightAverage
from .errors import UserError
from .objective import Objective
from .progress import progress as progress_bar
from .reports import curve_plot
from .runs import RunConflict as RunConflict  # raised here, so callers catch it from here too
from .runs import check_run_folder, resume_checkpoint, writing


class TrainingDiverged(RuntimeError):
    """The loss or the energy went non-finite or exploded; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    seconds: float  # training wall-clock, summed over resumed segments
    final_metrics: dict[str, float]
    resumed_from: int = 0  # the checkpoint step this call continued from (0: it started afresh)
    best_step: int = 0  # with train.early_stopping: the step whose weights the run kept (0: the last step's)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Linear warmup to 1, then cosine down to ``min_lr_ratio`` at ``total``."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(objective: Objective, cfg: ExperimentConfig, device: torch.device):
    """AdamW over the objective's parameter groups (the fused kernel on CPU and CUDA) and the warmup+cosine schedule."""
    optim = cfg.optim
    groups = objective.param_groups(optim)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.train.steps, optim))
    return optimizer, scheduler


def _rng_state() -> dict:
    """Every random state, in types ``torch.load(weights_only=True)`` reads back (numpy's key array as a tensor)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(saved: dict | list[dict], ctx: Distributed, fallback_seed: int) -> None:
    """This rank's saved random state (checkpoints hold one per rank; older ones a single dict)."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) != ctx.world_size:
        warnings.warn(
            f"the checkpoint was written by {len(states)} process(es), this run has {ctx.world_size}: weights, "
            "optimiser and data stream resume exactly, the descent's random draws are re-seeded",
            stacklevel=3,
        )
        seed_everything(fallback_seed + ctx.rank)
        return
    state = states[ctx.rank]
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _metrics_row(row: dict) -> dict[str, float] | None:
    """A metrics.csv row as numbers; None for one that does not parse (a run killed mid-write leaves half a line)."""
    try:
        values = {key: float(value) for key, value in row.items() if value != ""}
    except (TypeError, ValueError):  # a missing column reads as None, a cut number or stray text as a bad float
        return None
    return values if "step" in values else None


class MetricsLog:
    """``metrics.csv`` (one row per logged step) and a ``loss.png`` curve; resuming drops rows past the resume step,
    and says so when rows before it cannot be read or are missing (a damaged or half-copied file)."""

    def __init__(self, run_dir: Path, resume_step: int, log_every: int) -> None:
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        if resume_step > 0:
            rows = []
            if self.path.is_file():
                with self.path.open(newline="", errors="replace") as handle:
                    rows = [_metrics_row(r) for r in csv.DictReader(handle)]
            self.rows = [r for r in rows if r is not None and r["step"] <= resume_step]
            logged_until = self.rows[-1]["step"] if self.rows else 0
            if None in rows[:-1] or logged_until < resume_step // log_every * log_every:  # a kill cuts the last only
                warnings.warn(f"{self.path}: rows before the resumed step {resume_step} are unreadable or missing "
                              f"(kept: {len(self.rows)}, up to step {logged_until:g})", stacklevel=2)  # fmt: skip
        self._rewrite()

    def _columns(self) -> list[str]:
        """Every key any row has, in first-seen order (a resumed run may log a metric the older rows lack)."""
        return list(dict.fromkeys(key for row in self.rows for key in row))

    def _rewrite(self) -> None:
        if not self.rows:
            self.path.write_text("")
            return
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns(), restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def append(self, row: dict[str, float]) -> None:
        header_changed = not self.rows or not set(row) <= set(self._columns())
        self.rows.append(row)
        if header_changed:
            self._rewrite()
            return
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self._columns(), restval="").writerow(row)

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        steps = [r["step"] for r in self.rows]
        losses = [r["loss"] for r in self.rows]
        smoothed, average = [], losses[0]
        for value in losses:  # exponential moving average: batches differ in noise level, so raw values jump
            average = 0.9 * average + 0.1 * value
            smoothed.append(average)
        curves = [("training loss (what is optimised)", losses, {"alpha": 0.35}),
                  ("same, moving average", smoothed, {"color": "C0"})]  # fmt: skip
        for key, label in (
            ("loss_last", "loss after the last descent step"),
            ("loss_guess", "the one-pass guess's loss"),
        ):
            if key in self.rows[0]:
                curves.append((label, [r[key] for r in self.rows], {"alpha": 0.35}))
        return curve_plot(self.path.with_name("loss.png"), steps, curves, "loss", log_y=True)


def _divergence(step: int, loss: torch.Tensor, energy: torch.Tensor | None, cfg: ExperimentConfig) -> str | None:
    """Why training must stop at ``step`` (non-finite loss, exploding energy), or None."""
    if not torch.isfinite(loss):
        return (
            f"non-finite loss ({loss.item()}) at step {step}; the last good checkpoint is kept. "
            "Lower optim.lr or descent.step_size, or raise optim.warmup_steps."
        )
    if energy is not None and not (torch.isfinite(energy) and energy <= cfg.train.max_abs_energy):
        return (
            f"energy exploded (|E| = {energy.item():.3g} > train.max_abs_energy = {cfg.train.max_abs_energy:.3g}) "
            f"at step {step}; the last good checkpoint is kept. Lower optim.lr or descent.step_size."
        )
    return None


def _check_health(step: int, out, cfg: ExperimentConfig, ctx: Distributed) -> None:
    """Raise TrainingDiverged on every rank when any rank diverged (so none is left waiting in a collective)."""
    problem = _divergence(step, out.loss, out.metrics.get("energy_abs_max"), cfg)
    if distributed.any_over_ranks(problem is not None, out.loss.device, ctx) and problem is None:
        problem = f"another training process diverged at step {step} (see its message); the last checkpoint is kept"
    if problem is not None:
        raise TrainingDiverged(problem)


def _wrap_ddp(objective: nn.Module, cfg: ExperimentConfig, device: torch.device, ctx: Distributed) -> nn.Module:
    """DDP around the objective (one forward = the whole descent, one backward), except with checkpointed descent
    steps, where DDP reduces partial gradients: those runs average gradients by hand after the backward pass."""
    if not ctx.enabled or cfg.descent.checkpoint_steps:
        distributed.broadcast_parameters(objective, ctx)
        return objective
    return nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)


def to_device(batch, device: torch.device):
    """A batch (an object with ``.to``, a tensor, or a tuple/list of them) on ``device`` (asynchronously to a GPU:
    streamed batches come in pinned memory)."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device) for item in batch)
    return batch.to(device, non_blocking=device.type == "cuda")


def batch_rows(batch) -> int:
    """Samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)):
        return batch_rows(batch[0]) if batch else 0
    return next((v.shape[0] for v in vars(batch).values() if isinstance(v, torch.Tensor)), 0)


class Throughput:
    """Samples per second and the fraction of wall-clock spent waiting for data, between two log steps."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.since, self.waited, self.samples = time.perf_counter(), 0.0, 0

    def fetch(self, batches: Iterator, device: torch.device, world_size: int):
        """The next batch on ``device``, timed as data wait."""
        started = time.perf_counter()
        batch = to_device(next(batches), device)
        self.waited += time.perf_counter() - started
        self.samples += batch_rows(batch) * world_size
        return batch

    def read(self) -> dict[str, float]:
        """``samples_per_s`` (all processes) and ``data_wait`` (fraction of the time since the last read)."""
        elapsed = max(time.perf_counter() - self.since, 1e-9)
        figures = {"samples_per_s": self.samples / elapsed, "data_wait": min(1.0, self.waited / elapsed)}
        self.restart()
        return figures


def _initialise_from(objective: nn.Module, path: str) -> None:
    """``train.init_from``: load a trained model's weights (same architecture, or one the objective's
    ``initial_weights`` maps) before the first step."""
    found, tensors = read_checkpoint(path, "train.init_from checkpoint")[:2]
    if hasattr(objective, "initial_weights"):  # an objective that can start from another kind's weights
        tensors = objective.initial_weights(tensors)
    try:
        load_weights(objective, tensors, found, "this model")
    except CheckpointError as error:
        reason = str(error).removeprefix(f"{found} does not fit this model: ")
        raise CheckpointError(f"train.init_from {path}: its weights do not fit this model ({reason})") from None


def train(
    objective: Objective,
    batches: Iterator,
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    sampler_state: object | None = None,
    progress: bool = True,
    validate: Validate | None = None,
) -> TrainResult:
    """Train ``objective`` on ``batches`` for ``cfg.train.steps`` steps, writing everything under ``run_dir``.

    ``sampler_state``: an object with ``state_dict``/``load_state_dict`` (the data stream) saved with checkpoints.
    With ``resume``, training continues from ``run_dir``'s latest checkpoint (or starts fresh if there is none).
    Under ``torchrun`` (see ``ebt_vision.distributed``) the objective is wrapped in DDP; ``batches`` must then yield
    this rank's share, and only rank 0 writes files.

    ``validate``: the model -> its validation error (lower is better), the task's; with ``train.early_stopping`` it
    runs at every checkpoint (every rank scores the same clips) and the finished run holds the best-scoring weights.
    """
    ctx = distributed.current()
    run_dir = Path(run_dir)
    if cfg.train.early_stopping and validate is None:
        raise ConfigError(f"train.early_stopping needs a validation split, and {cfg.task} training has none here: "
                          "set train.early_stopping: 0")  # fmt: skip
    stopping = EarlyStopping(cfg.train.early_stopping) if cfg.train.early_stopping else None
    if cfg.train.max_seconds and ctx.enabled:  # ranks' clocks differ: they would stop at different steps and hang
        raise ConfigError("train.max_seconds is for a single process; under torchrun set train.steps instead")
    check_run_folder(run_dir, resume)
    device = resolve_device(cfg.train.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    seed_everything(cfg.train.seed + ctx.rank)  # ranks draw different descent randomness and diffusion noise
    objective.to(device).train()
    if cfg.train.compile:
        objective.compile_for_training()
    optimizer, scheduler = build_optimizer(objective, cfg, device)
    average = WeightAverage(objective, cfg.train.ema_decay) if cfg.train.ema_decay else None

    def restore(folder: Path) -> dict:
        """Everything a checkpoint holds, into the objective, optimiser, scheduler, average, data stream and RNGs."""
        state = load_training_checkpoint(folder, objective)
        if average is not None:
            average.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if sampler_state is not None:  # this rank's stream (tar-shard readers differ by rank), else rank 0's
            per_rank = state.get("samplers") or []
            sampler_state.load_state_dict(per_rank[ctx.rank] if len(per_rank) == ctx.world_size else state["sampler"])
        _restore_rng(state["rng"], ctx, cfg.train.seed + state["step"])
        if stopping is not None and state.get("early_stopping"):
            stopping.load_state_dict(state["early_stopping"])
        return state

    state = resume_checkpoint(run_dir, cfg, restore) if resume else None
    step, seconds = (state["step"], state["seconds"]) if state is not None else (0, 0.0)
    if state is None and cfg.train.init_from:
        _initialise_from(objective, cfg.train.init_from)
        if average is not None:  # the average starts from the loaded weights, not the random ones
            average.load_state_dict(objective.state_dict())
    resumed_from = step
    model = _wrap_ddp(objective, cfg, device, ctx)
    if ctx.is_main:
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
            log = MetricsLog(run_dir, step, cfg.train.log_every)
            validation_log = ValidationLog(run_dir, step) if stopping is not None else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.bf16)
    accumulation = cfg.train.grad_accumulation

    def checkpoint() -> None:
        rng = distributed.gather_objects(_rng_state(), ctx)  # every rank's, so a resumed run draws the same numbers
        streams = distributed.gather_objects(sampler_state.state_dict(), ctx) if sampler_state is not None else []
        if ctx.is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "seconds": seconds,
                "rng": rng,
                "sampler": streams[0] if streams else None,
                "samplers": streams if ctx.enabled else None,
                "ema": average.state_dict() if average is not None else None,
                "early_stopping": stopping.state_dict() if stopping is not None else None,
            }
            with writing(run_dir, f"; the last complete checkpoint before step {step} is kept"):
                save_training_checkpoint(run_dir, step, objective, cfg, state, cfg.train.keep_checkpoints)
        distributed.barrier(ctx)

    def validation_round() -> None:
        """Score the weights the run would save (the average when on); a new best is written to ``best.safetensors``.
        Training's random streams are left as they were: a run with validation learns what one without would."""
        raw = {k: v.detach().clone() for k, v in objective.state_dict().items()} if average is not None else None
        if average is not None:
            average.copy_to(objective)
        objective.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            score = float(validate(objective))
        improved = stopping.record(step, score)
        if ctx.is_main:
            with writing(run_dir):
                if improved:
                    save_weights(objective, cfg, run_dir / BEST_FILE, extra={"step": step, "validation": score})
                validation_log.append(step, score, stopping.best)
                validation_log.plot()
        if raw is not None:
            objective.load_state_dict(raw)
        objective.train()

    bar = progress_bar(
        total=cfg.train.steps, initial=step, desc=f"train {cfg.name}", disable=not (progress and ctx.is_main),
        unit="step",
    )  # fmt: skip
    metrics: dict[str, float] = {}
    last_plot = time.perf_counter()
    throughput = Throughput()
    out_of_time = False
    while step < cfg.train.steps and not out_of_time and not (stopping is not None and stopping.stopped):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        summed: dict[str, torch.Tensor] = {}
        for micro in range(accumulation):
            batch = throughput.fetch(batches, device, ctx.world_size)
            # DDP averages gradients over ranks on the last micro-batch's backward only
            last = micro == accumulation - 1
            sync = model.no_sync() if model is not objective and not last else contextlib.nullcontext()
            with sync:
                with autocast:
                    out = model(batch)
                _check_health(step, out, cfg, ctx)
                (out.loss / accumulation).backward()
            for key, value in out.metrics.items():
                summed[key] = summed.get(key, 0.0) + value.detach() / accumulation
        if model is objective:
            distributed.average_gradients(objective, ctx)  # a no-op in a single process
        grad_norm = nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if average is not None:
            average.update(objective, step)
        step += 1
        seconds += time.perf_counter() - started
        out_of_time = bool(cfg.train.max_seconds) and seconds >= cfg.train.max_seconds
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps or out_of_time:
            metrics = {k: float(v) for k, v in distributed.mean_over_ranks(summed, ctx).items()}
            speed = throughput.read()  # rank 0's: every rank waits for the slowest in the gradient all-reduce
            if ctx.is_main:
                row = {"step": step, **metrics, "param_grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0]}
                with writing(run_dir):
                    log.append({**row, "seconds": round(seconds, 2), **speed})
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", samples_s=f"{speed['samples_per_s']:.0f}",
                                data_wait=f"{speed['data_wait']:.0%}", refresh=False)  # fmt: skip
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps or out_of_time:
            if stopping is not None:
                validation_round()
            checkpoint()
            if ctx.is_main and time.perf_counter() - last_plot > 60:  # matplotlib is slow: at most once a minute
                with writing(run_dir):
                    log.plot()
                last_plot = time.perf_counter()
    bar.close()
    if average is not None:  # from here on the objective holds the averaged weights: what is saved and evaluated
        average.copy_to(objective)
    if stopping is not None and stopping.best_step:  # the best-scoring weights, not the last ones
        tensors, _, _ = read_weights(run_dir / BEST_FILE)
        load_weights(objective, {k: v.to(device) for k, v in tensors.items()}, run_dir / BEST_FILE, "this model")
    if ctx.is_main:
        extra = {"step": step, "train_seconds": seconds, "world_size": ctx.world_size}
        if average is not None:
            extra["weights"] = f"exponential moving average, decay {cfg.train.ema_decay:g}"
        if stopping is not None:
            extra.update(stopping.summary())
        if out_of_time:
            extra["stopped"] = f"time limit: train.max_seconds={cfg.train.max_seconds:g} reached at step {step}"
        with writing(run_dir, f"; checkpoint step {step} holds the trained weights"):
            save_pretrained_folder(objective, cfg, run_dir, extra=extra)  # the run folder is a loadable model folder
            log.plot()
    distributed.barrier(ctx)
    best_step = stopping.best_step if stopping is not None else 0
    return TrainResult(run_dir, step, seconds, metrics, resumed_from, best_step)
