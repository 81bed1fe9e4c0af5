"""The models of the video comparison, trained on one clip stream: the video EBT, the plain causal transformer and the
diffusers DiT for the same number of steps, and the transformer and the DiT for the EBT's training FLOPs (the
compute-matched rows: more steps on the same stream)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ...video.config import EBTTrunkConfig, VideoConfig
from ...video.data import training_stream
from ...video.loading import build_video_model
from ...video.training import validation_error
from ..contenders import Contender, compute_matched_config, fit_contender, load_contender
from .costs import training_step_flops

BASELINES = ("transformer", "dit")
COMPUTE_MATCHED = tuple(f"{kind}-compute" for kind in BASELINES)  # optional: trained for the EBT's FLOPs
MODELS = ("ebt", *BASELINES, *COMPUTE_MATCHED)  # run folders; row methods use underscores (docs/reports.md)


def kind_of(name: str) -> str:
    """The model kind of a contender's run folder ("dit-compute" is a DiT, "transformer-compute" a transformer)."""
    return name.removesuffix("-compute")


def model_configs(cfg: VideoConfig) -> dict[str, VideoConfig]:
    """The step-matched contenders: same data, optimiser, steps and trunk sizes; the EBT's trunk is the ``ebt``
    section's, written into its run's ``model`` (the other runs keep no ``ebt`` section: it does not concern them)."""
    plain = replace(cfg, ebt=EBTTrunkConfig())
    configs = {name: replace(plain, name=f"{cfg.name}-{name}") for name in ("ebt", "transformer", "dit")}
    configs["ebt"] = replace(configs["ebt"], model=cfg.ebt_model())
    return configs


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
    configs = model_configs(cfg)
    contenders = {name: _fit(name, c, run_root, progress) for name, c in configs.items()}
    if compute_matched:
        for kind in BASELINES:
            matched = compute_matched_config(configs[kind], f"{cfg.name}-{kind}-compute", cfg.train.steps,
                                             contenders["ebt"].step_flops, contenders[kind].step_flops)  # fmt: skip
            contenders[f"{kind}-compute"] = _fit(f"{kind}-compute", matched, run_root, progress)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes); the
    compute-matched ones are optional."""
    loaded = {name: load_contender(name, run_root, partial(build_video_model, kind_of(name)), training_step_flops,
                                   device, required=name not in COMPUTE_MATCHED) for name in MODELS}  # fmt: skip
    return {name: contender for name, contender in loaded.items() if contender is not None}
