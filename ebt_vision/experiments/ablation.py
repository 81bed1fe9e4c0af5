"""What makes the EBT denoiser better or worse, and whether thinking longer pays: train variants of one config on
the same crops, evaluate each after every test-time descent step, with energy-based stopping and with best-of-N.

Every variant is the blind image EBT of the base config with a few overrides; the diffusers DiT trained on the same
crops is the reference. Step counts are chosen on the validation photos and reported on the test photos.
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
from ..image.inference import best_of_n, denoise
from ..image.noise import estimate_noise_sigma, noisy_copy, training_sigma_max
from ..image.objective import DenoisingObjective
from .compare.protocols import SPLIT_SEED_OFFSET

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
THINKING = ["base", "stationarity", "rank", "long", "long-graph2", "long+stationarity", "long+rank",
            "long+stationarity+rank", "long+replay"]  # fmt: skip


def variant_config(base: ImageConfig, name: str, overrides: list[str]) -> ImageConfig:
    return with_overrides(base, [*overrides, f"name={base.name}-{name}"])


@dataclass
class AblationResult:
    rows: list[dict]
    seconds: dict[str, float]
    step_sizes: dict[str, float]
    max_steps: int
    best_of: int


def _noisy_splits(size: int, sigmas, seed: int, limit: int | None) -> dict[str, tuple[torch.Tensor, dict]]:
    """Per split: the clean crops and {sigma: noisy copies}."""
    splits = {}
    for split in ("validation", "test"):
        _, clean = square_crops(held_out_photos(split=split)[:limit], size)
        offset = SPLIT_SEED_OFFSET[split]
        noisy = {s: torch.stack([noisy_copy(c, s, seed, offset + i) for i, c in enumerate(clean)]) for s in sigmas}
        splits[split] = (clean, noisy)
    return splits


def _mean_psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    return float(psnr(estimate.cpu(), clean).mean())


def _evaluate_variant(name: str, objective, splits, sigmas, max_steps: int, best_of: int) -> list[dict]:
    """PSNR after 0..max_steps steps, with energy-based stopping (and the steps it took), and best-of-N at the step
    count chosen on validation; every row once per split."""
    rows = []
    base = {"variant": name}
    for split, (clean, noisy) in splits.items():
        for sigma in sigmas:
            at = {**base, "eval_split": split, "sigma": sigma}
            plain, _ = denoise(objective, noisy[sigma], max_steps, final_energy=False)
            rows += [{**at, "method": "ebt", "steps": k, "psnr": _mean_psnr(c, clean)}
                     for k, c in enumerate(plain.candidates)]  # fmt: skip
            stopped, _ = denoise(objective, noisy[sigma], max_steps, stop_when_energy_rises=True)
            rows.append({**at, "method": "ebt_stop", "steps": max_steps, "psnr": _mean_psnr(stopped.final, clean),
                         "mean_steps_taken": float(stopped.steps_taken.float().mean())})  # fmt: skip
    for sigma in sigmas:
        k = _chosen_on_validation(rows, name, "ebt", sigma)["steps"]
        for split, (clean, noisy) in splits.items():
            found = best_of_n(objective, noisy[sigma], best_of, max(k, 1), seed=0)
            rows.append({**base, "eval_split": split, "sigma": sigma, "method": "ebt_best_of_n", "steps": max(k, 1),
                         "n_candidates": best_of, "psnr": _mean_psnr(found.best, clean)})  # fmt: skip
    return rows


def run_ablation(
    base: ImageConfig,
    names: list[str],
    run_root: str | Path,
    sigmas: tuple[float, ...] = (15, 25, 50, 75, 100),
    size: int = 64,
    max_steps: int = 16,
    dit_steps: tuple[int, ...] = (1, 2, 5, 10, 25, 0),
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    best_of: int = 4,
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
        rows += _evaluate_variant(name, objective, splits, sigmas, max_steps, best_of)
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
                        "psnr": _mean_psnr(estimate, clean),
                    }
                )
    return AblationResult(rows, seconds, step_sizes, max_steps, best_of)


def _rows(rows: list[dict], split: str, variant: str, method: str, sigma: float) -> list[dict]:
    return [r for r in rows if (r["eval_split"], r["variant"], r["method"], r["sigma"]) == (split, variant, method,
                                                                                             sigma)]  # fmt: skip


def _chosen_on_validation(rows: list[dict], variant: str, method: str, sigma: float) -> dict:
    """The test row of the step count with the best validation PSNR (steps 1 and up for the EBT)."""
    candidates = [r for r in _rows(rows, "validation", variant, method, sigma) if method != "ebt" or r["steps"] >= 1]
    best = max(candidates, key=lambda r: r["psnr"])
    return next(r for r in _rows(rows, "test", variant, method, sigma) if r["steps"] == best["steps"])


def thinking_checks(result: AblationResult, variant: str, sigmas, train_max: float) -> dict:
    """The goals of thinking that pays, on the test split, for one variant: in distribution no step count from 2 to
    the most is more than 0.2 dB below the best; out of distribution the most steps gain >= 1 dB over 2; stopping
    within 0.1 dB of the validation-chosen step count; best-of-N above a single start."""
    checks: dict[str, bool | float] = {}
    gaps, gains, stop_gaps, best_of_gains = [], [], [], []
    for sigma in sigmas:
        curve = {r["steps"]: r["psnr"] for r in _rows(result.rows, "test", variant, "ebt", sigma)}
        chosen = _chosen_on_validation(result.rows, variant, "ebt", sigma)
        (stop,) = _rows(result.rows, "test", variant, "ebt_stop", sigma)
        (best,) = _rows(result.rows, "test", variant, "ebt_best_of_n", sigma)
        stop_gaps.append(chosen["psnr"] - stop["psnr"])
        best_of_gains.append(best["psnr"] - curve[best["steps"]])
        if sigma <= train_max:
            gaps.append(max(curve.values()) - min(v for k, v in curve.items() if k >= 2))
        else:
            gains.append(curve[result.max_steps] - curve[2])
    checks["id_worst_drop_db"] = max(gaps, default=float("nan"))
    checks["ood_min_gain_db"] = min(gains, default=float("nan"))
    checks["stop_worst_gap_db"] = max(stop_gaps)
    checks["best_of_min_gain_db"] = min(best_of_gains)
    checks["id_flat"] = checks["id_worst_drop_db"] <= 0.2
    checks["ood_gains"] = checks["ood_min_gain_db"] >= 1.0
    checks["stop_close"] = checks["stop_worst_gap_db"] <= 0.1
    checks["best_of_wins"] = checks["best_of_min_gain_db"] > 0
    return checks


def ablation_table(result: AblationResult, trained_steps: int, sigmas: tuple[float, ...]) -> str:
    """One row per variant (test split): PSNR at the trained step count, at the step count chosen on validation,
    after the most steps, with energy-based stopping, and best-of-N; the DiT's step count chosen the same way."""
    k_max = result.max_steps
    headers = ["variant", "what it tests", "learned step size", "train s"]
    headers += [f"σ{s:g}: @{trained_steps} / chosen(k) / @{k_max} / stop / best-of-{result.best_of}" for s in sigmas]
    table = []
    for variant, seconds in result.seconds.items():
        if variant == "dit":
            continue
        cells = []
        for sigma in sigmas:
            curve = {r["steps"]: r["psnr"] for r in _rows(result.rows, "test", variant, "ebt", sigma)}
            chosen = _chosen_on_validation(result.rows, variant, "ebt", sigma)
            (stop,) = _rows(result.rows, "test", variant, "ebt_stop", sigma)
            (best,) = _rows(result.rows, "test", variant, "ebt_best_of_n", sigma)
            cells.append(f"{curve[trained_steps]:.2f} / {chosen['psnr']:.2f} ({chosen['steps']}) / {curve[k_max]:.2f}"
                         f" / {stop['psnr']:.2f} ({stop['mean_steps_taken']:.1f}) / {best['psnr']:.2f}")  # fmt: skip
        table.append([variant, VARIANTS[variant][1], f"{result.step_sizes[variant]:.1f}", f"{seconds:.0f}", *cells])
    if "dit" in result.seconds:
        dit_cells = []
        for sigma in sigmas:
            chosen = _chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)
            dit_cells.append(f"chosen {chosen['psnr']:.2f} ({chosen['forward_passes']:.0f} passes)")
        table.append(["DiT (reference)", "diffusers DiT, same crops, sigma estimated", "-",
                      f"{result.seconds['dit']:.0f}", *dit_cells])  # fmt: skip
    return markdown_table(headers, table)


