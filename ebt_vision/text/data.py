"""Token streams and windows: documents -> one stream of token ids -> batches of (B, L + 1) windows.

A window of L + 1 tokens gives L predictions: position t sees tokens 0..t and predicts token t + 1. Training windows
start at seeded random offsets (``WindowSampler``, resumable exactly through ``state_dict``); evaluation windows are
fixed, evenly spaced and non-overlapping (``evaluation_windows``), so every model is scored on the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.errors import UserError
from ..core.sampling import ShardedSampler
from .corpora import Document
from .tokenizer import TextTokenizer


def token_stream(tokenizer: TextTokenizer, documents: list[Document]) -> Tensor:
    """Documents -> (N,) int64 token ids, each document followed by the end-of-text token."""
    encoded = tokenizer.encode_batch([doc.text for doc in documents])
    ids = [token for doc in encoded for token in (*doc, tokenizer.end_of_text)]
    return torch.tensor(ids, dtype=torch.long)


@dataclass
class TextBatch:
    """Windows of token ids (B, L + 1): the context is ``tokens[:, :-1]``, the next-token targets ``tokens[:, 1:]``."""

    tokens: Tensor

    @property
    def context(self) -> Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> Tensor:
        return self.tokens[:, 1:]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TextBatch:
        return TextBatch(self.tokens.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TextBatch:
        return TextBatch(self.tokens.pin_memory())


def _check_length(stream: Tensor | np.ndarray, seq_len: int, what: str) -> None:
    if stream.ndim != 1 or len(stream) < seq_len + 1:
        raise UserError(f"{what} holds {len(stream)} tokens, fewer than one window of {seq_len + 1}")


def take_windows(stream: Tensor | np.ndarray, index: Tensor) -> Tensor:
    """``stream[index]`` as int64 token ids, from a tensor or a memory-mapped token file (only those tokens are
    read from disk)."""
    if isinstance(stream, Tensor):
        return stream[index]
    return torch.from_numpy(np.asarray(stream[index.numpy()], dtype=np.int64))


class WindowSampler(ShardedSampler):
    """Endless batches of random windows of a token stream: yields ``TextBatch`` (B, seq_len + 1). Resumable and
    sharded (``ShardedSampler``): a resumed run sees the same windows as an uninterrupted one, and two models built
    with the same seed train on the same tokens. ``stream``: a tensor, or a memory-mapped token file
    (``text.prepare``) of any size, read a window at a time: the same tokens give the same windows."""

    def __init__(
        self, stream: Tensor | np.ndarray, seq_len: int, batch_size: int, seed: int = 0, shard: int = 0,
        shards: int = 1,
    ) -> None:  # fmt: skip
        super().__init__(batch_size, seed, shard, shards)
        _check_length(stream, seq_len, "the training split")
        self.stream, self.seq_len = stream, seq_len

    def sample(self) -> TextBatch:
        starts = torch.randint(len(self.stream) - self.seq_len, (self.global_batch,), generator=self.generator)
        offsets = torch.arange(self.seq_len + 1)
        windows = take_windows(self.stream, starts[:, None] + offsets[None, :])  # (shards * B, L + 1)
        return TextBatch(windows[self.mine])


def evaluation_windows(stream: Tensor | np.ndarray, seq_len: int, count: int) -> Tensor:
    """(count, seq_len + 1) non-overlapping windows spread evenly over the whole stream (fewer if it is short):
    deterministic, so every model and every setting is scored on the same tokens."""
    _check_length(stream, seq_len, "the evaluation split")
    available = len(stream) // (seq_len + 1)
    count = min(count, available)
    slots = torch.linspace(0, available - 1, count).round().long()  # window indices, evenly spaced
    offsets = torch.arange(seq_len + 1)
    return take_windows(stream, slots[:, None] * (seq_len + 1) + offsets[None, :])
