"""The models of the comparison, trained on one crop stream: the blind EBT, the sigma-conditioned EBT, the diffusers
DiT for the same number of steps, the DiT for the EBT's training FLOPs (the compute-matched row) and, when asked, the
warm EBT: the shipped recipe (its trunk trained as a plain one-pass denoiser, then a short EBT stage from it) at the
blind EBT's training FLOPs."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ....core.config import ConfigError, with_overrides
from ....image.config import ImageConfig
from ....image.data import CropSampler, Photo, training_photos
from ....image.training import build_model
from ...contenders import Contender, compute_matched_config, fit_contender, load_contender
from .costs import training_step_flops

MODELS = ("ebt", "ebt-cond", "dit", "dit-compute")  # run folders; row methods use underscores (docs/reports.md)
WARM, TRUNK = "ebt-warm", "ebt-warm-trunk"  # the warm EBT and the plain denoiser it starts from (optional)


def kind_of(name: str) -> str:
    """The model kind of a contender's run folder ("ebt-cond" is an EBT, "dit-compute" a DiT, a "-trunk" a plain
    one-pass denoiser)."""
    if name.endswith("-trunk"):
        return "transformer"
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


def step_flops_of(kind: str, cfg: ImageConfig) -> int:
    """FLOPs of one training step of a fresh ``kind`` model of ``cfg`` (random weights serve: the count is fixed)."""
    return training_step_flops(build_model(kind, cfg), cfg)


def warm_configs(cfg: ImageConfig, warm: ImageConfig, run_root: Path, budget_flops: float) -> tuple[ImageConfig, ...]:
    """The warm EBT's two stages on the comparison's crop stream, for ``budget_flops`` in all: the trunk (``cfg``'s
    model, blind, trained as a plain one-pass denoiser with ``cfg``'s optimiser) for what the EBT stage leaves, then
    ``warm``'s EBT stage (its energy, descent, optimiser, EMA and steps) started from the trunk."""
    blind = replace(cfg.model, sigma_conditioning=False)
    stage = replace(
        warm,
        name=f"{cfg.name}-{WARM}",
        data=cfg.data,
        model=replace(
            blind,
            energy=warm.model.energy,
            noisy_context=warm.model.noisy_context,
            relative_to_noisy=warm.model.relative_to_noisy,
        ),
        train=replace(warm.train, init_from=str(run_root / TRUNK), seed=cfg.train.seed),
    )
    trunk = replace(cfg, name=f"{cfg.name}-{TRUNK}", model=blind)
    left = budget_flops - step_flops_of("ebt", stage) * stage.train.steps
    if left <= 0:
        raise ConfigError(f"the warm EBT stage alone ({stage.train.steps} steps) costs more than the blind EBT's "
                          "training FLOPs; give it fewer train.steps")  # fmt: skip
    steps = max(1, round(left / step_flops_of("transformer", trunk)))
    return with_overrides(trunk, [f"train.steps={steps}"]), stage


def train_contenders(cfg: ImageConfig, run_root: str | Path, progress: bool = True,
                     warm: ImageConfig | None = None) -> dict[str, Contender]:  # fmt: skip
    """Train (or resume, or reuse when finished with the same config) each model under ``run_root/<name>``;
    with ``warm`` (an EBT-stage config such as configs/cpu-small-warm.yaml) the warm EBT too."""
    photos, run_root = training_photos(cfg.data), Path(run_root)
    configs = model_configs(cfg)
    contenders = {name: fit_model(name, c, photos, run_root, progress) for name, c in configs.items()}
    budget = contenders["ebt"].train_flops
    matched = compute_matched_config(configs["dit"], f"{cfg.name}-dit-compute", cfg.train.steps,
                                     contenders["ebt"].step_flops, contenders["dit"].step_flops)  # fmt: skip
    contenders["dit-compute"] = fit_model("dit-compute", matched, photos, run_root, progress)
    if warm is not None:
        trunk_cfg, stage_cfg = warm_configs(cfg, warm, run_root, budget)
        trunk = fit_model(TRUNK, trunk_cfg, photos, run_root, progress)
        contenders[WARM] = replace(fit_model(WARM, stage_cfg, photos, run_root, progress), prior=trunk)
    return contenders


def load_contenders(run_root: str | Path, device: str | torch.device = "cpu") -> dict[str, Contender]:
    """Trained models from ``run_root/<name>/model.safetensors`` (what ``train_contenders`` writes); the warm EBT
    when it is there."""

    def load(name: str, required: bool = True) -> Contender | None:
        build = partial(build_model, kind_of(name))
        return load_contender(name, run_root, build, training_step_flops, device, required)

    contenders = {name: load(name) for name in MODELS}
    warm = load(WARM, required=False)
    if warm is not None:
        contenders[WARM] = replace(warm, prior=load(TRUNK))
    return contenders
