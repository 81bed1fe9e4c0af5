"""``ebt-vision calibrate``: fit a blind EBT's step schedule (steps and step scale per estimated noise level) on
full-resolution crops of the validation photos, save it beside the weights, and report what it chose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.defaults import CALIBRATION_SCALES, CALIBRATION_SIGMAS
from ...core.errors import InputError
from ...core.reports import make_meta, markdown_table, write_report
from ...core.train import resolve_device
from ...image.data import held_out_photos
from ...image.inference import load_denoiser
from ...image.schedule import (
    CALIBRATION_PASSES,
    PASS_STEPS,
    StepSchedule,
    fit_schedule,
    full_resolution_crops,
)
from ...image.tiling import check_views


def _plot(rows: list[dict], schedule: StepSchedule, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigmas = schedule.calibration_sigmas
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.get_cmap("viridis")
    for i, sigma in enumerate(sigmas):
        curve = sorted((r for r in rows if r["sigma"] == sigma and r["scale"] == 1.0 and r.get("passes", 1) == 1),
                       key=lambda r: r["steps"])  # fmt: skip
        axes[0].plot([r["steps"] for r in curve], [r["psnr"] for r in curve], "o-", markersize=3,
                     color=colors(i / max(1, len(sigmas) - 1)), label=f"sigma {sigma:g}")  # fmt: skip
    axes[0].set_xlabel("descent steps (step scale 1)")
    axes[0].set_ylabel("PSNR (dB), validation crops")
    axes[0].set_title("more noise wants more steps")
    axes[0].legend(fontsize=6, ncol=2)
    axes[0].grid(alpha=0.3)
    levels = list(zip(schedule.estimated, schedule.steps, schedule.scales, schedule.passes, strict=True))
    axes[1].plot(schedule.estimated, [k * s * n for _, k, s, n in levels], "o-")
    for x, k, s, n in levels:
        axes[1].annotate(f"{k}x{s:g}" + (f" ({n} passes)" if n > 1 else ""), (x, k * s * n),
                         textcoords="offset points", xytext=(3, 4), fontsize=7)  # fmt: skip
    axes[1].set_xlabel("estimated sigma (0-255)")
    axes[1].set_ylabel("steps x step scale x passes (chosen)")
    axes[1].set_title("the schedule")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(psnr: float | None) -> str:
    """A PSNR cell; "-" where the setting was not tried (scale 1 left out of ``--scales``)."""
    return "-" if psnr is None else f"{psnr:.2f}"


def write_calibration_report(rows: list[dict], schedule: StepSchedule, meta: dict, out_dir: str | Path,
                             stem: str) -> Path:  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = _plot(rows, schedule, out_dir / f"{stem}.png")
    table = []
    for i, sigma in enumerate(schedule.calibration_sigmas):
        at = {(r["scale"], r["steps"]): r["psnr"] for r in rows if r["sigma"] == sigma and r.get("passes", 1) == 1}
        anchored = [r for r in rows if r["sigma"] == sigma and r.get("passes", 1) > 1]
        best = max(anchored, key=lambda r: r["psnr"]) if anchored else None
        passes = f" ({schedule.passes[i]} passes)" if schedule.passes[i] > 1 else ""
        table.append([f"{sigma:g}", f"{schedule.estimated[i]:.1f}",
                      f"{schedule.steps[i]} x {schedule.scales[i]:g}{passes}", f"{schedule.psnr[i]:.2f}",
                      _cell(at.get((1.0, 2))), _cell(max((v for (s, _), v in at.items() if s == 1.0), default=None)),
                      f"{best['psnr']:.2f} ({best['passes']} x {best['steps']})" if best else "-"])  # fmt: skip
    body = (
        "A blind EBT's step schedule: at each calibration sigma, every validation crop is noised once, the model "
        "descends at each step-size scale, and the (steps, scale) with the best mean PSNR is filed under the mean "
        "sigma that `estimate_noise_sigma` reads off the noisy crops. At test time the model stays blind; the "
        "estimate only sets how long and how far it descends (nearest calibrated level). Re-anchored descents "
        "(passes of a few steps, each pass's estimate the next one's noisy image) compete with the single pass.\n\n"
        + markdown_table(
            [
                "sigma",
                "estimated",
                "chosen steps x scale",
                "PSNR chosen",
                "PSNR 2 steps x 1",
                "PSNR best steps x 1",
                "PSNR best re-anchored (passes x steps)",
            ],
            table,
        )  # fmt: skip
        + f"\n\n![PSNR per step and the chosen schedule]({plot.name})\n"
    )
    return write_report(out_dir, stem, meta, rows, body, schedule=schedule.__dict__)


@dataclass(frozen=True)
class CalibrationOptions:
    """``per_photo`` full-resolution crops of ``crop`` px from each validation photo, 1..``max_steps`` descent steps
    tried at every calibration sigma (``sigmas``) and step-size scale (``scales``, times the learned step size), and
    re-anchored descents of up to ``passes`` passes (1: none); ``save``: write ``step_schedule.json`` beside the
    weights. ``views``: every descent averaged over that many mirror images (``Tiling.views``); such a schedule is
    reported, never saved: denoise and eval take the one-view schedule at every view count."""

    crop: int = 96
    per_photo: int = 2
    max_steps: int = 8
    save: bool = True
    passes: int = CALIBRATION_PASSES
    sigmas: tuple[float, ...] = CALIBRATION_SIGMAS
    scales: tuple[float, ...] = CALIBRATION_SCALES
    views: int = 1

    def __post_init__(self) -> None:
        check_views(self.views)
        if self.views > 1 and self.save:
            raise InputError(f"a step schedule calibrated with {self.views} views is reported, not saved (add "
                             "--no-save): denoise and eval take the one-view schedule at every view count")  # fmt: skip


def run_calibration(
    checkpoint: str | Path,
    out_dir: str | Path,
    options: CalibrationOptions = CalibrationOptions(),
    device: str = "auto",
    stem: str = "step_schedule",
    progress: bool = True,
) -> tuple[StepSchedule, Path]:
    """``ebt-vision calibrate``: fit the checkpoint's step schedule on the validation photos, save it beside the
    weights (``options.save``) and report it; -> (the schedule, the report)."""
    torch_device = resolve_device(device)
    objective = load_denoiser(checkpoint, torch_device)
    photos = held_out_photos(None, "validation")
    crops = full_resolution_crops(photos, options.crop, options.per_photo)
    schedule, rows = fit_schedule(objective, crops, options.sigmas, options.max_steps, options.scales,
                                  progress=progress, passes=options.passes, views=options.views)  # fmt: skip
    if options.save:
        schedule.save(checkpoint if Path(checkpoint).is_dir() else Path(checkpoint).parent)
    data = (
        f"validation photos ({', '.join(p.name for p in photos)}), {options.per_photo} full-resolution "
        f"{options.crop}px crops each, Gaussian noise at sigma {', '.join(f'{s:g}' for s in options.sigmas)}"
    )
    scales = ", ".join(f"{s:g}" for s in options.scales)
    budget = f"{checkpoint}; 1-{options.max_steps} descent steps at step scales {scales}"
    if options.views > 1:
        budget += f", every descent averaged over {options.views} mirror images of the crop"
    if options.passes > 1:
        budget += (f"; re-anchored: 2-{options.passes} passes of {PASS_STEPS[0]}-{PASS_STEPS[-1]} steps at step "
                   "scale 1")  # fmt: skip
    report = write_calibration_report(rows, schedule, make_meta(torch_device, 0, data, budget), out_dir, stem)
    return schedule, report
