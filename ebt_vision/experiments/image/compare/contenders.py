"""The models of the comparison, trained on one crop stream: the blind EBT, the sigma-conditioned EBT, the diffusers
DiT for the same number of steps, and the DiT for the EBT's training FLOPs (the compute-matched row)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ....image.config import ImageConfig
from ....image.data import CropSampler, Photo, training_photos
from ....image.training import build_model
from ...contenders import Contender, compute_matched_config, fit_contender, load_contender
from .costs import training_step_flops

MODELS = ("ebt", "ebt-cond", "dit", "dit-compute")  # run folders; row methods use underscores (docs/reports.md)


def kind_of(name: str) -> str:
    """The model kind of a contender's run folder ("ebt-cond" is an EBT, "dit-compute" a DiT)."""
    return "dit" if name.startswith("dit") else "ebt"


def model_configs(cfg: ImageConfig) -> dict[str, ImageConfig]:
    """The step-matched contenders from one config: same data, optimiser, steps and trunk sizes."""
    blind = replace(cfg.model, sigma_conditioning=False)
    return {
        "ebt": replace(cfg, name=f"{cfg.name}-ebt", model=blind),
        "ebt-cond": replace(cfg, name=f"{cfg.name}-ebt-cond", model=replace(blind, sigma_conditioning=True)),
        "dit": replace(cfg, name=f"{cfg.name}-dit", model=blind),
    }


def fit_model(name: str, cfg: ImageConfig, photos: list[Photo], run_root: Path, progress: bool,
              kind: str | None = None) -> Contender:  # fmt: skip
    """One contender on the crop stream of ``photos`` (the identical stream for every contender); ``kind``: the
    model kind when the name does not say it (``kind_of``), e.g. "transformer" for a plain trunk."""
    build = partial(build_model, kind or kind_of(name), cfg)
    crops = partial(CropSampler, photos, cfg.data, seed=cfg.train.seed)
    return fit_contender(name, cfg, build, crops, training_step_flops, run_root, progress)


def train_contenders(cfg: ImageConfig, run_root: str | Path, progress: bool = True) -> dict[str, Contender]:
    """Train (or resume, or reuse when finished with the same config) each model under ``run_root/<name>``."""
    photos, run_root = training_photos(cfg.data), Path(run_root)
    configs = model_configs(cfg)
    contenders = {name: fit_model(name, c, photos, run_root, progress) for name, c in configs.items()}
    matched = compute_matched_config(configs["dit"], f"{cfg.name}-dit-compute", cfg.train.steps,
                                     contenders["ebt"].step_flops, contenders["dit"].step_flops)  # fmt: skip
    contenders["dit-compute"] = fit_model("dit-compute", matched, photos, run_root, progress)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes)."""
    return {name: load_contender(name, run_root, partial(build_model, kind_of(name)), training_step_flops, device)
            for name in MODELS}  # fmt: skip
