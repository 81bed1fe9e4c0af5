"""The shared half of every training stream (photo crops, clips, token windows): a seeded random stream whose state
travels in the training checkpoint, and sharding across training processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class ShardedSampler:
    """Endless batches drawn from a CPU generator seeded with ``seed``. ``state_dict`` saves the generator, so a
    resumed run continues with the same batches. With ``shards`` > 1 (one per training process) every process draws
    the same global batch of ``shards * batch_size`` and keeps its slice ``shard``: the processes together see exactly
    what one process with a ``shards`` times larger batch would. Subclasses write ``sample()``, drawing
    ``global_batch`` items from ``generator`` and returning ``mine`` of them."""

    def __init__(self, batch_size: int, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), got {shard}")
        self.batch_size, self.shard, self.shards = batch_size, shard, shards
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.shards

    @property
    def mine(self) -> slice:
        """This process's rows of a global batch."""
        return slice(self.shard * self.batch_size, (self.shard + 1) * self.batch_size)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def sample(self) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.sample()
