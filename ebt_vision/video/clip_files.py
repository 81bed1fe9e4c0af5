"""A folder of clips, one file per clip (Something-Something v2, UCF-101, Kinetics), streamed from disk: every sample
is decoded by decord in a DataLoader worker, a random window of ``data.frames`` frames every ``data.stride``.

Splits come from list files when given (``data.train_list``, ``validation_list``, ``test_list``), in any of the three
layouts' formats: SSv2's JSON (a list of ``{"id": ...}``: the clip ``<id>.webm``), Kinetics' CSV (``youtube_id``,
``time_start``, ``time_end`` columns: ``<id>_<start:06d>_<end:06d>.mp4``) or a text list like UCF-101's (a path per
line, relative to ``data.source``, optionally followed by a label). Entries are matched by relative path, else by
file name without its suffix. Without lists, clip ``i`` of the sorted files goes to validation when ``i % 10 == 3``
and to test when ``i % 10 == 7`` (the text corpora's 80/10/10 rule).

Training samples are pure functions of (seed, global sample index) (``core.streams.FileSource``): an epoch visits
the training clips in a seeded order; the window start, a crop along the longer side and a horizontal flip are drawn
from the sample's own generator; so any number of workers gives the same stream and resuming continues it exactly.
Held-out clips are the split's first ``validation_clips`` / ``test_clips`` clips from their first frame,
centre-cropped.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from ..core.errors import InputError, UserError
from ..core.streams import FileSource, Unusable, WorkerStream
from .config import SOURCES, VideoDataConfig
from .reader import VIDEO_SUFFIXES, open_video, read_clip, to_model_frames

MIN_CLIPS = 10  # data.format auto: a folder with at least this many video files is a clip dataset


@cache
def clip_files(root: str) -> tuple[str, ...]:
    """Every video file under ``root``, recursively, sorted."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        return ()
    return tuple(sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()))


def video_format(cfg: VideoDataConfig) -> str:
    """ "moving-mnist", "real-clips", "footage" (videos decoded up front, split in time) or "clips" (streamed)."""
    if cfg.source in SOURCES:
        return cfg.source
    if cfg.format != "auto":
        return cfg.format
    many = cfg.train_list or len(clip_files(cfg.source)) >= MIN_CLIPS
    return "clips" if many else "footage"


def read_split_list(path: str | Path) -> list[str]:
    """The clip entries of a split list (SSv2 JSON, Kinetics CSV or a text list): relative paths or file stems."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"split list not found: {path}")
    if path.suffix == ".json":
        return [str(item["id"]) if isinstance(item, dict) else str(item) for item in json.loads(path.read_text())]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and "youtube_id" in rows[0]:
            return [f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
                    for r in rows]  # fmt: skip
        return [next(iter(r.values())) for r in rows]
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def resolve_entries(entries: list[str], root: str, files: tuple[str, ...], on_error: str = "raise") -> list[str]:
    """List entries -> files under ``root`` (by relative path, else by stem). Missing entries are an error naming the
    first few, or with ``on_error="skip"`` left out."""
    base = Path(root).expanduser()
    by_path = {str(Path(f).relative_to(base)): f for f in files}
    by_stem = {Path(f).stem: f for f in files}
    found, missing = [], []
    for entry in entries:
        match = by_path.get(entry) or by_stem.get(Path(entry).stem if Path(entry).suffix else entry)
        (found if match else missing).append(match or entry)
    if missing and on_error == "raise":
        raise InputError(f"{len(missing)} clip(s) of the split list are not under {root}, e.g. {missing[:3]}")
    return found


def split_clips(cfg: VideoDataConfig, split: str) -> list[str]:
    """The clip files of ``split`` ("train", "validation" or "test")."""
    files = clip_files(cfg.source)
    if not files:
        raise InputError(f"no video clips ({', '.join(VIDEO_SUFFIXES)}) found under {cfg.source}")
    listing = {"train": cfg.train_list, "validation": cfg.validation_list, "test": cfg.test_list}[split]
    if listing:
        chosen = resolve_entries(read_split_list(listing), cfg.source, files, cfg.on_error)
    else:
        digit = {"validation": 3, "test": 7}.get(split)
        chosen = [f for i, f in enumerate(files) if (i % 10 == digit if digit else i % 10 not in (3, 7))]
    if not chosen:
        raise InputError(f"no {split} clips under {cfg.source}")
    return chosen


class ClipFiles(FileSource):
    """Random training windows of clip files, one clip decoded per sample (in a worker): (B, T, C, S, S) in [-1, 1]."""

    def __init__(self, files: list[str], cfg: VideoDataConfig, channels: int, seed: int = 0, shard: int = 0,
                 shards: int = 1) -> None:  # fmt: skip
        super().__init__(files, cfg.batch_size, seed, cfg.on_error, shard, shards)
        self.cfg, self.channels = cfg, channels

    def read(self, path: str, generator: torch.Generator) -> Tensor:
        cfg, size = self.cfg, self.cfg.frame_size
        video = open_video(path)
        span = (cfg.frames - 1) * cfg.stride + 1
        if len(video) < span:
            raise Unusable(f"{path} has {len(video)} frames, fewer than {cfg.frames} at stride {cfg.stride}")
        start = int(torch.randint(len(video) - span + 1, (1,), generator=generator))
        indices = range(start, start + span, cfg.stride)
        frames = to_model_frames(video.read(indices, shorter=size), size, self.channels, crop=False)  # (T, C, h, w)
        top = int(torch.randint(frames.shape[2] - size + 1, (1,), generator=generator))
        left = int(torch.randint(frames.shape[3] - size + 1, (1,), generator=generator))
        window = frames[:, :, top : top + size, left : left + size]
        return window.flip(3) if torch.rand((), generator=generator) < 0.5 else window

    def collate(self, items: list[Tensor]) -> Tensor:
        return torch.stack(items)


def clip_stream(cfg: VideoDataConfig, channels: int, seed: int, shard: int = 0, shards: int = 1,
                pin_memory: bool = False) -> WorkerStream:  # fmt: skip
    """The training clips of a clip folder, read by ``cfg.workers`` worker processes."""
    source = ClipFiles(split_clips(cfg, "train"), cfg, channels, seed, shard, shards)
    return WorkerStream(source, cfg.workers, pin_memory)


def held_out_clip_files(cfg: VideoDataConfig, split: str, channels: int) -> tuple[list[str], Tensor]:
    """The first ``validation_clips`` / ``test_clips`` clips of ``split`` from frame 0, centre-cropped: names,
    (N, T, C, S, S) in [-1, 1]. Clips too short for a window are skipped."""
    if split not in ("validation", "test"):
        raise UserError(f"split must be validation or test, got {split!r}")
    wanted = cfg.validation_clips if split == "validation" else cfg.test_clips
    names, clips, span = [], [], (cfg.frames - 1) * cfg.stride + 1
    for path in split_clips(cfg, split):
        try:
            video = open_video(path)
            if len(video) < span:
                continue
            clips.append(read_clip(video, cfg.frames, cfg.stride, 0, cfg.frame_size, channels))
        except InputError:
            if cfg.on_error == "raise":
                raise
            continue
        names.append(str(Path(path).relative_to(Path(cfg.source).expanduser())))
        if len(clips) == wanted:
            break
    if not clips:
        raise InputError(f"no {split} clip under {cfg.source} holds {cfg.frames} frames at stride {cfg.stride}")
    return names, torch.stack(clips)
