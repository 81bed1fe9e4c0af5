"""The evaluation: every method and setting rolls out the same held-out clips (context frames in, the rest out), scored
per horizon step; the EBT's energies are checked as an uncertainty signal against the real errors.

A *setting* is what a user picks at test time: the DiT's DDIM step count; the EBT's number of descent steps (more
than trained = "thinking longer"), energy-based stopping, best-of-N. Costs are per predicted frame of one clip:
forward and backward passes through the method's network, and measured FLOPs (``costs.frame_flops``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...core.inference import Thinking
from ...core.progress import progress as progress_bar
from ...video.config import VideoConfig
from ...video.data import held_out
from ...video.metrics import energy_uncertainty, frame_errors, patch_errors
from ...video.rollout import Rollout, copy_last_frame, extrapolate_frames
from ..contenders import Contender
from ..selection import SPLIT_SEED_OFFSET
from .costs import counting_copy, frame_flops


@dataclass(frozen=True)
class Setting:
    """One way of predicting: a row's ``method``, the contender it runs (None: no model), its steps and candidates."""

    method: str
    model: str | None
    steps: int
    n_candidates: int | None = None
    gain: float | None = None  # linear extrapolation: the fraction of the last change that continues (or its cap)

    @property
    def label(self) -> str:
        if self.gain is not None:
            return f"{self.method} (a={self.gain:g})"
        return f"{self.method}@{self.steps}" + (f" (N={self.n_candidates})" if self.n_candidates else "")

    def predict(self, model: nn.Module | None, context: Tensor, horizon: int, seed: int, maps: bool) -> Rollout:
        """Roll ``context`` (B, T, C, H, W) out ``horizon`` frames; ``maps``: the EBT's energies and maps too."""
        if self.gain is not None:
            return extrapolate_frames(context, horizon, self.gain, adaptive=self.method == "extrapolate_adaptive")
        if self.model is None:
            return copy_last_frame(context, horizon)
        if self.method.startswith("transformer"):
            return model.rollout(context, horizon)
        if self.method.startswith("dit"):
            return model.rollout(context, horizon, self.steps, seed=seed)
        thinking = Thinking(self.steps, n_candidates=self.n_candidates or 1,
                            stop_when_energy_rises=self.method == "ebt_stop")  # fmt: skip
        return model.rollout(context, horizon, thinking, seed=seed, energy_maps=maps)


@dataclass(frozen=True)
class EvalOptions:
    ebt_steps: int = 8  # EBT rollouts with 1..ebt_steps descent steps per frame, and stopping at ebt_steps
    dit_steps: tuple[int, ...] = (1, 2, 5, 10, 25)
    best_of: tuple[int, ...] = (2, 4)
    extrapolate: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # gains of the linear-extrapolation baseline
    limit: int | None = None  # clips per split (None: all)
    batch: int = 64  # clips rolled out together
    seed: int = 0


def settings(contenders: dict[str, Contender], cfg: VideoConfig, options: EvalOptions) -> list[Setting]:
    """Every setting of every contender (and copy-last-frame) that the evaluation runs."""
    found = [Setting("copy_last", None, 0)]
    found += [Setting(method, None, 0, gain=a) for method in ("extrapolate", "extrapolate_adaptive")
              for a in options.extrapolate]  # fmt: skip
    found.append(Setting("transformer", "transformer", 1))
    if "transformer-compute" in contenders:
        found.append(Setting("transformer_compute", "transformer-compute", 1))
    for name, method in (("dit", "dit_ddim"), ("dit-compute", "dit_compute_ddim")):
        if name in contenders:
            found += [Setting(method, name, k) for k in options.dit_steps]
    if contenders["ebt"].objective.guesses:  # its one-pass guess alone, without a descent step
        found.append(Setting("ebt_guess", "ebt", 0))
    found += [Setting("ebt", "ebt", k) for k in range(1, options.ebt_steps + 1)]
    found.append(Setting("ebt_stop", "ebt", options.ebt_steps))
    found += [Setting("ebt_best_of_n", "ebt", cfg.descent.num_steps, n) for n in options.best_of]
    return found


