"""Regenerate docs/denoise-example.png (the README's `ebt-vision denoise` example) with the shipped checkpoints.

The input is docs/example-noisy.png: the held-out astronaut resized and centre-cropped to 128x128 with sigma 25
noise, saved as 8-bit PNG. Runs the same code as `ebt-vision denoise` (default settings: the EBT's steps from its
step schedule when it has one, the DiT's 2 DDIM steps), prints PSNR/SSIM against the clean crop and the time.

    python scripts/denoise-example.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ebt_vision.core import defaults
from ebt_vision.core.checkpoint import load_trained
from ebt_vision.core.metrics import psnr, ssim
from ebt_vision.image.data import held_out_photos, square_crops
from ebt_vision.image.denoise_files import DenoiseOptions, denoise_files
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.schedule import StepSchedule

ROOT = Path(__file__).resolve().parents[1]
EBT, DIT = ROOT / defaults.IMAGE_EBT, ROOT / defaults.IMAGE_DIT


def read(path: Path) -> torch.Tensor:
    return torch.tensor(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy_path = ROOT / "docs/example-noisy.png"
    clean = square_crops([p for p in held_out_photos(None, "test") if p.name == "skimage:astronaut"], 128)[1][0]
    ebt = load_trained(EBT, DenoisingObjective, "an image EBT", "cpu")[0]
    dit = load_trained(DIT, DiTObjective, "a DiT baseline", "cpu")[0]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        denoise_files(ebt, [noisy_path], out, DenoiseOptions(save_energy_map=True, schedule=StepSchedule.load(EBT)),
                      progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
        denoise_files(dit, [noisy_path], out, DenoiseOptions(), progress=False)
        results = {tag: read(Path(out) / f"example-noisy.png.{tag}.png") for tag in ("ebt", "dit")}
        energy = np.array(Image.open(Path(out) / "example-noisy.png.ebt-energy.png").convert("RGB"))
    noisy = read(noisy_path)
    scores = {name: (float(psnr(x[None], clean[None])), float(ssim(x[None], clean[None])))
              for name, x in [("noisy", noisy), *results.items()]}  # fmt: skip
    panels = [("clean", clean), (f"noisy, sigma 25: {scores['noisy'][0]:.2f} dB", noisy),
              (f"EBT (default steps): {scores['ebt'][0]:.2f} dB", results["ebt"]),
              (f"DiT, 2 DDIM steps: {scores['dit'][0]:.2f} dB", results["dit"])]  # fmt: skip
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
    for ax, (title, image) in zip(axes, panels, strict=False):
        ax.imshow(((image.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy())
        ax.set_title(title, fontsize=9, loc="left")
    axes[4].imshow(energy)
    axes[4].set_title("EBT energy per patch", fontsize=9, loc="left")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(ROOT / "docs/denoise-example.png", dpi=100)
    for name, (p, s) in scores.items():
        print(f"{name}: PSNR {p:.2f} dB, SSIM {s:.3f}")
    print(f"EBT with its energy map: {seconds:.1f} s")


if __name__ == "__main__":
    main()
