"""Held-out denoising evaluation of one checkpoint at full resolution (``ebt-vision eval``): noisy input, CBM3D, the
EBT after every descent step and with energy-based stopping, the step schedule, and (optionally) the DiT baseline;
step counts chosen on the validation photos, reported on the test photos (``evaluation_report``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ...core.defaults import SIGMAS
from ...core.descent import STEP_STOP_TOLERANCES, Trajectory, stop_on_step_size
from ...core.inference import Thinking
from ...core.metrics import psnr, ssim
from ...core.progress import progress as progress_bar
from ...image.classical import cbm3d_denoise
from ...image.data import Photo
from ...image.dit import DiTObjective, dit_denoise
from ...image.inference import Tiling, crop_to_patches, denoise
from ...image.noise import as_model_input, estimate_noise_sigma, noisy_copy, training_sigma_max
from ...image.objective import DenoisingObjective
from ...image.plain import PlainDenoisingObjective, plain_denoise
from ...image.schedule import StepSchedule
from ..selection import SPLIT_SEED_OFFSET
from .evaluation_report import write_denoise_report

DIT_STEPS = (1, 2, 5, 10)
STOP_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.4)  # energy-based stopping: tolerance as a fraction of the first drop


@dataclass(frozen=True)
class EvalOptions:
    """What ``ebt-vision eval`` measures: noise ``sigmas`` (0-255), EBT descent ``steps`` (PSNR after each), photos
    downscaled to ``max_side`` (None: full resolution), the held-out ``split`` ("both": choices on validation, quoted
    on test), the first ``limit`` photos, the noise ``seed``, CBM3D (test split only), the DiT at ``dit_steps`` DDIM
    steps when a ``dit_checkpoint`` is given, the plain transformer (the EBT's trunk predicting directly) when a
    ``transformer_checkpoint`` is given, the checkpoint's step schedule (``use_schedule``). ``tile_overlap``: how many
    tiles cover each pixel along each side, for every model alike (2: half-overlapping; 4: tiles a quarter apart, 4x
    the FLOPs of a pass). ``views``: every model's pass averaged over that many mirror images of the photo (1, 2, 4
    or 8; that many times the FLOPs)."""

    sigmas: tuple[float, ...] = SIGMAS
    steps: int = 4
    max_side: int | None = None
    split: str = "both"
    limit: int | None = None
    seed: int = 0
    with_bm3d: bool = True
    dit_checkpoint: str | Path | None = None
    dit_steps: tuple[int, ...] = DIT_STEPS
    transformer_checkpoint: str | Path | None = None
    use_schedule: bool = True
    tile_overlap: int = 2
    views: int = 1
    device: str = "auto"
    stem: str = "denoise_eval"
    progress: bool = True


def _scored(base: dict, method: str, estimate: torch.Tensor, clean: torch.Tensor, **extra) -> dict:
    p, s = psnr(estimate[None].cpu(), clean[None]), ssim(estimate[None].cpu(), clean[None])
    return {**base, "method": method, **extra, "psnr": float(p), "ssim": float(s)}


def noisy_pair(photo: Photo, index: int, sigma: float, patch_size: int, split: str, seed: int = 0):
    """(clean, noisy), each (C, H, W): the ``index``-th photo of a held-out ``split`` cropped to whole patches, and
    the noisy copy every evaluation of it draws at ``sigma`` (each split its own noise)."""
    clean = crop_to_patches(photo.image[None], patch_size)[0]
    return clean, noisy_copy(clean, sigma, seed, SPLIT_SEED_OFFSET[split] + index)


def evaluate_denoiser(
    objective: DenoisingObjective,
    photos: list[Photo],
    options: EvalOptions,
    split: str = "test",
    dit: DiTObjective | None = None,
    schedule: StepSchedule | None = None,
    transformer: PlainDenoisingObjective | None = None,
) -> list[dict]:
    """Per image and sigma: one row per method/step with PSNR, SSIM and forward/backward passes.

    EBT rows after k descent steps cost k forward and k backward passes of the model (the tiled energy of a
    whole photo counts as one pass; its tiles are batched); ``ebt_stop`` is ``options.steps`` steps with energy-based
    stopping; ``ebt_auto`` (with a ``schedule``) takes the steps its estimated noise level looks up. The DiT is
    blind like the EBT: it starts DDIM at the timestep of the sigma estimated from the noisy photo. CBM3D runs when
    ``options.with_bm3d``. The split label compares sigma with the highest (Gaussian-equivalent) sigma the model
    trained on; a diffusion-trained model gets the noisy photo in its own convention (``as_model_input``). The
    plain ``transformer`` (blind too) predicts the clean photo in one forward pass.
    """
    patch = objective.cfg.model.patch_size
    train_max = training_sigma_max(objective.cfg.data)
    rows = []
    jobs = [(i, photo, sigma) for i, photo in enumerate(photos) for sigma in options.sigmas]
    for index, photo, sigma in progress_bar(jobs, desc=f"evaluate ({split})", disable=not options.progress):
        clean, noisy = noisy_pair(photo, index, sigma, patch, split, options.seed)
        base = {"eval_split": split, "image": photo.name, "sigma": sigma,
                "split": "id" if sigma <= train_max else "ood"}  # fmt: skip
        rows.append(_scored(base, "noisy", noisy, clean, steps=0, forward_passes=0, backward_passes=0))
        if options.with_bm3d:
            started = time.perf_counter()
            estimate = cbm3d_denoise(noisy, sigma)
            rows.append(_scored(base, "cbm3d", estimate, clean, steps=0, forward_passes=0, backward_passes=0,
                                seconds=time.perf_counter() - started))  # fmt: skip
        model_input = as_model_input(noisy[None], sigma, objective.cfg.data.noise)
        tiling = Tiling(overlap=options.tile_overlap, views=options.views)
        trajectory, ebt_rows = _ebt_rows(objective, model_input, options.steps, base, clean, tiling)
        rows += ebt_rows
        # what a blind method may know, read once for the step schedule and the DiT (a sigma-conditioned EBT or
        # transformer reads the same estimate inside ``denoise`` / ``plain_denoise``)
        estimated = float(estimate_noise_sigma(noisy[None])[0]) if schedule is not None or dit is not None else None
        if schedule is not None:
            rows.append(_scheduled_row(objective, schedule, estimated, model_input, trajectory, base, clean, tiling))
        if dit is not None:
            for k in options.dit_steps:
                estimate, passes = dit_denoise(dit, noisy[None], estimated, k, options.tile_overlap, options.views)
                rows.append(_scored(base, "dit_ddim", estimate[0], clean, steps=k, forward_passes=passes[0],
                                    backward_passes=0))  # fmt: skip
        if transformer is not None:
            estimate = plain_denoise(transformer, noisy[None], options.tile_overlap, views=options.views)
            rows.append(_scored(base, "transformer", estimate[0], clean, steps=1, forward_passes=1,
                                backward_passes=0))  # fmt: skip
    return rows


def _ebt_rows(
    objective, model_input: Tensor, num_steps: int, base: dict, clean: Tensor, tiling: Tiling
) -> tuple[Trajectory, list]:
    """The EBT after each of ``num_steps`` descent steps, with energy-based stopping (and with each relative tolerance)
    and the gradient-norm stop (each tolerance on the step's size) read off that one descent: -> (the descent, its
    rows)."""
    started = time.perf_counter()
    trajectory, _ = denoise(objective, model_input, Thinking(num_steps), tiling=tiling)
    seconds = time.perf_counter() - started
    rows = []
    for k, candidate in enumerate(trajectory.candidates[1:], start=1):
        timing = {"seconds": seconds} if k == num_steps else {}  # measured for the whole K-step run only
        rows.append(_scored(base, "ebt", candidate[0], clean, steps=k, forward_passes=k, backward_passes=k, **timing))
    energies = trajectory.energies[:, 0]
    stopped = {"steps": num_steps, "forward_passes": num_steps + 1, "backward_passes": num_steps}
    stop = energy_stop_step(energies)
    rows.append(_scored(base, "ebt_stop", trajectory.candidates[stop][0], clean, **stopped, steps_taken=float(stop)))
    first_drop = max(float(energies[0] - energies[1]), 0.0) if num_steps else 0.0
    for fraction in STOP_FRACTIONS:  # stop once a step lowers the energy by < fraction x the first step's drop
        k = energy_stop_step(energies, fraction * first_drop)
        rows.append(_scored(base, f"ebt_stop_rel@{fraction:g}", trajectory.candidates[k][0], clean, **stopped,
                            steps_taken=float(k), tolerance_fraction=fraction))  # fmt: skip
    step_size = float(objective.step_size().detach())
    for tolerance in STEP_STOP_TOLERANCES:  # stop once a step would move pixels by < tolerance (rms): |dE/dx| small
        estimate, taken = stop_on_step_size(trajectory, step_size, tolerance)
        rows.append(_scored(base, f"ebt_stop_grad@{tolerance:g}", estimate[0], clean, steps=num_steps,
                            forward_passes=num_steps, backward_passes=num_steps, steps_taken=float(taken[0]),
                            tolerance=tolerance))  # fmt: skip
    return trajectory, rows


def energy_stop_step(energies: torch.Tensor, tolerance: float = 0.0) -> int:
    """Energy-based stopping read off one image's energies (K + 1,) along a plain descent: the step count where it
    stops. A step that would raise the energy is not taken (stop at k); one that lowers it by less than
    ``tolerance`` is taken and is the last (stop at k + 1); K if neither happens. Equals ``denoise(...,
    stop_when_energy_rises=True, stop_tolerance=tolerance)`` on that image (which spends K + 1 forward and K
    backward passes, as it does not leave its loop early)."""
    drops = (energies[:-1] - energies[1:]).tolist()
    for k, drop in enumerate(drops):
        if drop < 0:
            return k
        if drop < tolerance:
            return k + 1
    return len(drops)


def _scheduled_row(
    objective, schedule: StepSchedule, estimated: float, model_input, trajectory, base: dict, clean, tiling: Tiling
) -> dict:
    """The EBT with its step schedule: steps, step scale and passes looked up by the noise level estimated from the
    noisy photo (one pass at step scale 1 reuses the plain descent's candidate)."""
    thinking = schedule.thinking(estimated, Thinking(final_energy=False))
    steps, scale, passes = thinking.num_steps, thinking.step_scale, thinking.passes
    if scale == 1.0 and passes == 1 and steps < len(trajectory.candidates):
        estimate = trajectory.candidates[steps][0]
    else:
        estimate = denoise(objective, model_input, thinking, tiling=tiling)[0].final[0]
    total = steps * passes
    return _scored(base, "ebt_auto", estimate, clean, steps=0, forward_passes=total, backward_passes=total,
                   steps_taken=float(total), step_scale=scale, passes=passes,
                   estimated_sigma=estimated)  # fmt: skip


def _compute_line(trained: list) -> str:
    """Each (label, model, its checkpoint's extra metadata, its path)'s training compute in counted FLOPs, its
    init_from models' included: a budget that does not depend on how busy the machine was."""
    from .compare.costs import training_compute

    parts = []
    for label, model, extra, path in trained:
        flops, stages = training_compute(model, int(extra.get("step", model.cfg.train.steps)), path)
        parts.append(f"{label} {flops / 1e15:.3f} PFLOP ({'; '.join(stages)})")
    return "training compute (counted FLOPs): " + ", ".join(parts)


def run_evaluation(checkpoint: str | Path, out_dir: str | Path, options: EvalOptions = EvalOptions()) -> Path:
    """``ebt-vision eval``: one checkpoint on the held-out photos; writes ``<stem>.{md,json,png}`` to ``out_dir``."""
    from ...core.checkpoint import load_trained
    from ...core.reports import make_meta
    from ...core.train import resolve_device
    from ...image.data import held_out_photos

    device = resolve_device(options.device)
    objective, extra = load_trained(checkpoint, DenoisingObjective, "an image EBT denoiser", device)
    dit = transformer = None
    trained = [("EBT", objective, extra, checkpoint)]
    if options.dit_checkpoint:
        dit, dit_extra = load_trained(options.dit_checkpoint, DiTObjective, "a DiT baseline", device)
        trained.append(("DiT", dit, dit_extra, options.dit_checkpoint))
    if options.transformer_checkpoint:
        transformer, transformer_extra = load_trained(options.transformer_checkpoint, PlainDenoisingObjective,
                                                      "a plain-transformer image baseline", device)  # fmt: skip
        trained.append(("transformer", transformer, transformer_extra, options.transformer_checkpoint))
    schedule = StepSchedule.load(checkpoint) if options.use_schedule else None
    cfg = objective.cfg
    budget = f"{cfg.name}: {extra.get('step', '?')} steps of batch {cfg.data.batch_size}, crops {cfg.data.crop_size}px"
    if "train_seconds" in extra:
        budget += f", {extra['train_seconds'] / 60:.1f} min training"
    if schedule is not None:
        budget += f"; its step schedule (calibrated on validation crops): {schedule.describe()}"
    budget += "; " + _compute_line(trained)
    rows, described = [], []
    for name in ("validation", "test") if options.split == "both" else (options.split,):
        photos = held_out_photos(options.max_side, name)[: options.limit]
        described.append(f"{name}: {len(photos)} photos ({', '.join(p.name for p in photos)})")
        split_options = replace(options, with_bm3d=options.with_bm3d and name == "test")
        rows += evaluate_denoiser(objective, photos, split_options, name, dit, schedule, transformer)
    scale = f"downscaled to at most {options.max_side}px" if options.max_side else "full resolution"
    if options.tile_overlap != 2 or options.views != 1:  # the defaults (half-overlapping tiles, one view) go unsaid
        cover = options.tile_overlap**2
        layout = "tiles side by side" if cover == 1 else f"each pixel in {cover} tiles"
        if options.views != 1:
            layout += f", averaged over {options.views} mirror images of the photo"
        scale += f" ({layout} for every model: a pass costs {cover / 4 * options.views:g}x the default's FLOPs)"
    data = f"held-out photos, {scale}; " + "; ".join(described)
    meta = make_meta(device, options.seed, data, budget)
    conditioned = cfg.model.sigma_conditioning or bool(transformer and transformer.cfg.model.sigma_conditioning)
    return write_denoise_report(rows, meta, out_dir, options.stem, scale, told_estimate=conditioned)
