"""The report of ``ebt-vision eval``: means over the held-out photos, the EBT and DiT at step counts chosen on the
validation photos, energy-based stopping, the step schedule's row; a table, a PSNR-per-step plot, Markdown and JSON."""

from __future__ import annotations

from pathlib import Path

from ...core.reports import markdown_table, write_report
from .. import selection


def average_rows(rows: list[dict]) -> list[dict]:
    """Mean PSNR/SSIM (and passes, steps taken) over images, one row per (split of photos, method, sigma, steps)."""
    group = ("eval_split", "method", "sigma", "split", "steps")
    means = ("forward_passes", "backward_passes", "psnr", "ssim")
    averaged = selection.average(rows, group, (*means, "steps_taken"))
    order = (*group, *means, "images", "steps_taken")  # the report's order
    averaged = [{k: row[k] for k in order if k in row} for row in averaged]
    return sorted(averaged, key=lambda r: (r["eval_split"], r["sigma"], r["method"], r["steps"]))


def shown_split(averaged: list[dict]) -> str:
    """The split whose numbers the report shows: test, or validation when only the validation photos were evaluated
    (``ebt-vision eval --split validation``, e.g. to choose a setting there)."""
    return "test" if any(r["eval_split"] == "test" for r in averaged) else "validation"


def _both_splits(averaged: list[dict]) -> bool:
    return {r["eval_split"] for r in averaged} >= {"test", "validation"}


def _chosen(averaged: list[dict], method: str, sigma: float) -> dict | None:
    """The test row of ``method``'s setting (step count; for a ``method`` ending in "@", also which of its variants,
    e.g. the stopping tolerance) with the best mean validation PSNR at ``sigma`` (None without both splits)."""
    if not _both_splits(averaged):
        return None

    def group(row: dict) -> str | None:
        matches = row["method"].startswith(method) if method.endswith("@") else row["method"] == method
        return method if matches and row["sigma"] == sigma else None

    choice = selection.choose(averaged, group, ("method", "steps"), ("sigma",)).get(method)
    return None if choice is None else choice.test


def _chosen_for_every_sigma(averaged: list[dict], prefix: str, sigma: float) -> dict | None:
    """The test row at ``sigma`` of the variant of ``prefix`` (e.g. one stopping tolerance) with the best validation
    PSNR averaged over every sigma: one setting for all noise levels, as a blind model must use (None without both
    splits or without such rows)."""
    if not _both_splits(averaged):
        return None
    best = selection.best_setting_overall(averaged, lambda r: r["method"] if r["method"].startswith(prefix) else None)
    test = (r for r in averaged if r["eval_split"] == "test" and r["method"] == best and r["sigma"] == sigma)
    return next(test, None)


def summary_table(averaged: list[dict]) -> str:
    """Markdown (test split, or validation alone): one row per sigma; noisy, CBM3D, EBT after each step, with
    stopping, the EBT and DiT at their validation-chosen step counts (PSNR dB / SSIM)."""
    shown = shown_split(averaged)
    test = [r for r in averaged if r["eval_split"] == shown]
    sigmas = sorted({r["sigma"] for r in test})
    steps = sorted({r["steps"] for r in test if r["method"] == "ebt"})
    lookup = {(r["method"], r["sigma"], r["steps"]): r for r in test}
    methods = [("noisy", 0)] + ([("cbm3d", 0)] if any(r["method"] == "cbm3d" for r in test) else [])
    methods += [("ebt", k) for k in steps] + [("ebt_stop", steps[-1])]
    names = {"noisy": "NOISY", "cbm3d": "CBM3D", "ebt_stop": f"EBT stop@{steps[-1]}"}
    headers = ["sigma", "split"] + [names.get(m) or f"EBT {k} step{'s' * (k > 1)}" for m, k in methods]
    with_dit = any(r["method"] == "dit_ddim" for r in test)
    with_validation = _both_splits(averaged)
    with_auto = any(r["method"] == "ebt_auto" for r in test)
    dit_steps = sorted({r["steps"] for r in test if r["method"] == "dit_ddim"})
    with_transformer = any(r["method"] == "transformer" for r in test)
    if with_auto:
        headers.append("EBT auto steps (mean steps)")
    with_rel = any(r["method"].startswith("ebt_stop_rel@") for r in test)
    with_grad = any(r["method"].startswith("ebt_stop_grad@") for r in test)
    if with_validation:
        headers += ["EBT (chosen k)"] + (["EBT stop, chosen tolerance (fraction; mean steps)"] if with_rel else [])
        headers += ["EBT gradient stop, chosen tolerance (rms step; mean steps)"] if with_grad else []
        headers += ["DiT (chosen DDIM steps)"] if with_dit else []
    elif with_dit:
        headers += [f"DiT {k} DDIM step{'s' * (k > 1)}" for k in dit_steps]
    headers += ["transformer (the EBT's trunk, direct)"] if with_transformer else []

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
            grad = _chosen_for_every_sigma(averaged, "ebt_stop_grad@", sigma) if with_grad else None
            if grad is not None:
                cells.append(f"{cell(grad)} ({grad['method'].split('@')[1]}; {grad['steps_taken']:.1f})")
            if with_dit:
                cells.append(cell(_chosen(averaged, "dit_ddim", sigma), label=True))
        elif with_dit:
            cells += [cell(lookup.get(("dit_ddim", sigma, k))) for k in dit_steps]
        if with_transformer:
            cells.append(cell(lookup.get(("transformer", sigma, 1))))
        table.append([f"{sigma:g}", lookup[("noisy", sigma, 0)]["split"], *cells])
    return markdown_table(headers, table)


