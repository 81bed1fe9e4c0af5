"""Draw docs/architecture.png, the README's picture of how an EBT predicts: the energy network and the descent on
the candidate, and the packages built around them. ``python scripts/architecture-figure.py``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "architecture.png"


def box(ax, x, y, w, h, text, colour, size=9.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec="0.3"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, wrap=True)


def arrow(ax, start, end, text="", colour="0.25", style="-|>", rad=0.0, offset=(0, 0.12)):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=colour, lw=1.4,
                                 connectionstyle=f"arc3,rad={rad}"))  # fmt: skip
    if text:
        mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="bottom", fontsize=8.5, color=colour)


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    # the energy network
    box(ax, 0.2, 3.0, 1.9, 0.8, "context\n(noisy photo, past frames,\nprevious tokens)", "#e8eef8", 8.5)
    box(ax, 0.2, 1.6, 1.9, 0.8, "candidate x_k\n(start: noisy photo,\nlast frame, uniform logits)", "#fdf1dc", 8.5)
    box(ax, 2.7, 2.2, 1.7, 1.0, "patch / token\nembedding\n+ positions", "#eeeeee")
    box(ax, 4.9, 2.2, 2.0, 1.0, "transformer blocks\n(adaLN-Zero; causal\nfor video and text)", "#eeeeee")
    box(ax, 7.4, 2.2, 1.3, 1.0, "energy head\nE per patch,\nframe or token", "#eeeeee", 8.5)
    box(ax, 9.2, 2.3, 1.6, 0.8, "E(context, x_k)\n(summed)", "#f6e3e3")
    arrow(ax, (2.1, 3.4), (2.7, 2.9))
    arrow(ax, (2.1, 2.0), (2.7, 2.5))
    arrow(ax, (4.4, 2.7), (4.9, 2.7))
    arrow(ax, (6.9, 2.7), (7.4, 2.7))
    arrow(ax, (8.7, 2.7), (9.2, 2.7))
    # the descent
    arrow(ax, (10.0, 2.3), (2.1, 1.75), colour="#b04a00", rad=-0.25)
    ax.text(6.2, 1.55, "descent: x_{k+1} = x_k - step size * dE/dx_k\n(K steps; training backpropagates through them)",
            ha="center", va="top", fontsize=9, color="#b04a00")  # fmt: skip
    box(ax, 0.2, 0.15, 1.9, 0.55, "prediction x_K", "#dff0dc")
    arrow(ax, (1.15, 1.6), (1.15, 0.7))
    ax.text(2.4, 0.32, "more steps, best-of-N by lowest energy, stop when E stops falling, energy = uncertainty",
            fontsize=8.5, va="center", color="0.25")  # fmt: skip
    ax.text(5.5, 4.3, "one descent core (ebt_vision.core) · image, video and text workloads on it · "
            "experiments, app and CLI on those", ha="center", fontsize=9.5, color="0.2")  # fmt: skip
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(OUT)


if __name__ == "__main__":
    main()
