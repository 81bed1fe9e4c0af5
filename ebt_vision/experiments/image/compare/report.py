"""The comparison report: test-split tables with validation-chosen settings, goal verdicts, a PSNR-vs-cost plot."""

from __future__ import annotations

from pathlib import Path

from ....core.reports import markdown_table, write_report
from ... import selection
from ...contenders import Contender

EBT_MODELS = {"ebt", "ebt_cond", "ebt_warm"}
# A model's configurations are what a user would pick from (the DiT's DDIM step count; the EBT's descent steps,
# energy-based stopping, best-of-N); one is chosen per noise condition (noise, sigma or level, knowledge setting).
MODEL_OF_METHOD = {
    "noisy": "noisy", "cbm3d": "cbm3d",
    "dit_ddim": "dit", "dit_compute_ddim": "dit_compute",
    "ebt": "ebt", "ebt_stop": "ebt", "ebt_best_of_n": "ebt",
    "ebt_cond": "ebt_cond", "ebt_cond_stop": "ebt_cond",
    "ebt_warm": "ebt_warm", "ebt_warm_stop": "ebt_warm", "ebt_warm_x2": "ebt_warm", "ebt_warm_x3": "ebt_warm",
}  # fmt: skip
GROUP = ("eval_split", "noise", "sigma", "noise_level", "setting", "method", "steps", "n_candidates")
MEANS = ("psnr", "ssim", "forward_passes", "backward_passes", "dit_forward_equivalents")
CONDITION = ("noise", "sigma", "noise_level", "setting")  # a choice is made per condition
CONFIG = ("method", "steps", "n_candidates")  # what is chosen


def average(rows: list[dict]) -> list[dict]:
    """Means over the images of each (split, noise, sigma, level, setting, method, steps, candidates)."""
    return selection.average(rows, GROUP, MEANS, keep=("split",))


def config_label(row: dict) -> str:
    """Human-readable configuration: ``ebt@2``, ``ebt_stop@8``, ``ebt_best_of_n@2 (N=4)``."""
    label = f"{row['method']}@{row['steps']}"
    return label + (f" (N={row['n_candidates']})" if "n_candidates" in row else "")


def choose(averaged: list[dict], models: set[str] | None = None, within=lambda row: True) -> dict[tuple, dict]:
    """Per condition (and model): the test row of the configuration with the best mean validation PSNR.

    ``models``: choose among these models' configurations together (e.g. every EBT variant competing in a setting);
    None: choose for every model separately. ``within(row)``: only configurations that pass (e.g. a cost limit).
    Returns ``{(condition..., model-or-joint): test row + validation_psnr + chosen}``.
    """

    def group(row: dict) -> tuple | None:
        if not within(row):
            return None
        model = MODEL_OF_METHOD[row["method"]]
        if models is not None and model not in models:
            return None
        return (*(row.get(k) for k in CONDITION), "+".join(sorted(models)) if models else model)

    chosen = selection.choose(averaged, group, CONFIG, CONDITION)
    return {key: {**c.test, "validation_psnr": c.validation["psnr"], "chosen": config_label(c.validation)}
            for key, c in chosen.items() if c.test is not None}  # fmt: skip


def _pick(rows: list[dict], method: str, steps: int, **match) -> dict | None:
    found = [
        r
        for r in rows
        if r["method"] == method and r["steps"] == steps and all(r.get(k) == v for k, v in match.items())
    ]
    return found[0] if found else None


def _cell(row: dict | None, with_cost: bool = True) -> str:
    if row is None:
        return "-"
    if not with_cost:
        return f"{row['psnr']:.2f}"
    if "chosen" in row:
        return f"{row['psnr']:.2f} ({row['chosen']}; {row['dit_forward_equivalents']:.1f})"
    passes = f"{row['forward_passes']:.0f}f/{row['backward_passes']:.0f}b"
    return f"{row['psnr']:.2f} ({passes}, {row['dit_forward_equivalents']:.1f})"


