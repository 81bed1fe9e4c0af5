"""Held-out denoising evaluation of one checkpoint at full resolution: noisy input, CBM3D, the EBT after every
descent step and with energy-based stopping, and (optionally) the DiT baseline; step counts chosen on the
validation photos, reported on the test photos."""

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
from ..image.dit import DiTObjective, dit_denoise
from ..image.inference import crop_to_patches, denoise
from ..image.noise import as_model_input, estimate_noise_sigma, noisy_copy, training_sigma_max
from ..image.objective import DenoisingObjective
from ..image.schedule import StepSchedule
from .compare.protocols import SPLIT_SEED_OFFSET

DIT_STEPS = (1, 2, 5, 10)
STOP_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.4)  # energy-based stopping: tolerance as a fraction of the first drop


def _scored(base: dict, method: str, estimate: torch.Tensor, clean: torch.Tensor, **extra) -> dict:
    p, s = psnr(estimate[None].cpu(), clean[None]), ssim(estimate[None].cpu(), clean[None])
    return {**base, "method": method, **extra, "psnr": float(p), "ssim": float(s)}


def evaluate_denoiser(
    objective: DenoisingObjective,
    photos: list[Photo],
    sigmas: tuple[float, ...],
    num_steps: int,
    seed: int = 0,
    with_bm3d: bool = True,
    progress: bool = True,
    split: str = "test",
    dit: DiTObjective | None = None,
    dit_steps: tuple[int, ...] = DIT_STEPS,
    schedule: StepSchedule | None = None,
) -> list[dict]:
    """Per image and sigma: one row per method/step with PSNR, SSIM and forward/backward passes.

    EBT rows after k descent steps cost k forward and k backward passes of the model (the tiled energy of a
    whole photo counts as one pass; its tiles are batched); ``ebt_stop`` is ``num_steps`` steps with energy-based
    stopping; ``ebt_auto`` (with a ``schedule``) takes the steps its estimated noise level looks up. The DiT is
    blind like the EBT: it starts DDIM at the timestep of the sigma estimated from the noisy photo.
    The split label compares sigma with the highest (Gaussian-equivalent) sigma the model trained on; a
    diffusion-trained model gets the noisy photo in its own convention (``as_model_input``).
    """
    patch = objective.cfg.model.patch_size
    train_max = training_sigma_max(objective.cfg.data)
    rows = []
    jobs = [(i, photo, sigma) for i, photo in enumerate(photos) for sigma in sigmas]
    for index, photo, sigma in progress_bar(jobs, desc=f"evaluate ({split})", disable=not progress):
        clean = crop_to_patches(photo.image[None], patch)[0]
        noisy = noisy_copy(clean, sigma, seed, SPLIT_SEED_OFFSET[split] + index)
        base = {"eval_split": split, "image": photo.name, "sigma": sigma,
                "split": "id" if sigma <= train_max else "ood"}  # fmt: skip
        rows.append(_scored(base, "noisy", noisy, clean, steps=0, forward_passes=0, backward_passes=0))
        if with_bm3d:
            started = time.perf_counter()
            estimate = cbm3d_denoise(noisy, sigma)
            rows.append(_scored(base, "cbm3d", estimate, clean, steps=0, forward_passes=0, backward_passes=0,
                                seconds=time.perf_counter() - started))  # fmt: skip
        model_input = as_model_input(noisy[None], sigma, objective.cfg.data.noise)
        started = time.perf_counter()
        trajectory, _ = denoise(objective, model_input, num_steps=num_steps, final_energy=True)
        seconds = time.perf_counter() - started
        for k, candidate in enumerate(trajectory.candidates[1:], start=1):
            timing = {"seconds": seconds} if k == num_steps else {}  # measured for the whole K-step run only
            rows.append(_scored(base, "ebt", candidate[0], clean, steps=k, forward_passes=k, backward_passes=k,
                                **timing))  # fmt: skip
        energies = trajectory.energies[:, 0]
        stop = energy_stop_step(energies)
        rows.append(
            _scored(
                base,
                "ebt_stop",
                trajectory.candidates[stop][0],
                clean,
                steps=num_steps,
                forward_passes=num_steps + 1,
                backward_passes=num_steps,
                steps_taken=float(stop),
            )
        )
        first_drop = max(float(energies[0] - energies[1]), 0.0) if num_steps else 0.0
        for fraction in STOP_FRACTIONS:  # stop once a step lowers the energy by < fraction x the first step's drop
            k = energy_stop_step(energies, fraction * first_drop)
            rows.append(_scored(base, f"ebt_stop_rel@{fraction:g}", trajectory.candidates[k][0], clean,
                                steps=num_steps, forward_passes=num_steps + 1, backward_passes=num_steps,
                                steps_taken=float(k), tolerance_fraction=fraction))  # fmt: skip
        # what a blind method may know, read once for the step schedule and the DiT
        estimated = float(estimate_noise_sigma(noisy[None])[0]) if schedule is not None or dit is not None else None
        if schedule is not None:
            rows.append(_scheduled_row(objective, schedule, estimated, model_input, trajectory, base, clean))
        if dit is not None:
            for k in dit_steps:
                estimate, passes = dit_denoise(dit, noisy[None], estimated, k)
                rows.append(_scored(base, "dit_ddim", estimate[0], clean, steps=k, forward_passes=passes[0],
                                    backward_passes=0))  # fmt: skip
    return rows


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
    objective, schedule: StepSchedule, estimated: float, model_input, trajectory, base: dict, clean
) -> dict:
    """The EBT with its step schedule: steps and step scale looked up by the noise level estimated from the noisy
    photo (at step scale 1 the plain descent's candidate is reused)."""
    steps, scale = schedule.lookup(estimated)
    if scale == 1.0 and steps < len(trajectory.candidates):
        estimate = trajectory.candidates[steps][0]
    else:
        estimate = denoise(objective, model_input, num_steps=steps, step_scale=scale, final_energy=False)[0].final[0]
    return _scored(base, "ebt_auto", estimate, clean, steps=0, forward_passes=steps, backward_passes=steps,
                   steps_taken=float(steps), step_scale=scale, estimated_sigma=estimated)  # fmt: skip