def checks_table(result: AblationResult, sigmas, train_max: float) -> tuple[str, dict]:
    yes = {True: "yes", False: "no"}
    headers = ["variant", "ID: worst drop from best, k=2..K (<= 0.2)", "OOD: gain of K over 2 steps (>= 1)",
               "stop: gap to chosen k (<= 0.1)", "best-of-N over one start (> 0)"]  # fmt: skip
    table, all_checks = [], {}
    for variant in (v for v in result.seconds if v != "dit"):
        c = all_checks[variant] = thinking_checks(result, variant, sigmas, train_max)
        table.append([variant, f"{c['id_worst_drop_db']:.2f} ({yes[c['id_flat']]})",
                      f"{c['ood_min_gain_db']:.2f} ({yes[c['ood_gains']]})",
                      f"{c['stop_worst_gap_db']:.2f} ({yes[c['stop_close']]})",
                      f"{c['best_of_min_gain_db']:.2f} ({yes[c['best_of_wins']]})"])  # fmt: skip
    return markdown_table(headers, table), all_checks


def write_ablation_report(result: AblationResult, base: ImageConfig, sigmas, meta: dict, out_dir, stem="ablation"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.6 * len(sigmas), 3.8), squeeze=False)
    variants = [v for v in result.seconds if v != "dit"]
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for i, variant in enumerate(variants):
            pts = sorted(_rows(result.rows, "test", variant, "ebt", sigma), key=lambda r: r["steps"])
            ax.plot([r["steps"] for r in pts], [r["psnr"] for r in pts], "o-", color=f"C{i % 10}", markersize=2,
                    label=variant)  # fmt: skip
        if "dit" in result.seconds:
            dit = _chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)["psnr"]
            ax.axhline(dit, color="k", linestyle="--", label="DiT (steps chosen on validation)")
        ax.set_title(f"sigma {sigma:g}")
        ax.set_xlabel("descent steps at test time")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB), test split")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    table = ablation_table(result, base.descent.num_steps, sigmas)
    checks, all_checks = checks_table(result, sigmas, training_sigma_max(base.data))
    d = base.descent
    body = (
        f"Base config: {base.model.width}-wide, {base.model.depth}-deep EBT; descent {d.min_steps}-{d.num_steps} steps "
        f"per sample in training, initial step size {d.step_size:g} jittered by x/÷{d.step_size_jitter:g}, loss on "
        f"{base.train.loss_on_steps} steps, Langevin noise {d.langevin_noise:g}.\n\n"
        "Blind image EBT variants of one base config, each trained on the same crop stream for the same number of "
        "steps, evaluated on the same noisy held-out photos (mean PSNR on the **test** split, dB). Each cell: PSNR "
        f"after the trained {d.num_steps} steps / after the step count in 1-{result.max_steps} chosen on the "
        f"**validation** split (which k) / after {result.max_steps} steps / {result.max_steps} steps with "
        "energy-based stopping (mean steps taken) / best-of-"
        f"{result.best_of} by lowest energy at the chosen k.\n\n{table}\n\n"
        f"![PSNR per test-time step, per variant]({stem}.png)\n\n"
        "### Does thinking pay? (test split; in distribution = sigma within the training range)\n\n"
        f"{checks}\n"
    )
    return write_report(out_dir, stem, meta, result.rows, body, seconds=result.seconds, step_sizes=result.step_sizes,
                        checks=all_checks)  # fmt: skip
