"""Training streams read by DataLoader worker processes, with a position that resumes exactly.

A *source* (photo files, tar shards, video clips) splits its endless stream of batches into ``slots``: one per
DataLoader worker (one when there are none). Slot ``s`` yields its batches together with its position after each one
(``StreamSource.batches``); the DataLoader takes one batch from each worker in turn, so consumed batch ``n`` came from
slot ``n % slots``. ``WorkerStream`` counts the batches the training loop has consumed and keeps every slot's
position after its last consumed batch: its ``state_dict`` is where the stream stands, whatever the workers had
already prefetched. Resumed, worker ``j`` plays slot ``(consumed + j) % slots`` from that slot's saved position, so
the batches continue exactly where the uninterrupted run would have gone on (docs/design.md, trap 21).

Sources whose every sample is a pure function of (seed, global sample index) (``IndexedSource``) give the same
stream whatever the number of workers; sequential sources (tar shards) depend on the number of readers, and resuming
refuses another one. A file that cannot be read is either one ``InputError`` naming it, raised in the training
process, or (``data.on_error: skip``) replaced by the next file and counted, with one warning per file.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import InputError, UserError

ON_ERROR = ("raise", "skip")


class Unusable(InputError):
    """A readable file that cannot give a sample (a clip shorter than a window, a photo smaller than the crop): always
    skipped, counted and warned about, whatever ``data.on_error`` says."""


PREFETCH = 4  # batches each worker keeps ready


def pin_memory_for(device: str) -> bool:
    """Whether batches for ``train.device`` should be page-locked (CUDA only)."""
    return torch.cuda.is_available() and not device.startswith("cpu")


def sample_seed(*keys: int) -> int:
    """A 64-bit seed that is a pure function of ``keys`` (e.g. seed, sample index), well mixed: nearby keys give
    unrelated streams (numpy's ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


def sample_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by ``sample_seed(*keys)``."""
    return torch.Generator().manual_seed(sample_seed(*keys))


def permutation(count: int, *keys: int) -> np.ndarray:
    """A permutation of ``range(count)`` that is a pure function of ``keys`` (e.g. seed, epoch)."""
    return np.random.default_rng(sample_seed(*keys)).permutation(count)


class StreamSource(Protocol):
    """What ``WorkerStream`` reads: endless batches split into slots, each with a picklable position."""

    def start(self, slot: int, slots: int) -> Any:
        """Slot ``slot``'s position before its first batch."""
        ...

    def batches(self, slot: int, slots: int, position: Any) -> Iterator[tuple[Any, Any, tuple[str, ...]]]:
        """Slot ``slot``'s batches from ``position`` on: (batch, position after it, files skipped for it)."""
        ...

    def signature(self) -> dict:
        """What the stream depends on besides its position (file counts): a resumed run must find the same."""
        ...


class _Delivery(NamedTuple):
    batch: Any
    slot: int
    position: Any
    skipped: tuple[str, ...]


class _Failure(NamedTuple):
    message: str


class _Readers(IterableDataset):
    """The worker side: worker ``j`` reads slot ``(first + j) % slots`` from its saved position. An ``InputError``
    is sent to the training process as a message, so it is raised there as one line naming the file."""

    def __init__(self, source: StreamSource, slots: int, first: int, positions: list) -> None:
        self.source, self.slots, self.first, self.positions = source, slots, first, positions

    def __iter__(self):
        info = get_worker_info()
        slot = (self.first + (info.id if info is not None else 0)) % self.slots
        try:
            for batch, position, skipped in self.source.batches(slot, self.slots, self.positions[slot]):
                yield _Delivery(batch, slot, position, skipped)
        except InputError as error:
            yield _Failure(str(error))


class WorkerStream:
    """Endless batches of ``source`` read by ``workers`` DataLoader processes (none: in this process), with pinned
    memory for CUDA, persistent workers and prefetching. ``state_dict``/``load_state_dict`` hold the position of the
    batches consumed so far (not of those prefetched), so a resumed run continues the same stream."""

    def __init__(self, source: StreamSource, workers: int = 0, pin_memory: bool = False) -> None:
        if workers < 0:
            raise UserError(f"data.workers must be >= 0, got {workers}")
        self.source, self.workers, self.pin_memory = source, workers, pin_memory
        self.slots = max(1, workers)
        self.consumed = 0
        self.positions = [source.start(slot, self.slots) for slot in range(self.slots)]
        self.skipped: dict[str, int] = {}  # file -> times it was skipped

    def state_dict(self) -> dict:
        return {
            "batches": self.consumed,
            "slots": list(self.positions),
            "skipped": dict(self.skipped),
            "signature": self.source.signature(),
        }

    def load_state_dict(self, state: dict) -> None:
        signature = self.source.signature()
        if state["signature"] != signature:
            raise UserError(
                f"the training data changed since the checkpoint ({state['signature']} -> {signature}); resuming "
                "exactly needs the same files. Restore them, or start a fresh run"
            )
        if len(state["slots"]) != self.slots:
            raise UserError(
                f"the checkpoint's stream was read by {len(state['slots'])} reader(s), this run has {self.slots} "
                "(data.workers); resume with the same number"
            )
        self.consumed = state["batches"]
        self.positions = [tuple(p) if isinstance(p, list) else p for p in state["slots"]]
        self.skipped = dict(state.get("skipped", {}))

    def _loader(self) -> DataLoader:
        readers = _Readers(self.source, self.slots, self.consumed % self.slots, list(self.positions))
        extra = dict(persistent_workers=True, prefetch_factor=PREFETCH) if self.workers else {}
        # its own generator: a DataLoader iterator draws its workers' base seed from the global torch RNG otherwise,
        # one draw when the stream starts, so a resumed run (which starts it after the RNG is restored) would shift
        # the descent's random draws by one against the uninterrupted run (the samples depend on their index only)
        generator = torch.Generator().manual_seed(0)
        return DataLoader(readers, batch_size=None, num_workers=self.workers, pin_memory=self.pin_memory,
                          generator=generator, **extra)  # fmt: skip

    def _record(self, item: _Delivery) -> None:
        # the DataLoader hands tuples over as lists; a position is kept as the source made it
        self.positions[item.slot] = tuple(item.position) if isinstance(item.position, list) else item.position
        self.consumed += 1
        for name in item.skipped:
            if name not in self.skipped:
                warnings.warn(f"skipped an unreadable training file (data.on_error: skip): {name}", stacklevel=3)
            self.skipped[name] = self.skipped.get(name, 0) + 1

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self._loader())
        try:
            for item in iterator:
                if isinstance(item, _Failure):
                    raise InputError(item.message)
                self._record(item)
                yield item.batch
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                with contextlib.suppress(RuntimeError):  # a worker that died while being stopped is stopped
                    shutdown()


