"""How much memory ``ebt-vision denoise`` takes per megapixel, and so the largest photo it takes (``MAX_FILE_PIXELS``).

    python -m ebt_vision.experiments.image.photo_memory --out reports      # reports/photo_memory.md, .json

Each size is a noisy photo (a held-out photo resized to that many pixels, Gaussian noise of sigma 25, 8-bit PNG)
denoised by the command itself in a fresh process, with the shipped model and its defaults (steps from the step
schedule, half-overlapping tiles); the peak is that process's maximum resident set, model and imports included. A
line through the peaks gives the memory per megapixel, and the limit is the largest whole number of megapixels
whose predicted peak stays within the budget (``DENOISE_MEMORY_GIB``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core import defaults
from ...core.reports import make_meta, markdown_table, write_report

SIGMA = 25.0
SIZES = (0.25, 1.0, 2.0, 4.0)  # megapixels


@dataclass
class Measured:
    model: str  # "ebt" or "dit"
    megapixels: float
    peak_mem_gib: float
    seconds: float


def noisy_photo(path: Path, megapixels: float, seed: int = 0) -> float:
    """A square noisy photo of about ``megapixels`` (side a multiple of 4) written to ``path``; its true size."""
    import imageio.v3 as iio
    import skimage.data
    import skimage.transform

    side = int(round((megapixels * 1e6) ** 0.5 / 4)) * 4
    clean = skimage.transform.resize(skimage.data.astronaut() / 255.0, (side, side), anti_aliasing=True)
    noise = np.random.default_rng(seed).normal(0, SIGMA, clean.shape)
    iio.imwrite(path, np.clip(clean * 255 + noise, 0, 255).round().astype(np.uint8))
    return side * side / 1e6


def measure(model: str, megapixels: float, folder: Path) -> Measured:
    """Denoise one photo of ``megapixels`` with ``ebt-vision denoise --model model`` in a child; its peak RSS."""
    photo = folder / f"photo-{megapixels:g}mp.png"
    actual = noisy_photo(photo, megapixels)
    command = [sys.executable, "-m", "ebt_vision", "denoise", str(photo), "-o", str(folder / "out"), "--model",
               model, "--overwrite", "--quiet"]  # fmt: skip
    log = folder / "denoise.log"
    with open(log, "w") as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use, not the largest of all children
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped above: Popen must not wait for it again
    if child.returncode != 0:
        raise RuntimeError(f"denoise of {actual:.2f} MP failed: {log.read_text()[-2000:]}")
    return Measured(model, round(actual, 3), usage.ru_maxrss / 2**20, seconds)  # ru_maxrss is in KiB on Linux


def fit(rows: list[Measured]) -> tuple[float, float]:
    """(GiB at 0 megapixels, GiB per megapixel): a least-squares line through the peaks."""
    slope, intercept = np.polyfit([r.megapixels for r in rows], [r.peak_mem_gib for r in rows], 1)
    return float(intercept), float(slope)


def limit_megapixels(intercept: float, slope: float, budget_gib: float) -> int:
    """The largest whole number of megapixels whose predicted peak is within ``budget_gib``."""
    return int((budget_gib - intercept) / max(slope, 1e-6))


def run(
    out: Path, sizes: tuple[float, ...], models: tuple[str, ...], stem: str = "photo_memory", command: str | None = None
) -> Path:
    budget = defaults.DENOISE_MEMORY_GIB
    rows: list[Measured] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for megapixels in sizes:
                rows.append(measure(model, megapixels, Path(tmp)))
                print(rows[-1], flush=True)
    lines, fits = [], {}
    for model in models:
        mine = [r for r in rows if r.model == model]
        intercept, slope = fit(mine)
        fits[model] = {
            "gib_at_0_mp": intercept,
            "gib_per_mp": slope,
            "limit_mp": limit_megapixels(intercept, slope, budget),
        }
        lines.append(f"- **{model.upper()}**: peak = {intercept:.2f} GiB + {slope:.3f} GiB per megapixel; within "
                     f"{budget} GiB: {fits[model]['limit_mp']} megapixels")  # fmt: skip
    table = markdown_table(["model", "megapixels", "peak GiB", "seconds"],
                           [[r.model, r.megapixels, r.peak_mem_gib, r.seconds] for r in rows])  # fmt: skip
    limit = min(f["limit_mp"] for f in fits.values())
    body = (
        f"Peak resident memory of `ebt-vision denoise` (the whole process) by photo size, defaults of each model.\n\n"
        f"{table}\n\n" + "\n".join(lines) + "\n\n"
        f"`MAX_FILE_PIXELS` must be at most {limit} megapixels (the smaller of the models' limits, extrapolated from "
        f"the sizes measured) for a budget of {budget} GiB (`DENOISE_MEMORY_GIB`). `--best-of N` divides it by N "
        f"(each start is a descent of the whole photo).\n"
    )
    meta = make_meta("cpu", 0, f"the astronaut photo resized to {', '.join(map(str, sizes))} megapixels, sigma "
                     f"{SIGMA:g} noise, 8-bit PNG", f"memory budget {budget} GiB", command)  # fmt: skip
    rows_json = [vars(r) for r in rows]
    return write_report(out, stem, meta, rows_json, body, fits=fits, budget_gib=budget)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebt_vision.experiments.image.photo_memory", description=__doc__)
    parser.add_argument("--out", default="runs/photo_memory", help="folder for the report")
    parser.add_argument("--sizes", type=float, nargs="+", default=list(SIZES), help="megapixels")
    parser.add_argument("--models", nargs="+", default=["ebt", "dit"], choices=["ebt", "dit"])
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "ebt_vision.experiments.image.photo_memory", *(argv or sys.argv[1:])])
    print(run(Path(args.out), tuple(args.sizes), tuple(args.models), command=command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
