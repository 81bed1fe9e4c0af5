"""Adaptive per-patch compute: patches whose energy has stopped falling stop descending while the others continue.

Measured against uniform descent at equal total patch-steps (a patch-step is one update of one patch): for every
photo and sigma, uniform descent gives PSNR after k = 0..K steps (k patch-steps per patch), adaptive descent with a
stopping tolerance gives one PSNR at its mean steps per patch; the uniform curve is interpolated there. Tolerances
are fractions of the median first-step energy decrease per patch; the fraction is chosen on the validation photos.
Patch-steps count updates, not FLOPs: this implementation still evaluates the whole image at every step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.defaults import SIGMAS
from ...core.inference import Thinking
from ...core.metrics import psnr
from ...core.progress import progress as progress_bar
from ...core.reports import markdown_table, write_report
from ...image.data import Photo, held_out_photos
from ...image.inference import Tiling, adaptive_tolerance, crop_to_patches, denoise
from ...image.noise import noisy_copy
from ...image.objective import DenoisingObjective
from .. import selection
from ..selection import SPLIT_SEED_OFFSET

FRACTIONS = (0.003, 0.01, 0.03, 0.1, 0.3)


def _photo_rows(objective, photo: Photo, index: int, split: str, sigma: float, max_steps: int, fractions) -> list:
    patch = objective.cfg.model.patch_size
    clean = crop_to_patches(photo.image[None], patch)
    noisy = noisy_copy(clean[0], sigma, 0, SPLIT_SEED_OFFSET[split] + index)[None]
    base = {"eval_split": split, "image": photo.name, "sigma": sigma}
    per_patch = Tiling(per_patch=True)
    uniform, _ = denoise(objective, noisy, Thinking(max_steps), tiling=per_patch)
    rows = [{**base, "method": "uniform", "steps_per_patch": float(k), "psnr": float(psnr(c, clean))}
            for k, c in enumerate(uniform.candidates)]  # fmt: skip
    for fraction in fractions:
        stop = Thinking(max_steps, stop_when_energy_rises=True, stop_tolerance=adaptive_tolerance(uniform, fraction))
        adaptive, _ = denoise(objective, noisy, stop, tiling=per_patch)
        rows.append({**base, "method": "adaptive", "tolerance_fraction": fraction,
                     "steps_per_patch": float(adaptive.steps_taken.float().mean()),
                     "psnr": float(psnr(adaptive.final, clean))})  # fmt: skip
    return rows


@dataclass(frozen=True)
class AdaptiveOptions:
    """Noise ``sigmas`` (0-255), up to ``max_steps`` descent steps per patch, photos downscaled to ``max_side``, the
    stopping tolerances (``fractions`` of the median first-step energy drop), the first ``limit`` photos per split."""

    sigmas: tuple[float, ...] = SIGMAS
    max_steps: int = 16
    max_side: int = 128
    fractions: tuple[float, ...] = FRACTIONS
    limit: int | None = None


def run_adaptive(objective: DenoisingObjective, options: AdaptiveOptions, progress: bool = True) -> list[dict]:
    """Per photo, split and sigma: the uniform curve and one row per tolerance fraction."""
    jobs = [(split, i, photo, sigma) for split in ("validation", "test")
            for i, photo in enumerate(held_out_photos(options.max_side, split)[: options.limit])
            for sigma in options.sigmas]  # fmt: skip
    rows = []
    for split, index, photo, sigma in progress_bar(jobs, desc="adaptive", disable=not progress):
        rows += _photo_rows(objective, photo, index, split, sigma, options.max_steps, options.fractions)
    return rows


def _uniform_at(curve: list[tuple[float, float]], steps: float) -> float:
    """The uniform curve's PSNR at a fractional number of steps per patch (linear between integer steps)."""
    xs, ys = zip(*sorted(curve), strict=True)
    return float(np.interp(steps, xs, ys))


