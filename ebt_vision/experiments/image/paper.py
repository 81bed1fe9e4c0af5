"""The original work's denoising protocol, faithfully (``ebt-vision paper``, reports/denoise_paper.*).

Diffusion noise x_t = sqrt(a) x0 + sqrt(1 - a) eps on the 1000-step linear-beta schedule. Every EBT trains at exactly
level 0.1 (t = 99) and descends from the noisy image; the DiT trains on t in [0, 100) with epsilon prediction. Both
are tested at level 0.1 (in distribution) and 0.2 (t = 199, out of distribution) on the held-out photos: settings are
chosen on the validation split and reported on the test split.

EBT variants: the original's (the energy sees only the candidate; the noisy image is only the starting point) and the
project's (the noisy image is a second input), each with the original's two training recipes (1 descent step, or 2-3
randomised steps with a jittered step size) and with the landscape recipe (``eq``: the residual energy and the
equilibrium objective); and the project's with the shipped denoiser's two-stage recipe (``warm``: a plain trunk, then
an EBT stage from it, in the same number of steps). The DiT runs deterministic DDIM from the level's own t to 0 with all
t + 1 passes, with fewer, and re-run twice more on its own output (the original's 600-pass setting at level 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ...core.config import ConfigError, with_overrides
from ...core.flops import count_flops
from ...core.inference import Thinking
from ...core.progress import progress as progress_bar
from ...core.reports import make_meta
from ...core.train import resolve_device
from ...image.config import ImageConfig
from ...image.data import training_photos
from ...image.dit import dit_denoise
from ...image.inference import denoise
from ...image.noise import NoiseLevel, alphas_cumprod, level_to_sigma, level_to_timestep
from ..contenders import compute_matched_config
from ..selection import SPLIT_SEED_OFFSET
from .compare.contenders import fit_model
from .compare.protocols import eval_images, score
from .paper_report import LEVELS, write_paper_report

EBT_STEPS = 4
DIT_PASSES = (1, 2, 5, 10, 25, 50, 0)  # 0 = all t + 1 passes
RERUNS = 3  # all passes, then twice more on the DiT's own output
COMPUTE_REFERENCE = "ebt-1"  # the EBT whose training FLOPs the compute-matched DiT gets
# Each training recipe as config overrides: the original's two, and the landscape issue's (``eq``: the residual energy
# trained by the equilibrium objective at points between the noisy and the clean image and at visited states, 1-2
# randomised steps of size ~1). No model here averages its weights, so the DiT needs none either.
RECIPES = {
    "1": ("descent.num_steps=1", "descent.min_steps=1", "descent.step_size_jitter=1.0"),
    "23": ("descent.num_steps=3", "descent.min_steps=2", "descent.step_size_jitter=2.0"),
    "eq": (
        "model.energy=residual",
        "descent.step_size=1.0",
        "descent.num_steps=2",
        "descent.min_steps=1",
        "descent.step_size_jitter=2.0",
        "train.objective=equilibrium",
        "train.equilibrium_visited=4",
    ),
}
# The shipped denoiser's two-stage recipe, within the same steps: the energy's trunk first
# trained as a plain one-pass denoiser (``<name>-trunk``), then the last WARM_SHARE of the steps as an EBT on 1-8 step
# descents of the residual energy read against the noisy image, started from the trunk (the 10:1 split and 1-8 step
# descents first shipped; the shipped stage is now shorter, on 1-4 steps: reports/warm_stage.md), at half the lr.
# Only with the noisy image as an input: the energy reads the candidate's change from it.
WARM_SHARE = 0.1
WARM = (
    "model.energy=residual",
    "model.relative_to_noisy=true",
    "descent.step_size=1.0",
    "descent.num_steps=8",
    "descent.min_steps=1",
    "descent.graph_steps=2",
    "descent.step_size_jitter=2.0",
    "train.objective=unrolled",
    "optim.warmup_steps=20",
)


def warm_configs(cfg: ImageConfig, run_root: Path) -> tuple[ImageConfig, ImageConfig]:
    """The warm recipe's two stages from the protocol's base config: (trunk, EBT stage started from it)."""
    if cfg.train.steps < 2:
        raise ConfigError(f"the warm recipe needs train.steps >= 2 (a trunk and an EBT stage), got {cfg.train.steps}")
    stage_steps = max(1, round(cfg.train.steps * WARM_SHARE))
    model = replace(cfg.model, noisy_context=True, sigma_conditioning=False)
    trunk = replace(cfg, name=f"{cfg.name}-ebt-ctx-warm-trunk", model=model,
                    train=replace(cfg.train, steps=cfg.train.steps - stage_steps))  # fmt: skip
    stage = with_overrides(replace(cfg, name=f"{cfg.name}-ebt-ctx-warm", model=model), WARM)
    start = str(run_root / "ebt-ctx-warm-trunk")
    stage = replace(stage, optim=replace(stage.optim, lr=cfg.optim.lr / 2),
                    train=replace(stage.train, steps=stage_steps, init_from=start))  # fmt: skip
    return trunk, stage


def paper_noise(clean: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) in [-1, 1] -> x_t at ``level`` (0.1 -> t 99, 0.2 -> t 199) on the linear schedule."""
    return NoiseLevel("diffusion", torch.full((clean.shape[0],), level)).add_to(clean, generator)