def _as_setting(averaged: list[dict], setting: str) -> list[dict]:
    """Rows competing in ``setting``: its own, plus the blind EBT's (it needs no sigma, so it competes everywhere)."""
    own = [r for r in averaged if r["setting"] == setting]
    if setting == "non-blind":
        own += [{**r, "setting": setting} for r in averaged if r["setting"] == "blind" and r["method"].startswith("ebt")
                and not r["method"].startswith("ebt_cond")]  # fmt: skip
    return own


def _chosen(chosen: dict, at: dict, model: str) -> dict | None:
    return chosen.get((at["noise"], at["sigma"], at.get("noise_level"), at["setting"], model))


def gaussian_tables(averaged: list[dict], trained_steps: int, max_steps: int, best_of: int) -> tuple[str, list[dict]]:
    """Markdown tables per setting (test split, settings chosen on validation), and the goal verdicts."""
    headers = [
        "sigma", "split", "noisy", "CBM3D", "DiT 1 pass", "DiT (chosen)", "DiT compute-matched (chosen)",
        f"EBT {trained_steps} steps", f"EBT stop@{max_steps}", f"EBT best-of-{best_of}", "EBT (chosen)",
        f"EBT-cond {trained_steps}", "EBT-cond (chosen)",
    ]  # fmt: skip
    gaussian = [r for r in averaged if r["noise"] == "gaussian"]
    warm = any(r["method"] == "ebt_warm" for r in gaussian)
    headers += ["EBT-warm (chosen)"] if warm else []
    parts, verdicts = [], []
    for setting in ("blind", "non-blind"):
        rows = _as_setting(gaussian, setting)
        test = [r for r in rows if r["eval_split"] == "test"]
        per_model = choose(rows)
        any_ebt = choose(rows, EBT_MODELS)
        table = []
        for sigma in sorted({r["sigma"] for r in test}):
            at = {"noise": "gaussian", "sigma": sigma, "setting": setting}
            noisy = _pick(gaussian, "noisy", 0, sigma=sigma, eval_split="test")
            ebt_at = {"sigma": sigma, "eval_split": "test"}
            dit = _chosen(per_model, at, "dit")
            table.append([
                f"{sigma:g}", noisy["split"], _cell(noisy, False),
                _cell(_pick(test, "cbm3d", 0, sigma=sigma), False),
                _cell(_pick(test, "dit_ddim", 1, sigma=sigma)), _cell(dit),
                _cell(_chosen(per_model, at, "dit_compute")),
                _cell(_pick(test, "ebt", trained_steps, **ebt_at)),
                _cell(_pick(test, "ebt_stop", max_steps, **ebt_at)),
                _cell(_pick(test, "ebt_best_of_n", trained_steps, n_candidates=best_of, **ebt_at)),
                _cell(_chosen(per_model, at, "ebt")),
                _cell(_pick(test, "ebt_cond", trained_steps, **ebt_at)),
                _cell(_chosen(per_model, at, "ebt_cond")),
            ] + ([_cell(_chosen(per_model, at, "ebt_warm"))] if warm else []))  # fmt: skip
            if dit is not None:
                verdicts.append(_verdict(rows, per_model, any_ebt, at, noisy["split"], dit))
        parts.append(f"**{setting}**\n\n" + markdown_table(headers, table))
    return "\n\n".join(parts), verdicts


