"""Held-out denoising evaluation of one checkpoint: noisy input, CBM3D and the EBT after every descent step."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch

from ..core.metrics import psnr, ssim
from ..core.progress import progress as progress_bar
from ..core.reports import markdown_table, write_report
from ..image.classical import cbm3d_denoise
from ..image.data import Photo
from ..image.inference import crop_to_patches, denoise
from ..image.noise import as_model_input, noisy_copy, training_sigma_max
from ..image.objective import DenoisingObjective


def _scored(base: dict, method: str, estimate: torch.Tensor, clean: torch.Tensor, **extra) -> dict:
    p, s = psnr(estimate[None], clean[None]), ssim(estimate[None], clean[None])
    return {**base, "method": method, **extra, "psnr": float(p), "ssim": float(s)}


def evaluate_denoiser(
    objective: DenoisingObjective,
    photos: list[Photo],
    sigmas: tuple[float, ...],
    num_steps: int,
    seed: int = 0,
    with_bm3d: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Per image and sigma: one row per method/step with PSNR, SSIM and forward/backward passes.

    EBT rows after k descent steps cost k forward and k backward passes of the model (the tiled energy of a
    whole photo counts as one pass; its tiles are batched). The split label compares sigma with the highest
    (Gaussian-equivalent) sigma the model trained on; a diffusion-trained model gets the noisy photo in its own
    convention (``as_model_input``).
    """
    patch = objective.cfg.model.patch_size
    train_max = training_sigma_max(objective.cfg.data)
    rows = []
    jobs = [(i, photo, sigma) for i, photo in enumerate(photos) for sigma in sigmas]
    for index, photo, sigma in progress_bar(jobs, desc="evaluate", disable=not progress):
        clean = crop_to_patches(photo.image[None], patch)[0]
        noisy = noisy_copy(clean, sigma, seed, index)
        base = {"image": photo.name, "sigma": sigma, "split": "id" if sigma <= train_max else "ood"}
        rows.append(_scored(base, "noisy", noisy, clean, steps=0, forward_passes=0, backward_passes=0))
        if with_bm3d:
            started = time.perf_counter()
            estimate = cbm3d_denoise(noisy, sigma)
            seconds = time.perf_counter() - started
            rows.append(_scored(base, "cbm3d", estimate, clean, steps=0, forward_passes=0, backward_passes=0,
                                seconds=seconds))  # fmt: skip
        started = time.perf_counter()
        model_input = as_model_input(noisy[None], sigma, objective.cfg.data.noise)
        trajectory, _ = denoise(objective, model_input, num_steps=num_steps, final_energy=False)
        seconds = time.perf_counter() - started
        for k, candidate in enumerate(trajectory.candidates[1:], start=1):
            timing = {"seconds": seconds} if k == num_steps else {}  # measured for the whole K-step run only
            passes = {"steps": k, "forward_passes": k, "backward_passes": k}
            rows.append(_scored(base, "ebt", candidate[0].cpu(), clean, **passes, **timing))
    return rows


