"""The GPU check of the streaming photo loader at the original work's scale (``scripts/gpu-data-check.sh``): a few
hundred steps of ``configs/coco-128.yaml`` (the 24-block, width-1536 image EBT, bf16, 8 workers) on a generated tree
of COCO-sized JPEGs; prints and writes steps/s, the data-wait fraction and the peak GPU memory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...core.config import load_config
from ...core.paths import resolve_path
from ...core.reports import describe_machine
from ...image.training import train_model
from .generate import photo_tree
from .measure import metrics_rows


def gpu_check(tmp: Path, photos: int, steps: int, workers: int, overrides: list[str]) -> dict:
    started = time.perf_counter()
    tree = photo_tree(tmp / "photos", photos)
    generated = time.perf_counter() - started
    sets = [f"data.source={tree}", f"data.workers={workers}", f"train.steps={steps}", "train.log_every=25",
            f"train.checkpoint_every={steps}", *overrides]  # fmt: skip
    cfg = load_config(resolve_path("configs/coco-128.yaml"), sets)
    run = tmp / "run"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train_model(cfg, run, resume=True)
    rows = metrics_rows(run)[1:]  # the first interval holds the worker start and the first compilation
    figures = {
        "machine": describe_machine(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "photos": photos, "workers": workers, "steps": result.step, "batch_per_process": cfg.data.batch_size,
        "generation_s": generated, "train_s": result.seconds,
        "steps_per_s": float(np.median([r["samples_per_s"] for r in rows])) / cfg.data.batch_size if rows else None,
        "samples_per_s": float(np.median([r["samples_per_s"] for r in rows])) if rows else None,
        "data_wait": float(np.mean([r["data_wait"] for r in rows])) if rows else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "overrides": sets,
    }  # fmt: skip
    (tmp / "gpu-data-check.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tmp", default="/tmp/ebt-gpu-data")
    parser.add_argument("--photos", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="config override (e.g. a smaller model)")
    args = parser.parse_args(argv)
    print(json.dumps(gpu_check(Path(args.tmp), args.photos, args.steps, args.workers, args.set), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