def model_configs(cfg: ImageConfig) -> dict[str, ImageConfig]:
    """The five models of the protocol from one base config (diffusion noise at exactly one level)."""
    data = cfg.data
    if data.noise != "diffusion" or data.level_min != data.level_max:
        raise ConfigError(
            "the paper protocol trains at one diffusion level: set data.noise: diffusion and "
            f"data.level_min = data.level_max (got {data.noise}, [{data.level_min}, {data.level_max}])"
        )
    out = {}
    for context in (False, True):
        for recipe, overrides in RECIPES.items():
            name = f"ebt{'-ctx' if context else ''}-{recipe}"
            model = replace(cfg.model, noisy_context=context, sigma_conditioning=False)
            out[name] = with_overrides(replace(cfg, name=f"{cfg.name}-{name}", model=model), overrides)
    out["dit"] = replace(cfg, name=f"{cfg.name}-dit", model=replace(cfg.model, sigma_conditioning=False))
    return out


def train_models(cfg: ImageConfig, run_root: str | Path, progress: bool = True) -> dict[str, dict]:
    """Train (or reuse when finished with the same config) every model on one crop stream."""
    photos, run_root = training_photos(cfg.data), Path(run_root)
    configs, out = model_configs(cfg), {}

    def fit(name: str, model_cfg: ImageConfig) -> None:
        contender = fit_model(name, model_cfg, photos, run_root, progress)
        out[name] = {"objective": contender.objective, "steps": contender.steps, "seconds": contender.seconds,
                     "params": contender.params, "step_flops": contender.step_flops}  # fmt: skip

    for name, model_cfg in configs.items():
        fit(name, model_cfg)
    trunk, stage = warm_configs(cfg, run_root)
    trunk_fit = fit_model("ebt-ctx-warm-trunk", trunk, photos, run_root, progress, kind="transformer")
    fit("ebt-ctx-warm", stage)
    # Its budget is both stages: their steps, time and mean FLOPs per step.
    warm = out["ebt-ctx-warm"]
    total = warm["step_flops"] * warm["steps"] + trunk_fit.step_flops * trunk_fit.steps
    warm["steps"] += trunk_fit.steps
    warm["step_flops"] = total / warm["steps"]
    warm["seconds"] += trunk_fit.seconds
    # The compute-matched DiT: as many training FLOPs as the cheapest EBT recipe (one descent step), more steps.
    ebt, dit = out[COMPUTE_REFERENCE], out["dit"]
    fit("dit-compute", compute_matched_config(configs["dit"], f"{cfg.name}-dit-compute", ebt["steps"],
                                              ebt["step_flops"], dit["step_flops"]))  # fmt: skip
    return out


def dit_passes(dit: nn.Module, x_t: Tensor, level: float, passes: int, reruns: int = 1) -> tuple[Tensor, int]:
    """DDIM from the level's own t with ``passes`` steps (0 = all t + 1), repeated ``reruns`` times on its own output:
    -> (x0 estimate, forward passes per image)."""
    t = level_to_timestep(level)
    scale = float(alphas_cumprod()[t].sqrt())
    current, total = x_t / scale, 0  # dit_denoise takes the Gaussian form x0 + u eps and scales it back to x_t
    for _ in range(reruns):
        current, counts = dit_denoise(dit, current, level_to_sigma(level), passes or None)
        total += counts[0]
    return current, total


def _per_image_flops(models: dict[str, dict], image: Tensor, level: float) -> dict[str, float]:
    """Measured FLOPs of one EBT descent step (forward + gradient to the candidate) and one DiT pass on one image."""
    out = {}
    for name, info in models.items():
        model = info["objective"]
        if name.startswith("dit"):
            out[name] = count_flops(lambda m=model: dit_denoise(m, image, level_to_sigma(level), 1))
        else:
            out[name] = count_flops(lambda m=model: denoise(m, image, Thinking(1, final_energy=False)))
    return out


