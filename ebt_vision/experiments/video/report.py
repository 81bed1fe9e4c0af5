"""The video comparison's report: settings chosen on validation and quoted on test, tables, plot, GIF strips.

Each model's setting (the DiT's DDIM steps; the EBT's descent steps, stopping or best-of-N) is chosen by the mean
validation MSE over the horizon, or the mean PSNR (``select_by``, the config's), and reported on the test split, never
tuned there.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image
from torch import Tensor

from ...core.reports import markdown_table, write_report
from ...video.config import LOWER_IS_BETTER
from ...video.strips import strip_image, write_gif
from .. import selection
from ..contenders import Contender

MODEL_OF_METHOD = {
    "copy_last": "copy_last",
    "extrapolate": "extrapolate",  # last + a * (last - previous), a chosen on validation
    "extrapolate_adaptive": "extrapolate_adaptive",  # a scaled by how well the change before predicts the last one
    "transformer": "transformer",
    "transformer_compute": "transformer_compute",
    "dit_ddim": "dit",
    "dit_compute_ddim": "dit_compute",
    "ebt_guess": "ebt_guess",  # a guess-start EBT's one-pass guess alone (no descent step): its own row
    "ebt": "ebt",
    "ebt_stop": "ebt",
    "ebt_best_of_n": "ebt",
}
METRICS = ("mse", "mae", "psnr", "ssim")
GROUP = ("eval_split", "method", "steps", "n_candidates", "gain")
# OpenSTL's published Moving MNIST MSE (10 -> 10, 64x64), for context only: other training budgets and models.
OPENSTL_MSE = {
    "SimVP v2 (2,000 epochs)": 15.05,
    "TAU (2,000 epochs)": 15.69,
    "PredRNN v2 (2,000 epochs)": 17.26,
    "SimVP v1 (2,000 epochs)": 21.15,
    "ConvLSTM (2,000 epochs)": 22.41,
    "ConvLSTM (200 epochs)": 29.80,
}


def label(row: dict) -> str:
    if "gain" in row:
        return f"{row['method']} (a={row['gain']:g})"
    return f"{row['method']}@{row['steps']}" + (f" (N={row['n_candidates']})" if "n_candidates" in row else "")


def summarise(rows: list[dict]) -> list[dict]:
    """Per-horizon rows -> one row per (split, setting): metrics averaged over the horizon, costs kept."""
    costs = ("forward_passes", "backward_passes", "gflops_per_frame", "clips")
    averaged = selection.average(rows, GROUP, METRICS, keep=costs, count=None)
    return [{k: row[k] for k in (*GROUP, *METRICS, *costs) if k in row} for row in averaged]  # the report's order


def choose(summary: list[dict], within=lambda row: True, metric: str = "mse") -> dict[str, dict]:
    """Per model: the test summary of the setting with the best mean validation ``metric`` (``within`` filters
    settings). Adds ``chosen`` (the setting), ``validation_mse`` and ``validation_psnr``."""
    found = selection.choose(summary, lambda r: MODEL_OF_METHOD[r["method"]] if within(r) else None,
                             ("method", "steps", "n_candidates", "gain"), score=metric,
                             lowest=LOWER_IS_BETTER[metric])  # fmt: skip
    return {model: {**c.test, "chosen": label(c.validation), "validation_mse": c.validation["mse"],
                    "validation_psnr": c.validation["psnr"]}
            for model, c in found.items() if c.test is not None}  # fmt: skip


def _cost(row: dict) -> str:
    return f"{row['forward_passes']}f / {row['backward_passes']}b, {row['gflops_per_frame']:.3f} GFLOP"


def main_table(chosen: dict[str, dict]) -> str:
    headers = ["model", "setting (chosen on validation)", "MSE", "MAE", "SSIM", "PSNR (dB)", "cost per frame"]
    rows = [[m, r["chosen"], r["mse"], r["mae"], f"{r['ssim']:.3f}", r["psnr"], _cost(r)] for m, r in chosen.items()]
    return markdown_table(headers, rows)


def ebt_table(summary: list[dict], trained_steps: int) -> str:
    """Every EBT setting on test: thinking longer (steps), stopping, best-of-N."""
    rows = [r for r in summary if r["eval_split"] == "test" and MODEL_OF_METHOD[r["method"]] == "ebt"]
    table = [
        [
            label(r) + (" (trained)" if r["method"] == "ebt" and r["steps"] == trained_steps else ""),
            r["mse"],
            r["mae"],
            f"{r['ssim']:.3f}",
            r["psnr"],
            _cost(r),
        ]
        for r in rows
    ]
    return markdown_table(["EBT setting", "MSE", "MAE", "SSIM", "PSNR (dB)", "cost per frame"], table)


def horizon_table(rows: list[dict], chosen: dict[str, dict], metric: str) -> str:
    horizon = max(r["horizon"] for r in rows)
    table = []
    for model, pick in chosen.items():
        per_step = {r["horizon"]: r[metric] for r in rows if r["eval_split"] == "test" and label(r) == pick["chosen"]}
        table.append([model] + [per_step[h] for h in range(1, horizon + 1)])
    return markdown_table([f"{metric} at step"] + [str(h) for h in range(1, horizon + 1)], table)


def uncertainty_table(uncertainty: list[dict]) -> str:
    keys = ("frame_pearson", "frame_spearman", "frame_spearman_within_step", "patch_pearson", "patch_spearman")
    rows = [
        [label(u)] + [f"{u.get(k, float('nan')):.3f}" for k in keys] for u in uncertainty if u["eval_split"] == "test"
    ]
    return markdown_table(
        ["EBT setting", "frame r", "frame rho", "frame rho within a step", "patch r", "patch rho"], rows
    )


def better(value: float, other: float, metric: str) -> bool:
    """Is ``value`` strictly better than ``other`` by ``metric``?"""
    return value < other if LOWER_IS_BETTER[metric] else value > other


def _within_cost(model: str, gflops: float):
    """A ``choose`` filter: ``model``'s settings that cost no more FLOPs per frame than ``gflops``."""
    return lambda r: MODEL_OF_METHOD[r["method"]] == model and r["gflops_per_frame"] <= gflops * 1.0001


