"""``ebt-vision compare`` and ``quickstart``: train (or load) the contenders, evaluate on both splits, report."""

from __future__ import annotations

from pathlib import Path

from ....core.config import ConfigError, with_overrides
from ....core.reports import make_meta
from ....core.train import resolve_device
from ....image.config import ImageConfig
from .contenders import WARM, load_contenders, train_contenders
from .costs import pass_costs
from .protocols import CompareOptions, evaluate_gaussian, evaluate_paper_protocol
from .report import write_compare_report


def run_comparison(cfg: ImageConfig, runs: str | Path, out: str | Path, options: CompareOptions,
                   progress: bool = True) -> Path:  # fmt: skip
    """Train (or resume, or load) every contender under ``runs``, evaluate all of them on the validation and test
    splits, and write the report (settings chosen on validation, quoted on test) to ``out``."""
    if cfg.data.noise != "gaussian":
        raise ConfigError("compare trains on Gaussian noise (data.noise: gaussian); the diffusion-level protocol is "
                          "evaluated on those models as a second table")  # fmt: skip
    device = resolve_device(options.device if options.device != "auto" else cfg.train.device)
    if options.load:
        contenders = load_contenders(runs, device)
    else:
        run_cfg = cfg if options.device == "auto" else with_overrides(cfg, [f"train.device={device}"])
        contenders = train_contenders(run_cfg, runs, progress=progress, warm=options.warm)
    costs = pass_costs(contenders["ebt"].objective, contenders["dit"].objective)
    if WARM in contenders:
        warm = pass_costs(contenders[WARM].objective, contenders["dit"].objective)
        costs.update({"ebt_warm_forward": warm["ebt_forward"], "ebt_warm_backward": warm["ebt_backward"]})
    rows = []
    for split in ("validation", "test"):
        rows += evaluate_gaussian(contenders, costs, split, options, progress)
        if options.with_paper_protocol:
            rows += evaluate_paper_protocol(contenders, costs, split, options)
    first = contenders["ebt"]
    images = {s: len({r["image"] for r in rows if r["eval_split"] == s}) for s in ("validation", "test")}
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops, sigma U[{cfg.data.sigma_min:g}, "
        f"{cfg.data.sigma_max:g}], one crop stream for all models; settings chosen on {images['validation']} "
        f"validation photos, reported on {images['test']} test photos, resized and centre-cropped to "
        f"{options.eval_size}x{options.eval_size}, the same noise for every method"
    )
    budget = (
        f"step-matched: {first.steps} steps of batch {cfg.data.batch_size} ({first.steps * cfg.data.batch_size} crops) "
        f"each; compute-matched DiT: {contenders['dit-compute'].steps} steps (the blind EBT's training FLOPs); "
        + (f"warm EBT: {contenders[WARM].steps_label} steps (trunk as a plain denoiser, then EBT; the blind EBT's "
           "training FLOPs); " if WARM in contenders else "")
        + ", ".join(f"{c.name} {c.train_seconds / 60:.1f} min" for c in contenders.values())
    )  # fmt: skip
    meta = make_meta(device, options.seed, data, budget)
    return write_compare_report(rows, contenders, costs, meta, out, options.stem, max(options.best_of))
