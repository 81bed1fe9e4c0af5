"""Video prediction metrics per horizon step, and the energy as an uncertainty signal. Pure tensor functions.

MSE and MAE follow OpenSTL's convention so the numbers compare with its published tables: pixels in [0, 1] (the
prediction clamped), the squared or absolute error SUMMED over the pixels of a frame (C x H x W), then averaged over
frames and clips. PSNR and SSIM are the project's (``core.metrics``: clamped 8-bit pixels, SSIM with an 11-pixel
Gaussian window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor

from ..core.metrics import psnr, ssim


def _unit(frames: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((frames.float().clamp(-1, 1) + 1) / 2).cpu()


def _check(prediction: Tensor, truth: Tensor) -> None:
    if prediction.shape != truth.shape or prediction.dim() != 5:
        raise ValueError(
            f"expected predictions and truth of one shape (B, H, C, h, w), got {tuple(prediction.shape)} and "
            f"{tuple(truth.shape)}"
        )


def frame_errors(prediction: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """(B, H, C, h, w) x2 in [-1, 1] -> {"mse", "mae", "psnr", "ssim"}: each (B, H), per clip and horizon step.

    ``mse``/``mae`` in OpenSTL's convention (summed over a frame's pixels on [0, 1]); average them over clips for
    the per-step numbers, and over steps too for the usual single number.
    """
    _check(prediction, truth)
    pred, true = _unit(prediction), _unit(truth)
    batch, horizon = pred.shape[:2]
    flat_pred, flat_true = prediction.flatten(0, 1).float().cpu(), truth.flatten(0, 1).float().cpu()
    return {
        "mse": ((pred - true) ** 2).flatten(2).sum(2),
        "mae": (pred - true).abs().flatten(2).sum(2),
        "psnr": psnr(flat_pred, flat_true).reshape(batch, horizon),
        "ssim": ssim(flat_pred, flat_true).reshape(batch, horizon),
    }


def patch_errors(prediction: Tensor, truth: Tensor, patch_size: int) -> Tensor:
    """(B, H, C, h, w) x2 -> (B, H, h/p, w/p): the squared error on [0, 1] summed over each patch's pixels (the unit
    the EBT's energy maps are given in)."""
    _check(prediction, truth)
    squared = ((_unit(prediction) - _unit(truth)) ** 2).sum(2)  # (B, H, h, w)
    pooled = F.avg_pool2d(squared.flatten(0, 1)[:, None], patch_size)[:, 0] * patch_size**2
    return pooled.reshape(*squared.shape[:2], *pooled.shape[1:])


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two equally long samples; NaN when either is constant."""
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x * y).sum().item() / denominator) if denominator > 0 else float("nan")


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation (ties get their average rank); NaN when either is constant."""
    ranks = [torch.from_numpy(rankdata(v.flatten().double().cpu().numpy())) for v in (x, y)]
    return pearson(*ranks)


def energy_uncertainty(
    energies: Tensor, errors: Tensor, patch_energies: Tensor | None = None, patch_error: Tensor | None = None
) -> dict[str, float]:
    """How well the energy ranks errors: correlations of per-frame energies (B, H) with per-frame MSE (B, H), pooled
    over clips and horizon steps and within each step (averaged over steps: the horizon alone raises both), and of
    per-patch energies (B, H, h, w) with per-patch squared errors when given."""
    energies, errors = energies.detach().float().cpu(), errors.detach().float().cpu()
    within = [spearman(energies[:, h], errors[:, h]) for h in range(energies.shape[1])] if len(energies) > 1 else []
    result = {
        "frame_pearson": pearson(energies, errors),
        "frame_spearman": spearman(energies, errors),
        "frame_spearman_within_step": float(torch.tensor(within).nanmean()) if within else float("nan"),
    }
    if patch_energies is not None and patch_error is not None:
        result["patch_pearson"] = pearson(patch_energies.detach().float().cpu(), patch_error)
        result["patch_spearman"] = spearman(patch_energies.detach().float().cpu(), patch_error)
    return result
