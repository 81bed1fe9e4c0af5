"""The autoregressive text EBT: (context tokens, candidate next-token logits at every position) -> energy per token.

As in the original work: a causal Transformer++ over two streams of L tokens each. The *real* stream embeds the
context tokens 0..L-1; the *candidate* stream holds, at position t, the candidate for token t + 1: its logits
softmaxed inside the model and mixed into a token embedding (``probs @ embedding matrix``). Real token i attends to
real tokens j <= i; candidate t attends to real tokens j <= t and to itself only. So the energy of position t sees
only the real tokens it may see and its own candidate, and all L positions are scored (and trained) in parallel.
Rotary positions: real token i sits at i, candidate t at t + 1, the place of the token it proposes.

Real tokens never attend to candidates, so the real stream does not depend on the candidate: ``encode_context``
runs it once and keeps every block's keys and values, and each descent step runs the candidate stream alone against
them (L queries instead of 2L, about half the work of one step). ``forward`` takes either token ids or that encoding.
A model built with ``guess=True`` (``candidate.start: guess``) also keeps the real stream's last block output in the
encoding, from which ``guess_logits`` reads a one-pass next-token guess to start the descent from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import RmsNorm
from torch import Tensor, nn

from ..core.errors import InputError
from .config import TextModelConfig, swiglu_hidden
from .layers import Block, Rotary, causal_mask, causal_stream, init_weights


def check_tokens(context: Tensor, vocab_size: int, context_length: int) -> None:
    """Clear errors for context windows the model cannot take: (B, L) integer ids in [0, V), 1 <= L <= max."""
    if context.dim() != 2 or context.dtype not in (torch.int64, torch.int32):
        raise InputError(f"expected token ids of shape (B, L) and an integer dtype, got {tuple(context.shape)} "
                         f"{context.dtype}")  # fmt: skip
    if not 1 <= context.shape[1] <= context_length:
        raise InputError(f"context of {context.shape[1]} tokens; the model takes 1 to {context_length}")
    if context.numel() and (context.min() < 0 or context.max() >= vocab_size):
        raise InputError(f"token ids must lie in [0, {vocab_size}); is the tokenizer the model's own?")


def candidate_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """(L, 2L) bool, True = may attend: candidate t (rows) -> real tokens j <= t (first L columns) and candidate t
    itself (last L columns)."""
    itself = torch.eye(length, dtype=torch.bool, device=device)
    return torch.cat([causal_mask(length, device), itself], dim=1)


class TextEBT(nn.Module):
    """Per-token energies of next-token candidates given the previous tokens.

    ``model.energy`` says how the candidate stream's final token becomes an energy (``ebt_vision.core.energy``):

    - ``linear`` (the original work's): a norm without affine and ``Linear(D, 1, bias=False)``, zero-initialised
      (docs/design.md, trap 3: a candidate-independent shift of the energy would get no gradient);
    - ``residual``: ``|x - f|^2 / 2`` over the V logits, the proposal ``f`` read through an RMSNorm and the tied token
      embedding, as the Transformer++ reads its logits (so the two have the same parameters). A step of size 1 from
      ``x`` lands near ``f``; the next step re-reads the trunk with the candidate moved there.

    The token embedding is shared by both streams: a candidate that puts all its mass on one token is embedded as that
    token.
    """

    def __init__(self, cfg: TextModelConfig, guess: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.rotary = Rotary(cfg.width // cfg.heads)
        hidden = swiglu_hidden(cfg)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, hidden, cfg.attention) for _ in range(cfg.depth))
        residual = cfg.energy == "residual"
        self.final_norm = RmsNorm(cfg.width, affine=residual)  # the residual's proposal reads it, as the Transformer++
        self.head = None if residual else nn.Linear(cfg.width, 1, bias=False)
        self.guess_norm = RmsNorm(cfg.width, affine=True) if guess else None  # the one-pass guess's readout
        init_weights(self)
        if self.head is not None:
            nn.init.zeros_(self.head.weight)

    def embed_candidate(self, candidate: Tensor) -> Tensor:
        """(B, L, V) logits -> (B, L, D): the expected token embedding under softmax(logits)."""
        probs = candidate.float().softmax(dim=-1)  # softmax in float32 even under autocast
        return probs.to(self.embed.weight.dtype) @ self.embed.weight

    def encode_context(self, context: Tensor) -> Tensor:
        """(B, L) token ids -> (B, depth, 2, h, L, d): every block's keys and values of the real tokens. With
        ``model.candidate_token`` one more slot (B, 1, 2, h, L, d) follows: the real tokens' embeddings, split into
        heads like a key (and zeros in the value's place), which the candidate stream adds to its input. A model with
        a guess readout keeps, in a last slot of the same shape, the real stream's last block output (``guess_logits``
        reads it)."""
        check_tokens(context, self.cfg.vocab_size, self.cfg.context_length)
        embedded = self.embed(context)
        final, keys_values = causal_stream(embedded, self.rotary, self.blocks)
        memory = torch.stack([torch.stack(kv, dim=1) for kv in keys_values], dim=1)  # (B, depth, 2, h, L, d)
        slots = [memory]
        if self.cfg.candidate_token:
            slots.append(self._slot(embedded).to(memory.dtype))
        if self.guess_norm is not None:
            slots.append(self._slot(final).to(memory.dtype))
        return torch.cat(slots, dim=1) if len(slots) > 1 else memory

    def _slot(self, values: Tensor) -> Tensor:
        """(B, L, D) -> (B, 1, 2, h, L, d): per-token values split into heads like a key, zeros as the value."""
        batch, length, width = values.shape
        heads = values.view(batch, length, self.cfg.heads, width // self.cfg.heads).transpose(1, 2)
        return torch.stack([heads, torch.zeros_like(heads)], dim=1)[:, None]

    @staticmethod
    def _unslot(slot: Tensor) -> Tensor:
        """(B, 2, h, L, d) slot -> (B, L, D) per-token values (the inverse of ``_slot``)."""
        batch, _, heads, length, dim = slot.shape
        return slot[:, 0].transpose(1, 2).reshape(batch, length, heads * dim)

    def guess_logits(self, memory: Tensor) -> Tensor:
        """(B, depth + ..., 2, h, L, d) encoding -> (B, L, V): the one-pass next-token guess of a model built with
        ``guess=True``, read as the Transformer++ reads its logits (RMSNorm, tied token embedding)."""
        if self.guess_norm is None:
            raise InputError("this text EBT has no guess readout (candidate.start is not 'guess')")
        return self._tied_logits(self.guess_norm, self._unslot(memory[:, -1]).to(self.embed.weight.dtype))

    def _tied_logits(self, norm: nn.Module, hidden: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, V) float32 logits read as the Transformer++ reads them: a norm, then the tied token
        embedding (the residual energy's proposal and the guess start both read this way)."""
        return F.linear(norm(hidden), self.embed.weight).float()

    def candidate_energies(self, memory: Tensor, candidate: Tensor) -> Tensor:
        """(B, depth, 2, h, L, d) encoded context, (B, L, V) next-token logits -> (B, L) energy per position."""
        batch, depth, _, heads, length, _ = memory.shape
        expected = (batch, length, self.cfg.vocab_size)
        if tuple(candidate.shape) != expected:
            raise InputError(f"candidate logits must have shape {expected} (B, L, V), got {tuple(candidate.shape)}")
        slots = len(self.blocks) + self.cfg.candidate_token + (self.guess_norm is not None)
        if depth != slots or heads != self.cfg.heads:
            raise InputError(f"the encoded context has {depth} slots of {heads} heads; the model has "
                             f"{slots} of {self.cfg.heads}: encode it with this model")  # fmt: skip
        x = self.embed_candidate(candidate)
        if self.cfg.candidate_token:  # the embedding of the real token each candidate follows
            x = x + self._unslot(memory[:, len(self.blocks)]).to(x.dtype)
        rope = self.rotary(length + 1, x.device)[1:]  # candidate t sits at position t + 1
        mask = candidate_mask(length, x.device)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, rope, mask, (memory[:, i, 0], memory[:, i, 1]))
        if self.head is not None:
            return self.head(self.final_norm(x)).squeeze(-1)
        proposal = self._tied_logits(self.final_norm, x)  # (B, L, V) logits, as the Transformer++
        return 0.5 * (candidate.float() - proposal).pow(2).sum(-1)

    def forward(self, context: Tensor, candidate: Tensor) -> Tensor:
        """(B, L) token ids or their ``encode_context`` encoding, (B, L, V) next-token logits -> (B, L): the energy of
        each position's candidate."""
        memory = context if context.is_floating_point() else self.encode_context(context)
        return self.candidate_energies(memory, candidate)

    def features(self, context: Tensor, depth: int | None = None) -> Tensor:
        """(B, L) -> (B, L, D): the real stream after ``depth`` blocks (all by default), for probing."""
        check_tokens(context, self.cfg.vocab_size, self.cfg.context_length)
        return causal_stream(self.embed(context), self.rotary, self.blocks, depth)[0]