def plot_psnr_vs_steps(averaged: list[dict], path: str | Path) -> Path:
    """One panel per sigma (test split, or validation alone): EBT PSNR after each descent step, with noisy, CBM3D and
    the chosen DiT as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = shown_split(averaged)
    test = [r for r in averaged if r["eval_split"] == shown]
    sigmas = sorted({r["sigma"] for r in test})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.2 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        ebt = sorted((r for r in test if r["method"] == "ebt" and r["sigma"] == sigma), key=lambda r: r["steps"])
        ax.plot([r["steps"] for r in ebt], [r["psnr"] for r in ebt], "o-", markersize=3, label="EBT")
        references = [(m, r) for m in ("noisy", "cbm3d", "transformer") for r in test
                      if r["method"] == m and r["sigma"] == sigma]  # fmt: skip
        dit = _chosen(averaged, "dit_ddim", sigma)
        if dit is not None:
            references.append((f"DiT ({dit['steps']} DDIM steps)", dit))
        else:  # no two splits to choose on: every DDIM step count, against its forward passes
            dits = sorted((r for r in test if r["method"] == "dit_ddim" and r["sigma"] == sigma),
                          key=lambda r: r["steps"])  # fmt: skip
            if dits:
                ax.plot([r["forward_passes"] for r in dits], [r["psnr"] for r in dits], "s--", markersize=3,
                        color="C2", label="DiT (DDIM forward passes)")  # fmt: skip
        rel = _chosen(averaged, "ebt_stop_rel@", sigma)
        if rel is not None:
            ax.plot([rel["steps_taken"]], [rel["psnr"]], "X", markersize=8, color="C4",
                    label="EBT, energy stop (tolerance chosen)")  # fmt: skip
        grad = _chosen_for_every_sigma(averaged, "ebt_stop_grad@", sigma)
        if grad is not None:
            ax.plot([grad["steps_taken"]], [grad["psnr"]], "P", markersize=8, color="C6",
                    label="EBT, gradient stop (tolerance chosen)")  # fmt: skip
        auto = [r for r in test if r["method"] == "ebt_auto" and r["sigma"] == sigma]
        if auto:
            ax.plot([auto[0]["forward_passes"]], [auto[0]["psnr"]], "*", markersize=10, color="C1",
                    label="EBT, steps from est. noise")  # fmt: skip
        styles = {"noisy": (":", "grey"), "cbm3d": ("--", "C3"), "transformer": ((0, (1, 1)), "C5")}
        for name, ref in references:
            style, color = styles.get(name, ("-.", "C2"))
            ax.axhline(ref["psnr"], linestyle=style, color=color, label=name)
        split = "in-dist." if ebt and ebt[0]["split"] == "id" else "out-of-dist."
        ax.set_title(f"sigma {sigma:g} ({split})")
        ax.set_xlabel("descent steps (fwd + bwd passes)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"PSNR (dB), {shown} split")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_denoise_report(
    rows: list[dict],
    meta: dict,
    out_dir: str | Path,
    stem: str = "denoise_eval",
    resolution: str = "full resolution",
    told_estimate: bool = False,
) -> Path:
    """``told_estimate``: the EBT (or the transformer) is sigma-conditioned and was told the estimated sigma."""
    averaged = average_rows(rows)
    out_dir = Path(out_dir)
    plot = out_dir / f"{stem}.png"
    shown = shown_split(averaged)
    blind = (
        "The sigma-conditioned model is blind in the DiT's way: told the sigma estimated from the noisy photo, never "
        "the true one; CBM3D"
        if told_estimate
        else "The EBT is blind (not told sigma); CBM3D"
    )
    body = (
        f"Mean PSNR (dB) / SSIM over the held-out **{shown}** photos ({resolution}), on clamped 0-255 pixels. {blind} "
        "is told the true sigma; the DiT (when given) is blind too: DDIM starts at "
        "the timestep of the sigma estimated from the noisy photo. *(chosen)* columns: the step count with the best "
        "mean PSNR on the **validation** photos at that sigma, quoted on the test photos. An EBT step is one forward "
        "and one backward pass of the model; *stop@K*: K steps with energy-based stopping; *auto steps*: the step "
        "count and step-size scale that the noise level estimated from the noisy photo looks up in the checkpoint's "
        "step schedule (`ebt-vision calibrate`, fitted on validation crops; the model itself stays blind); *stop, "
        "chosen tolerance*: energy-based stopping that also ends the descent once a step lowers the energy by less "
        "than a fraction of the first step's drop, the fraction chosen on validation; *gradient stop, chosen "
        "tolerance*: the descent ends once the step it would take (learned step size x |dE/dx|, root mean square over "
        "the photo's pixels in [-1, 1]) is below a tolerance, one for every sigma (the model is blind), chosen by the "
        "mean validation PSNR over the sigmas: once the gradient has (nearly) vanished.\n\n"
        f"{summary_table(averaged)}\n\n![PSNR after each descent step]({plot.name})\n"
    )
    report = write_report(out_dir, stem, meta, averaged, body, per_image=rows)  # the rows are kept before the figure
    plot_psnr_vs_steps(averaged, plot)
    return report
