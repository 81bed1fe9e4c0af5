"""Noise-level adaptation of a blind EBT without retraining: how many descent steps, at what step-size scale, for
the noise level estimated from the noisy image.

A blind EBT's descent takes the same steps whatever the noise: too far for light noise (in distribution its PSNR
falls after 1-2 steps), too short for heavy noise (out of distribution it keeps gaining up to 4+ steps). A
``StepSchedule`` maps the sigma that ``estimate_noise_sigma`` reads off the noisy image (what a blind method may
know) to the step count and step-size scale that gave the best mean PSNR on *validation* crops noised at a grid of
calibration levels. The model is still blind and is never told sigma; the estimate only sets how long it thinks
(a sigma-conditioned EBT is told that same estimate, inside ``denoise``).
``fit_schedule`` calibrates (``ebt-vision calibrate``), the schedule is saved beside the weights
(``step_schedule.json``), and ``denoise_scheduled`` applies it per image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..core.defaults import CALIBRATION_SCALES, CALIBRATION_SIGMAS, MAX_STEPS
from ..core.errors import InputError, UserError
from ..core.inference import Thinking
from ..core.metrics import psnr
from ..core.paths import resolve_path
from ..core.progress import progress as progress_bar
from .data import Photo
from .inference import Tiling, denoise
from .noise import estimate_noise_sigma, noisy_copy
from .objective import DenoisingObjective

SCHEDULE_FILE = "step_schedule.json"
# Re-anchored descents (``Thinking.passes``) tried beside the single pass: up to this many passes of 1-4 steps each,
# at step scale 1.
CALIBRATION_PASSES = 3
PASS_STEPS = (1, 2, 3, 4)


@dataclass(frozen=True)
class StepSchedule:
    """Calibrated levels, ascending in estimated sigma: at ``estimated[i]`` take ``steps[i]`` steps of the learned
    step size times ``scales[i]``, in ``passes[i]`` re-anchored passes (``Thinking.passes``; a schedule saved before
    passes existed has none: one pass everywhere). ``psnr[i]`` is the validation PSNR that choice reached."""

    estimated: list[float]
    steps: list[int]
    scales: list[float]
    psnr: list[float]
    calibration_sigmas: list[float]
    passes: list[int] | None = None

    def __post_init__(self) -> None:
        if self.passes is None:
            object.__setattr__(self, "passes", [1] * len(self.steps))
        lengths = {len(self.estimated), len(self.steps), len(self.scales), len(self.psnr), len(self.calibration_sigmas),
                   len(self.passes)}  # fmt: skip
        if len(lengths) != 1 or not self.estimated:
            raise InputError("a step schedule needs one step count, scale and PSNR per calibrated level")
        if any(b < a for a, b in zip(self.estimated, self.estimated[1:], strict=False)):
            raise InputError("a step schedule's estimated sigmas must be ascending")

    def lookup(self, estimated_sigma: float) -> tuple[int, float, int]:
        """(steps per pass, step scale, passes) of the calibrated level whose estimated sigma is nearest (below the
        first level: the first; above the last: the last)."""
        nearest = min(range(len(self.estimated)), key=lambda i: abs(self.estimated[i] - estimated_sigma))
        return self.steps[nearest], self.scales[nearest], self.passes[nearest]

    def thinking(self, estimated_sigma: float, base: Thinking = Thinking()) -> Thinking:
        """Steps from the estimated noise, the one rule every caller follows: ``base`` with the steps, step scale and
        passes that ``estimated_sigma`` (``estimate_noise_sigma`` of the noisy image) looks up."""
        steps, scale, passes = self.lookup(estimated_sigma)
        return replace(base, num_steps=steps, step_scale=scale, passes=passes)

    def describe(self) -> str:
        """One line: 'estimated sigma -> steps x scale' per level ('(N passes)' where re-anchored)."""
        levels = zip(self.estimated, self.steps, self.scales, self.passes, strict=True)
        return ", ".join(f"{e:.0f}->{k}x{s:g}" + (f" ({n} passes)" if n > 1 else "") for e, k, s, n in levels)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SCHEDULE_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> StepSchedule | None:
        """The schedule saved beside a model folder's weights, or None when it has none (the shipped
        ``checkpoints/...`` folders are found from any directory, as ``load_trained`` finds them)."""
        try:
            folder = resolve_path(folder, "model")
        except UserError:
            return None
        path = folder / SCHEDULE_FILE if folder.is_dir() else folder.with_name(SCHEDULE_FILE)
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise InputError(f"{path}: not a step schedule ({error})") from None


def full_resolution_crops(photos: list[Photo], size: int = 96, per_photo: int = 2) -> list[Tensor]:
    """``per_photo`` (3, size, size) crops of each photo at full resolution (not resized: the noise estimate and the
    descent see the statistics they will meet), spread along the photo's diagonal."""
    crops = []
    for photo in photos:
        _, h, w = photo.image.shape
        if min(h, w) < size:
            raise InputError(f"{photo.name} ({h}x{w}) is smaller than the {size}px calibration crop")
        for i in range(per_photo):
            t = (i + 1) / (per_photo + 1)
            top, left = round(t * (h - size)), round(t * (w - size))
            crops.append(photo.image[:, top : top + size, left : left + size])
    return crops


