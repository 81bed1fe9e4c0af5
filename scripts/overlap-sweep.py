"""The EBT (a fixed descent) and the DiT (fixed DDIM steps) on the validation photos at two tile layouts.

Writes an evaluation-shaped JSON (mean validation PSNR per model, layout and sigma, the method named after both) for
``scripts/validation-levers.py``; the same photos and noise as ``ebt-vision eval --split validation``, the DiT told
the sigma estimated from the noisy photo as there:

python scripts/overlap-sweep.py --sigma 25 --passes 2 --steps 2 --out runs/overlap-25.json
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
from ebt_vision.image.dit import DiTObjective, dit_denoise  # noqa: E402
from ebt_vision.image.inference import Tiling, denoise  # noqa: E402
from ebt_vision.image.noise import estimate_noise_sigma  # noqa: E402
from ebt_vision.image.objective import DenoisingObjective  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/ebt-image-s")
    parser.add_argument("--dit-checkpoint", default="checkpoints/dit-image-s")
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--passes", type=int, default=1, help="the EBT's re-anchored passes")
    parser.add_argument("--steps", type=int, default=2, help="the EBT's descent steps per pass")
    parser.add_argument("--step-scale", type=float, default=1.0)
    parser.add_argument("--dit-steps", type=int, default=2)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[2, 4], choices=(1, 2, 4))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    ebt, _ = load_trained(args.checkpoint, DenoisingObjective, "an image EBT denoiser")
    dit, _ = load_trained(args.dit_checkpoint, DiTObjective, "a DiT baseline")
    thinking = Thinking(args.steps, step_scale=args.step_scale, passes=args.passes, final_energy=False)
    ebt_name = f"EBT, {args.passes} x {args.steps} steps x {args.step_scale:g}"
    photos = held_out_photos(None, "validation")
    scores: dict[tuple[str, float], list[float]] = {}
    pairs = noisy_validation(photos, args.sigma, ebt.cfg.model.patch_size)
    for clean, noisy in progress_bar(pairs, desc=f"overlap sweep, sigma {args.sigma:g}", total=len(photos)):
        estimated = float(estimate_noise_sigma(noisy)[0])
        for overlap in args.overlaps:
            trajectory, _ = denoise(ebt, noisy, thinking, tiling=Tiling(overlap=overlap))
            estimate, _ = dit_denoise(dit, noisy, estimated, args.dit_steps, overlap)
            for name, image in ((ebt_name, trajectory.final), (f"DiT, {args.dit_steps} DDIM steps", estimate)):
                scores.setdefault((f"{name}, overlap {overlap}", args.sigma), []).append(
                    float(psnr(image.clamp(-1, 1), clean)[0])
                )
    budget = f"{args.checkpoint}, {args.dit_checkpoint} (no training)"
    write_rows(args.out, scores, {method: 0 for method, _ in scores}, photos, budget, "scripts/overlap-sweep.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
