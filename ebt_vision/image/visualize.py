"""Watching the model think: the refinement story of one denoise, as arrays a UI (or a notebook) can show.

Everything the Gradio app displays is computed here and tested without a browser: input checks and downscaling,
the candidate after every descent step, per-patch energy maps and gradient-magnitude maps per step, energy and PSNR
per step, best-of-N, and the DiT result for the same noisy input with its forward-pass count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import InputError
from ..core.metrics import psnr
from .data import load_image, to_uint8
from .dit import DiTObjective, dit_denoise
from .inference import adaptive_tolerance, best_of_n, check_images, crop_to_patches, denoise
from .noise import add_gaussian_noise, estimate_noise_sigma, sigma_to_timestep
from .objective import DenoisingObjective
from .schedule import StepSchedule

MAX_SIDE = 384  # larger uploads are downscaled (the UI says so): keeps a CPU denoise interactive
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding
MAX_STEPS = 16
MAX_BEST_OF = 8
SIGMA_RANGE = (0.0, 100.0)


def load_upload(path: str | Path, max_side: int = MAX_SIDE) -> tuple[Tensor, list[str]]:
    """An uploaded file -> (3, H, W) in [-1, 1], downscaled and cropped to the patch grid, and notes for the user."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the upload {path.name} did not arrive; please try again")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{path.name} is not an image this demo can read (PNG, JPEG, BMP, TIFF, WebP)") from None
    if width * height > MAX_PIXELS:
        raise InputError(f"{path.name} is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels")
    try:
        image = load_image(path)
    except ValueError:
        raise InputError(f"{path.name} is corrupt or not an image this demo can read") from None
    return prepare_image(image, max_side)


def prepare_image(image: Tensor, max_side: int = MAX_SIDE, patch: int = 4) -> tuple[Tensor, list[str]]:
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


def _check_settings(sigma: float, steps: int, step_scale: float, best_of: int) -> None:
    if not SIGMA_RANGE[0] <= sigma <= SIGMA_RANGE[1]:
        raise InputError(f"noise sigma must be in [{SIGMA_RANGE[0]:g}, {SIGMA_RANGE[1]:g}], got {sigma:g}")
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"descent steps must be in [1, {MAX_STEPS}], got {steps}")
    if not 0.1 <= step_scale <= 4.0:
        raise InputError(f"step-size scale must be in [0.1, 4], got {step_scale:g}")
    if not 1 <= best_of <= MAX_BEST_OF:
        raise InputError(f"best-of-N must be in [1, {MAX_BEST_OF}], got {best_of}")


def _gradient_maps(candidates: list[Tensor], step: float) -> list[Tensor]:
    """|dE/dx| summed over channels (H, W) at each candidate a step was taken from, recovered from the step itself,
    ``(x_k - x_{k+1}) / step`` (no Langevin noise in the demo): no extra backward pass."""
    return [((a - b) / step).abs().sum(dim=0) for a, b in zip(candidates, candidates[1:], strict=False)]


def denoise_story(
    objective: DenoisingObjective,
    image: Tensor,
    sigma: float = 25.0,
    steps: int = 2,
    step_scale: float = 1.0,
    best_of: int = 1,
    add_noise: bool = True,
    dit: DiTObjective | None = None,
    dit_steps: int | None = 2,
    seed: int = 0,
    tile_overlap: int = 2,
    adaptive: float = 0.0,
    schedule: StepSchedule | None = None,
) -> DenoiseStory:
    """Denoise ``image`` (3, H, W) with the blind EBT and record every step.

    With ``add_noise`` the image is treated as clean and Gaussian noise of ``sigma`` is added (PSNR is then known);
    otherwise it is taken as already noisy and ``sigma`` only sets the DiT when the estimate is unavailable. The DiT,
    when given, denoises the same noisy image from the timestep of the sigma estimated from it (it is not told the
    true sigma, like the blind EBT) with ``dit_steps`` DDIM steps (None: all). ``tile_overlap`` 1 tiles both models
    side by side (4x faster, 0.1-0.2 dB lower; see ``tiling``), 2 as the evaluations do. ``adaptive`` > 0: adaptive
    per-patch compute (each patch stops once its energy falls by less than ``adaptive`` times the median first-step
    drop; ``steps_map`` then holds each patch's step count); it needs a single start (``best_of`` 1). ``schedule``:
    the steps and step scale are those the estimated noise level looks up (``steps``/``step_scale`` are ignored).
    """
    _check_settings(sigma, steps, step_scale, best_of)
    if adaptive < 0 or (adaptive > 0 and best_of != 1):
        raise InputError(f"adaptive per-patch steps need a tolerance >= 0 and best-of-N 1, got {adaptive:g}, {best_of}")
    check_images(image[None], objective.cfg.model.patch_size)
    clean = image if add_noise else None
    generator = torch.Generator().manual_seed(seed)
    noisy = add_gaussian_noise(image[None], sigma, generator)[0] if add_noise else image
    estimated = float(estimate_noise_sigma(noisy[None])[0])
    notes = []
    if schedule is not None:
        steps, step_scale = schedule.lookup(estimated)
        notes.append(f"steps from the estimated noise (sigma ~{estimated:.1f}): the step schedule says {steps} "
                     f"step{'s' * (steps > 1)} at step scale {step_scale:g}")  # fmt: skip
    started = time.perf_counter()
    steps_map, probe_passes = None, (0, 0)
    if adaptive > 0:
        trajectory, steps_map, probe_passes = _adaptive_descent(
            objective, noisy, steps, step_scale, adaptive, tile_overlap
        )
        winner = 0
        energy_maps = [e[0].cpu() for e in trajectory.position_energies]  # per-patch energies of every candidate
    else:
        found = best_of_n(objective, noisy[None], best_of, steps, step_scale=step_scale, seed=seed, record_maps=True,
                          tile_overlap=tile_overlap)  # fmt: skip
        winner = int(found.final_energies[:, 0].argmin())
        trajectory = found.trajectory
        energy_maps = [m[winner].cpu() for m in found.energy.maps]  # recorded by the descent's own forward passes
    seconds = time.perf_counter() - started
    candidates = [c.reshape(best_of, *noisy.shape)[winner].cpu() for c in trajectory.candidates]
    energies = trajectory.energies[:, winner].tolist()  # (K + 1): the descent's own energies, final one included
    gradient_maps = _gradient_maps(candidates, float(objective.step_size().detach()) * step_scale)
    story = DenoiseStory(
        noisy=noisy,
        sigma=sigma,
        estimated_sigma=estimated,
        candidates=candidates,
        energies=energies,
        energy_maps=energy_maps,
        gradient_maps=gradient_maps,
        clean=clean,
        best_of=best_of,
        forward_passes=best_of * trajectory.forward_passes + probe_passes[0],
        backward_passes=best_of * trajectory.backward_passes + probe_passes[1],
        seconds=seconds,
        seed=seed,
        tile_overlap=tile_overlap,
        steps_map=steps_map,
        notes=notes,
    )
    if clean is not None:
        story.psnrs = [float(psnr(c[None], clean[None])[0]) for c in candidates]
    if dit is not None:
        started = time.perf_counter()
        estimate, passes = dit_denoise(dit, noisy[None], estimated, dit_steps, tile_overlap)
        story.dit, story.dit_forward_passes = estimate[0].cpu(), passes[0]
        story.dit_seconds = time.perf_counter() - started
        if clean is not None:
            story.dit_psnr = float(psnr(estimate.cpu(), clean[None])[0])
    return story


