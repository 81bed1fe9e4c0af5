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
encoding, from which ``guess`` reads a one-pass next-token guess to start the descent from.

``model.candidate_space`` says what a candidate is (``logits`` above, the original work's): ``probabilities`` (V per
token, mixed into an embedding linearly, read as a distribution after clamping at ``PROBABILITY_FLOOR`` and
renormalising) or ``embedding`` (D per token, the candidate stream's input itself, read as logits through an RMSNorm
and the tied token embedding). ``logits`` turns any candidate into next-token logits for the cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import RmsNorm
from torch import Tensor, nn

from ..core.errors import InputError
from .config import TextModelConfig, swiglu_hidden
from .layers import Block, Rotary, causal_mask, causal_stream, init_weights

PROBABILITY_FLOOR = 1e-6  # a probability candidate's entries are clamped here before renormalising (log of 0 is -inf)


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
        self.space = cfg.candidate_space
        self.guesses = guess
        # An embedding candidate is read as logits through this norm (and the guess is such a candidate); in the other
        # spaces it is the one-pass guess's readout, built only for a guess start.
        embedding = self.space == "embedding"
        self.guess_norm = RmsNorm(cfg.width, affine=True) if guess or embedding else None
        init_weights(self)
        if self.head is not None:
            nn.init.zeros_(self.head.weight)

    @property
    def candidate_size(self) -> int:
        """Numbers per position of a candidate: the vocabulary size, or the width for an embedding candidate."""
        return self.cfg.width if self.space == "embedding" else self.cfg.vocab_size

    def embed_candidate(self, candidate: Tensor) -> Tensor:
        """(B, L, candidate_size) -> (B, L, D): the candidate stream's input. Logits: the expected token embedding under
        softmax(logits); probabilities: the same sum, taken linearly; an embedding is its own input."""
        if self.space == "embedding":
            return candidate.to(self.embed.weight.dtype)
        probs = candidate.float().softmax(dim=-1) if self.space == "logits" else candidate.float()  # float32 always
        return probs.to(self.embed.weight.dtype) @ self.embed.weight

    def logits(self, candidate: Tensor) -> Tensor:
        """(..., candidate_size) candidates -> (..., V) float32 next-token logits (what the cross-entropy reads)."""
        if self.space == "logits":
            return candidate.float()
        if self.space == "probabilities":
            probs = candidate.float().clamp_min(PROBABILITY_FLOOR)
            return (probs / probs.sum(-1, keepdim=True)).log()
        return self._tied_logits(self.guess_norm, candidate.to(self.embed.weight.dtype))

    def perturb(self, candidate: Tensor, noise: Tensor) -> Tensor:
        """Another start near ``candidate`` (best-of-N): Gaussian ``noise`` added to its logits, so one scale means the
        same in every space; a probability candidate is moved on the log scale and renormalised (noise of 0.1 added
        to probabilities of about 1/V would swamp them), an embedding is moved as it is."""
        if self.space != "probabilities":
            return candidate + noise
        return (self.logits(candidate) + noise).softmax(-1).to(candidate.dtype)

    def uniform(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
        """(*shape, candidate_size): the candidate of the uniform distribution (zero logits, 1/V, a zero embedding)."""
        fill = 1.0 / self.cfg.vocab_size if self.space == "probabilities" else 0.0
        return torch.full((*shape, self.candidate_size), fill, device=device)

    def encode_context(self, context: Tensor) -> Tensor:
        """(B, L) token ids -> (B, depth, 2, h, L, d): every block's keys and values of the real tokens. With
        ``model.candidate_token`` one more slot (B, 1, 2, h, L, d) follows: the real tokens' embeddings, split into
        heads like a key (and zeros in the value's place), which the candidate stream adds to its input. A model with
        a guess readout keeps, in a last slot of the same shape, the real stream's last block output (``guess``
        reads it)."""
        check_tokens(context, self.cfg.vocab_size, self.cfg.context_length)
        embedded = self.embed(context)
        final, keys_values = causal_stream(embedded, self.rotary, self.blocks)
        memory = torch.stack([torch.stack(kv, dim=1) for kv in keys_values], dim=1)  # (B, depth, 2, h, L, d)
        slots = [memory]
        if self.cfg.candidate_token:
            slots.append(self._slot(embedded).to(memory.dtype))
        if self.guesses:
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

    def guess(self, memory: Tensor) -> Tensor:
        """(B, depth + ..., 2, h, L, d) encoding -> (B, L, candidate_size): the one-pass next-token guess of a model
        built with ``guess=True``, as a candidate. The real stream's last block output is read as the Transformer++
        reads its logits (RMSNorm, tied token embedding); an embedding candidate is that output itself (read the same
        way by ``logits``), a probability candidate the softmax of the logits."""
        if not self.guesses:
            raise InputError("this text EBT has no guess readout (candidate.start is not 'guess')")
        hidden = self._unslot(memory[:, -1]).to(self.embed.weight.dtype)
        if self.space == "embedding":
            return hidden
        logits = self._tied_logits(self.guess_norm, hidden)
        return logits if self.space == "logits" else logits.softmax(-1)

    def _tied_logits(self, norm: nn.Module, hidden: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, V) float32 logits read as the Transformer++ reads them: a norm, then the tied token
        embedding (the residual energy's proposal and the guess start both read this way)."""
        return F.linear(norm(hidden), self.embed.weight).float()

    def candidate_energies(self, memory: Tensor, candidate: Tensor) -> Tensor:
        """(B, depth, 2, h, L, d) encoded context, (B, L, candidate_size) candidates -> (B, L) energy per position."""
        batch, depth, _, heads, length, _ = memory.shape
        expected = (batch, length, self.candidate_size)
        if tuple(candidate.shape) != expected:
            raise InputError(f"candidate {self.space} must have shape {expected} (B, L, "
                             f"{'D' if self.space == 'embedding' else 'V'}), got {tuple(candidate.shape)}")  # fmt: skip
        slots = len(self.blocks) + self.cfg.candidate_token + self.guesses
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
        """(B, L) token ids or their ``encode_context`` encoding, (B, L, candidate_size) candidates -> (B, L): the
        energy of each position's candidate."""
        memory = context if context.is_floating_point() else self.encode_context(context)
        return self.candidate_energies(memory, candidate)

    def features(self, context: Tensor, depth: int | None = None) -> Tensor:
        """(B, L) -> (B, L, D): the real stream after ``depth`` blocks (all by default), for probing."""
        check_tokens(context, self.cfg.vocab_size, self.cfg.context_length)
        return causal_stream(self.embed(context), self.rotary, self.blocks, depth)[0]
