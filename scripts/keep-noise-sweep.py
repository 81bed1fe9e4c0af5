"""Re-anchored passes that keep part of the noise (``Thinking.keep_noise``) on the validation photos.

Writes an evaluation-shaped JSON (rows of mean validation PSNR per setting and sigma, the method named after the
setting) for ``scripts/validation-levers.py``; the same photos and noise as ``ebt-vision eval --split validation``:

python scripts/keep-noise-sweep.py --checkpoint checkpoints/ebt-image-s --sigmas 15 25 --keep 0 0.3 0.5 \
    --out runs/keep-noise.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.core.checkpoint import load_trained  # noqa: E402
from ebt_vision.core.inference import Thinking  # noqa: E402
from ebt_vision.core.metrics import psnr  # noqa: E402
from ebt_vision.core.progress import progress as progress_bar  # noqa: E402
from ebt_vision.experiments.image.validation_sweep import noisy_validation, write_rows  # noqa: E402
from ebt_vision.image.data import held_out_photos  # noqa: E402
from ebt_vision.image.inference import denoise  # noqa: E402
from ebt_vision.image.objective import DenoisingObjective  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/ebt-image-s")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.0, 0.3, 0.5], help="keep_noise of 2-pass runs")
    parser.add_argument("--pass-steps", type=int, default=2, help="descent steps per pass of the 2-pass runs")
    parser.add_argument("--one-pass", default="5x1.5", help="the one-pass setting beside them: STEPSxSCALE")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    objective, _ = load_trained(args.checkpoint, DenoisingObjective, "an image EBT denoiser")
    patch = objective.cfg.model.patch_size
    steps, scale = args.one_pass.split("x")
    settings = {f"1 pass of {steps} steps x {scale}": (int(steps), float(scale), 1, 0.0)}
    for keep in args.keep:
        settings[f"2 passes of {args.pass_steps}, keep_noise {keep:g}"] = (args.pass_steps, 1.0, 2, keep)
    photos = held_out_photos(None, "validation")[: args.limit]
    scores: dict[tuple[str, float], list[float]] = {}
    jobs = [(sigma, pair) for sigma in args.sigmas for pair in noisy_validation(photos, sigma, patch)]
    for sigma, (clean, noisy) in progress_bar(jobs, desc="keep-noise sweep"):
        for label, (k, step_scale, passes, keep) in settings.items():
            thinking = Thinking(k, step_scale=step_scale, passes=passes, keep_noise=keep, final_energy=False)
            trajectory, _ = denoise(objective, noisy, thinking)
            scores.setdefault((label, sigma), []).append(float(psnr(trajectory.final.clamp(-1, 1), clean)[0]))
    counts = {label: k * passes for label, (k, _, passes, _) in settings.items()}
    write_rows(
        args.out, scores, counts, photos, f"{args.checkpoint} (no training)", "scripts/keep-noise-sweep.py", argv
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