def _verdict(rows: list[dict], per_model: dict, any_ebt: dict, at: dict, split: str, dit: dict) -> dict:
    """The goal check at one condition: test PSNRs of validation-chosen settings."""
    limit = dit["dit_forward_equivalents"] / 10
    cheap = choose([r for r in rows if r["sigma"] == at["sigma"]], EBT_MODELS,
                   within=lambda r: r["dit_forward_equivalents"] <= limit)  # fmt: skip
    joint = (at["noise"], at["sigma"], None, at["setting"], "+".join(sorted(EBT_MODELS)))
    ebt, ebt_cheap = any_ebt.get(joint), cheap.get(joint)
    compute = _chosen(per_model, at, "dit_compute")
    return {
        "setting": at["setting"],
        "sigma": at["sigma"],
        "split": split,
        "dit_psnr": dit["psnr"],
        "dit_chosen": dit["chosen"],
        "dit_forward_passes": dit["forward_passes"],
        "dit_compute_psnr": compute["psnr"] if compute else float("nan"),
        "ebt_psnr": ebt["psnr"] if ebt else float("nan"),
        "ebt_chosen": ebt["chosen"] if ebt else "-",
        "ebt_within_tenth_cost_psnr": ebt_cheap["psnr"] if ebt_cheap else float("nan"),
        "ebt_reaches_dit_at_tenth_cost": bool(ebt_cheap and ebt_cheap["psnr"] >= dit["psnr"]),
        "ebt_beats_dit": bool(ebt and ebt["psnr"] > dit["psnr"]),
        "ebt_beats_dit_compute_matched": bool(ebt and compute and ebt["psnr"] > compute["psnr"]),
    }


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: nothing qualified


def verdict_table(verdicts: list[dict]) -> str:
    headers = [
        "setting", "sigma", "split", "DiT (chosen)", "DiT compute-matched", "EBT (chosen, any variant)",
        "EBT at <= 1/10 DiT cost", "EBT reaches DiT at <= 1/10 cost", "EBT beats DiT", "EBT beats compute-matched DiT",
    ]  # fmt: skip
    yes = {True: "yes", False: "no"}
    lines = [
        [v["setting"], f"{v['sigma']:g}", v["split"], f"{v['dit_psnr']:.2f} ({v['dit_chosen']})",
         _fmt(v["dit_compute_psnr"]), f"{_fmt(v['ebt_psnr'])} ({v['ebt_chosen']})",
         _fmt(v["ebt_within_tenth_cost_psnr"]), yes[v["ebt_reaches_dit_at_tenth_cost"]], yes[v["ebt_beats_dit"]],
         yes[v["ebt_beats_dit_compute_matched"]]]
        for v in verdicts
    ]  # fmt: skip
    return markdown_table(headers, lines)


def paper_table(averaged: list[dict], trained_steps: int) -> str:
    rows = [r for r in averaged if r["noise"] == "diffusion"]
    test = [r for r in rows if r["eval_split"] == "test"]
    per_model = choose(rows)
    headers = ["level (sigma)", "split", "noisy", "DiT 1 pass", "DiT (chosen)", "DiT compute-matched (chosen)",
               f"EBT {trained_steps}", "EBT (chosen)", f"EBT-cond {trained_steps}", "EBT-cond (chosen)"]  # fmt: skip
    warm = any(r["method"] == "ebt_warm" for r in rows)
    headers += ["EBT-warm (chosen)"] if warm else []
    table = []
    for level in sorted({r["noise_level"] for r in test}):
        noisy = _pick(test, "noisy", 0, noise_level=level)
        at = {"noise": "diffusion", "sigma": noisy["sigma"], "noise_level": level, "setting": "known level"}
        table.append([
            f"{level:g} ({noisy['sigma']:.0f})", noisy["split"], _cell(noisy, False),
            _cell(_pick(test, "dit_ddim", 1, noise_level=level)), _cell(_chosen(per_model, at, "dit")),
            _cell(_chosen(per_model, at, "dit_compute")), _cell(_pick(test, "ebt", trained_steps, noise_level=level)),
            _cell(_chosen(per_model, at, "ebt")), _cell(_pick(test, "ebt_cond", trained_steps, noise_level=level)),
            _cell(_chosen(per_model, at, "ebt_cond")),
        ] + ([_cell(_chosen(per_model, at, "ebt_warm"))] if warm else []))  # fmt: skip
    return markdown_table(headers, table)


