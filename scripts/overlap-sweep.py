"""The EBT (a fixed descent) and the DiT (fixed DDIM steps) on the validation photos at two tile layouts.

Writes an evaluation-shaped JSON (mean validation PSNR per model, layout and sigma, the method named after both) for
``scripts/validation-levers.py``; the same photos and noise as ``ebt-vision eval --split validation``, the DiT told
the sigma estimated from the noisy photo as there:

python scripts/overlap-sweep.py --sigma 25 --passes 2 --steps 2 --out runs/overlap-25.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.core.checkpoint import load_trained  # noqa: E402
from ebt_vision.core.inference import Thinking  # noqa: E402
from ebt_vision.core.metrics import psnr  # noqa: E402
from ebt_vision.core.progress import progress as progress_bar  # noqa: E402
from ebt_vision.core.reports import make_meta  # noqa: E402
from ebt_vision.experiments.selection import SPLIT_SEED_OFFSET  # noqa: E402
from ebt_vision.image.data import held_out_photos  # noqa: E402
from ebt_vision.image.dit import DiTObjective, dit_denoise  # noqa: E402
from ebt_vision.image.inference import Tiling, crop_to_patches, denoise  # noqa: E402
from ebt_vision.image.noise import estimate_noise_sigma, noisy_copy  # noqa: E402
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
    scores: dict[str, list[float]] = {}
    for index, photo in enumerate(progress_bar(photos, desc=f"overlap sweep, sigma {args.sigma:g}")):
        clean = crop_to_patches(photo.image[None], ebt.cfg.model.patch_size)[0]
        noisy = noisy_copy(clean, args.sigma, 0, SPLIT_SEED_OFFSET["validation"] + index)[None]
        estimated = float(estimate_noise_sigma(noisy)[0])
        for overlap in args.overlaps:
            trajectory, _ = denoise(ebt, noisy, thinking, tiling=Tiling(overlap=overlap))
            estimate, _ = dit_denoise(dit, noisy, estimated, args.dit_steps, overlap)
            for name, image in ((ebt_name, trajectory.final), (f"DiT, {args.dit_steps} DDIM steps", estimate)):
                scores.setdefault(f"{name}, overlap {overlap}", []).append(
                    float(psnr(image.clamp(-1, 1), clean[None])[0])
                )
    rows = [{"eval_split": "validation", "method": method, "sigma": args.sigma, "steps": 0, "psnr": sum(v) / len(v),
             "per_photo": v} for method, v in scores.items()]  # fmt: skip
    data = f"held-out photos, full resolution; validation: {len(photos)} photos ({', '.join(p.name for p in photos)})"
    meta = make_meta("cpu", 0, data, f"{args.checkpoint}, {args.dit_checkpoint} (no training)",
                     command=shlex.join(["python", "scripts/overlap-sweep.py", *argv]))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    for row in rows:
        print(f"sigma {row['sigma']:g}  {row['method']}: {row['psnr']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
