"""What makes the EBT denoiser better or worse, and whether thinking longer pays: train variants of one config on
the same crops, evaluate each after every test-time descent step, with energy-based stopping, stopping on the step
size, Nesterov descent and best-of-N.

Every variant is the blind image EBT of the base config with a few overrides; the diffusers DiT trained on the same
crops is the reference. With ``equal_flops`` every variant trains for the base variant's training FLOPs (its step
count scaled by the FLOPs of one of its steps), so a cheaper objective trains longer. Step counts, tolerances and
momenta are chosen on the validation photos and reported on the test photos (``ablation_report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core.config import with_overrides
from ...core.defaults import SIGMAS
from ...core.descent import STEP_STOP_TOLERANCES, stop_on_step_size
from ...core.inference import Thinking
from ...core.metrics import psnr
from ...core.progress import progress as progress_bar
from ...core.train import seed_everything, train
from ...image.config import ImageConfig
from ...image.data import CropSampler, held_out_photos, square_crops, training_photos
from ...image.dit import DiTObjective, dit_denoise
from ...image.inference import best_of_n, denoise
from ...image.noise import estimate_noise_sigma, noisy_copy
from ...image.objective import DenoisingObjective
from .. import selection
from ..selection import SPLIT_SEED_OFFSET
from .compare.costs import training_step_flops

LONG = ["descent.num_steps=8", "descent.min_steps=1", "descent.graph_steps=1"]
# name -> (overrides, what the variant tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "base": ([], "the base config unchanged"),
    "fixed-steps": (["descent.min_steps=2", "descent.step_size_jitter=1.0"], "no randomisation: always 2 steps"),
    "loss-last": (["train.loss_on_steps=last"], "loss on the last step's candidate only"),
    "one-step": (["descent.num_steps=1", "descent.min_steps=1"], "train with a single descent step"),
    "four-steps": (["descent.num_steps=4", "descent.min_steps=1"], "train with 1-4 randomised steps"),
    "step-size-25": (["descent.step_size=25.0"], "initial step size 25 (learned from there)"),
    "step-size-100": (["descent.step_size=100.0"], "initial step size 100 (learned from there)"),
    "langevin": (["descent.langevin_noise=0.02"], "Langevin noise 0.02 after each training step (none at test)"),
    # the landscape: the answer as a fixed point, an energy that ranks answers, training on long descents' states
    "stationarity": (
        ["train.stationarity_weight=1.0"],
        "penalty on the step the descent would take at the clean image",
    ),
    "rank": (["train.rank_weight=1.0", "train.rank_margin=1.0"], "E(clean) below E(final candidate), E(perturbed)"),
    "long": (LONG, "1-8 randomised steps, graph through the last step only (truncated)"),
    "long-graph2": ([*LONG[:2], "descent.graph_steps=2"], "1-8 randomised steps, graph through the last two"),
    "long+stationarity": ([*LONG, "train.stationarity_weight=1.0"], "long + stationarity"),
    "long+rank": ([*LONG, "train.rank_weight=1.0"], "long + rank"),
    "long+stationarity+rank": ([*LONG, "train.stationarity_weight=1.0", "train.rank_weight=1.0"], "all three"),
    "long+replay": ([*LONG, "descent.replay_buffer_size=512"], "long + replay of past (noisy, candidate, clean)"),
}

# The energy landscape: parameterisation x objective (ebt_vision.core.energy, core.objective). The output-layer kinds
# descend at step size 1: their output layer then emits pixel-sized corrections directly (residual: lands on it).
ENERGY_STEP_SIZE = {"linear": 50.0, "dot": 1.0, "l2": 1.0, "residual": 1.0}
OBJECTIVE_WHAT = {
    "unrolled": "loss through the descent",
    "equilibrium": "gradient regressed between start and target",
    "both": "unrolled + equilibrium",
}
for _kind, _size in ENERGY_STEP_SIZE.items():
    for _objective, _what in OBJECTIVE_WHAT.items():
        _overrides = [f"model.energy={_kind}", f"train.objective={_objective}", f"descent.step_size={_size}"]
        VARIANTS[f"{_kind}-{_objective}"] = (_overrides, f"{_kind} energy, {_what}")
        VARIANTS[f"{_kind}-{_objective}+ema"] = ([*_overrides, "train.ema_decay=0.99"], f"{_kind}, {_what}, EMA 0.99")
# Round two, on the residual energy: where the field is trained (the descent's own states), how long the training
# descents are, how far one step may move.
_RESIDUAL = ["model.energy=residual", "descent.step_size=1.0"]
VARIANTS.update({
    "residual-long": ([*_RESIDUAL, *LONG[:2], "descent.graph_steps=2"], "residual, unrolled, 1-8 steps (graph: 2)"),
    "residual-visited": ([*_RESIDUAL, "train.objective=equilibrium", "train.equilibrium_visited=4"],
                         "residual, equilibrium also at states a 1-4 step descent visits"),
    "residual-both-visited": ([*_RESIDUAL, "train.objective=both", "train.equilibrium_visited=4"],
                              "residual, unrolled + equilibrium at visited states"),
    "residual-visited-half": ([*_RESIDUAL, "train.objective=equilibrium", "train.equilibrium_visited=4",
                               "train.equilibrium_max_move=0.5"], "residual-visited, one step moves at most half-way"),
})  # fmt: skip

# Nesterov momenta tried (chosen on validation); the step-size stop's tolerances are core.descent.STEP_STOP_TOLERANCES.
MOMENTA = (0.5,)


def variant_config(base: ImageConfig, name: str, overrides: list[str]) -> ImageConfig:
    return with_overrides(base, [*overrides, f"name={base.name}-{name}"])


@dataclass
class AblationResult:
    rows: list[dict]
    seconds: dict[str, float]
    step_sizes: dict[str, float]
    max_steps: int
    best_of: int
    training_steps: dict[str, int] = field(default_factory=dict)
    step_flops: dict[str, int] = field(default_factory=dict)  # FLOPs of one training step


def _noisy_splits(size: int, sigmas, seed: int, limit: int | None) -> dict[str, tuple[torch.Tensor, dict]]:
    """Per split: the clean crops and {sigma: noisy copies}."""
    splits = {}
    for split in ("validation", "test"):
        _, clean = square_crops(held_out_photos(split=split)[:limit], size)
        offset = SPLIT_SEED_OFFSET[split]
        noisy = {s: torch.stack([noisy_copy(c, s, seed, offset + i) for i, c in enumerate(clean)]) for s in sigmas}
        splits[split] = (clean, noisy)
    return splits


def _psnr_per_image(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return psnr(estimate.cpu(), clean)


def _mean_psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    return float(_psnr_per_image(estimate, clean).mean())


def _evaluate_variant(name: str, objective, splits, sigmas, max_steps: int, best_of: int) -> list[dict]:
    """PSNR after 0..max_steps steps (plain and Nesterov), with energy-based stopping, with stopping on the step size
    at each tolerance, and best-of-N at the step count chosen on validation; every row once per split."""
    rows = []
    base = {"variant": name}
    step_size = float(objective.step_size())
    for split, (clean, noisy) in splits.items():
        for sigma in sigmas:
            at = {**base, "eval_split": split, "sigma": sigma}
            plain, _ = denoise(objective, noisy[sigma], Thinking(max_steps, final_energy=False))
            rows += [{**at, "method": "ebt", "steps": k, "psnr": _mean_psnr(c, clean)}
                     for k, c in enumerate(plain.candidates)]  # fmt: skip
            for tolerance in STEP_STOP_TOLERANCES:
                estimate, taken = stop_on_step_size(plain, step_size, tolerance)
                rows.append({**at, "method": "ebt_stop_step", "steps": max_steps, "tolerance": tolerance,
                             "psnr": _mean_psnr(estimate, clean),
                             "mean_steps_taken": float(taken.float().mean())})  # fmt: skip
            stopped, _ = denoise(objective, noisy[sigma], Thinking(max_steps, stop_when_energy_rises=True))
            rows.append({**at, "method": "ebt_stop", "steps": max_steps, "psnr": _mean_psnr(stopped.final, clean),
                         "mean_steps_taken": float(stopped.steps_taken.float().mean())})  # fmt: skip
            for momentum in MOMENTA:
                nesterov = Thinking(max_steps, momentum=momentum, final_energy=False)
                fast, _ = denoise(objective, noisy[sigma], nesterov)
                rows += [{**at, "method": "ebt_nesterov", "momentum": momentum, "steps": k,
                          "psnr": _mean_psnr(c, clean)} for k, c in enumerate(fast.candidates)]  # fmt: skip
    for sigma in sigmas:
        k = chosen_on_validation(rows, name, "ebt", sigma)["steps"]
        for split, (clean, noisy) in splits.items():
            found = best_of_n(objective, noisy[sigma], Thinking(max(k, 1), n_candidates=best_of), seed=0)
            rows.append({**base, "eval_split": split, "sigma": sigma, "method": "ebt_best_of_n", "steps": max(k, 1),
                         "n_candidates": best_of, "psnr": _mean_psnr(found.best, clean)})  # fmt: skip
    return rows


def select_rows(rows: list[dict], split: str, variant: str, method: str, sigma: float | None = None) -> list[dict]:
    return [r for r in rows if (r["eval_split"], r["variant"], r["method"]) == (split, variant, method)
            and (sigma is None or r["sigma"] == sigma)]  # fmt: skip


def chosen_on_validation(rows: list[dict], variant: str, method: str, sigma: float) -> dict:
    """The test row of the setting (step count, and momentum) with the best validation PSNR (1 step and up for
    descents)."""

    def group(row: dict) -> str | None:
        competes = (row["variant"], row["method"], row["sigma"]) == (variant, method, sigma)
        return method if competes and (not method.startswith("ebt") or row["steps"] >= 1) else None

    setting = ("method", "steps", "momentum", "tolerance")
    return selection.choose(rows, group, setting, ("variant", "sigma"))[method].test


def chosen_tolerance(rows: list[dict], variant: str) -> float:
    """The step-size stop's tolerance with the best mean validation PSNR over every sigma: one threshold for all
    noise levels, as a blind denoiser must use."""
    return selection.best_setting_overall(select_rows(rows, "validation", variant, "ebt_stop_step"),
                                          lambda r: r["tolerance"])  # fmt: skip


def equal_flops_steps(base: ImageConfig, cfg: ImageConfig, budget: float) -> tuple[int, int]:
    """(training steps for ``budget`` FLOPs, FLOPs of one step) of the variant ``cfg`` (measured on one step)."""
    seed_everything(cfg.train.seed)
    flops = training_step_flops(DenoisingObjective(cfg), cfg)
    return max(1, round(budget / flops)), flops


@dataclass(frozen=True)
class AblationOptions:
    """The evaluation of every variant: noise ``sigmas`` (0-255), held-out photos resized and centre-cropped to
    ``eval_size``, PSNR after 0..``max_steps`` test-time steps, best-of-``best_of`` at the validation-chosen step count,
    the DiT at ``dit_steps`` DDIM steps (0 = all), noise ``seed``, the first ``limit`` photos of each split;
    ``equal_flops``: every variant trains for the base config's training FLOPs (not its step count)."""

    sigmas: tuple[float, ...] = SIGMAS
    eval_size: int = 64
    max_steps: int = 16
    best_of: int = 4
    dit_steps: tuple[int, ...] = (1, 2, 5, 10, 25, 0)
    seed: int = 0
    limit: int | None = None
    equal_flops: bool = False