def setting_costs(contenders: dict[str, Contender], cfg: VideoConfig, found: list[Setting]) -> dict[str, float]:
    """GFLOPs per predicted frame of every setting (label -> GFLOP), measured on one clip."""
    counted = {name: counting_copy(c.objective).eval() for name, c in contenders.items()}
    costs = {}
    for setting in found:
        model = counted[setting.model] if setting.model else None
        flops = frame_flops(model, lambda m, x, s=setting: s.predict(m, x, cfg.horizon, 0, False), cfg)
        costs[setting.label] = flops / 1e9
    return costs


@dataclass
class SplitResult:
    rows: list[dict]  # one per (setting, horizon step): means over clips
    uncertainty: list[dict]  # one per EBT setting: energy-error correlations
    names: list[str]  # the clips evaluated


def _roll_out(setting: Setting, model, clips: Tensor, cfg: VideoConfig, options: EvalOptions, seed: int):
    """Rollouts of ``clips`` in batches -> (per-clip metrics {name: (N, H)}, energies, maps, patch errors, passes)."""
    context_frames, p = cfg.data.context_frames, cfg.model.patch_size
    metrics, energies, maps, patch_error, passes = [], [], [], [], (0, 0)
    for i, start in enumerate(range(0, len(clips), options.batch)):
        batch = clips[start : start + options.batch]
        rollout = setting.predict(model, batch[:, :context_frames], cfg.horizon, seed + i, True)
        truth = batch[:, context_frames:]
        prediction = rollout.predictions.cpu()
        metrics.append(frame_errors(prediction, truth))
        if rollout.energies is not None:
            energies.append(rollout.energies.cpu())
            maps.append(rollout.energy_maps.cpu())
            patch_error.append(patch_errors(prediction, truth, p))
        passes = (rollout.forward_passes, rollout.backward_passes)
    merged = {key: torch.cat([m[key] for m in metrics]) for key in metrics[0]}
    if not energies:
        return merged, None, passes
    return merged, (torch.cat(energies), torch.cat(maps), torch.cat(patch_error)), passes


def evaluate_split(
    contenders: dict[str, Contender],
    cfg: VideoConfig,
    split: str,
    found: list[Setting],
    costs: dict[str, float],
    options: EvalOptions,
    progress: bool = True,
) -> SplitResult:
    """Every setting on the held-out ``split``: per-horizon rows and the EBT's energy-uncertainty correlations."""
    names, clips = held_out(cfg, split)
    names, clips = names[: options.limit], clips[: options.limit]
    seed = options.seed + SPLIT_SEED_OFFSET[split]
    rows, uncertainty = [], []
    for setting in progress_bar(found, desc=f"video eval ({split})", disable=not progress, unit="setting"):
        model = contenders[setting.model].objective if setting.model else None
        metrics, energy, (forward, backward) = _roll_out(setting, model, clips, cfg, options, seed)
        base = {"eval_split": split, "method": setting.method, "steps": setting.steps}
        if setting.n_candidates:
            base["n_candidates"] = setting.n_candidates
        if setting.gain is not None:
            base["gain"] = setting.gain
        cost = {"forward_passes": forward, "backward_passes": backward, "gflops_per_frame": costs[setting.label]}
        for h in range(cfg.horizon):
            means = {key: float(values[:, h].mean()) for key, values in metrics.items()}
            rows.append({**base, "horizon": h + 1, **means, **cost, "clips": len(names)})
        if energy is not None:
            energies, maps, patch_error = energy
            uncertainty.append({**base, **energy_uncertainty(energies, metrics["mse"], maps, patch_error)})
    return SplitResult(rows, uncertainty, names)


def predictions_for_strips(
    contenders: dict[str, Contender], cfg: VideoConfig, chosen: dict[str, Setting], count: int, seed: int = 0
) -> dict[str, Tensor]:
    """The first ``count`` test clips rolled out by each chosen setting: {label: (count, T, C, H, W)} with the truth
    first (real context frames followed by each method's predictions)."""
    clips = held_out(cfg, "test")[1][:count]
    context = clips[:, : cfg.data.context_frames]
    rows = {"truth": clips}
    for label, setting in chosen.items():
        model = contenders[setting.model].objective if setting.model else None
        predicted = setting.predict(model, context, cfg.horizon, seed + SPLIT_SEED_OFFSET["test"], False).predictions
        rows[label] = torch.cat([context, predicted.cpu()], dim=1)
    return rows
