"""The models of the video comparison, trained on one clip stream: the video EBT, the plain causal transformer and the
diffusers DiT for the same number of steps, and the DiT for the EBT's training FLOPs (the compute-matched row)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ...core import distributed
from ...core.checkpoint import CheckpointError, load_trained
from ...core.config import with_overrides
from ...core.layers import count_parameters
from ...core.train import TrainResult, seed_everything, train
from ...video.config import VideoConfig
from ...video.data import training_stream
from ...video.loading import build_video_model
from .costs import training_step_flops

MODELS = ("ebt", "transformer", "dit", "dit-compute")  # run folders; row methods use underscores (docs/reports.md)


def kind_of(name: str) -> str:
    """The model kind of a contender's run folder ("dit-compute" is a DiT)."""
    return "dit" if name.startswith("dit") else name


def train_video_model(
    cfg: VideoConfig, run_dir: str | Path, model: str = "ebt", resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train one video model ("ebt", "transformer" or "dit") on ``cfg.data.source`` (its training part only).

    Under ``torchrun`` (after ``distributed.init_from_environment``) this is one process of a DDP run.
    """
    seed_everything(cfg.train.seed)
    objective = build_video_model(model, cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    stream = training_stream(cfg, cfg.train.seed, ctx.rank, ctx.world_size)
    return train(objective, iter(stream), cfg, run_dir, resume=resume, sampler_state=stream, progress=progress)


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


def model_configs(cfg: VideoConfig) -> dict[str, VideoConfig]:
    """The step-matched contenders: same data, optimiser, steps and trunk sizes."""
    return {name: replace(cfg, name=f"{cfg.name}-{name}") for name in ("ebt", "transformer", "dit")}


def compute_matched_config(cfg: VideoConfig, ebt_step_flops: int, dit_step_flops: int) -> VideoConfig:
    """The DiT config trained for as many FLOPs as the EBT's ``cfg.train.steps`` steps (more steps, same batch)."""
    steps = max(1, round(cfg.train.steps * ebt_step_flops / dit_step_flops))
    return with_overrides(cfg, [f"name={cfg.name}-dit-compute", f"train.steps={steps}"])


def _fit(name: str, cfg: VideoConfig, run_root: Path, progress: bool) -> Contender:
    seed_everything(cfg.train.seed)
    step_flops = training_step_flops(build_video_model(kind_of(name), cfg), cfg)
    seed_everything(cfg.train.seed)  # the FLOP count drew random numbers: start every model from the same state
    objective = build_video_model(kind_of(name), cfg)
    stream = training_stream(cfg)  # the identical clip stream for every contender
    result = train(objective, iter(stream), cfg, run_root / name, True, stream, progress)
    return Contender(name, objective.eval(), result.step, result.seconds, step_flops)


def train_contenders(
    cfg: VideoConfig, run_root: str | Path, compute_matched: bool = True, progress: bool = True
) -> dict[str, Contender]:
    """Train (or resume, or reuse when finished with the same config) each model under ``run_root/<name>``."""
    run_root = Path(run_root)
    contenders = {name: _fit(name, c, run_root, progress) for name, c in model_configs(cfg).items()}
    if compute_matched:
        matched = compute_matched_config(cfg, contenders["ebt"].step_flops, contenders["dit"].step_flops)
        contenders["dit-compute"] = _fit("dit-compute", matched, run_root, progress)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes); the
    compute-matched DiT is optional."""
    contenders = {}
    for name in MODELS:
        path = Path(run_root) / name / "model.safetensors"
        if not path.exists():
            if name == "dit-compute":
                continue
            raise CheckpointError(f"{path} not found; train the video contenders first")
        build = partial(build_video_model, kind_of(name))
        objective, extra = load_trained(path, build, f"the video {name} model", device)
        flops = training_step_flops(objective, objective.cfg)
        contenders[name] = Contender(name, objective.eval(), extra["step"], extra.get("train_seconds", 0), flops)
    return contenders
