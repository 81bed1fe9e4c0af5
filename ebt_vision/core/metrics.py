"""Image quality metrics on 0-255 pixels, clamped, as denoising papers report them. Pure tensor functions."""

from __future__ import annotations

import torch
from torch import Tensor


def _to_255(image: Tensor) -> Tensor:
    """[-1, 1] -> [0, 255], clamped and rounded to 8-bit levels (what a saved image would hold)."""
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round()


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """(B, C, H, W), (B, C, H, W) in [-1, 1] -> (B,) PSNR in dB on clamped 0-255 pixels."""
    if prediction.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    pred, ref = _to_255(prediction), _to_255(target)
    import kornia  # here: half a second of start-up that denoise and the app's import need not pay

    return torch.stack([kornia.metrics.psnr(p, r, max_val=255.0) for p, r in zip(pred, ref, strict=True)])


def ssim(prediction: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """(B, C, H, W), (B, C, H, W) in [-1, 1] -> (B,) mean SSIM (Gaussian window 11, sigma 1.5) on 0-255 pixels."""
    if prediction.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    if min(prediction.shape[2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(prediction.shape[2:])}")
    import kornia

    ssim_map = kornia.metrics.ssim(_to_255(prediction) / 255.0, _to_255(target) / 255.0, window, padding="valid")
    return ssim_map.flatten(1).mean(dim=1)
