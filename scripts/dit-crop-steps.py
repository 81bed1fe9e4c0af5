"""The DiT's DDIM step count on the step schedule's calibration crops, with one view and with mirror views.

The EBT's schedule is fitted on full-resolution crops of the validation photos (``ebt-vision calibrate``; with
``--views 8 --no-save`` for 8 mirror views). This scores the DiT on the same crops and the same noise, told the sigma
estimated from the noisy crops as everywhere else, at each DDIM step count and view count, so both models' settings
for a view count can be chosen on the same validation data:

python scripts/dit-crop-steps.py --sigmas 15 25 --dit-steps 1 2 3 5 --views 1 8 --out reports --stem dit_crop_steps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.core.checkpoint import load_trained  # noqa: E402
from ebt_vision.core.defaults import MIRROR_VIEWS  # noqa: E402
from ebt_vision.core.metrics import psnr  # noqa: E402
from ebt_vision.core.progress import progress as progress_bar  # noqa: E402
from ebt_vision.core.reports import make_meta, markdown_table, write_report  # noqa: E402
from ebt_vision.experiments.image.calibration import CalibrationOptions  # noqa: E402
from ebt_vision.image.data import held_out_photos  # noqa: E402
from ebt_vision.image.dit import DiTObjective, dit_denoise  # noqa: E402
from ebt_vision.image.noise import estimate_noise_sigma  # noqa: E402
from ebt_vision.image.schedule import full_resolution_crops, noisy_crops  # noqa: E402


def _plot(rows: list[dict], sigmas: list[float], views: list[int], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.5 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for v in views:
            points = [(r["dit_steps"], r["psnr"]) for r in rows if (r["sigma"], r["views"]) == (sigma, v)]
            ax.plot(*zip(*points, strict=True), "o-", label=f"{v} view{'s' if v > 1 else ''}")
        ax.set(title=f"sigma {sigma:g}", xlabel="DDIM steps", ylabel="PSNR (dB), validation crops")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dit-checkpoint", default="checkpoints/dit-image-s")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0])
    parser.add_argument("--dit-steps", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 8], choices=MIRROR_VIEWS)
    calibration = CalibrationOptions()
    parser.add_argument("--crop", type=int, default=calibration.crop, help="as `ebt-vision calibrate --crop`")
    parser.add_argument("--per-photo", type=int, default=calibration.per_photo, help="as `ebt-vision calibrate`")
    parser.add_argument("--out", type=Path, default=Path("runs/dit-crop-steps"))
    parser.add_argument("--stem", default="dit_crop_steps")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    dit, _ = load_trained(args.dit_checkpoint, DiTObjective, "a DiT baseline")
    photos = held_out_photos(None, "validation")
    crops = full_resolution_crops(photos, args.crop, args.per_photo)
    clean = torch.stack(crops)
    noisy = {sigma: noisy_crops(crops, sigma) for sigma in args.sigmas}
    estimated = {sigma: estimate_noise_sigma(images) for sigma, images in noisy.items()}
    jobs = [(s, v, k) for s in args.sigmas for v in args.views for k in args.dit_steps]
    rows = []
    for sigma, views, steps in progress_bar(jobs, desc="DiT on the calibration crops"):
        estimate, _ = dit_denoise(dit, noisy[sigma], estimated[sigma], steps, views=views)
        value = float(psnr(estimate.clamp(-1, 1), clean).mean())
        rows.append({"sigma": sigma, "views": views, "dit_steps": steps, "psnr": value})
    plot = _plot(rows, args.sigmas, args.views, args.out / f"{args.stem}.png")
    table = [[f"{s:g}", str(v), *(f"{r['psnr']:.3f}" for r in rows if (r["sigma"], r["views"]) == (s, v)),
              str(max((r for r in rows if (r["sigma"], r["views"]) == (s, v)), key=lambda r: r["psnr"])["dit_steps"])]
             for s in args.sigmas for v in args.views]  # fmt: skip
    body = (
        "The DiT on the step schedule's calibration crops (the same crops and noise as `ebt-vision calibrate`), "
        "mean PSNR per DDIM step count, with one view and averaged over mirror views.\n\n"
        + markdown_table(["sigma", "views", *(f"{k} DDIM steps" for k in args.dit_steps), "best"], table)
        + f"\n\n![PSNR per DDIM step count]({plot.name})\n"
    )
    data = (f"validation photos ({', '.join(p.name for p in photos)}), {args.per_photo} full-resolution {args.crop}px "
            f"crops each, Gaussian noise at sigma {', '.join(f'{s:g}' for s in args.sigmas)}")  # fmt: skip
    meta = make_meta("cpu", 0, data, f"{args.dit_checkpoint}; DDIM steps {args.dit_steps}, views {args.views}")
    print(write_report(args.out, args.stem, meta, rows, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