def verdicts(summary: list[dict], chosen: dict[str, dict], metric: str = "mse") -> list[dict]:
    """Does the EBT beat each baseline by the test ``metric`` settings are chosen by? Three comparisons, every setting
    chosen on validation: the EBT's chosen setting against the baseline's ("chosen"), against the baseline's best
    setting that costs no more FLOPs per frame than the EBT's ("baseline at equal or lower cost"), and the EBT's best
    setting that costs no more than the baseline's chosen one against it ("EBT at equal or lower cost")."""
    ebt = chosen.get("ebt")
    if ebt is None:
        return []
    out = []
    for model in (
        "copy_last",
        "extrapolate",
        "extrapolate_adaptive",
        "transformer",
        "transformer_compute",
        "dit",
        "dit_compute",
    ):
        if model not in chosen:
            continue
        baseline = chosen[model]
        cheaper = choose(summary, _within_cost(model, ebt["gflops_per_frame"]), metric).get(model)
        cheap_ebt = choose(summary, _within_cost("ebt", baseline["gflops_per_frame"]), metric).get("ebt")
        pairs = (("chosen", baseline, ebt), ("baseline at equal or lower cost", cheaper, ebt),
                 ("EBT at equal or lower cost", baseline, cheap_ebt))  # fmt: skip
        for kind, other, mine in pairs:
            if other is not None and mine is not None:
                out.append(
                    {
                        "baseline": model,
                        "comparison": kind,
                        "baseline_setting": other["chosen"],
                        "ebt_setting": mine["chosen"],
                        "baseline_mse": other["mse"],
                        "ebt_mse": mine["mse"],
                        "baseline_psnr": other["psnr"],
                        "ebt_psnr": mine["psnr"],
                        "baseline_gflops": other["gflops_per_frame"],
                        "ebt_gflops": mine["gflops_per_frame"],
                        "metric": metric,
                        "ebt_wins": better(mine[metric], other[metric], metric),
                    }
                )
    return out


