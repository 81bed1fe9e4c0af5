"""The models of a head-to-head comparison, any workload: each trained (or resumed, or reused when finished with the
same config) on one shared data stream, with the FLOPs of one training step, and the compute-matched baseline that
gets the EBT's training FLOPs in more steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import CheckpointError, load_trained
from ..core.config import ExperimentConfig, with_overrides
from ..core.early_stopping import Validate
from ..core.layers import count_parameters
from ..core.train import seed_everything, train

StepFlops = Callable[[nn.Module, ExperimentConfig], int]  # (objective, config) -> FLOPs of one training step


@dataclass
class Contender:
    name: str
    objective: nn.Module
    steps: int
    seconds: float
    step_flops: int  # FLOPs of one training step (forward, descent and backward)
    kept_step: int = 0  # early stopping kept the weights of this step (0: the last step's)
    prior: Contender | None = None  # the model it was started from (a warm start), whose training counts too

    @property
    def params(self) -> int:
        return count_parameters(self.objective.model)

    @property
    def train_flops(self) -> float:
        """FLOPs of all its training: its own steps and those of the model it started from."""
        return float(self.step_flops) * self.steps + (self.prior.train_flops if self.prior else 0.0)

    @property
    def train_seconds(self) -> float:
        return self.seconds + (self.prior.train_seconds if self.prior else 0.0)

    @property
    def steps_label(self) -> str:
        """Its training steps, stage by stage: ``4078 + 170`` for a warm start."""
        return f"{self.prior.steps_label} + {self.steps}" if self.prior else str(self.steps)


def fit_contender(
    name: str,
    cfg: ExperimentConfig,
    build: Callable[[], nn.Module],
    stream: Callable[[], Iterable],
    step_flops: StepFlops,
    run_root: Path,
    progress: bool,
    validate: Validate | None = None,
) -> Contender:
    """Train ``build()`` on ``stream()`` (a resumable sampler, the same one for every contender) under
    ``run_root/name``; every contender starts from the same random state."""
    seed_everything(cfg.train.seed)
    flops = step_flops(build(), cfg)
    seed_everything(cfg.train.seed)  # the FLOP count drew random numbers: start every model from the same state
    objective = build()
    sampler = stream()
    result = train(objective, iter(sampler), cfg, run_root / name, True, sampler, progress, validate)
    return Contender(name, objective.eval(), result.step, result.seconds, flops, result.best_step)


def compute_matched_config(
    dit_cfg: ExperimentConfig, name: str, ebt_steps: int, ebt_step_flops: int, dit_step_flops: int
) -> ExperimentConfig:
    """``dit_cfg`` named ``name``, trained for as many FLOPs as ``ebt_steps`` EBT steps (more steps, same batch)."""
    steps = max(1, round(ebt_steps * ebt_step_flops / dit_step_flops))
    return with_overrides(dit_cfg, [f"name={name}", f"train.steps={steps}"])


def load_contender(
    name: str,
    run_root: str | Path,
    build: Callable[[ExperimentConfig], nn.Module],
    step_flops: StepFlops,
    device: str | torch.device,
    required: bool = True,
) -> Contender | None:
    """A trained contender from ``run_root/name/model.safetensors`` (what ``fit_contender`` writes); a missing one
    is an error when ``required``, else None."""
    path = Path(run_root) / name / "model.safetensors"
    if not path.exists():
        if not required:
            return None
        raise CheckpointError(f"{path} not found; train the contenders first (the same command without --load)")
    objective, extra = load_trained(path, build, f"the {name} model", device)
    flops = step_flops(objective, objective.cfg)
    kept = int(extra.get("validation_best_step", 0))
    return Contender(name, objective.eval(), extra["step"], extra.get("train_seconds", 0), flops, kept)