def average_rows(rows: list[dict]) -> list[dict]:
    """Mean PSNR/SSIM over images, one row per (method, sigma, steps)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["sigma"], row["steps"])].append(row)
    averaged = []
    for (method, sigma, steps), group in groups.items():
        first = group[0]
        averaged.append(
            {
                "method": method,
                "sigma": sigma,
                "split": first["split"],
                "steps": steps,
                "forward_passes": first["forward_passes"],
                "backward_passes": first["backward_passes"],
                "psnr": sum(r["psnr"] for r in group) / len(group),
                "ssim": sum(r["ssim"] for r in group) / len(group),
                "images": len(group),
            }
        )
    return sorted(averaged, key=lambda r: (r["sigma"], r["method"], r["steps"]))


def summary_table(averaged: list[dict]) -> str:
    """Markdown: one row per sigma; columns noisy, CBM3D, EBT after each step (PSNR dB / SSIM)."""
    sigmas = sorted({r["sigma"] for r in averaged})
    steps = sorted({r["steps"] for r in averaged if r["method"] == "ebt"})
    methods = [("noisy", 0)] + ([("cbm3d", 0)] if any(r["method"] == "cbm3d" for r in averaged) else [])
    methods += [("ebt", k) for k in steps]
    lookup = {(r["method"], r["sigma"], r["steps"]): r for r in averaged}
    headers = ["sigma", "split"] + [m.upper() if m != "ebt" else f"EBT {k} step{'s' * (k > 1)}" for m, k in methods]
    table = []
    for sigma in sigmas:
        split = lookup[("noisy", sigma, 0)]["split"]
        cells = [f"{lookup[(m, sigma, k)]['psnr']:.2f} / {lookup[(m, sigma, k)]['ssim']:.3f}" for m, k in methods]
        table.append([f"{sigma:g}", split, *cells])
    return markdown_table(headers, table)


def plot_psnr_vs_steps(averaged: list[dict], path: str | Path) -> Path:
    """One panel per sigma: EBT PSNR after each descent step, with noisy and CBM3D as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigmas = sorted({r["sigma"] for r in averaged})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.2 * len(sigmas), 3.2), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        ebt = sorted((r for r in averaged if r["method"] == "ebt" and r["sigma"] == sigma), key=lambda r: r["steps"])
        ax.plot([r["steps"] for r in ebt], [r["psnr"] for r in ebt], "o-", label="EBT")
        for method, style in (("noisy", ":"), ("cbm3d", "--")):
            ref = [r for r in averaged if r["method"] == method and r["sigma"] == sigma]
            if ref:
                ax.axhline(ref[0]["psnr"], linestyle=style, color="grey" if method == "noisy" else "C3", label=method)
        split = "in-dist." if ebt and ebt[0]["split"] == "id" else "out-of-dist."
        ax.set_title(f"sigma {sigma:g} ({split})")
        ax.set_xlabel("descent steps (= forward + backward passes)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_denoise_report(rows: list[dict], meta: dict, out_dir: str | Path, stem: str = "denoise_eval") -> Path:
    averaged = average_rows(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_psnr_vs_steps(averaged, out_dir / f"{stem}.png")
    body = (
        "Mean PSNR (dB) / SSIM over the held-out photos, on clamped 0-255 pixels. The EBT is blind (not told sigma); "
        "CBM3D is told the true sigma. An EBT step is one forward and one backward pass of the model.\n\n"
        f"{summary_table(averaged)}\n\n![PSNR after each descent step]({plot.name})\n"
    )
    return write_report(out_dir, stem, meta, averaged, body, per_image=rows)


def run_evaluation(
    checkpoint: str | Path,
    out_dir: str | Path,
    stem: str = "denoise_eval",
    sigmas: tuple[float, ...] = (15, 25, 50, 75, 100),
    steps: int = 4,
    max_side: int | None = None,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    with_bm3d: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """``ebt-vision eval``: one checkpoint on a held-out split; writes ``stem.{md,json,png}`` to ``out_dir``."""
    from ..core.checkpoint import load_trained
    from ..core.reports import make_meta
    from ..core.train import resolve_device
    from ..image.data import held_out_photos

    torch_device = resolve_device(device)
    objective, extra = load_trained(checkpoint, DenoisingObjective, "an image EBT denoiser", torch_device)
    cfg = objective.cfg
    budget = f"{cfg.name}: {extra.get('step', '?')} steps of batch {cfg.data.batch_size}, crops {cfg.data.crop_size}px"
    if "train_seconds" in extra:
        budget += f", {extra['train_seconds'] / 60:.1f} min training"
    photos = held_out_photos(max_side, split)[:limit]
    sizes = ", ".join(f"{p.image.shape[2]}x{p.image.shape[1]}" for p in photos)
    scale = f"downscaled to at most {max_side}px" if max_side else "full resolution"
    data = f"held-out {split} split: {len(photos)} photos ({', '.join(p.name for p in photos)}), {scale} ({sizes})"
    rows = evaluate_denoiser(objective, photos, sigmas, steps, seed, with_bm3d, progress)
    return write_denoise_report(rows, make_meta(torch_device, seed, data, budget), out_dir, stem)