def summarise(rows: list[dict]) -> list[dict]:
    """Per (split, sigma, tolerance): mean over photos of the adaptive PSNR, its steps per patch, and the uniform
    PSNR at the same steps per patch (per photo, interpolated), and the difference."""
    curves = defaultdict(list)
    for r in rows:
        if r["method"] == "uniform":
            curves[(r["eval_split"], r["image"], r["sigma"])].append((r["steps_per_patch"], r["psnr"]))
    groups = defaultdict(list)
    for r in rows:
        if r["method"] == "adaptive":
            uniform = _uniform_at(curves[(r["eval_split"], r["image"], r["sigma"])], r["steps_per_patch"])
            groups[(r["eval_split"], r["sigma"], r["tolerance_fraction"])].append((r, uniform))
    out = []
    for (split, sigma, fraction), pairs in sorted(groups.items()):
        adaptive = float(np.mean([r["psnr"] for r, _ in pairs]))
        uniform = float(np.mean([u for _, u in pairs]))
        steps = float(np.mean([r["steps_per_patch"] for r, _ in pairs]))
        out.append({"eval_split": split, "sigma": sigma, "tolerance_fraction": fraction, "steps_per_patch": steps,
                    "psnr_adaptive": adaptive, "psnr_uniform_same_steps": uniform, "gain_db": adaptive - uniform,
                    "images": len(pairs)})  # fmt: skip
    return out


def write_adaptive_report(rows: list[dict], meta: dict, out_dir: str | Path, stem: str = "adaptive") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    sigmas = sorted({r["sigma"] for r in summary})
    # per sigma: the tolerance with the best validation gain, quoted on test
    choices = selection.choose(summary, lambda r: r["sigma"], ("tolerance_fraction",), ("sigma",), score="gain_db")
    chosen = {sigma: choices[sigma].test for sigma in sigmas}
    table = markdown_table(
        ["sigma", "tolerance (x median first drop, chosen on validation)", "steps per patch", "adaptive PSNR",
         "uniform PSNR at the same patch-steps", "gain (dB)"],
        [[f"{s:g}", f"{r['tolerance_fraction']:g}", f"{r['steps_per_patch']:.2f}", f"{r['psnr_adaptive']:.2f}",
          f"{r['psnr_uniform_same_steps']:.2f}", f"{r['gain_db']:+.2f}"] for s, r in chosen.items()],
    )  # fmt: skip
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.4 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        uniform = defaultdict(list)
        for r in rows:
            if r["method"] == "uniform" and r["eval_split"] == "test" and r["sigma"] == sigma:
                uniform[r["steps_per_patch"]].append(r["psnr"])
        ax.plot(sorted(uniform), [np.mean(uniform[k]) for k in sorted(uniform)], "o-", markersize=3, label="uniform")
        points = [r for r in summary if r["eval_split"] == "test" and r["sigma"] == sigma]
        ax.plot([r["steps_per_patch"] for r in points], [r["psnr_adaptive"] for r in points], "s", color="C3",
                label="adaptive (tolerances)")  # fmt: skip
        ax.set_title(f"sigma {sigma:g}")
        ax.set_xlabel("mean descent steps per patch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB), test split")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    body = (
        "Adaptive per-patch compute against uniform descent at equal total patch-steps, on the held-out photos "
        "(settings chosen on the validation split, quoted on the test split). Every patch descends its own energy "
        "(the per-patch energy of the tiled model); adaptive descent stops a patch once its energy falls by less "
        "than the tolerance (and undoes a step that raised it). A patch-step is one update of one patch; this "
        "implementation still evaluates whole images, so the saving is in updates, not yet in FLOPs.\n\n"
        f"{table}\n\n![PSNR vs steps per patch]({stem}.png)\n"
    )
    return write_report(out_dir, stem, meta, summary, body, per_image=rows)


def report_adaptive(checkpoint: str | Path, out_dir: str | Path, options: AdaptiveOptions = AdaptiveOptions(),
                    device: str = "auto", stem: str = "adaptive", progress: bool = True) -> Path:  # fmt: skip
    """``ebt-vision adaptive``: the checkpoint's adaptive per-patch descent against uniform descent, reported."""
    from ...core.reports import make_meta
    from ...core.train import resolve_device
    from ...image.inference import load_denoiser

    torch_device = resolve_device(device)
    rows = run_adaptive(load_denoiser(checkpoint, torch_device), options, progress)
    data = f"held-out photos (validation to choose, test to report) downscaled to {options.max_side} px, Gaussian noise"
    budget = f"{checkpoint}; up to {options.max_steps} descent steps per patch"
    return write_adaptive_report(rows, make_meta(torch_device, 0, data, budget), out_dir, stem)