def _adaptive_descent(objective, noisy: Tensor, steps: int, step_scale: float, fraction: float, tile_overlap: int):
    """Per-patch descent where each patch stops once its energy falls by less than ``fraction`` x the median
    first-step drop (measured by one probe step): -> (trajectory, steps per patch (H/p, W/p), the probe's passes)."""
    kwargs = dict(step_scale=step_scale, per_patch=True, tile_overlap=tile_overlap)
    probe, _ = denoise(objective, noisy[None], 1, final_energy=True, **kwargs)
    tolerance = adaptive_tolerance(probe, fraction)
    trajectory, _ = denoise(objective, noisy[None], steps, stop_when_energy_rises=True, stop_tolerance=tolerance,
                            final_energy=True, **kwargs)  # fmt: skip
    extra = (probe.forward_passes, probe.backward_passes)
    return trajectory, trajectory.steps_taken[0].float().cpu(), extra


def robust_range(values: Tensor) -> tuple[float, float]:
    """The 2nd and 98th percentiles: one outlying patch should not wash the rest of a map into one colour."""
    flat = values.detach().float().flatten()
    low, high = torch.quantile(flat, torch.tensor([0.02, 0.98])).tolist()
    return (low, high) if high > low else (float(flat.min()), float(flat.max()) + 1e-12)


def colorize(values: Tensor, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(h, w) -> (h, w, 3) uint8 through a perceptual matplotlib colour map; the range is robust unless given."""
    import matplotlib

    low, high = robust_range(values) if vmin is None or vmax is None else (vmin, vmax)
    array = values.detach().float().cpu().numpy()
    scaled = np.clip((array - low) / max(high - low, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def render_map(values: Tensor, title: str = "", cmap: str = "viridis", height: int = 256) -> np.ndarray:
    """A map (h, w) as an RGB picture with a colour bar and its value labels: (height + margins, width, 3) uint8.

    Drawn with numpy and PIL, not a matplotlib figure: a handful of these per click must stay fast.
    """
    from PIL import Image, ImageDraw

    low, high = robust_range(values)
    scale = max(1, round(height / values.shape[0]))
    heat = np.kron(colorize(values, cmap, low, high), np.ones((scale, scale, 1), dtype=np.uint8))  # nearest upsampling
    h, w = heat.shape[:2]
    bar = colorize(torch.linspace(high, low, h)[:, None].expand(h, 12), cmap, low, high)
    canvas = Image.new("RGB", (w + 70, h + (18 if title else 4) + 4), "white")
    top = 18 if title else 4
    canvas.paste(Image.fromarray(heat), (0, top))
    canvas.paste(Image.fromarray(bar), (w + 6, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 2), title, fill="black")
    for fraction, value in ((0.0, high), (0.5, (low + high) / 2), (1.0, low)):
        draw.text((w + 21, top + round(fraction * (h - 10))), _label(value), fill="black")
    return np.asarray(canvas)


def story_frames(story: DenoiseStory) -> list[tuple[np.ndarray, str]]:
    """Per candidate: the image, its energy map and (where a step was taken from it) its |dE/dx| map, each map with
    its own robust colour range and colour bar. Captions stay short enough for a gallery tile."""
    frames = []
    patch = story.candidates[0].shape[1] // story.energy_maps[0].shape[0]
    for k, candidate in enumerate(story.candidates):
        name = "noisy start" if k == 0 else f"step {k}"
        caption = f"{name} · {story.psnrs[k]:.2f} dB" if story.psnrs else name
        frames.append((to_uint8(candidate), f"{caption} · E {_label(story.energies[k])}"))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
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
    # the legend sits above the axes, where it cannot hide the curves' last points
    ax.legend(lines, [line.get_label() for line in lines], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
              fontsize=8, frameon=False)  # fmt: skip
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
    lines += [f"*{note}*" for note in story.notes]
    return "\n\n".join(lines)
