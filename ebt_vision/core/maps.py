"""Per-position values as pictures: an energy per patch, a gradient magnitude per pixel, an energy per token. A robust
colour range (one outlying patch must not wash the rest into one colour), perceptual colour maps, and a map drawn with
its colour bar and value labels. Used by the app and by ``ebt-vision denoise --save-energy-map``."""

from __future__ import annotations

import math

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


# A map whose values differ by less than this fraction of their size shows rounding, not where the model is unsure:
# an energy is defined up to a constant, and float32 sums over hundreds of positions keep about 6 digits.
NEGLIGIBLE_SPREAD = 1e-3


def range_labels(low: float, high: float, count: int = 3) -> list[str]:
    """Labels of ``count`` evenly spaced values from ``high`` down to ``low`` (a colour bar's ticks), with as many
    significant digits as it takes to tell neighbours apart: -1.1012 / -1.1005 / -1.0998, never -1.1 three times."""
    values = [high - (high - low) * i / max(count - 1, 1) for i in range(count)]
    step = abs(high - low) / max(count - 1, 1)
    magnitude = max(abs(low), abs(high))
    if step == 0 or magnitude == 0:
        return [value_label(value) for value in values]
    digits = min(10, max(3, math.ceil(math.log10(magnitude / step)) + 2))
    return [f"{value:.{digits}g}" for value in values]


def distinct_labels(values: list[float]) -> list[str]:
    """Each value with as many significant digits as it takes to tell the closest two apart (at least 3, at most
    10): per-frame energies of -1.1012, -1.1005 read so, not as -1.1 each."""
    gaps = [b - a for a, b in zip(sorted(values), sorted(values)[1:], strict=False) if b > a]
    magnitude = max((abs(v) for v in values), default=0.0)
    if not gaps or magnitude == 0 or not math.isfinite(magnitude):
        return [value_label(v) for v in values]
    digits = min(10, max(3, math.ceil(math.log10(magnitude / min(gaps))) + 1))
    return [f"{v:.{digits}g}" for v in values]


def relative_spread(low: float, high: float) -> float:
    """The range as a fraction of the values' size (0 for a constant map)."""
    magnitude = max(abs(low), abs(high))
    return abs(high - low) / magnitude if magnitude > 0 else 0.0


def spread_note(values: Tensor, what: str) -> str | None:
    """A sentence for the UI when ``values`` (a map's energies) spread too little to mean anything, else None."""
    low, high = robust_range(values)
    spread = relative_spread(low, high)
    if spread >= NEGLIGIBLE_SPREAD:
        return None
    return (f"the {what} differ by only {spread:.1e} of their size (range {low:.6g} to {high:.6g}): too small to "
            "mean anything, so its colours show rounding, not uncertainty")  # fmt: skip


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
    labels = range_labels(low, high, 3)
    label_width = max(49, 6 * max(map(len, labels)) + 4)  # PIL's default font: about 6 px a character
    canvas = Image.new("RGB", (w + 21 + label_width, h + (18 if title else 4) + 4), "white")
    top = 18 if title else 4
    canvas.paste(Image.fromarray(heat), (0, top))
    canvas.paste(Image.fromarray(bar), (w + 6, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 2), title, fill="black")
    for fraction, label in zip((0.0, 0.5, 1.0), labels, strict=True):
        draw.text((w + 21, top + round(fraction * (h - 10))), label, fill="black")
    return np.asarray(canvas)
