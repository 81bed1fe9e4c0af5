"""The models of the video comparison, trained on one clip stream: the video EBT, the plain causal transformer and the
diffusers DiT for the same number of steps, and the DiT for the EBT's training FLOPs (the compute-matched row)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ...video.config import VideoConfig
from ...video.data import training_stream
from ...video.loading import build_video_model
from ...video.training import validation_error
from ..contenders import Contender, compute_matched_config, fit_contender, load_contender
from .costs import training_step_flops

MODELS = ("ebt", "transformer", "dit", "dit-compute")  # run folders; row methods use underscores (docs/reports.md)


def kind_of(name: str) -> str:
    """The model kind of a contender's run folder ("dit-compute" is a DiT)."""
    return "dit" if name.startswith("dit") else name


def model_configs(cfg: VideoConfig) -> dict[str, VideoConfig]:
    """The step-matched contenders: same data, optimiser, steps and trunk sizes."""
    return {name: replace(cfg, name=f"{cfg.name}-{name}") for name in ("ebt", "transformer", "dit")}


def _fit(name: str, cfg: VideoConfig, run_root: Path, progress: bool) -> Contender:
    build = partial(build_video_model, kind_of(name), cfg)
    clips = partial(training_stream, cfg)  # the identical clip stream for every contender
    validate = validation_error(cfg) if cfg.train.early_stopping else None
    return fit_contender(name, cfg, build, clips, training_step_flops, run_root, progress, validate)


def train_contenders(
    cfg: VideoConfig, run_root: str | Path, compute_matched: bool = True, progress: bool = True
) -> dict[str, Contender]:
    """Train (or resume, or reuse when finished with the same config) each model under ``run_root/<name>``."""
    run_root = Path(run_root)
    contenders = {name: _fit(name, c, run_root, progress) for name, c in model_configs(cfg).items()}
    if compute_matched:
        matched = compute_matched_config(cfg, f"{cfg.name}-dit-compute", cfg.train.steps,
                                         contenders["ebt"].step_flops, contenders["dit"].step_flops)  # fmt: skip
        contenders["dit-compute"] = _fit("dit-compute", matched, run_root, progress)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes); the
    compute-matched DiT is optional."""
    loaded = {name: load_contender(name, run_root, partial(build_video_model, kind_of(name)), training_step_flops,
                                   device, required=name != "dit-compute") for name in MODELS}  # fmt: skip
    return {name: contender for name, contender in loaded.items() if contender is not None}
