"""The causal video EBT: (real frames = context, candidate next frames) -> one energy per predicted frame.

One transformer runs two token streams. The *real* stream holds the patches of the context frames 1..T and is causal
over frames (bidirectional within a frame). The *candidate* stream holds K candidate frames; candidate k is the guess
for the frame after context frame T - K + k and attends to the real frames up to that one and to its own patches
only. So every prediction sees only the real past, the K predictions are independent of each other (training scores
all next frames of a clip in one pass, K = T), and a rollout step is the same call with K = 1. The real stream never
attends to candidates, so its activations do not depend on them: the energy's gradient flows through the candidate
stream alone.

Each candidate patch is embedded together with the same patch of the last real frame it may see (as the image EBT
embeds [noisy, candidate] patch pairs), so "what changed since the last frame" is local to a token. Positions are
the image workload's 2-D sin-cos over the patch grid plus a 1-D sin-cos over the frame index.

The real stream never attends to candidates, so ``encode_context`` runs it once (keeping every block's keys and
values, ``VideoMemory``) and each descent step runs the candidate stream alone against that memory: the same
energies as one transformer over both streams with the full mask, for a fraction of the work.

A model built with ``guess=True`` (``prediction.start: guess``) also reads a one-pass guess of every next frame off
the real stream's last block (``guess_frames``: a per-patch output layer, zero at the start, adding a correction to
the last real frame, as the plain transformer predicts), so its descent can start from its own best guess; the real
stream's output is computed anyway and kept in the memory.

The energy of a frame is the SUM of its per-patch energies (``patch_energies`` keeps them apart for maps): a step of
size s moves a pixel by s * dE/dpixel whatever the number of patches (``ebt_vision.core.energy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.energy import EnergyHead
from ..core.errors import InputError
from ..core.layers import KeysValues, adaln_blocks, init_adaln_trunk, patchify, sincos_position_embedding, unpatchify
from .config import VideoModelConfig
from .rollout import LAST_FRAME, Reference


def frame_position_embedding(frames: Tensor, dim: int) -> Tensor:
    """1-D sin-cos of frame indices (F,) -> (F, dim): half the channels sines, half cosines."""
    half = dim // 2
    omega = 1.0 / (10000 ** (torch.arange(half, device=frames.device, dtype=torch.float32) / half))
    angles = frames.float()[:, None] * omega[None]  # (F, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@lru_cache(maxsize=16)
def frame_mask(context_frames: int, candidates: int) -> Tensor:
    """Which frame may attend to which: (T + K, T + K) bool, True = may attend, real frames first.

    Real frame i sees real frames <= i. Candidate k (0-based) predicts the frame after real frame T - K + k and sees
    real frames <= T - K + k and itself.
    """
    t, k = context_frames, candidates
    mask = torch.zeros(t + k, t + k, dtype=torch.bool)
    mask[:t, :t] = torch.ones(t, t, dtype=torch.bool).tril()
    for j in range(k):
        mask[t + j, : t - k + j + 1] = True
        mask[t + j, t + j] = True
    return mask


@lru_cache(maxsize=16)
def token_mask(context_frames: int, candidates: int, patches: int, device: torch.device) -> Tensor:
    """``frame_mask`` expanded to tokens: ((T + K) N, (T + K) N) bool, N patches per frame (all of one frame see
    each other: bidirectional within a frame)."""
    mask = frame_mask(context_frames, candidates)
    return mask.repeat_interleave(patches, 0).repeat_interleave(patches, 1).to(device)


def check_frames(context: Tensor, candidate: Tensor | None, channels: int, patch_size: int) -> None:
    """Clear errors for inputs the model cannot take."""
    if context.dim() != 5:
        raise InputError(f"expected context frames of shape (B, T, C, H, W), got {tuple(context.shape)}")
    _, frames, c, h, w = context.shape
    if c != channels:
        raise InputError(f"the model takes {channels}-channel frames, got {c} channels")
    if h % patch_size or w % patch_size:
        raise InputError(f"frame size {h}x{w} is not a multiple of the patch size {patch_size}")
    if candidate is None:
        return
    if candidate.dim() != 5 or candidate.shape[0] != context.shape[0] or candidate.shape[2:] != context.shape[2:]:
        raise InputError(
            f"candidates must be (B, K, C, H, W) frames like the context {tuple(context.shape)}, got "
            f"{tuple(candidate.shape)}"
        )
    if not 1 <= candidate.shape[1] <= frames:
        raise InputError(f"need 1 <= K <= T candidates for {frames} context frames, got {candidate.shape[1]}")


@dataclass
class VideoMemory:
    """Real frames encoded once: every block's keys and values of their tokens, and each frame's reference for its
    successor in patches (the frame itself, or its extrapolation; each candidate is embedded with, and read against,
    the reference of the last real frame it may see). It does not depend on the candidates, so a descent encodes its
    context once and every step runs the candidate stream alone against it."""

    keys_values: list[KeysValues]  # per block: keys and values (B, h, T N, d)
    references: Tensor  # (B, T, N, C p p): ``VideoEBT.reference`` of the frames' patches
    tokens: Tensor | None = None  # (B, T, N, D): the real stream's output, kept by a model that guesses

    @property
    def frames(self) -> int:
        return self.references.shape[1]

    def repeat(self, times: int) -> VideoMemory:
        """The memory of ``times`` copies of the batch (row n B + b is clip b), e.g. for best-of-N starts."""
        tiled = [(k.repeat(times, 1, 1, 1), v.repeat(times, 1, 1, 1)) for k, v in self.keys_values]
        tokens = None if self.tokens is None else self.tokens.repeat(times, 1, 1, 1)
        return VideoMemory(tiled, self.references.repeat(times, 1, 1, 1), tokens)


class VideoEBT(nn.Module):
    """``forward(context (B, T, C, H, W) or its VideoMemory, candidate (B, K, C, H, W)) -> (B, K)`` energies; see the
    module doc."""

    def __init__(self, cfg: VideoModelConfig, guess: bool = False, reference: Reference = LAST_FRAME) -> None:
        super().__init__()
        self.cfg = cfg
        self.reference = reference  # candidates are read against last + a x (last - previous) (a = 0: the last frame)
        width, pixels = cfg.width, cfg.channels * cfg.patch_size**2
        self.embed_frame = nn.Linear(pixels, width)  # a real frame's patch
        self.embed_candidate = nn.Linear(2 * pixels, width)  # (last real frame's patch, candidate's patch)
        self.condition = nn.Parameter(torch.randn(width) * 0.02)  # the one learned adaLN condition
        self.blocks = adaln_blocks(cfg)
        self.head = EnergyHead(width, pixels, cfg.energy)  # per candidate patch: tokens and candidate pixels
        # the one-pass guess's readout of the real stream (the plain transformer's output layer), when guessing
        self.guess_head = nn.Linear(width, pixels) if guess else None
        init_adaln_trunk(self, self.blocks)
        self.head.reset_parameters()
        if self.guess_head is not None:
            nn.init.zeros_(self.guess_head.weight)  # the first guess is the last real frame

    def _patches(self, frames: Tensor) -> Tensor:
        """(B, F, C, H, W) -> (B, F, N, C p p)."""
        batch, count = frames.shape[:2]
        tokens = patchify(frames.flatten(0, 1), self.cfg.patch_size)  # (B F, N, C p p)
        return tokens.reshape(batch, count, *tokens.shape[1:])

    def _positions(self, frames: int, height: int, width: int, device, dtype) -> tuple[Tensor, Tensor]:
        """Space (N, D) over the patch grid and time (frames + 1, D) over frame indices."""
        p, dim = self.cfg.patch_size, self.cfg.width
        space = sincos_position_embedding(height // p, width // p, dim, device, dtype)
        time = frame_position_embedding(torch.arange(frames + 1, device=device), dim).to(dtype)
        return space, time

    def _condition(self, batch: int, dtype: torch.dtype) -> Tensor:
        return self.condition.to(dtype).expand(batch, -1)

    def real_tokens(self, context: Tensor, depth: int | None = None, keep: list | None = None) -> Tensor:
        """(B, T, C, H, W) -> (B, T, N, D): the real stream (causal over frames) after ``depth`` blocks (all by
        default); ``keep`` receives every block's keys and values."""
        check_frames(context, None, self.cfg.channels, self.cfg.patch_size)
        batch, frames, _, height, width = context.shape
        real = self._patches(context)  # (B, T, N, C p p)
        space, time = self._positions(frames, height, width, context.device, real.dtype)
        x = self.embed_frame(real) + time[:frames, None] + space  # (B, T, N, D)
        patches = x.shape[2]
        x = x.flatten(1, 2)  # (B, T N, D)
        mask = token_mask(frames, 0, patches, x.device)
        cond = self._condition(batch, x.dtype)
        for block in self.blocks[:depth]:
            x = block(x, cond, mask, keep=keep)
        return x.reshape(batch, frames, patches, self.cfg.width)

    def encode_context(self, context: Tensor) -> VideoMemory:
        """(B, T, C, H, W) real frames -> their ``VideoMemory`` (one pass of the real stream)."""
        keep: list[KeysValues] = []
        tokens = self.real_tokens(context, keep=keep)
        references = self.reference(self._patches(context))
        return VideoMemory(keep, references, tokens if self.guess_head is not None else None)

    def guess_frames(self, memory: VideoMemory, last: Tensor) -> Tensor:
        """The one-pass guess of the last K next frames: ``VideoMemory`` of T frames, their last real frames
        (B, K, C, H, W) (real frames T - K + 1..T) -> (B, K, C, H, W), each last frame plus a correction read off
        the real stream's output at that frame (normalised, then a per-patch linear layer)."""
        if self.guess_head is None or memory.tokens is None:
            raise ValueError("this model reads no guess: build it with guess=True (prediction.start: guess)")
        count, p = last.shape[1], self.cfg.patch_size
        tokens = memory.tokens[:, memory.frames - count :]  # (B, K, N, D)
        correction = self.guess_head(F.layer_norm(tokens, tokens.shape[-1:]))  # (B, K, N, C p p)
        correction = unpatchify(correction.flatten(0, 1), p, *last.shape[-2:]).reshape(last.shape)
        return last + correction.to(last.dtype)

    def candidate_tokens(self, memory: VideoMemory, candidate: Tensor) -> Tensor:
        """``VideoMemory`` of T frames, (B, K, C, H, W) -> (B, K, N, D): the candidate stream, candidate k attending
        to the real frames up to T - K + k (from the memory) and to its own patches."""
        frames, count = memory.frames, candidate.shape[1]
        batch, _, patches, _ = memory.references.shape
        if not 1 <= count <= frames or candidate.shape[0] != batch:
            raise InputError(f"need (B={batch}, 1 <= K <= {frames}, C, H, W) candidates, got {tuple(candidate.shape)}")
        height, width = candidate.shape[-2:]
        space, time = self._positions(frames, height, width, candidate.device, memory.references.dtype)
        # the reference each candidate is read against: the last real frame it may see, or its extrapolation
        previous = memory.references[:, frames - count :]
        pairs = torch.cat([previous, self._patches(candidate.to(previous.dtype))], dim=-1)  # (B, K, N, 2 C p p)
        # candidate k stands at the frame index of the frame it predicts: T - K + k + 1
        x = (self.embed_candidate(pairs) + time[frames - count + 1 :, None] + space).flatten(1, 2)  # (B, K N, D)
        mask = token_mask(frames, count, patches, x.device)[frames * patches :]  # the candidate rows
        cond = self._condition(batch, x.dtype)
        for block, memory_kv in zip(self.blocks, memory.keys_values, strict=True):
            x = block(x, cond, mask, memory=memory_kv)
        return x.reshape(batch, count, patches, self.cfg.width)

    def patch_energies(self, context: Tensor | VideoMemory, candidate: Tensor) -> Tensor:
        """(B, T, C, H, W) frames or their memory, (B, K, C, H, W) -> (B, K, H/p, W/p): every candidate patch's
        energy."""
        memory = context if isinstance(context, VideoMemory) else self.encode_context(context)
        if isinstance(context, Tensor):
            check_frames(context, candidate, self.cfg.channels, self.cfg.patch_size)
        p, count = self.cfg.patch_size, candidate.shape[1]
        # The head reads each candidate patch as its change from the last real frame it may see, so an output-layer
        # energy (dot, l2, residual) starts with its minimum at "nothing moved": copying the last frame is always
        # reachable, and a descent that starts there stays unless the context says otherwise.
        reference = memory.references[:, memory.frames - count :]
        change = self._patches(candidate) - reference.to(candidate.dtype)
        energies = self.head(self.candidate_tokens(memory, candidate), change)  # (B, K, N)
        return energies.reshape(*energies.shape[:2], candidate.shape[-2] // p, candidate.shape[-1] // p)

    def forward(self, context: Tensor | VideoMemory, candidate: Tensor) -> Tensor:
        """(B, T, C, H, W) frames or their memory, (B, K, C, H, W) -> (B, K): one energy per candidate frame, the
        sum over its patches."""
        return self.patch_energies(context, candidate).sum(dim=(2, 3))

    def features(self, context: Tensor, depth: int | None = None) -> Tensor:
        """(B, T, C, H, W) -> (B, T, D): the real stream's tokens mean-pooled per frame, for probing."""
        return self.real_tokens(context, depth).mean(dim=2)
