"""What makes the EBT denoiser better or worse: train variants of one config on the same crops, evaluate each.

Every variant is the blind image EBT of the base config with a few overrides (step size, number of steps, loss on all
steps vs the last, Langevin noise, randomised steps); the diffusers DiT trained on the same crops is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.config import with_overrides
from ..core.metrics import psnr
from ..core.progress import progress as progress_bar
from ..core.reports import markdown_table, write_report
from ..core.train import seed_everything, train
from ..image.config import ImageConfig
from ..image.data import CropSampler, held_out_photos, square_crops, training_photos
from ..image.dit import DiTObjective, dit_denoise
from ..image.inference import denoise
from ..image.noise import estimate_noise_sigma, noisy_copy
from ..image.objective import DenoisingObjective
from .compare.protocols import SPLIT_SEED_OFFSET

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
}


def variant_config(base: ImageConfig, name: str, overrides: list[str]) -> ImageConfig:
    return with_overrides(base, [*overrides, f"name={base.name}-{name}"])


@dataclass
class AblationResult:
    rows: list[dict]
    seconds: dict[str, float]
    step_sizes: dict[str, float]


def _noisy_splits(size: int, sigmas, seed: int, limit: int | None) -> dict[str, tuple[torch.Tensor, dict]]:
    """Per split: the clean crops and {sigma: noisy copies}."""
    splits = {}
    for split in ("validation", "test"):
        _, clean = square_crops(held_out_photos(split=split)[:limit], size)
        offset = SPLIT_SEED_OFFSET[split]
        noisy = {s: torch.stack([noisy_copy(c, s, seed, offset + i) for i, c in enumerate(clean)]) for s in sigmas}
        splits[split] = (clean, noisy)
    return splits


def run_ablation(
    base: ImageConfig,
    names: list[str],
    run_root: str | Path,
    sigmas: tuple[float, ...] = (15, 25, 50, 75, 100),
    size: int = 64,
    max_steps: int = 8,
    dit_steps: tuple[int, ...] = (1, 2, 5, 10, 25, 0),
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> AblationResult:
    """Train (or reuse) each variant and the DiT under ``run_root``; PSNR rows per split, variant, sigma and step."""
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {sorted(VARIANTS)}")
    photos = training_photos(base.data)
    splits = _noisy_splits(size, sigmas, seed, limit)
    rows, seconds, step_sizes = [], {}, {}

    def fit(name: str, cfg: ImageConfig, objective):
        seed_everything(cfg.train.seed)
        sampler = CropSampler(photos, cfg.data, seed=cfg.train.seed)  # the same crops for every variant
        result = train(objective, iter(sampler), cfg, Path(run_root) / name, True, sampler, progress)
        seconds[name] = result.seconds
        return objective.eval()

    for name in progress_bar(names, desc="ablation", disable=not progress):
        cfg = variant_config(base, name, VARIANTS[name][0])
        objective = fit(name, cfg, DenoisingObjective(cfg))
        step_sizes[name] = float(objective.step_size().detach())
        for split, (clean, noisy) in splits.items():
            for sigma in sigmas:
                for method, stop in (("ebt", False), ("ebt_stop", True)):
                    trajectory, _ = denoise(objective, noisy[sigma], max_steps, stop_when_energy_rises=stop,
                                            final_energy=False)  # fmt: skip
                    for k in range(1, max_steps + 1):
                        value = float(psnr(trajectory.candidates[k].cpu(), clean).mean())
                        rows.append({"eval_split": split, "variant": name, "method": method, "sigma": sigma,
                                     "steps": k, "psnr": value})  # fmt: skip
    dit = fit("dit", base, DiTObjective(base))
    for split, (clean, noisy) in splits.items():
        for sigma in sigmas:
            estimated = estimate_noise_sigma(noisy[sigma])
            for k in dit_steps:
                estimate, passes = dit_denoise(dit, noisy[sigma], estimated, k or None)
                rows.append(
                    {
                        "eval_split": split,
                        "variant": "dit",
                        "method": "dit_ddim",
                        "sigma": sigma,
                        "steps": k,
                        "forward_passes": sum(passes) / len(passes),
                        "psnr": float(psnr(estimate, clean).mean()),
                    }
                )
    return AblationResult(rows, seconds, step_sizes)


def _chosen_on_validation(rows: list[dict], variant: str, method: str, sigma: float) -> dict:
    """The test row of the step count with the best validation PSNR."""

    def of(split: str) -> list[dict]:
        return [r for r in rows if (r["eval_split"], r["variant"], r["method"], r["sigma"]) == (split, variant, method,
                                                                                                  sigma)]  # fmt: skip

    best = max(of("validation"), key=lambda r: r["psnr"])
    return next(r for r in of("test") if r["steps"] == best["steps"])


def ablation_table(result: AblationResult, trained_steps: int, sigmas: tuple[float, ...]) -> str:
    """One row per variant (test split): PSNR at the trained step count, at the step count chosen on validation, and
    K steps with energy-based stopping; the DiT's DDIM step count chosen the same way."""

    def test_row(variant, method, sigma, steps):
        return next(r for r in result.rows if (r["eval_split"], r["variant"], r["method"], r["sigma"], r["steps"])
                    == ("test", variant, method, sigma, steps))  # fmt: skip

    max_steps = max(r["steps"] for r in result.rows if r["method"] == "ebt")
    headers = ["variant", "what it tests", "learned step size", "train s"]
    headers += [f"σ{s:g} @{trained_steps} / chosen(k) / stop@{max_steps}" for s in sigmas]
    table = []
    for variant, seconds in result.seconds.items():
        if variant == "dit":
            continue
        cells = []
        for sigma in sigmas:
            at = test_row(variant, "ebt", sigma, min(trained_steps, max_steps))["psnr"]
            chosen = _chosen_on_validation(result.rows, variant, "ebt", sigma)
            stop = test_row(variant, "ebt_stop", sigma, max_steps)["psnr"]
            cells.append(f"{at:.2f} / {chosen['psnr']:.2f} ({chosen['steps']}) / {stop:.2f}")
        table.append([variant, VARIANTS[variant][1], f"{result.step_sizes[variant]:.1f}", f"{seconds:.0f}", *cells])
    dit_cells = []
    for sigma in sigmas:
        chosen = _chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)
        dit_cells.append(f"chosen {chosen['psnr']:.2f} ({chosen['forward_passes']:.0f} passes)")
    table.append(["DiT (reference)", "diffusers DiT, same crops, sigma estimated", "-", f"{result.seconds['dit']:.0f}",
                  *dit_cells])  # fmt: skip
    return markdown_table(headers, table)


