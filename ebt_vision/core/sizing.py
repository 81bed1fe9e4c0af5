"""Sizing a baseline to an EBT's parameter count by its width and depth: the one rule both DiT baselines follow.

diffusers' DiT blocks hold about twice the parameters of a plain block of the same width (each carries its own
adaLN-Zero modulation), so a DiT built at the EBT's width would be far larger (docs/design.md, trap 8). Widths come in
steps of 4 (diffusers' 2-D sin-cos positions need it), and at small widths one step moves the count by several
percent, so the depth is free too: among the allowed depths, the one nearest the EBT's whose closest width is within
2% of the target, else the closest count of all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .layers import count_parameters

TOLERANCE = 0.02  # relative parameter-count difference that counts as matched
WIDTH_STEP = 4


class ParameterCount:
    """Parameters of ``build(depth, width)`` for any depth and width, from two small builds per width on the meta
    device: blocks are identical, so the count is exactly (parameters outside the blocks) + depth x (per block)."""

    def __init__(self, build: Callable[[int, int], nn.Module]) -> None:
        self.build = build
        self.per_width: dict[int, tuple[int, int]] = {}

    def __call__(self, depth: int, width: int) -> int:
        if width not in self.per_width:
            with torch.device("meta"):
                one, two = (count_parameters(self.build(d, width)) for d in (1, 2))
            self.per_width[width] = (one - (two - one), two - one)
        outside, per_block = self.per_width[width]
        return outside + depth * per_block


def closest_width(count: Callable[[int, int], int], depth: int, target: int, max_width: int) -> tuple[float, int]:
    """(relative error, width) of the multiple of ``WIDTH_STEP`` up to ``max_width`` whose count at ``depth`` is
    closest to ``target`` (bisection: the count grows with the width)."""
    low, high = 1, max(1, max_width // WIDTH_STEP)  # in units of WIDTH_STEP
    while low < high:  # the smallest width with at least ``target`` parameters
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(depth, WIDTH_STEP * mid) < target else (low, mid)
    return min((abs(count(depth, WIDTH_STEP * u) - target) / target, WIDTH_STEP * u) for u in (max(1, low - 1), low))


def matched_size(
    build: Callable[[int, int], nn.Module], target: int, depth: int, heads: int, max_width: int, depths: Iterable[int]
) -> tuple[int, int, int]:
    """(depth, heads, head size) of ``build(depth, width)`` matched to ``target`` parameters: among ``depths``, the
    one nearest ``depth`` (the EBT's) whose closest width is within ``TOLERANCE``, else the closest count of all;
    heads = the divisor of the width nearest ``heads`` (the EBT's head count)."""
    count = ParameterCount(build)
    options = [(*closest_width(count, d, target, max_width), d) for d in depths if d >= 1]
    within = [option for option in options if option[0] <= TOLERANCE]
    _, width, chosen = min(within, key=lambda o: (abs(o[2] - depth), o[0])) if within else min(options)
    head_count = min((h for h in range(1, width + 1) if width % h == 0), key=lambda h: abs(h - heads))
    return chosen, head_count, width // head_count
