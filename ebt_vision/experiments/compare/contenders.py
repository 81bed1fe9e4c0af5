"""The models of the comparison, trained on one crop stream: the blind EBT, the sigma-conditioned EBT, the diffusers
DiT for the same number of steps, and the DiT for the EBT's training FLOPs (the compute-matched row)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ...core.checkpoint import CheckpointError, load_trained
from ...core.config import with_overrides
from ...core.layers import count_parameters
from ...core.train import seed_everything, train
from ...image.config import ImageConfig
from ...image.data import CropSampler, Photo, training_photos
from ...image.dit import DiTObjective
from ...image.objective import DenoisingObjective
from .costs import training_step_flops

MODELS = ("ebt", "ebt-cond", "dit", "dit-compute")  # run folders; row methods use underscores (docs/reports.md)


def model_configs(cfg: ImageConfig) -> dict[str, ImageConfig]:
    """The step-matched contenders from one config: same data, optimiser, steps and trunk sizes."""
    blind = replace(cfg.model, sigma_conditioning=False)
    return {
        "ebt": replace(cfg, name=f"{cfg.name}-ebt", model=blind),
        "ebt-cond": replace(cfg, name=f"{cfg.name}-ebt-cond", model=replace(blind, sigma_conditioning=True)),
        "dit": replace(cfg, name=f"{cfg.name}-dit", model=blind),
    }


def build_objective(name: str, cfg: ImageConfig) -> nn.Module:
    return DiTObjective(cfg) if name.startswith("dit") else DenoisingObjective(cfg)


def compute_matched_config(cfg: ImageConfig, ebt_step_flops: int, dit_step_flops: int) -> ImageConfig:
    """The DiT config trained for as many FLOPs as the EBT's ``cfg.train.steps`` steps (more steps, same batch)."""
    steps = max(1, round(cfg.train.steps * ebt_step_flops / dit_step_flops))
    return with_overrides(model_configs(cfg)["dit"], [f"name={cfg.name}-dit-compute", f"train.steps={steps}"])


@dataclass
class Contender:
    name: str
    objective: nn.Module
    steps: int
    seconds: float
    step_flops: int  # FLOPs of one training step (forward, descent and backward)

    @property
    def params(self) -> int:
        return count_parameters(self.objective.model)

    @property
    def train_flops(self) -> float:
        return float(self.step_flops) * self.steps


def fit_model(name: str, cfg: ImageConfig, photos: list[Photo], run_root: Path, progress: bool) -> Contender:
    seed_everything(cfg.train.seed)
    objective = build_objective(name, cfg)
    step_flops = training_step_flops(objective, cfg)
    seed_everything(cfg.train.seed)  # the FLOP count drew random numbers: start every model from the same state
    objective = build_objective(name, cfg)
    sampler = CropSampler(photos, cfg.data, seed=cfg.train.seed)  # the identical crop stream
    result = train(objective, iter(sampler), cfg, run_root / name, True, sampler, progress)
    return Contender(name, objective.eval(), result.step, result.seconds, step_flops)


def train_contenders(cfg: ImageConfig, run_root: str | Path, progress: bool = True) -> dict[str, Contender]:
    """Train (or resume, or reuse when finished with the same config) each model under ``run_root/<name>``."""
    photos, run_root = training_photos(cfg.data), Path(run_root)
    contenders = {name: fit_model(name, c, photos, run_root, progress) for name, c in model_configs(cfg).items()}
    matched = compute_matched_config(cfg, contenders["ebt"].step_flops, contenders["dit"].step_flops)
    contenders["dit-compute"] = fit_model("dit-compute", matched, photos, run_root, progress)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes)."""
    contenders = {}
    for name in MODELS:
        path = Path(run_root) / name / "model.safetensors"
        if not path.exists():
            raise CheckpointError(f"{path} not found; train with `ebt-vision compare` first")
        objective, extra = load_trained(path, partial(build_objective, name), f"the {name} model", device)
        flops = training_step_flops(objective, objective.cfg)
        contenders[name] = Contender(name, objective.eval(), extra["step"], extra.get("train_seconds", 0), flops)
    return contenders