def plot(rows: list[dict], summary: list[dict], chosen: dict[str, dict], path: Path) -> Path:
    """MSE and PSNR per horizon step (chosen settings, test) and mean test MSE against GFLOPs per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for model, pick in chosen.items():
        picked = sorted(
            (r for r in rows if r["eval_split"] == "test" and label(r) == pick["chosen"]), key=lambda r: r["horizon"]
        )
        for ax, metric in zip(axes[:2], ("mse", "psnr"), strict=True):
            ax.plot(
                [r["horizon"] for r in picked], [r[metric] for r in picked], "o-", label=f"{model} ({pick['chosen']})"
            )
    for method in dict.fromkeys(r["method"] for r in summary):
        points = sorted(
            (r for r in summary if r["eval_split"] == "test" and r["method"] == method),
            key=lambda r: r["gflops_per_frame"],
        )
        axes[2].plot([max(r["gflops_per_frame"], 1e-4) for r in points], [r["mse"] for r in points], "o-", label=method)
    for ax, ylabel in zip(axes, ("MSE per frame (OpenSTL)", "PSNR (dB)", "mean MSE over the horizon"), strict=True):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_xlabel("horizon step")
    axes[1].set_xlabel("horizon step")
    axes[2].set_xlabel("GFLOP per predicted frame (copy-last at 1e-4)")
    axes[2].set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_strips(out_dir: Path, stem: str, rows: dict[str, Tensor], context_frames: int) -> list[Path]:
    """{label: clips (N, T, C, H, W)} -> one GIF per clip and one PNG with every clip's grid, stacked."""
    paths, grids = [], []
    for i in range(len(next(iter(rows.values())))):
        clip_rows = {key: frames[i] for key, frames in rows.items()}
        paths.append(write_gif(out_dir / f"{stem}_clip{i}.gif", clip_rows, context_frames))
        grids.append(strip_image(clip_rows, context_frames))
    if grids:
        sheet = Image.new("RGB", (grids[0].width, sum(g.height + 8 for g in grids)), (255, 255, 255))
        for i, grid in enumerate(grids):
            sheet.paste(grid, (0, i * (grid.height + 8)))
        sheet.save(out_dir / f"{stem}_strips.png")
        paths.append(out_dir / f"{stem}_strips.png")
    return paths


def describe_clips(names: list[str]) -> str:
    """``scene@start`` clip names -> "scene (n clips), ..."; plain names -> their count."""
    scenes: dict[str, int] = defaultdict(int)
    for name in names:
        scenes[name.split("@")[0] if "@" in name else "generated"] += 1
    return ", ".join(f"{scene} ({count} clips)" for scene, count in scenes.items())


def steps_kept(contender: Contender) -> str:
    """Training steps, and the step whose weights early stopping kept when that is not the last one."""
    kept = contender.kept_step
    if not kept or kept == contender.steps:
        return str(contender.steps)
    return f"{contender.steps} (weights of step {kept}, the best on validation)"


def models_table(contenders: dict[str, Contender]) -> str:
    return markdown_table(
        ["model", "parameters", "training steps", "training PFLOP", "wall-clock (s)"],
        [
            [c.name, f"{c.params / 1e6:.3f}M", steps_kept(c), f"{c.train_flops / 1e15:.3g}", f"{c.seconds:.0f}"]
            for c in contenders.values()
        ],
    )


