"""Transformer building blocks shared by the energy models and the plain baseline."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .config import TransformerConfig
from .ops import ATTENTION_BACKENDS, attention, gelu_tanh


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p); H and W must be multiples of p."""
    if images.shape[-2] % patch_size or images.shape[-1] % patch_size:
        raise ValueError(
            f"image size {images.shape[-2]}x{images.shape[-1]} is not a multiple of the patch size {patch_size}"
        )
    return rearrange(images, "b c (h p) (w q) -> b (h w) (c p q)", p=patch_size, q=patch_size)


def unpatchify(tokens: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """(B, N, C * p * p) -> (B, C, H, W), the inverse of ``patchify``."""
    return rearrange(tokens, "b (h w) (c p q) -> b c (h p) (w q)", h=height // patch_size, p=patch_size, q=patch_size)


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int, device=None, dtype=None) -> Tensor:
    """Fixed 2-D sin-cos positions for any grid: -> (gh * gw, dim). Half the channels encode rows, half columns."""
    if dim % 4:
        raise ValueError(f"width {dim} must be divisible by 4 for 2-D sin-cos positions")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    rows = torch.arange(grid_h, device=device, dtype=torch.float32)[:, None] * omega  # (gh, D/4)
    cols = torch.arange(grid_w, device=device, dtype=torch.float32)[:, None] * omega  # (gw, D/4)
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(grid_h, grid_w, 2 * quarter)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(grid_h, grid_w, 2 * quarter)
    return torch.cat([row_emb, col_emb], dim=-1).reshape(grid_h * grid_w, dim).to(dtype or torch.float32)


KeysValues = tuple[Tensor, Tensor]  # keys and values (B, h, M, d) of M tokens


class Attention(nn.Module):
    """Multi-head self-attention with an explicit backend (see ``ebt_vision.ops``).

    ``efficient`` and ``math`` work under a second-order graph (training through the descent); ``fused`` is
    PyTorch's kernel without a double backward. ``auto`` picks efficient in training mode and fused in eval mode.
    """

    def __init__(self, dim: int, heads: int, backend: str = "auto") -> None:
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        self.heads = heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, memory: KeysValues | None = None, keep: list | None = None
    ) -> Tensor:
        """(B, N, D) -> (B, N, D); ``mask`` (N, M + N) bool, True = may attend (e.g. causal).

        ``memory``: keys and values (B, h, M, d) of M earlier tokens that these tokens also attend to (placed before
        their own; a prefix computed once and reused, e.g. the real frames of a video while its candidate frames are
        descended). ``keep``: a list that receives this call's own (keys, values), to serve as a later memory.
        """
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        if keep is not None:
            keep.append((k, v))
        if memory is not None:
            k, v = torch.cat([memory[0], k], dim=2), torch.cat([memory[1], v], dim=2)  # (B, h, M + N, d)
        out = attention(q, k, v, mask, self.backend, self.training)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """(B, N, D), (B, D), (B, D) -> (B, N, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class GeluTanh(nn.Module):
    """``nn.GELU(approximate="tanh")`` with a cheap double backward (see ``ebt_vision.ops.gelu_tanh``)."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), GeluTanh(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """DiT-style transformer block with adaLN-Zero: the condition (B, D) sets shift, scale and gate per branch."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, attention: str = "auto") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self, x: Tensor, cond: Tensor, mask: Tensor | None = None, memory: KeysValues | None = None,
        keep: list | None = None,
    ) -> Tensor:  # fmt: skip
        """(B, N, D), (B, D) -> (B, N, D); ``memory`` and ``keep`` as in ``Attention``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).chunk(6, dim=-1)
        x = x + gate1[:, None, :] * self.attn(modulate(self.norm1(x), shift1, scale1), mask, memory, keep)
        return x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))


def adaln_blocks(cfg: TransformerConfig, one_pass: bool = False) -> nn.ModuleList:
    """The trunk's ``cfg.depth`` adaLN-Zero blocks. ``one_pass``: the trunk of a baseline that predicts in one forward
    pass, which needs no double backward, so ``auto`` attention is PyTorch's fused kernel, forward and backward."""
    attention = "fused" if one_pass and cfg.attention == "auto" else cfg.attention
    return nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, attention) for _ in range(cfg.depth))


def init_adaln_trunk(module: nn.Module, blocks: nn.ModuleList) -> None:
    """The one initialisation of every adaLN trunk (energy models and plain baselines): Xavier-uniform weights and
    zero biases for every Linear (as DiT does), then adaLN-Zero: each block's modulation zero, so every block starts
    as the identity. Output layers are initialised after it, by their owner."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    for block in blocks:
        nn.init.zeros_(block.ada[1].weight)
        nn.init.zeros_(block.ada[1].bias)


def init_residual_predictor(module: nn.Module, blocks: nn.ModuleList, head: nn.Linear) -> None:
    """``init_adaln_trunk``, then the output layer's weight zero: a baseline that predicts a residual on its input
    starts as the identity (the noisy image, the last frame)."""
    init_adaln_trunk(module, blocks)
    nn.init.zeros_(head.weight)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