class IndexedSource:
    """A source whose global sample ``i`` is a pure function of (seed, ``i``): slot ``s`` of ``slots`` makes batches
    ``s, s + slots, ...``; batch ``k`` of process ``shard`` of ``shards`` holds the global samples
    ``k * shards * batch_size + shard * batch_size + j``, so processes and workers never overlap and the stream is the
    same for any number of workers. Subclasses write ``sample(index) -> (item, skipped files)`` and ``collate``."""

    def __init__(self, batch_size: int, shard: int = 0, shards: int = 1) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), got {shard}")
        self.batch_size, self.shard, self.shards = batch_size, shard, shards

    def start(self, slot: int, slots: int) -> int:
        return slot

    def indices(self, batch: int) -> range:
        """The global sample indices of this process's batch number ``batch``."""
        first = (batch * self.shards + self.shard) * self.batch_size
        return range(first, first + self.batch_size)

    def batches(self, slot: int, slots: int, position: int):
        batch = position
        while True:
            items, skipped = [], ()
            for index in self.indices(batch):
                item, missed = self.sample(index)
                items.append(item)
                skipped += missed
            yield self.collate(items), batch + slots, skipped
            batch += slots

    def sample(self, index: int) -> tuple[Any, tuple[str, ...]]:
        raise NotImplementedError

    def collate(self, items: list) -> Any:
        raise NotImplementedError

    def signature(self) -> dict:
        raise NotImplementedError


MAX_SKIPS = 100  # consecutive unreadable files before a skipping stream gives up


class FileSource(IndexedSource):
    """An ``IndexedSource`` over a fixed list of files, visited in a fresh order every epoch: global sample ``i`` is
    file ``order(epoch)[i % n]`` with ``epoch = i // n``, the order a pure function of (seed, epoch), read by
    ``read(path, generator)`` with a generator seeded by (seed, ``i``). An unreadable file raises, or with
    ``on_error="skip"`` is replaced by the next file of the epoch's order and reported as skipped."""

    def __init__(
        self, files: list[str], batch_size: int, seed: int, on_error: str = "raise", shard: int = 0, shards: int = 1
    ) -> None:
        super().__init__(batch_size, shard, shards)
        if on_error not in ON_ERROR:
            raise UserError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not files:
            raise InputError("no training files")
        # one fixed-width byte array, not a list of str: forked workers share it without copying (no refcounts)
        self.files = np.array([str(f).encode() for f in files])
        self.seed, self.on_error = seed, on_error
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, permutation(len(self.files), self.seed, epoch))
        return self._order[1]

    def sample(self, index: int) -> tuple[Any, tuple[str, ...]]:
        epoch, position = divmod(index, len(self.files))
        order, skipped = self.order(epoch), ()
        for attempt in range(min(MAX_SKIPS, len(self.files))):
            path = self.files[order[(position + attempt) % len(self.files)]].decode()
            try:
                return self.read(path, sample_generator(self.seed, index)), skipped
            except InputError as error:
                if self.on_error == "raise" and not isinstance(error, Unusable):
                    raise
                skipped += (path,)
        raise InputError(f"{len(skipped)} training files in a row could not be read, e.g. {skipped[0]}")

    def read(self, path: str, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def signature(self) -> dict:
        return {"files": len(self.files)}
