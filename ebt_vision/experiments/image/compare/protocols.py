"""The evaluations: every method on the same noisy copies of one split of held-out photos.

Noise knowledge is equal within a setting: *blind* methods get at most the sigma that ``estimate_noise_sigma`` reads
off the noisy image; *non-blind* methods get the true sigma. Cost is counted two ways: raw passes (a DiT step is one
forward pass; an EBT descent step one forward and one backward pass to the candidate) and FLOP-equivalents in units
of one DiT forward pass on the same tile (``costs.pass_costs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ....core.defaults import SIGMAS
from ....core.inference import Thinking
from ....core.metrics import psnr, ssim
from ....core.progress import progress as progress_bar
from ....image.classical import cbm3d_denoise
from ....image.config import ImageConfig
from ....image.data import held_out_photos, square_crops
from ....image.dit import dit_denoise
from ....image.inference import best_of_n, denoise
from ....image.noise import (
    NoiseLevel,
    as_model_input,
    diffusion_as_gaussian,
    estimate_noise_sigma,
    level_to_timestep,
    noisy_copy,
    training_sigma_max,
)
from ...contenders import Contender
from ...selection import SPLIT_SEED_OFFSET
from .contenders import WARM

DIT_STEPS = (1, 2, 5, 10, 25, 50, 100, 0)  # 0 = all steps from the starting timestep
ANCHORED_PASSES = (2, 3)  # the warm EBT's re-anchored descents (rows ebt_warm_x<passes>, steps per pass 1-4)
PAPER_LEVELS = (0.1, 0.2)  # the original EBT protocol: train at diffusion level 0.1, test 0.1 and 0.2 (OOD)


@dataclass(frozen=True)
class CompareOptions:
    """The settings of ``ebt-vision compare``: what the evaluations measure (held-out photos resized to
    ``eval_size``, the first ``limit`` of each split; the sigmas; EBT steps, DiT passes, best-of-N; CBM3D; the
    original work's protocol) and how ``run_comparison`` gets its models (``load``, ``device``) and names the report."""

    eval_size: int = 64
    sigmas: tuple[float, ...] = SIGMAS
    ebt_steps: int = 8
    dit_steps: tuple[int, ...] = DIT_STEPS
    best_of: tuple[int, ...] = (2, 4)
    seed: int = 0
    with_bm3d: bool = True  # on the test split (CBM3D has no setting to choose on validation)
    with_paper_protocol: bool = True
    limit: int | None = None
    warm: ImageConfig | None = None  # the EBT stage of a warm EBT to train beside the others (configs/cpu-small-warm)
    load: bool = False  # evaluate finished runs without training
    device: str = "auto"
    stem: str = "denoise_compare"


def eval_images(split: str, size: int, limit: int | None = None) -> tuple[list[str], Tensor]:
    """A held-out split resized and centre-cropped to ``size``: names, (N, 3, size, size)."""
    return square_crops(held_out_photos(split=split)[:limit], size)


def score(estimates: Tensor, clean: Tensor) -> list[tuple[float, float]]:
    return [
        (float(psnr(e[None], c[None])), float(ssim(e[None], c[None])))
        for e, c in zip(estimates.cpu().float(), clean, strict=True)
    ]


class RowWriter:
    """Collects one row per (image, noise, setting, method, steps) with its cost."""

    def __init__(self, split: str, names: list[str], clean: Tensor, costs: dict[str, float]) -> None:
        self.split, self.names, self.clean, self.costs, self.rows = split, names, clean, costs, []

    def add(self, base: dict, method: str, steps: int, estimates: Tensor, forward: int | list[int], backward: int = 0):
        """Score ``estimates`` (one per image) against the clean images; ``forward`` per image or for all."""
        forwards = forward if isinstance(forward, list) else [forward] * len(self.names)
        for i, (p, s) in enumerate(score(estimates, self.clean)):
            if method.startswith("dit"):
                flop = forwards[i]
            elif method.startswith("ebt"):
                own = "ebt_warm_" if method.startswith("ebt_warm") else "ebt_"  # the warm EBT's energy costs its own
                flop = forwards[i] * self.costs[own + "forward"] + backward * self.costs[own + "backward"]
            else:
                flop = 0.0
            self.rows.append(
                {
                    "eval_split": self.split,
                    **base,
                    "image": self.names[i],
                    "method": method,
                    "steps": steps,
                    "forward_passes": forwards[i],
                    "backward_passes": backward,
                    "dit_forward_equivalents": round(flop, 3),
                    "psnr": p,
                    "ssim": s,
                }
            )


def _ebt_rows(writer: RowWriter, base: dict, method: str, objective, noisy, max_steps: int, sigma=None) -> None:
    """EBT after each of 1..max_steps steps, with and without energy-based stopping."""
    model_input = as_model_input(noisy, base["sigma"], objective.cfg.data.noise)
    for suffix, stop in (("", False), ("_stop", True)):
        thinking = Thinking(max_steps, stop_when_energy_rises=stop, final_energy=False)
        trajectory, _ = denoise(objective, model_input, thinking, sigma)
        for k in range(1, max_steps + 1):
            # without stopping: k forward + k backward; with it the energy of candidate k is needed too: k + 1
            writer.add(base, method + suffix, k, trajectory.candidates[k], k + int(stop), k)


def _warm_rows(writer: RowWriter, base: dict, contenders: dict[str, Contender], noisy, max_steps: int) -> None:
    """The warm EBT, when the comparison has one: one descent (``_ebt_rows``), and re-anchored descents (each pass's
    estimate is the next one's noisy image, ``Thinking.passes``, as the shipped model's step schedule descends far out
    of distribution): rows ``ebt_warm_x<passes>`` after 1-4 steps per pass. The longest re-anchored descent of k steps
    per pass holds the shorter ones: after p passes its estimate is ``candidates[p * k]``."""
    if WARM not in contenders:
        return
    objective = contenders[WARM].objective
    _ebt_rows(writer, base, "ebt_warm", objective, noisy, max_steps)
    model_input = as_model_input(noisy, base["sigma"], objective.cfg.data.noise)
    for k in range(1, min(4, max_steps) + 1):
        trajectory, _ = denoise(objective, model_input, Thinking(k, passes=max(ANCHORED_PASSES), final_energy=False))
        for passes in ANCHORED_PASSES:
            writer.add(base, f"ebt_warm_x{passes}", k, trajectory.candidates[passes * k], passes * k, passes * k)


def _dit_rows(writer: RowWriter, base: dict, method: str, dit, noisy, sigma, dit_steps) -> None:
    for k in dit_steps:
        estimate, passes = dit_denoise(dit, noisy, sigma, k or None)
        writer.add(base, method, k, estimate, passes)


def evaluate_gaussian(
    contenders: dict[str, Contender],
    costs: dict[str, float],
    split: str,
    options: CompareOptions,
    progress: bool = True,
) -> list[dict]:
    """Rows for every method on Gaussian noise at each of ``options.sigmas``, in the blind and non-blind settings, on
    ``split`` (CBM3D on the test split only)."""
    names, clean = eval_images(split, options.eval_size, options.limit)
    writer = RowWriter(split, names, clean, costs)
    ebt, ebt_cond = contenders["ebt"].objective, contenders["ebt-cond"].objective
    dits = {"dit_ddim": contenders["dit"].objective, "dit_compute_ddim": contenders["dit-compute"].objective}
    train_max = training_sigma_max(ebt.cfg.data)
    offset = SPLIT_SEED_OFFSET[split]
    for sigma in progress_bar(options.sigmas, desc=f"compare ({split})", disable=not progress):
        noisy = torch.stack([noisy_copy(c, sigma, options.seed, offset + i) for i, c in enumerate(clean)])
        estimated = estimate_noise_sigma(noisy)
        base = {"noise": "gaussian", "sigma": sigma, "split": "id" if sigma <= train_max else "ood"}
        writer.add({**base, "setting": "-"}, "noisy", 0, noisy, 0)
        for setting, sigma_given in (("blind", estimated), ("non-blind", torch.full_like(estimated, sigma))):
            info = {**base, "setting": setting}
            if options.with_bm3d and split == "test":
                denoised = torch.stack([cbm3d_denoise(n, float(s)) for n, s in zip(noisy, sigma_given, strict=True)])
                writer.add(info, "cbm3d", 0, denoised, 0)
            for method, dit in dits.items():
                _dit_rows(writer, info, method, dit, noisy, sigma_given, options.dit_steps)
            _ebt_rows(writer, info, "ebt_cond", ebt_cond, noisy, options.ebt_steps, sigma=sigma_given)
        info = {**base, "setting": "blind"}
        _ebt_rows(writer, info, "ebt", ebt, noisy, options.ebt_steps)
        _warm_rows(writer, info, contenders, noisy, options.ebt_steps)
        k = ebt.cfg.descent.num_steps
        for n in options.best_of:
            model_input = as_model_input(noisy, sigma, ebt.cfg.data.noise)
            best = best_of_n(ebt, model_input, Thinking(k, n_candidates=n), seed=options.seed).best
            writer.add({**info, "n_candidates": n}, "ebt_best_of_n", k, best, n * (k + 1), n * k)
    return writer.rows


def evaluate_paper_protocol(
    contenders: dict[str, Contender],
    costs: dict[str, float],
    split: str,
    options: CompareOptions,
    levels: tuple[float, ...] = PAPER_LEVELS,
) -> list[dict]:
    """The original EBT protocol: x_t = sqrt(a) x0 + sqrt(1 - a) eps at t = level * 1000 on the linear schedule.

    The DiTs denoise x_t from t (their native input). The EBTs get x_t in the convention they were trained on
    (x_t / sqrt(a), Gaussian noise of the SNR-equivalent sigma, for Gaussian-trained ones: level 0.1 ~ sigma 43,
    0.2 ~ sigma 92); the conditioned EBT is told that sigma. The level is known to every method.
    """
    names, clean = eval_images(split, options.eval_size, options.limit)
    writer = RowWriter(split, names, clean, costs)
    ebt, ebt_cond = contenders["ebt"].objective, contenders["ebt-cond"].objective
    dits = {"dit_ddim": contenders["dit"].objective, "dit_compute_ddim": contenders["dit-compute"].objective}
    train_max = training_sigma_max(ebt.cfg.data)
    for level in levels:
        t = level_to_timestep(level)
        generator = torch.Generator().manual_seed(options.seed * 7919 + t + SPLIT_SEED_OFFSET[split])
        x_t = NoiseLevel("diffusion", torch.full((len(names),), level)).add_to(clean, generator)
        rescaled, sigma = diffusion_as_gaussian(x_t, level)
        base = {
            "noise": "diffusion",
            "noise_level": level,
            "sigma": round(sigma, 2),
            "setting": "known level",
            "split": "id" if sigma <= train_max else "ood",
        }
        writer.add(base, "noisy", 0, rescaled, 0)
        for method, dit in dits.items():
            _dit_rows(writer, base, method, dit, rescaled, sigma, options.dit_steps)
        _ebt_rows(writer, base, "ebt", ebt, rescaled, options.ebt_steps)
        _warm_rows(writer, base, contenders, rescaled, options.ebt_steps)
        _ebt_rows(
            writer, base, "ebt_cond", ebt_cond, rescaled, options.ebt_steps, sigma=torch.full((len(names),), sigma)
        )
    return writer.rows