def noisy_crops(crops: list[Tensor], sigma: float, seed: int = 0) -> Tensor:
    """The calibration's noisy copies of ``crops`` at ``sigma`` (0-255): (N, 3, h, w), the same noise every time, so
    anything compared on the calibration crops (the DiT's step count too) sees the noise the schedule was fitted on."""
    return torch.stack([noisy_copy(c, sigma, seed, 50_000 + i) for i, c in enumerate(crops)])


def fit_schedule(
    objective: DenoisingObjective,
    crops: list[Tensor],
    sigmas: tuple[float, ...] = CALIBRATION_SIGMAS,
    max_steps: int = 8,
    scales: tuple[float, ...] = CALIBRATION_SCALES,
    seed: int = 0,
    progress: bool = True,
    passes: int = CALIBRATION_PASSES,
    views: int = 1,
) -> tuple[StepSchedule, list[dict]]:
    """Calibrate on clean validation ``crops`` ((3, h, w) each, one size): at each sigma, every crop noised once;
    the (steps in 1..max_steps, scale) of one pass, or the (steps in ``PASS_STEPS``, passes up to ``passes``) of a
    re-anchored descent at scale 1, with the best mean PSNR wins, filed under the mean *estimated* sigma (``passes``
    1: single passes only); ``views``: each descent averaged over that many mirror images (``Tiling.views``).
    Returns the schedule and one row per (sigma, scale, steps, passes) with its mean PSNR."""
    if not crops or len({tuple(c.shape) for c in crops}) != 1:
        raise InputError("fit_schedule needs one or more crops of one size")
    if not 1 <= max_steps <= MAX_STEPS or not scales or min(scales) <= 0:
        raise InputError(f"max_steps must be in [1, {MAX_STEPS}] and scales > 0, got {max_steps}, {scales}")
    clean = torch.stack(crops)
    rows, levels = [], []
    jobs = [(sigma, scale, max_steps, 1) for sigma in sigmas for scale in scales]
    if passes > 1:
        jobs += [(sigma, 1.0, k, passes) for sigma in sigmas for k in PASS_STEPS if k <= max_steps]
    noisy_by_sigma = {sigma: noisy_crops(crops, sigma, seed) for sigma in sigmas}
    for sigma, scale, steps, runs in progress_bar(jobs, desc="calibrate step schedule", disable=not progress):
        thinking = Thinking(steps, step_scale=scale, final_energy=False, passes=runs)
        trajectory, _ = denoise(objective, noisy_by_sigma[sigma], thinking, tiling=Tiling(views=views))
        if runs == 1:  # one pass of max_steps: every step count on the way
            scored = [(k, 1, c) for k, c in enumerate(trajectory.candidates[1:], start=1)]
        else:  # passes of ``steps`` steps: the estimate after each pass from the second on
            scored = [(steps, n, trajectory.candidates[n * steps]) for n in range(2, runs + 1)]
        for k, n, candidate in scored:
            value = float(psnr(candidate.cpu(), clean).mean())
            rows.append({"sigma": sigma, "scale": scale, "steps": k, "passes": n, "psnr": value})
    for sigma in sigmas:
        best = max((r for r in rows if r["sigma"] == sigma), key=lambda r: r["psnr"])
        estimated = float(estimate_noise_sigma(noisy_by_sigma[sigma]).mean())
        levels.append((estimated, best["steps"], best["scale"], best["psnr"], sigma, best["passes"]))
    levels.sort()
    schedule = StepSchedule(
        estimated=[round(level[0], 3) for level in levels],
        steps=[level[1] for level in levels],
        scales=[level[2] for level in levels],
        psnr=[round(level[3], 3) for level in levels],
        calibration_sigmas=[level[4] for level in levels],
        passes=[level[5] for level in levels],
    )
    return schedule, rows


def denoise_scheduled(
    objective: DenoisingObjective, noisy: Tensor, schedule: StepSchedule
) -> tuple[Tensor, Tensor, list[tuple[int, float, int]]]:
    """(B, 3, H, W) noisy -> (estimates, estimated sigmas, (steps, scale, passes) per image): each image descends for
    the steps, step scale and passes its estimated noise level looks up in ``schedule``."""
    estimated = estimate_noise_sigma(noisy)
    choices = [schedule.lookup(float(s)) for s in estimated]
    estimates = torch.empty_like(noisy)
    for choice in sorted(set(choices)):  # images that take the same steps share a descent
        index = torch.tensor([i for i, c in enumerate(choices) if c == choice])
        same = schedule.thinking(float(estimated[index[0]]), Thinking(final_energy=False))
        trajectory, _ = denoise(objective, noisy[index], same)
        estimates[index] = trajectory.final.to(estimates)
    return estimates, estimated, choices