def average_rows(rows: list[dict]) -> list[dict]:
    """Mean PSNR/SSIM over images, one row per (split of photos, method, sigma, steps)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row.get("eval_split", "test"), row["method"], row["sigma"], row["steps"])].append(row)
    averaged = []
    for (eval_split, method, sigma, steps), group in groups.items():
        first = group[0]
        averaged.append({
            "eval_split": eval_split, "method": method, "sigma": sigma, "split": first["split"], "steps": steps,
            "forward_passes": sum(r["forward_passes"] for r in group) / len(group),
            "backward_passes": sum(r["backward_passes"] for r in group) / len(group),
            "psnr": sum(r["psnr"] for r in group) / len(group), "ssim": sum(r["ssim"] for r in group) / len(group),
            "images": len(group),
            **({"steps_taken": sum(r["steps_taken"] for r in group) / len(group)} if "steps_taken" in first else {}),
        })  # fmt: skip
    return sorted(averaged, key=lambda r: (r["eval_split"], r["sigma"], r["method"], r["steps"]))


def _chosen(averaged: list[dict], method: str, sigma: float) -> dict | None:
    """The test row of ``method``'s setting (step count; for a ``method`` ending in "@", also which of its variants,
    e.g. the stopping tolerance) with the best mean validation PSNR at ``sigma`` (None without a validation split)."""

    def matches(row: dict) -> bool:
        return row["method"].startswith(method) if method.endswith("@") else row["method"] == method

    validation = [r for r in averaged if r["eval_split"] == "validation" and r["sigma"] == sigma and matches(r)]
    if not validation:
        return None
    best = max(validation, key=lambda r: r["psnr"])
    wanted = ("test", best["method"], sigma, best["steps"])
    return next((r for r in averaged if (r["eval_split"], r["method"], r["sigma"], r["steps"]) == wanted), None)


def summary_table(averaged: list[dict]) -> str:
    """Markdown (test split): one row per sigma; noisy, CBM3D, EBT after each step, with stopping, the EBT and DiT
    at their validation-chosen step counts (PSNR dB / SSIM)."""
    test = [r for r in averaged if r["eval_split"] == "test"]
    sigmas = sorted({r["sigma"] for r in test})
    steps = sorted({r["steps"] for r in test if r["method"] == "ebt"})
    lookup = {(r["method"], r["sigma"], r["steps"]): r for r in test}
    methods = [("noisy", 0)] + ([("cbm3d", 0)] if any(r["method"] == "cbm3d" for r in test) else [])
    methods += [("ebt", k) for k in steps] + [("ebt_stop", steps[-1])]
    names = {"noisy": "NOISY", "cbm3d": "CBM3D", "ebt_stop": f"EBT stop@{steps[-1]}"}
    headers = ["sigma", "split"] + [names.get(m) or f"EBT {k} step{'s' * (k > 1)}" for m, k in methods]
    with_dit = any(r["method"] == "dit_ddim" for r in test)
    with_validation = any(r["eval_split"] == "validation" for r in averaged)
    with_auto = any(r["method"] == "ebt_auto" for r in test)
    dit_steps = sorted({r["steps"] for r in test if r["method"] == "dit_ddim"})
    if with_auto:
        headers.append("EBT auto steps (mean steps)")
    with_rel = any(r["method"].startswith("ebt_stop_rel@") for r in test)
    if with_validation:
        headers += ["EBT (chosen k)"] + (["EBT stop, chosen tolerance (fraction; mean steps)"] if with_rel else [])
        headers += ["DiT (chosen DDIM steps)"] if with_dit else []
    elif with_dit:
        headers += [f"DiT {k} DDIM step{'s' * (k > 1)}" for k in dit_steps]

    def cell(row: dict | None, label: bool = False) -> str:
        if row is None:
            return "-"
        text = f"{row['psnr']:.2f} / {row['ssim']:.3f}"
        return f"{text} ({row['steps']})" if label else text

    table = []
    for sigma in sigmas:
        cells = [cell(lookup.get((m, sigma, k))) for m, k in methods]
        if with_auto:
            auto = lookup[("ebt_auto", sigma, 0)]
            cells.append(f"{cell(auto)} ({auto['forward_passes']:.1f})")
        if with_validation:
            cells.append(cell(_chosen(averaged, "ebt", sigma), label=True))
            rel = _chosen(averaged, "ebt_stop_rel@", sigma) if with_rel else None
            if rel is not None:
                cells.append(f"{cell(rel)} ({rel['method'].split('@')[1]}; {rel['steps_taken']:.1f})")
            if with_dit:
                cells.append(cell(_chosen(averaged, "dit_ddim", sigma), label=True))
        elif with_dit:
            cells += [cell(lookup.get(("dit_ddim", sigma, k))) for k in dit_steps]
        table.append([f"{sigma:g}", lookup[("noisy", sigma, 0)]["split"], *cells])
    return markdown_table(headers, table)


def plot_psnr_vs_steps(averaged: list[dict], path: str | Path) -> Path:
    """One panel per sigma (test split): EBT PSNR after each descent step, with noisy, CBM3D and the chosen DiT as
    reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = [r for r in averaged if r["eval_split"] == "test"]
    sigmas = sorted({r["sigma"] for r in test})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.2 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        ebt = sorted((r for r in test if r["method"] == "ebt" and r["sigma"] == sigma), key=lambda r: r["steps"])
        ax.plot([r["steps"] for r in ebt], [r["psnr"] for r in ebt], "o-", markersize=3, label="EBT")
        references = [(m, r) for m in ("noisy", "cbm3d") for r in test if r["method"] == m and r["sigma"] == sigma]
        dit = _chosen(averaged, "dit_ddim", sigma)
        if dit is not None:
            references.append((f"DiT ({dit['steps']} DDIM steps)", dit))
        else:  # no validation split to choose on: every DDIM step count, against its forward passes
            dits = sorted((r for r in test if r["method"] == "dit_ddim" and r["sigma"] == sigma),
                          key=lambda r: r["steps"])  # fmt: skip
            if dits:
                ax.plot([r["forward_passes"] for r in dits], [r["psnr"] for r in dits], "s--", markersize=3,
                        color="C2", label="DiT (DDIM forward passes)")  # fmt: skip
        rel = _chosen(averaged, "ebt_stop_rel@", sigma)
        if rel is not None:
            ax.plot([rel["steps_taken"]], [rel["psnr"]], "X", markersize=8, color="C4",
                    label="EBT, energy stop (tolerance chosen)")  # fmt: skip
        auto = [r for r in test if r["method"] == "ebt_auto" and r["sigma"] == sigma]
        if auto:
            ax.plot([auto[0]["forward_passes"]], [auto[0]["psnr"]], "*", markersize=10, color="C1",
                    label="EBT, steps from est. noise")  # fmt: skip
        for (name, ref), (style, color) in zip(references, ((":", "grey"), ("--", "C3"), ("-.", "C2")), strict=False):
            ax.axhline(ref["psnr"], linestyle=style, color=color, label=name)
        split = "in-dist." if ebt and ebt[0]["split"] == "id" else "out-of-dist."
        ax.set_title(f"sigma {sigma:g} ({split})")
        ax.set_xlabel("descent steps (fwd + bwd passes)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB), test split")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_denoise_report(
    rows: list[dict], meta: dict, out_dir: str | Path, stem: str = "denoise_eval", resolution: str = "full resolution"
) -> Path:
    averaged = average_rows(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_psnr_vs_steps(averaged, out_dir / f"{stem}.png")
    body = (
        f"Mean PSNR (dB) / SSIM over the held-out **test** photos ({resolution}), on clamped 0-255 pixels. The EBT "
        "is blind (not told sigma); CBM3D is told the true sigma; the DiT (when given) is blind too: DDIM starts at "
        "the timestep of the sigma estimated from the noisy photo. *(chosen)* columns: the step count with the best "
        "mean PSNR on the **validation** photos at that sigma, quoted on the test photos. An EBT step is one forward "
        "and one backward pass of the model; *stop@K*: K steps with energy-based stopping; *auto steps*: the step "
        "count and step-size scale that the noise level estimated from the noisy photo looks up in the checkpoint's "
        "step schedule (`ebt-vision calibrate`, fitted on validation crops; the model itself stays blind); *stop, "
        "chosen tolerance*: energy-based stopping that also ends the descent once a step lowers the energy by less "
        "than a fraction of the first step's drop, the fraction chosen on validation.\n\n"
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
    split: str = "both",
    limit: int | None = None,
    seed: int = 0,
    with_bm3d: bool = True,
    device: str = "auto",
    progress: bool = True,
    dit_checkpoint: str | Path | None = None,
    use_schedule: bool = True,
    dit_steps: tuple[int, ...] = DIT_STEPS,
) -> Path:
    """``ebt-vision eval``: one checkpoint on the held-out photos ("both" splits: choices on validation, quoted on
    test); writes ``stem.{md,json,png}`` to ``out_dir``."""
    from ..core.checkpoint import load_trained
    from ..core.reports import make_meta
    from ..core.train import resolve_device
    from ..image.data import held_out_photos

    torch_device = resolve_device(device)
    objective, extra = load_trained(checkpoint, DenoisingObjective, "an image EBT denoiser", torch_device)
    dit = load_trained(dit_checkpoint, DiTObjective, "a DiT baseline", torch_device)[0] if dit_checkpoint else None
    schedule = StepSchedule.load(checkpoint) if use_schedule else None
    cfg = objective.cfg
    budget = f"{cfg.name}: {extra.get('step', '?')} steps of batch {cfg.data.batch_size}, crops {cfg.data.crop_size}px"
    if "train_seconds" in extra:
        budget += f", {extra['train_seconds'] / 60:.1f} min training"
    if schedule is not None:
        budget += f"; its step schedule (calibrated on validation crops): {schedule.describe()}"
    rows, described = [], []
    for name in ("validation", "test") if split == "both" else (split,):
        photos = held_out_photos(max_side, name)[:limit]
        described.append(f"{name}: {len(photos)} photos ({', '.join(p.name for p in photos)})")
        rows += evaluate_denoiser(objective, photos, sigmas, steps, seed, with_bm3d and name == "test", progress,
                                  name, dit, dit_steps, schedule)  # fmt: skip
    scale = f"downscaled to at most {max_side}px" if max_side else "full resolution"
    data = f"held-out photos, {scale}; " + "; ".join(described)
    return write_denoise_report(rows, make_meta(torch_device, seed, data, budget), out_dir, stem, scale)