@dataclass(frozen=True)
class PaperOptions:
    """The evaluation of ``ebt-vision paper``: held-out photos resized and centre-cropped to ``eval_size``, PSNR after
    each of 1..``ebt_steps`` EBT steps, the DiT at ``dit_passes`` DDIM passes (0 = all t + 1) and all passes run
    ``reruns`` times on its own output, noise ``seed``, the first ``limit`` photos of each split."""

    eval_size: int = 64
    ebt_steps: int = EBT_STEPS
    dit_passes: tuple[int, ...] = DIT_PASSES
    reruns: int = RERUNS
    seed: int = 0
    limit: int | None = None
    device: str = "auto"
    stem: str = "denoise_paper"


def evaluate(models: dict[str, dict], split: str, options: PaperOptions, progress: bool = True) -> list[dict]:
    """One row per (image, level, method, setting) on ``split``: PSNR, SSIM, passes and FLOPs per image."""
    names, clean = eval_images(split, options.eval_size, options.limit)
    ebt_steps, reruns = options.ebt_steps, options.reruns
    flops = _per_image_flops(models, clean[:1], LEVELS[0])
    rows = []

    def add(level, method, steps, estimates, forward, backward, gflops):
        for name, (p, s) in zip(names, score(estimates, clean), strict=True):
            rows.append({"eval_split": split, "noise_level": level, "timestep": level_to_timestep(level),
                         "split": "id" if level <= 0.1 else "ood", "image": name, "method": method, "steps": steps,
                         "forward_passes": forward, "backward_passes": backward, "gflops": round(gflops, 4),
                         "psnr": p, "ssim": s})  # fmt: skip

    for level in progress_bar(LEVELS, desc=f"paper protocol ({split})", disable=not progress):
        t = level_to_timestep(level)
        generator = torch.Generator().manual_seed(options.seed * 7919 + t + SPLIT_SEED_OFFSET[split])
        x_t = paper_noise(clean, level, generator)
        add(level, "noisy", 0, x_t, 0, 0, 0.0)
        for name, info in models.items():
            method = name.replace("-", "_")
            if name.startswith("dit"):
                for k in options.dit_passes:
                    estimate, count = dit_passes(info["objective"], x_t, level, k)
                    add(level, method, count, estimate, count, 0, count * flops[name] / 1e9)
                if reruns > 1:
                    estimate, count = dit_passes(info["objective"], x_t, level, 0, reruns)
                    add(level, f"{method}_x{reruns}", count, estimate, count, 0, count * flops[name] / 1e9)
                continue
            trajectory, _ = denoise(info["objective"], x_t, Thinking(ebt_steps, final_energy=False))
            for k in range(1, ebt_steps + 1):
                add(level, method, k, trajectory.candidates[k], k, k, k * flops[name] / 1e9)
    return rows


def run_paper(
    cfg: ImageConfig, runs: str | Path, out: str | Path, options: PaperOptions, progress: bool = True
) -> Path:
    """``ebt-vision paper``: train (or reuse) every model under ``runs``, evaluate on both splits, write the report
    (``<stem>.{md,json,png}``) to ``out``."""
    device = resolve_device(options.device if options.device != "auto" else cfg.train.device)
    cfg = with_overrides(cfg, [f"train.device={device}"]) if options.device != "auto" else cfg
    models = train_models(cfg, runs, progress)
    rows = [row for split in ("validation", "test") for row in evaluate(models, split, options, progress)]
    images = {s: len({r["image"] for r in rows if r["eval_split"] == s}) for s in ("validation", "test")}
    data = (
        f"train: {cfg.data.source} photos, {cfg.data.crop_size}px crops at diffusion level {cfg.data.level_max} "
        f"(t = {round(cfg.data.level_max * 1000) - 1}), one crop stream for all models; settings chosen on "
        f"{images['validation']} validation photos, reported on {images['test']} test photos ({options.eval_size}px)"
    )
    budget = f"each model {cfg.train.steps} steps of batch {cfg.data.batch_size}; " + ", ".join(
        f"{name} {info['seconds'] / 60:.1f} min" for name, info in models.items()
    )
    meta = make_meta(device, options.seed, data, budget)
    return write_paper_report(rows, models, meta, out, options.stem)
