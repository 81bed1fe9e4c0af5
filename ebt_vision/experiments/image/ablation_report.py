"""The ablation's report: one row per variant, whether thinking pays, the 0-K step curves (``reports/<stem>.*``)."""

from __future__ import annotations

from pathlib import Path

from ...core.reports import make_meta, markdown_table, write_report
from ...core.train import resolve_device
from ...image.config import ImageConfig
from ...image.noise import training_sigma_max
from .ablation import (
    VARIANTS,
    AblationOptions,
    AblationResult,
    chosen_on_validation,
    chosen_tolerance,
    run_ablation,
    select_rows,
)


def _curve(result: AblationResult, variant: str, sigma: float, method: str = "ebt") -> dict[int, float]:
    return {r["steps"]: r["psnr"] for r in select_rows(result.rows, "test", variant, method, sigma)}


def _step_stop(result: AblationResult, variant: str, sigma: float) -> dict:
    """The test row of stopping on the step size at the tolerance chosen on validation."""
    tolerance = chosen_tolerance(result.rows, variant)
    rows = select_rows(result.rows, "test", variant, "ebt_stop_step", sigma)
    return next(r for r in rows if r["tolerance"] == tolerance)


def thinking_checks(result: AblationResult, variant: str, sigmas, train_max: float) -> dict:
    """The goals of thinking that pays, on the test split, for one variant: in distribution no step count from 2 to
    the most is more than 0.2 dB below the best; out of distribution the most steps gain >= 1 dB over 2; stopping on
    the step size (its one tolerance chosen on validation) within 0.1 dB of the validation-chosen step count;
    best-of-N above a single start."""
    checks: dict[str, bool | float] = {}
    gaps, gains, stop_gaps, best_of_gains = [], [], [], []
    for sigma in sigmas:
        curve = _curve(result, variant, sigma)
        chosen = chosen_on_validation(result.rows, variant, "ebt", sigma)
        (best,) = select_rows(result.rows, "test", variant, "ebt_best_of_n", sigma)
        stop_gaps.append(chosen["psnr"] - _step_stop(result, variant, sigma)["psnr"])
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


def _variants(result: AblationResult) -> list[str]:
    return [v for v in result.seconds if v != "dit"]


def ablation_table(result: AblationResult, trained_steps: int, sigmas: tuple[float, ...]) -> str:
    """One row per variant (test split): PSNR at the trained step count, at the step count chosen on validation,
    after the most steps, and stopping on the step size; the DiT's DDIM step count chosen the same way."""
    k_max = result.max_steps
    headers = ["variant", "what it tests", "training steps", "GFLOP / step", "train s", "learned step size"]
    headers += [f"σ{s:g}: @{trained_steps} / chosen(k) / @{k_max} / step-stop (steps)" for s in sigmas]
    table = []
    for variant in _variants(result):
        cells = []
        for sigma in sigmas:
            curve = _curve(result, variant, sigma)
            chosen = chosen_on_validation(result.rows, variant, "ebt", sigma)
            stop = _step_stop(result, variant, sigma)
            cells.append(f"{curve[trained_steps]:.2f} / {chosen['psnr']:.2f} ({chosen['steps']}) / {curve[k_max]:.2f}"
                         f" / {stop['psnr']:.2f} ({stop['mean_steps_taken']:.1f})")  # fmt: skip
        flops = result.step_flops.get(variant)
        table.append([variant, VARIANTS[variant][1], result.training_steps.get(variant, "-"),
                      f"{flops / 1e9:.2f}" if flops else "-", f"{result.seconds[variant]:.0f}",
                      f"{result.step_sizes[variant]:.2f}", *cells])  # fmt: skip
    if "dit" in result.seconds:
        dit_cells = []
        for sigma in sigmas:
            chosen = chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)
            dit_cells.append(f"chosen {chosen['psnr']:.2f} ({chosen['forward_passes']:.0f} passes)")
        table.append(["DiT (reference)", "diffusers DiT, same crops, sigma estimated",
                      result.training_steps.get("dit", "-"), "-", f"{result.seconds['dit']:.0f}", "-",
                      *dit_cells])  # fmt: skip
    return markdown_table(headers, table)


def extras_table(result: AblationResult, sigmas: tuple[float, ...]) -> str:
    """Per variant (test split): Nesterov descent at its validation-chosen step count, stopping when the energy
    rises, best-of-N at the chosen step count."""
    headers = ["variant", "step-stop tolerance (chosen)"]
    headers += [f"σ{s:g}: Nesterov chosen(k) / energy-rise stop (steps) / best-of-{result.best_of}" for s in sigmas]
    table = []
    for variant in _variants(result):
        cells = []
        for sigma in sigmas:
            fast = chosen_on_validation(result.rows, variant, "ebt_nesterov", sigma)
            (stop,) = select_rows(result.rows, "test", variant, "ebt_stop", sigma)
            (best,) = select_rows(result.rows, "test", variant, "ebt_best_of_n", sigma)
            cells.append(f"{fast['psnr']:.2f} ({fast['steps']}) / {stop['psnr']:.2f} ({stop['mean_steps_taken']:.1f})"
                         f" / {best['psnr']:.2f}")  # fmt: skip
        table.append([variant, f"{chosen_tolerance(result.rows, variant):g}", *cells])
    return markdown_table(headers, table)


