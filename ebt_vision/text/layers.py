"""Transformer++ blocks (RMSNorm, SwiGLU, rotary positions) shared by the text EBT and its baseline.

timm supplies the pieces: ``RmsNorm``, ``SwiGLU`` and ``RotaryEmbeddingCat`` (1-D, language-model frequencies
``10000^(-2i/d)`` over integer positions); all are plain differentiable ops, so autograd can differentiate them
twice. Attention goes through ``core.ops.attention`` with an explicit mask, whose ``efficient`` backend keeps the
fused forward and a cheap double backward (docs/design.md, trap 1): the EBT trains through its descent with it, the
baseline uses the fused kernel. One block class for both models makes their parameter counts match by construction.
"""

from __future__ import annotations

import torch
from timm.layers import RmsNorm, RotaryEmbeddingCat, SwiGLU, apply_rot_embed_cat
from torch import Tensor, nn

from ..core.ops import ATTENTION_BACKENDS, attention


class Rotary(nn.Module):
    """Rotary position table: length P -> (P, 2 * head_dim), concatenated sin and cos of positions 0..P-1."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        # timm's axial rotary embedding gives dim / 4 bands per axis; 1-D positions with dim = 2 * head_dim give
        # head_dim / 2 frequencies, each applied to a pair of channels: standard RoPE.
        self.embedding = RotaryEmbeddingCat(dim=2 * head_dim, in_pixels=False)

    def forward(self, length: int, device: torch.device | str) -> Tensor:
        return self.embedding.get_embed([length]).to(device)


KeysValues = tuple[Tensor, Tensor]  # keys and values (B, h, M, d) of M tokens, rotary positions applied to the keys


class RotaryAttention(nn.Module):
    """Multi-head attention with rotary positions on queries and keys, no biases (as in Transformer++), over the
    tokens themselves and, optionally, a memory of other tokens' keys and values."""

    def __init__(self, dim: int, heads: int, backend: str = "auto") -> None:
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        self.heads, self.backend = heads, backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: Tensor, rope: Tensor, mask: Tensor | None, memory: KeysValues | None = None
    ) -> tuple[Tensor, KeysValues]:
        """(B, N, D), (N, 2 * head_dim), mask (N, M + N) bool (True = may attend; the memory's M keys first) ->
        (B, N, D) and this call's own keys and values (B, h, N, d)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        q, k = apply_rot_embed_cat(q, rope).type_as(v), apply_rot_embed_cat(k, rope).type_as(v)
        keys, values = (k, v) if memory is None else (torch.cat([memory[0], k], 2), torch.cat([memory[1], v], 2))
        out = attention(q, keys, values, mask, self.backend, self.training)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)), (k, v)


class Block(nn.Module):
    """Pre-norm Transformer++ block: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, attention_backend: str = "auto") -> None:
        super().__init__()
        self.norm1 = RmsNorm(dim)
        self.attn = RotaryAttention(dim, heads, attention_backend)
        self.norm2 = RmsNorm(dim)
        self.mlp = SwiGLU(dim, hidden, bias=False)

    def forward(
        self, x: Tensor, rope: Tensor, mask: Tensor | None, memory: KeysValues | None = None
    ) -> tuple[Tensor, KeysValues]:
        """(B, N, D), (N, 2 * head_dim), (N, M + N) -> (B, N, D) and the block's keys and values of x."""
        attended, keys_values = self.attn(self.norm1(x), rope, mask, memory)
        x = x + attended
        return x + self.mlp(self.norm2(x)), keys_values


def causal_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """(L, L) bool, True where position i may attend to position j <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def causal_stream(
    x: Tensor, rotary: Rotary, blocks: nn.ModuleList, depth: int | None = None
) -> tuple[Tensor, list[KeysValues]]:
    """(B, L, D) embedded tokens at positions 0..L-1 -> (B, L, D) after ``depth`` causal blocks (all by default),
    and every block's keys and values."""
    length = x.shape[1]
    rope, mask = rotary(length, x.device), causal_mask(length, x.device)
    keys_values = []
    for block in blocks[:depth]:
        x, kv = block(x, rope, mask)
        keys_values.append(kv)
    return x, keys_values


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2's initialisation for both text models: N(0, 0.02) for linear and embedding weights (no biases here)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, std=std)