def write_ablation_report(result: AblationResult, base: ImageConfig, sigmas, meta: dict, out_dir, stem="ablation"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.4 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        test = [r for r in result.rows if r["eval_split"] == "test" and r["sigma"] == sigma]
        for i, variant in enumerate(v for v in result.seconds if v != "dit"):
            pts = sorted(
                (r for r in test if r["variant"] == variant and r["method"] == "ebt"), key=lambda r: r["steps"]
            )
            ax.plot(
                [r["steps"] for r in pts], [r["psnr"] for r in pts], "o-", color=f"C{i}", markersize=3, label=variant
            )
        if any(r["variant"] == "dit" for r in test):
            dit = _chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)["psnr"]
            ax.axhline(dit, color="k", linestyle="--", label="DiT (steps chosen on validation)")
        ax.set_title(f"sigma {sigma:g}")
        ax.set_xlabel("descent steps at test time")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB), test split")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    table = ablation_table(result, base.descent.num_steps, sigmas)
    max_steps = max(r["steps"] for r in result.rows if r["method"] == "ebt")
    d = base.descent
    body = (
        f"Base config: {base.model.width}-wide, {base.model.depth}-deep EBT; descent {d.min_steps}-{d.num_steps} steps "
        f"per sample in training, initial step size {d.step_size:g} jittered by x/÷{d.step_size_jitter:g}, loss on "
        f"{base.train.loss_on_steps} steps, Langevin noise {d.langevin_noise:g}.\n\n"
        "Blind image EBT variants of one base config, each trained on the same crop stream for the same steps, "
        "evaluated on the same noisy held-out photos (mean PSNR on the test split, dB). Each cell: PSNR after the "
        f"trained number of steps / after the step count in 1-{max_steps} chosen on the "
        "validation split (which k) / the most steps with energy-based stopping.\n\n"
        f"{table}\n\n![PSNR per test-time step, per variant]({stem}.png)\n"
    )
    return write_report(out_dir, stem, meta, result.rows, body, seconds=result.seconds, step_sizes=result.step_sizes)