def checks_table(result: AblationResult, sigmas, train_max: float) -> tuple[str, dict]:
    yes = {True: "yes", False: "no"}
    headers = ["variant", "ID: worst drop from best, k=2..K (<= 0.2)", "OOD: gain of K over 2 steps (>= 1)",
               "step-stop: gap to chosen k (<= 0.1)", "best-of-N over one start (> 0)"]  # fmt: skip
    table, all_checks = [], {}
    for variant in _variants(result):
        c = all_checks[variant] = thinking_checks(result, variant, sigmas, train_max)
        table.append([variant, f"{c['id_worst_drop_db']:.2f} ({yes[c['id_flat']]})",
                      f"{c['ood_min_gain_db']:.2f} ({yes[c['ood_gains']]})",
                      f"{c['stop_worst_gap_db']:.2f} ({yes[c['stop_close']]})",
                      f"{c['best_of_min_gain_db']:.2f} ({yes[c['best_of_wins']]})"])  # fmt: skip
    return markdown_table(headers, table), all_checks


def _plot(result: AblationResult, sigmas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.6 * len(sigmas), 3.8), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for i, variant in enumerate(_variants(result)):
            pts = sorted(_curve(result, variant, sigma).items())
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", color=f"C{i % 10}", markersize=2,
                    linestyle="-" if i < 10 else "--", label=variant)  # fmt: skip
        if "dit" in result.seconds:
            dit = chosen_on_validation(result.rows, "dit", "dit_ddim", sigma)["psnr"]
            ax.axhline(dit, color="k", linestyle=":", label="DiT (steps chosen on validation)")
        ax.set_title(f"sigma {sigma:g}")
        ax.set_xlabel("descent steps at test time")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB), test split")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_ablation_report(result: AblationResult, base: ImageConfig, sigmas, meta: dict, out_dir, stem="ablation"):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(result, sigmas, out_dir / f"{stem}.png")
    table = ablation_table(result, base.descent.num_steps, sigmas)
    checks, all_checks = checks_table(result, sigmas, training_sigma_max(base.data))
    d = base.descent
    budget = (
        "each variant trained for the base config's training FLOPs (steps scaled by the measured FLOPs of one step)"
        if result.step_flops
        else "each variant trained for the same number of steps"
    )
    body = (
        f"Base config: {base.model.width}-wide, {base.model.depth}-deep EBT; descent {d.min_steps}-{d.num_steps} steps "
        f"per sample in training, initial step size {d.step_size:g} jittered by x/÷{d.step_size_jitter:g}, loss on "
        f"{base.train.loss_on_steps} steps, Langevin noise {d.langevin_noise:g}.\n\n"
        f"Blind image EBT variants of one base config on the same crop stream, {budget}, evaluated on the same noisy "
        "held-out photos (mean PSNR on the **test** split, dB). Each cell: PSNR after the trained "
        f"{d.num_steps} steps / after the step count in 1-{result.max_steps} chosen on the **validation** split (which "
        f"k) / after {result.max_steps} steps / stopping each photo once its step would move pixels by less than a "
        "tolerance (root mean square; one tolerance for all sigmas, chosen on validation; mean steps taken).\n\n"
        f"{table}\n\n![PSNR per test-time step, per variant]({stem}.png)\n\n"
        "### Other ways to descend (test split)\n\n"
        f"{extras_table(result, sigmas)}\n\n"
        "### Does thinking pay? (test split; in distribution = sigma within the training range)\n\n"
        f"{checks}\n"
    )
    return write_report(out_dir, stem, meta, result.rows, body, seconds=result.seconds, step_sizes=result.step_sizes,
                        training_steps=result.training_steps, step_flops=result.step_flops,
                        checks=all_checks)  # fmt: skip


def ablate(
    cfg: ImageConfig,
    names: list[str],
    runs: str | Path,
    out: str | Path,
    options: AblationOptions,
    stem: str = "ablation",
    progress: bool = True,
) -> Path:
    """``ebt-vision ablate``: train (or reuse) the variants ``names`` of ``cfg`` under ``runs``, evaluate them and
    write ``<stem>.{md,json,png}`` to ``out``."""
    result = run_ablation(cfg, names, runs, options, progress)
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, one crop stream for all; step counts chosen "
        f"on the validation photos, reported on the test photos, resized/centre-cropped to {options.eval_size}px"
    )
    budget = f"each variant {cfg.train.steps} steps of batch {cfg.data.batch_size} ({cfg.model.width}-wide EBT)"
    if options.equal_flops:
        budget = f"each variant the training FLOPs of {cfg.train.steps} base steps of batch {cfg.data.batch_size}"
    meta = make_meta(resolve_device(cfg.train.device), options.seed, data, budget)
    return write_ablation_report(result, cfg, options.sigmas, meta, out, stem)
