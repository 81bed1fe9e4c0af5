"""Bidirectional image EBT: (noisy image = context, candidate image) -> one energy per image."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .layers import Block, init_linear_layers, patchify, sincos_position_embedding


def check_image_pair(context: Tensor, candidate: Tensor, channels: int, patch_size: int) -> None:
    """Clear errors for shapes the model cannot take."""
    if context.dim() != 4 or candidate.dim() != 4:
        raise ValueError(
            f"expected images of shape (B, C, H, W), got {tuple(context.shape)} and {tuple(candidate.shape)}"
        )
    if context.shape != candidate.shape:
        raise ValueError(f"context {tuple(context.shape)} and candidate {tuple(candidate.shape)} differ in shape")
    _, c, h, w = context.shape
    if c != channels:
        raise ValueError(f"the model takes {channels}-channel images, got {c} channels")
    if h < patch_size or w < patch_size:
        raise ValueError(f"image {h}x{w} is smaller than one {patch_size}x{patch_size} patch")
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}; crop or pad it first")


class ImageEBT(nn.Module):
    """A transformer over patches of [context, candidate] whose head gives one energy per patch.

    The image energy is the SUM of the per-patch energies (``forward``); ``patch_energies`` keeps them apart for
    energy maps. Summing (rather than the mean used in the original work) makes dE/dpixel, and so the step size,
    independent of the number of patches: a model trained on small crops descends full photos at the same scale.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, p = cfg.width, cfg.patch_size
        self.embed = nn.Linear(2 * cfg.channels * p * p, width)  # context and candidate pixels of one patch
        self.condition = nn.Parameter(torch.randn(width) * 0.02)  # the one learned adaLN condition
        self.blocks = nn.ModuleList(Block(width, cfg.heads, cfg.mlp_ratio, cfg.attention) for _ in range(cfg.depth))
        # No affine in the norm and no bias in the head: a candidate-independent shift of the energy gets no gradient.
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(width, 1, bias=False)
        init_linear_layers(self)
        for block in self.blocks:
            nn.init.zeros_(block.ada[1].weight)
            nn.init.zeros_(block.ada[1].bias)
        nn.init.zeros_(self.head.weight)

    def tokens(self, context: Tensor, candidate: Tensor, depth: int | None = None) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B, N, D) after ``depth`` blocks (all by default)."""
        check_image_pair(context, candidate, self.cfg.channels, self.cfg.patch_size)
        p = self.cfg.patch_size
        grid_h, grid_w = context.shape[2] // p, context.shape[3] // p
        x = self.embed(torch.cat([patchify(context, p), patchify(candidate, p)], dim=-1))
        x = x + sincos_position_embedding(grid_h, grid_w, self.cfg.width, x.device, x.dtype)
        cond = self.condition.to(x.dtype).expand(x.shape[0], -1)
        for block in self.blocks[:depth]:
            x = block(x, cond)
        return x

    def patch_energies(self, context: Tensor, candidate: Tensor) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B, H/p, W/p) energy per patch."""
        p = self.cfg.patch_size
        energies = self.head(self.final_norm(self.tokens(context, candidate))).squeeze(-1)  # (B, N)
        return energies.reshape(context.shape[0], context.shape[2] // p, context.shape[3] // p)

    def forward(self, context: Tensor, candidate: Tensor) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B,): the sum of per-patch energies."""
        return self.patch_energies(context, candidate).sum(dim=(1, 2))

    def features(self, context: Tensor, candidate: Tensor | None = None, depth: int | None = None) -> Tensor:
        """(B, C, H, W) -> (B, D): mean-pooled tokens for linear probing; the candidate defaults to the context."""
        tokens = self.tokens(context, context if candidate is None else candidate, depth)
        return tokens.mean(dim=1)
