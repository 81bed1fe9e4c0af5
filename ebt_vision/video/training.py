"""Training a video model: clips, objective and the one training loop wired together. What ``ebt-vision train`` runs
for ``task: video`` (registered in ``core.config.TASKS``)."""

from __future__ import annotations

from pathlib import Path

from ..core import distributed
from ..core.train import TrainResult, seed_everything, train
from .config import VideoConfig
from .data import training_stream
from .loading import MODEL_KINDS, build_video_model

MODELS = MODEL_KINDS


def train_model(
    cfg: VideoConfig, run_dir: str | Path, model: str = "ebt", resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train one video model ("ebt", "transformer" or "dit") on ``cfg.data.source`` (its training part only).
    Under ``torchrun`` (after ``distributed.init_from_environment``) this is one process of a DDP run."""
    seed_everything(cfg.train.seed)
    objective = build_video_model(model, cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    stream = training_stream(cfg, cfg.train.seed, ctx.rank, ctx.world_size)
    return train(objective, iter(stream), cfg, run_dir, resume=resume, sampler_state=stream, progress=progress)