PLOT_LINES = (
    ("dit_ddim", "blind", "C0", "o-", "DiT (est. sigma)"),
    ("dit_ddim", "non-blind", "C0", "o--", "DiT (true sigma)"),
    ("dit_compute_ddim", "blind", "C5", "d-", "DiT compute-matched (est. sigma)"),
    ("ebt", "blind", "C1", "s-", "EBT blind"),
    ("ebt_stop", "blind", "C1", "x:", "EBT blind, stop"),
    ("ebt_cond", "blind", "C2", "^-", "EBT-cond (est. sigma)"),
    ("ebt_cond", "non-blind", "C2", "^--", "EBT-cond (true sigma)"),
    ("ebt_warm", "blind", "C6", "v-", "EBT-warm blind"),
    ("ebt_warm_x3", "blind", "C6", "v:", "EBT-warm blind, 3 re-anchored passes"),
)


def plot_psnr_vs_cost(averaged: list[dict], path: str | Path) -> Path:
    """One panel per Gaussian sigma (test split): PSNR vs cost in DiT-forward equivalents (log x), references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in averaged if r["noise"] == "gaussian" and r["eval_split"] == "test"]
    sigmas = sorted({r["sigma"] for r in rows})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.6 * len(sigmas), 3.8), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for method, setting, color, style, label in PLOT_LINES:
            pts = sorted(
                (r for r in rows if r["method"] == method and r["setting"] == setting and r["sigma"] == sigma),
                key=lambda r: r["dit_forward_equivalents"],
            )
            if pts:
                ax.plot([r["dit_forward_equivalents"] for r in pts], [r["psnr"] for r in pts], style, color=color,
                        label=label, markersize=4)  # fmt: skip
        best_of = [r for r in rows if r["sigma"] == sigma and r["method"] == "ebt_best_of_n"]
        for i, r in enumerate(best_of):
            ax.plot(r["dit_forward_equivalents"], r["psnr"], "*", color="C3", markersize=9,
                    label="EBT best-of-N" if i == 0 else None)  # fmt: skip
        for method, setting, style, color in (("noisy", "-", ":", "grey"), ("cbm3d", "non-blind", "-.", "C4")):
            ref = _pick(rows, method, 0, sigma=sigma, setting=setting)
            if ref:
                suffix = " (true sigma)" if setting != "-" else ""
                ax.axhline(ref["psnr"], linestyle=style, color=color, label=method + suffix)
        split = "in-dist." if _pick(rows, "noisy", 0, sigma=sigma)["split"] == "id" else "out-of-dist."
        ax.set_xscale("log")
        ax.set_title(f"sigma {sigma:g} ({split})")
        ax.set_xlabel("cost (DiT forward-pass equivalents)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("PSNR (dB), test split")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _warm_note(contenders: dict[str, Contender]) -> str:
    warm = contenders.get("ebt-warm")
    if warm is None:
        return ""
    m = warm.objective.cfg.model
    return (f" *EBT-warm*: the shipped recipe at the blind EBT's training FLOPs: its trunk trained as a plain one-pass "
            f"denoiser ({warm.prior.steps} steps), then {warm.steps} EBT steps from it ({m.energy} energy"
            f"{', read against the noisy image' if m.relative_to_noisy else ''}; "
            f"{warm.objective.cfg.descent.min_steps}-{warm.objective.cfg.descent.num_steps} step descents; "
            f"EMA {warm.objective.cfg.train.ema_decay:g}); blind, its descent steps chosen on validation like the "
            "EBT's, among one descent of 1-8 steps, with or without stopping, and re-anchored descents (*x2*, *x3*: "
            "2 or 3 passes of 1-4 steps, each pass's estimate the next one's noisy image, as the shipped model's step "
            "schedule descends out of distribution).")  # fmt: skip


def write_compare_report(
    rows: list[dict],
    contenders: dict[str, Contender],
    costs: dict[str, float],
    meta: dict,
    out_dir: str | Path,
    stem: str = "denoise_compare",
    best_of: int = 4,
) -> Path:
    averaged = average(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_psnr_vs_cost(averaged, out_dir / f"{stem}.png")
    ebt = contenders["ebt"].objective
    trained_steps = ebt.cfg.descent.num_steps
    max_steps = max(r["steps"] for r in averaged if r["method"] == "ebt")
    gaussian, verdicts = gaussian_tables(averaged, trained_steps, max_steps, best_of)
    models = markdown_table(
        ["model", "parameters", "training steps", "training PFLOP", "wall-clock (s)"],
        [[c.name, f"{c.params / 1e6:.3f}M", c.steps_label, f"{c.train_flops / 1e15:.3f}", f"{c.train_seconds:.0f}"]
         for c in contenders.values()],
    )  # fmt: skip
    splits = {r["eval_split"]: {x["image"] for x in rows if x["eval_split"] == r["eval_split"]} for r in rows}
    body = (
        "Mean PSNR (dB) over the **test** photos. Where a cell says *(chosen)*, the configuration (DDIM step count; "
        "EBT descent steps, energy-based stopping or best-of-N) was chosen per noise level by the mean PSNR on the "
        f"**validation** photos ({len(splits.get('validation', ()))}: {', '.join(sorted(splits.get('validation', ())))}"
        f"), never on the test photos ({len(splits.get('test', ()))}: {', '.join(sorted(splits.get('test', ())))}). "
        "Cells: PSNR (forward passes f / backward passes b, or the chosen configuration; cost in DiT forward-pass "
        "equivalents by measured FLOPs). The blind EBT is never told sigma; in the blind setting DiT, CBM3D and "
        "EBT-cond get the sigma estimated from the noisy image (skimage `estimate_sigma`), in the non-blind setting "
        f"the true sigma. *stop@{max_steps}*: {max_steps} steps with energy-based stopping; *best-of-N*: N descents "
        "from perturbed starts (noisy image + Gaussian noise of sigma 10) keeping the lowest energy. *DiT "
        "compute-matched*: the DiT trained for as many FLOPs as the blind EBT (more steps on the same crop stream)."
        f"{_warm_note(contenders)}\n\n{models}\n\n"
        f"Pass costs on one {ebt.cfg.data.crop_size}px tile, in DiT forward passes: EBT forward "
        f"{costs['ebt_forward']:.2f}, EBT backward to the candidate {costs['ebt_backward']:.2f}"
        + (
            f"; EBT-warm {costs['ebt_warm_forward']:.2f} and {costs['ebt_warm_backward']:.2f}"
            if "ebt_warm_forward" in costs
            else ""
        )
        + ".\n\n"
        f"### Gaussian noise\n\n{gaussian}\n\n![PSNR vs cost]({plot.name})\n\n"
        f"### Goal check (test PSNR of validation-chosen settings)\n\n{verdict_table(verdicts)}\n"
    )
    if any(r["noise"] == "diffusion" for r in averaged):
        body += (
            "\n### The original EBT protocol (diffusion noise level 0.1 in distribution, 0.2 out)\n\n"
            "x_t = sqrt(a) x0 + sqrt(1 - a) eps on the 1000-step linear schedule; the DiTs start at t = 99 or 199; "
            "the EBTs get x_t / sqrt(a). All models were trained on Gaussian sigma in the config's range, not at "
            "level 0.1 only as in the paper.\n\n" + paper_table(averaged, trained_steps) + "\n"
        )
    chosen = [{**r, "config": config_label(r)} for r in choose(averaged).values()]
    return write_report(out_dir, stem, meta, averaged, body, per_image=rows, costs=costs, verdicts=verdicts,
                        chosen=chosen)  # fmt: skip
