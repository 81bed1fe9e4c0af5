"""Per-position values as pictures: an energy per patch, a gradient magnitude per pixel, an energy per token. A robust
colour range (one outlying patch must not wash the rest into one colour), perceptual colour maps, and a map drawn with
its colour bar and value labels. Used by the app and by ``ebt-vision denoise --save-energy-map``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def robust_range(values: Tensor) -> tuple[float, float]:
    """The 2nd and 98th percentiles: one outlying patch should not wash the rest of a map into one colour."""
    flat = values.detach().float().flatten()
    low, high = torch.quantile(flat, torch.tensor([0.02, 0.98])).tolist()
    return (low, high) if high > low else (float(flat.min()), float(flat.max()) + 1e-12)


def colorize(values: Tensor, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(h, w) -> (h, w, 3) uint8 through a perceptual matplotlib colour map; the range is robust unless given."""
    import matplotlib

    low, high = robust_range(values) if vmin is None or vmax is None else (vmin, vmax)
    array = values.detach().float().cpu().numpy()
    scaled = np.clip((array - low) / max(high - low, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def value_label(value: float) -> str:
    """A short label of a value for a picture: 3 significant digits, scientific notation from 10^4."""
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def render_map(values: Tensor, title: str = "", cmap: str = "viridis", height: int = 256) -> np.ndarray:
    """A map (h, w) as an RGB picture with a colour bar and its value labels: (height + margins, width, 3) uint8.

    Drawn with numpy and PIL, not a matplotlib figure: a handful of these per click must stay fast.
    """
    from PIL import Image, ImageDraw

    low, high = robust_range(values)
    scale = max(1, round(height / values.shape[0]))
    heat = np.kron(colorize(values, cmap, low, high), np.ones((scale, scale, 1), dtype=np.uint8))  # nearest upsampling
    h, w = heat.shape[:2]
    bar = colorize(torch.linspace(high, low, h)[:, None].expand(h, 12), cmap, low, high)
    canvas = Image.new("RGB", (w + 70, h + (18 if title else 4) + 4), "white")
    top = 18 if title else 4
    canvas.paste(Image.fromarray(heat), (0, top))
    canvas.paste(Image.fromarray(bar), (w + 6, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 2), title, fill="black")
    for fraction, value in ((0.0, high), (0.5, (low + high) / 2), (1.0, low)):
        draw.text((w + 21, top + round(fraction * (h - 10))), value_label(value), fill="black")
    return np.asarray(canvas)
