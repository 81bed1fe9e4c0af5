"""Watching the model think: the refinement story of one denoise, as arrays a UI (or a notebook) can show.

Everything the image tab displays is computed here and tested without a browser: input checks and downscaling,
the candidate after every descent step, per-patch energy maps and gradient-magnitude maps per step, energy and PSNR
per step, best-of-N, and the DiT result for the same noisy input with its forward-pass count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import defaults
from ..core.errors import InputError
from ..core.inference import Thinking
from ..core.maps import distinct_labels, render_map, spread_note
from ..core.metrics import psnr
from ..image.data import to_uint8
from ..image.dit import DiTObjective, dit_denoise
from ..image.files import read_image
from ..image.inference import Tiling, adaptive_tolerance, best_of_n, check_images, crop_to_patches, denoise
from ..image.noise import add_gaussian_noise, estimate_noise_sigma, sigma_to_timestep
from ..image.objective import DenoisingObjective
from ..image.schedule import StepSchedule
from .common import check_upload, legend_above, upload_errors


def load_upload(path: str | Path, max_side: int = defaults.APP_MAX_SIDE) -> tuple[Tensor, list[str]]:
    """An uploaded file -> (3, H, W) in [-1, 1], downscaled and cropped to the patch grid, and notes for the user. An
    error names the file alone, never the server's temporary folder (``upload_errors``)."""
    with upload_errors(path):
        path = check_upload(path, defaults.APP_MAX_IMAGE_BYTES)
        image = read_image(path, defaults.APP_MAX_PIXELS, "the app's limit for uploads")
        return prepare_image(image.rgb, max_side)


