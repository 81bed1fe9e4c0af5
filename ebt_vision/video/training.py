"""Training a video model: clips, objective and the one training loop wired together. What ``ebt-vision train`` runs
for ``task: video`` (registered in ``core.config.TASKS``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core import distributed
from ..core.early_stopping import Validate
from ..core.train import TrainResult, seed_everything, train
from .config import LOWER_IS_BETTER, VideoConfig
from .data import held_out, training_stream
from .loading import MODEL_KINDS, build_video_model
from .metrics import frame_errors

MODELS = MODEL_KINDS
VALIDATION_CLIPS = 16  # this many validation clips, evenly spaced, score a model during training (early stopping)


def validation_error(cfg: VideoConfig, clips: int = VALIDATION_CLIPS) -> Validate:
    """The video models' early-stopping score: the mean MSE (OpenSTL's convention, as the reports), or minus the mean
    PSNR (``cfg.select_by``), of the full horizon rolled out from ``clips`` validation clips evenly spaced over them (so
    every validation scene counts), each model at its configured steps. The clips are read now, before any training
    step, so missing validation footage fails first."""
    _, held = held_out(cfg, "validation")
    held = held[:: max(1, len(held) // clips)][:clips]
    context_frames = cfg.data.context_frames

    def score(model: nn.Module) -> float:
        rollout = model.rollout(held[:, :context_frames], cfg.horizon)
        truth = held[:, context_frames : context_frames + cfg.horizon]
        mean = float(frame_errors(rollout.predictions.detach().cpu(), truth)[cfg.select_by].mean())
        return mean if LOWER_IS_BETTER[cfg.select_by] else -mean

    return score


def train_model(
    cfg: VideoConfig, run_dir: str | Path, model: str = "ebt", resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train one video model ("ebt", "transformer" or "dit") on ``cfg.data.source`` (its training part only).
    Under ``torchrun`` (after ``distributed.init_from_environment``) this is one process of a DDP run."""
    seed_everything(cfg.train.seed)
    objective = build_video_model(model, cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    stream = training_stream(cfg, cfg.train.seed, ctx.rank, ctx.world_size)
    validate = validation_error(cfg) if cfg.train.early_stopping else None
    return train(objective, iter(stream), cfg, run_dir, resume, stream, progress, validate)
