"""Classical baseline on the same images: CBM3D from the ``bm3d`` package.

Grey held-out photos are RGB images with three equal channels and independent noise per channel; CBM3D's opponent
colour transform averages the channels into its luminance, so it is the strong (fair) choice for those too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def cbm3d_denoise(noisy: Tensor, sigma_255: float) -> Tensor:
    """(3, H, W) noisy in [-1, 1] -> (3, H, W) estimate in [-1, 1].

    CBM3D is told the true sigma (it is non-blind), an advantage over a blind EBT that the reports state.
    """
    import bm3d

    if noisy.dim() != 3 or noisy.shape[0] != 3:
        raise ValueError(f"expected one RGB image (3, H, W), got {tuple(noisy.shape)}")
    unit = ((noisy.detach().cpu().float() + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)  # (H, W, 3) in [0, 1]
    out = bm3d.bm3d_rgb(unit, sigma_255 / 255.0)
    return torch.from_numpy(np.asarray(out, dtype=np.float32)).permute(2, 0, 1) * 2 - 1