def prepare_image(image: Tensor, max_side: int = defaults.APP_MAX_SIDE, patch: int = 4) -> tuple[Tensor, list[str]]:
    """(3, H, W) in [-1, 1] -> downscaled so the longer side is at most ``max_side``, cropped to the patch grid."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"expected an RGB image, got shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise InputError("the image contains NaN or infinite values")
    notes = []
    _, h, w = image.shape
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(patch, round(h * scale)), max(patch, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0].clamp(-1, 1)
        notes.append(f"downscaled from {w}x{h} to {size[1]}x{size[0]} (the demo's limit is {max_side} px)")
    if min(image.shape[1:]) < 2 * patch:
        raise InputError(f"the image is {image.shape[2]}x{image.shape[1]}; it needs at least {2 * patch} px per side")
    cropped = crop_to_patches(image[None], patch)[0]
    if cropped.shape != image.shape:
        notes.append(f"cropped to {cropped.shape[2]}x{cropped.shape[1]} (a multiple of the {patch}px patch)")
    return cropped, notes


@dataclass(frozen=True)
class StorySettings:
    """What the image tab asks for. With ``add_noise`` the image is clean and Gaussian noise of ``sigma`` (0-255,
    seeded by ``seed``) is added, so PSNR is known; otherwise it is already noisy. The EBT takes ``steps`` descent
    steps at ``step_scale`` times its learned step size, best of ``best_of`` starts; ``adaptive`` > 0: adaptive
    per-patch compute (each patch stops once its energy falls by less than ``adaptive`` times the median first-step
    drop; it needs a single start). The DiT takes ``dit_steps`` DDIM steps (None: all). ``tile_overlap`` 1 tiles both
    models side by side (4x faster, 0.1-0.2 dB lower; see ``tiling``), 2 as the evaluations do."""

    sigma: float = 25.0
    steps: int = 2
    step_scale: float = 1.0
    best_of: int = 1
    add_noise: bool = True
    dit_steps: int | None = 2
    seed: int = 0
    tile_overlap: int = 2
    adaptive: float = 0.0

    def check(self) -> None:
        low, high = defaults.APP_SIGMA_RANGE
        if not low <= self.sigma <= high:
            raise InputError(f"noise sigma must be in [{low:g}, {high:g}], got {self.sigma:g}")
        if not 1 <= self.steps <= defaults.APP_MAX_STEPS:
            raise InputError(f"descent steps must be in [1, {defaults.APP_MAX_STEPS}], got {self.steps}")
        low, high = defaults.APP_STEP_SCALE_RANGE
        if not low <= self.step_scale <= high:
            raise InputError(f"step-size scale must be in [{low:g}, {high:g}], got {self.step_scale:g}")
        if not 1 <= self.best_of <= defaults.APP_MAX_BEST_OF:
            raise InputError(f"best-of-N must be in [1, {defaults.APP_MAX_BEST_OF}], got {self.best_of}")
        if self.adaptive < 0 or (self.adaptive > 0 and self.best_of != 1):
            raise InputError(f"adaptive per-patch steps need a tolerance >= 0 and best-of-N 1, got {self.adaptive:g}, "
                             f"{self.best_of}")  # fmt: skip


@dataclass
class DenoiseStory:
    """One denoise, step by step. Images are (3, H, W) in [-1, 1]; maps are (H, W) or (H/p, W/p)."""

    noisy: Tensor
    sigma: float
    estimated_sigma: float
    candidates: list[Tensor]  # after 0..K steps (0 = the start)
    energies: list[float]  # the energy of each candidate
    energy_maps: list[Tensor]  # per-patch energy of each candidate (H/p, W/p)
    gradient_maps: list[Tensor]  # |dE/dpixel| (H, W) summed over channels, at each candidate a step was taken from
    clean: Tensor | None = None
    psnrs: list[float] | None = None
    best_of: int = 1
    forward_passes: int = 0
    backward_passes: int = 0
    seconds: float = 0.0
    dit: Tensor | None = None
    dit_forward_passes: int = 0
    dit_psnr: float | None = None
    dit_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    tile_overlap: int = 2
    steps_map: Tensor | None = None  # adaptive per-patch descent: descent steps each patch took (H/p, W/p)

    @property
    def final(self) -> Tensor:
        return self.candidates[-1]


def _gradient_maps(candidates: list[Tensor], step: float) -> list[Tensor]:
    """|dE/dx| summed over channels (H, W) at each candidate a step was taken from, recovered from the step itself,
    ``(x_k - x_{k+1}) / step`` (no Langevin noise in the demo): no extra backward pass."""
    return [((a - b) / step).abs().sum(dim=0) for a, b in zip(candidates, candidates[1:], strict=False)]


def _ebt_descent(objective: DenoisingObjective, noisy: Tensor, thinking: Thinking, settings: StorySettings):
    """-> (the winning start's trajectory rows, its index, energy maps, steps per patch or None, extra passes)."""
    adaptive = settings.adaptive > 0
    tiling = Tiling(overlap=settings.tile_overlap, per_patch=adaptive, record_maps=not adaptive)
    if adaptive:
        # each patch stops once its energy falls by less than the tolerance, measured by one probe step
        probe, _ = denoise(objective, noisy[None], replace(thinking, num_steps=1, passes=1), tiling=tiling)
        stop = replace(
            thinking, stop_when_energy_rises=True, stop_tolerance=adaptive_tolerance(probe, settings.adaptive)
        )
        trajectory, _ = denoise(objective, noisy[None], stop, tiling=tiling)
        energy_maps = [e[0].cpu() for e in trajectory.position_energies]  # per-patch energies of every candidate
        steps_map = trajectory.steps_taken[0].float().cpu()
        return trajectory, 0, energy_maps, steps_map, (probe.forward_passes, probe.backward_passes)
    found = best_of_n(objective, noisy[None], replace(thinking, n_candidates=settings.best_of), tiling=tiling,
                      seed=settings.seed)  # fmt: skip
    winner = int(found.final_energies[:, 0].argmin())
    energy_maps = [m[winner].cpu() for m in found.energy.maps]  # recorded by the descent's own forward passes
    return found.trajectory, winner, energy_maps, None, (0, 0)


def denoise_story(
    objective: DenoisingObjective,
    image: Tensor,
    settings: StorySettings = StorySettings(),
    dit: DiTObjective | None = None,
    schedule: StepSchedule | None = None,
) -> DenoiseStory:
    """Denoise ``image`` (3, H, W) with the blind EBT and record every step (``settings``: see ``StorySettings``).

    The DiT, when given, denoises the same noisy image from the timestep of the sigma estimated from it (it is not
    told the true sigma, like the blind EBT). ``schedule``: the steps and step scale are those the estimated noise
    level looks up (``settings.steps`` and ``step_scale`` are ignored).
    """
    settings.check()
    check_images(image[None], objective.cfg.model.patch_size)
    clean = image if settings.add_noise else None
    generator = torch.Generator().manual_seed(settings.seed)
    noisy = add_gaussian_noise(image[None], settings.sigma, generator)[0] if settings.add_noise else image
    estimated = float(estimate_noise_sigma(noisy[None])[0])
    thinking, notes = Thinking(settings.steps, step_scale=settings.step_scale), []
    if schedule is not None:
        thinking = schedule.thinking(estimated, thinking)
        steps = thinking.num_steps
        passes = f" in each of {thinking.passes} re-anchored passes" if thinking.passes > 1 else ""
        notes.append(f"steps from the estimated noise (sigma ~{estimated:.1f}): the step schedule says {steps} "
                     f"step{'s' * (steps > 1)} at step scale {thinking.step_scale:g}{passes}")  # fmt: skip
    started = time.perf_counter()
    trajectory, winner, energy_maps, steps_map, extra = _ebt_descent(objective, noisy, thinking, settings)
    seconds = time.perf_counter() - started
    best_of = settings.best_of
    candidates = [c.reshape(best_of, *noisy.shape)[winner].cpu() for c in trajectory.candidates]
    story = DenoiseStory(
        noisy=noisy,
        sigma=settings.sigma,
        estimated_sigma=estimated,
        candidates=candidates,
        energies=trajectory.energies[:, winner].tolist(),  # (K + 1): the descent's own energies, final one included
        energy_maps=energy_maps,
        gradient_maps=_gradient_maps(candidates, float(objective.step_size().detach()) * thinking.step_scale),
        clean=clean,
        best_of=best_of,
        forward_passes=best_of * trajectory.forward_passes + extra[0],
        backward_passes=best_of * trajectory.backward_passes + extra[1],
        seconds=seconds,
        seed=settings.seed,
        tile_overlap=settings.tile_overlap,
        steps_map=steps_map,
        notes=notes,
    )
    if clean is not None:
        story.psnrs = [float(psnr(c[None], clean[None])[0]) for c in candidates]
    if dit is not None:
        _add_dit(story, dit, settings)
    return story


def _add_dit(story: DenoiseStory, dit: DiTObjective, settings: StorySettings) -> None:
    """The DiT on the story's noisy image, blind: DDIM from the timestep of the estimated sigma."""
    started = time.perf_counter()
    estimate, passes = dit_denoise(dit, story.noisy[None], story.estimated_sigma, settings.dit_steps,
                                   settings.tile_overlap)  # fmt: skip
    story.dit, story.dit_forward_passes = estimate[0].cpu(), passes[0]
    story.dit_seconds = time.perf_counter() - started
    if story.clean is not None:
        story.dit_psnr = float(psnr(estimate.cpu(), story.clean[None])[0])


def story_frames(story: DenoiseStory) -> list[tuple[np.ndarray, str]]:
    """Per candidate: the image, its energy map and (where a step was taken from it) its |dE/dx| map, each map with
    its own robust colour range and colour bar. Captions stay short enough for a gallery tile."""
    frames = []
    patch = story.candidates[0].shape[1] // story.energy_maps[0].shape[0]
    energies = distinct_labels(list(story.energies))  # steps told apart, however little the energy moves
    for k, candidate in enumerate(story.candidates):
        name = "noisy start" if k == 0 else f"step {k}"
        caption = f"{name} · {story.psnrs[k]:.2f} dB" if story.psnrs else name
        frames.append((to_uint8(candidate), f"{caption} · E {energies[k]}"))
        frames.append((render_map(story.energy_maps[k], f"{name}: energy per patch"), f"{name} · energy map"))
        if k < len(story.gradient_maps):
            # averaged over each patch: per-pixel gradients of a noisy image are noise; per patch they show structure
            pooled = F.avg_pool2d(story.gradient_maps[k][None, None], patch)[0, 0]
            grad = render_map(pooled, f"{name}: mean |dE/dx| per patch", cmap="magma")
            frames.append((grad, f"{name} · |dE/dx|"))
    if story.steps_map is not None:
        title = f"descent steps per patch (mean {float(story.steps_map.mean()):.2f})"
        frames.append((render_map(story.steps_map, title, cmap="cividis"), "adaptive · steps per patch"))
    return frames


def story_figure(story: DenoiseStory):
    """Energy (and PSNR when the clean image is known) per step, with the DiT's PSNR as a reference line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # not pyplot's: its global registry is not thread-safe (two users' clicks draw at once) and keeps every figure
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    steps = list(range(len(story.energies)))
    lines = ax.plot(steps, story.energies, "o-", color="C0", label="energy (left axis)")
    ax.set_xlabel("descent step")
    ax.set_ylabel("energy", color="C0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.3, max(steps) + 0.3)
    ax.grid(alpha=0.3)
    if story.psnrs:
        right = ax.twinx()
        lines += right.plot(steps, story.psnrs, "s-", color="C1", label="EBT PSNR (right axis)")
        if story.dit_psnr is not None:
            lines.append(right.axhline(story.dit_psnr, color="C2", linestyle="--",
                                       label=f"DiT PSNR, {story.dit_forward_passes} passes"))  # fmt: skip
        right.set_ylabel("PSNR (dB)", color="C1")
    legend_above(ax, lines)
    fig.tight_layout()
    return fig


def story_summary(story: DenoiseStory) -> str:
    """Markdown lines for the UI: what was run, what it cost, how good it is."""
    h, w = story.noisy.shape[1:]
    tiling = "tiles side by side (fast)" if story.tile_overlap == 1 else "half-overlapping tiles"
    lines = [
        f"**{w}x{h}**, sigma {story.sigma:g} (estimated from the noisy image: {story.estimated_sigma:.1f}), noise seed "
        f"{story.seed}, {tiling}"
    ]
    ebt = f"**EBT**: {len(story.candidates) - 1} descent steps"
    if story.best_of > 1:
        ebt += f", best of {story.best_of} starts by lowest energy"
    if story.steps_map is not None:
        ebt += f" at most, adaptive per patch (mean {float(story.steps_map.mean()):.2f} steps per patch)"
    ebt += f"; {story.forward_passes} forward + {story.backward_passes} backward passes, {story.seconds:.2f} s"
    if story.psnrs:
        ebt += f"; PSNR {story.psnrs[0]:.2f} → {story.psnrs[-1]:.2f} dB"
    lines.append(ebt)
    if story.dit is not None:
        start = sigma_to_timestep(story.estimated_sigma)
        dit = f"**DiT**: DDIM from t={start}, {story.dit_forward_passes} forward passes, {story.dit_seconds:.2f} s"
        if story.dit_psnr is not None:
            dit += f"; PSNR {story.dit_psnr:.2f} dB"
        lines.append(dit)
    flat = spread_note(story.energy_maps[-1], "per-patch energies of the result")
    lines += [f"*{note}*" for note in [*story.notes, *([flat] if flat else [])]]
    return "\n\n".join(lines)