def write_video_report(
    rows: list[dict],
    uncertainty: list[dict],
    contenders: dict[str, Contender],
    meta: dict,
    out_dir: str | Path,
    stem: str,
    trained_steps: int,
    split_names: dict[str, list[str]],
    strips: list[Path] = (),
    mmnist_protocol: bool = False,
    select_by: str = "mse",
) -> Path:
    """Write ``stem.md``, ``stem.json`` (per-horizon rows; summary, chosen settings, verdicts, uncertainty) and
    ``stem.png``; ``strips`` are the GIF/PNG files already written beside them. Settings are chosen by the mean
    validation ``select_by`` ("mse" or "psnr")."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    chosen = choose(summary, metric=select_by)
    checks = verdicts(summary, chosen, select_by)
    figure = plot(rows, summary, chosen, out_dir / f"{stem}.png")
    held = {s: len(n) for s, n in split_names.items()}
    verdict_rows = [
        [
            v["baseline"],
            v["comparison"],
            v["baseline_setting"],
            v["ebt_setting"],
            v["baseline_mse"],
            v["ebt_mse"],
            v["baseline_psnr"],
            v["ebt_psnr"],
            f"{v['baseline_gflops']:.3f} / {v['ebt_gflops']:.3f}",
            "yes" if v["ebt_wins"] else "no",
        ]
        for v in checks
    ]
    body = (
        f"Mean over the **test** clips ({held.get('test', 0)}); each model's setting was chosen by the mean "
        f"{select_by.upper()} on the **validation** clips ({held.get('validation', 0)}), never on test. MSE and MAE in "
        "OpenSTL's convention "
        "(pixels in [0, 1], summed over a frame's pixels, averaged over frames and clips); PSNR/SSIM on 8-bit pixels. "
        "Cost per predicted frame of one clip: forward (f) and backward (b) passes through the network (an EBT "
        "descent step is one of each; the DiT one forward per DDIM step) and GFLOPs counted on what ran, attention "
        f"included. The EBT was trained with {trained_steps} descent step(s). *extrapolate*: the classical baseline "
        "that continues each pixel's last change, last + a x (last - previous), a chosen on validation; "
        "*extrapolate_adaptive*: the same with a scaled per clip by the least-squares gain of the last change on the "
        "change before it, clamped to [0, 1] (a steady drift continues, an erratic change is not extrapolated).\n\n"
        + "".join(f"- {split} clips: {describe_clips(n)}\n" for split, n in split_names.items())
        + f"\n{models_table(contenders)}\n\n### Test, settings chosen on validation\n\n{main_table(chosen)}\n\n"
        f"![per-horizon metrics and cost]({figure.name})\n\n"
        f"### Per horizon step (test)\n\n{horizon_table(rows, chosen, 'mse')}\n\n{horizon_table(rows, chosen, 'psnr')}"
        "\n\n### System 2: the EBT thinking longer, stopping, best-of-N (test)\n\n"
        f"{ebt_table(summary, trained_steps)}\n\n"
        f"### Goal check: the EBT against each baseline (test; better by {select_by.upper()}, the choosing metric)\n\n"
        + markdown_table(
            [
                "baseline",
                "comparison",
                "baseline setting",
                "EBT setting",
                "baseline MSE",
                "EBT MSE",
                "baseline PSNR",
                "EBT PSNR",
                "GFLOP per frame (baseline / EBT)",
                "EBT better",
            ],
            verdict_rows,
        )
        + "\n\n### Energy as uncertainty (test): correlation of a predicted frame's (patch's) energy with its error\n\n"
        f"{uncertainty_table(uncertainty)}\n"
    )
    if mmnist_protocol:
        body += (
            "\nFor context, OpenSTL's published Moving MNIST MSE (larger models, far longer training): "
            + ", ".join(f"{k} {v}" for k, v in OPENSTL_MSE.items())
            + ".\n"
        )
    if strips:
        body += "\n### Predictions beside the truth (test clips; red frames are predicted)\n\n"
        body += "\n".join(f"![{p.stem}]({p.name})" for p in strips) + "\n"
    return write_report(
        out_dir,
        stem,
        meta,
        rows,
        body,
        summary=summary,
        chosen=list(chosen.values()),
        verdicts=checks,
        uncertainty=uncertainty,
        clips=split_names,
    )