def _evaluate_dit(dit, splits, sigmas: tuple[float, ...], dit_steps: tuple[int, ...]) -> list[dict]:
    """The DiT reference at each DDIM step count, told the sigma estimated from the noisy photo (blind, like the EBT);
    ``splits``: {split: (clean, {sigma: noisy})}."""
    rows = []
    for split, (clean, noisy) in splits.items():
        for sigma in sigmas:
            estimated = estimate_noise_sigma(noisy[sigma])
            for k in dit_steps:
                estimate, passes = dit_denoise(dit, noisy[sigma], estimated, k or None)
                rows.append({"eval_split": split, "variant": "dit", "method": "dit_ddim", "sigma": sigma, "steps": k,
                             "forward_passes": sum(passes) / len(passes),
                             "psnr": _mean_psnr(estimate, clean)})  # fmt: skip
    return rows


def run_ablation(
    base: ImageConfig,
    names: list[str],
    run_root: str | Path,
    options: AblationOptions = AblationOptions(),
    progress: bool = True,
) -> AblationResult:
    """Train (or reuse) each variant and the DiT under ``run_root``; PSNR rows per split, variant, sigma and step."""
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {sorted(VARIANTS)}")
    photos = training_photos(base.data)
    splits = _noisy_splits(options.eval_size, options.sigmas, options.seed, options.limit)
    result = AblationResult([], {}, {}, options.max_steps, options.best_of)
    budget = equal_flops_steps(base, base, 1.0)[1] * base.train.steps if options.equal_flops else None

    def fit(name: str, cfg: ImageConfig, objective):
        seed_everything(cfg.train.seed)
        sampler = CropSampler(photos, cfg.data, seed=cfg.train.seed)  # the same crops for every variant
        trained = train(objective, iter(sampler), cfg, Path(run_root) / name, True, sampler, progress)
        result.seconds[name], result.training_steps[name] = trained.seconds, cfg.train.steps
        return objective.eval()

    for name in progress_bar(names, desc="ablation", disable=not progress):
        cfg = variant_config(base, name, VARIANTS[name][0])
        if budget is not None:
            steps, result.step_flops[name] = equal_flops_steps(base, cfg, budget)
            cfg = with_overrides(cfg, [f"train.steps={steps}"])
        seed_everything(cfg.train.seed)
        objective = fit(name, cfg, DenoisingObjective(cfg))
        result.step_sizes[name] = float(objective.step_size().detach())
        result.rows += _evaluate_variant(name, objective, splits, options.sigmas, options.max_steps, options.best_of)
    seed_everything(base.train.seed)
    dit = fit("dit", base, DiTObjective(base))
    result.rows += _evaluate_dit(dit, splits, options.sigmas, options.dit_steps)
    return result
