"""What the validation sweeps in ``scripts/`` share: the validation photos noised exactly as ``ebt-vision eval
--split validation`` noises them, and their results written in the shape of an evaluation report (rows of mean
validation PSNR per method and sigma), which ``scripts/validation-levers.py`` reads."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

from torch import Tensor

from ...core.reports import make_meta
from ...image.data import Photo
from .evaluation import noisy_pair


def noisy_validation(photos: list[Photo], sigma: float, patch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(clean, noisy), each (1, C, H, W), of every validation photo at ``sigma``: eval's noise (seed 0)."""
    for index, photo in enumerate(photos):
        clean, noisy = noisy_pair(photo, index, sigma, patch_size, "validation")
        yield clean[None], noisy[None]


def write_rows(out: Path, scores: dict[tuple[str, float], list[float]], steps: dict[str, int], photos: list[Photo],
               budget: str, script: str, argv: list[str]) -> None:  # fmt: skip
    """Per (method, sigma) the photos' PSNRs -> ``out`` (.json: meta and rows, as an eval report), and a line each
    printed. ``steps``: each method's descent steps (0 where it has none to count)."""
    rows = [{"eval_split": "validation", "method": method, "sigma": sigma, "steps": steps[method],
             "psnr": sum(values) / len(values), "per_photo": values}
            for (method, sigma), values in scores.items()]  # fmt: skip
    data = f"held-out photos, full resolution; validation: {len(photos)} photos ({', '.join(p.name for p in photos)})"
    meta = make_meta("cpu", 0, data, budget, command=shlex.join(["python", script, *argv]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    for row in rows:
        print(f"sigma {row['sigma']:g}  {row['method']}: {row['psnr']:.3f}")
