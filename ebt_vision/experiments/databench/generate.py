"""The data benchmark's generated datasets, written outside the repository (``/tmp`` by default) and reused when
already there: a tree of COCO-sized JPEGs cut from the packaged photos (20 folders of 1,000), its tar-shard copy, a
folder of MJPEG clips (a few hundred distinct clips, hard-linked up to the wanted count: the loader's work per clip is
the same, the disk and page cache are not filled with copies), and a 1 GB token file tiled from the State of the
Union tokens."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ...image.data import packaged_training_photos, to_uint8
from ...image.streams import list_photo_files, write_photo_shards
from ...text.prepare import META, PrepareOptions, prepare_corpus, prepared_tokens, read_meta
from ...video.mjpeg import write_mjpeg_avi

PER_FOLDER = 1000
PHOTO_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (640, 360))  # COCO's common shapes (width, height)
DONE = ".complete"
_BASES: list[np.ndarray] = []  # the packaged photos as uint8, shared with the generating processes by fork


def _photo(base: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random region of ``base`` (at least half its shorter side) resized to ``size``, maybe mirrored."""
    height, width = base.shape[:2]
    side = rng.integers(min(height, width) // 2, min(height, width) + 1)
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    region = Image.fromarray(base[top : top + side, left : left + side])
    image = region.resize(size, Image.Resampling.BICUBIC)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def _write_photos(args: tuple[Path, int, int, int]) -> None:
    root, first, count, seed = args
    for number in range(first, first + count):
        rng = np.random.default_rng([seed, number])
        base = _BASES[rng.integers(len(_BASES))]
        size = PHOTO_SIZES[rng.integers(len(PHOTO_SIZES))]
        path = root / f"part{number // PER_FOLDER:02d}" / f"photo{number:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(base, size, rng).save(path, quality=90)


def photo_tree(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` COCO-sized JPEGs under ``root/partNN/`` (1,000 per folder), generated in parallel."""
    if (root / DONE).is_file() and (root / DONE).read_text() == str(count):
        return root
    shutil.rmtree(root, ignore_errors=True)
    _BASES[:] = [to_uint8(p.image) for p in packaged_training_photos() if min(p.image.shape[1:]) >= 200]
    chunks = [(root, first, min(500, count - first), seed) for first in range(0, count, 500)]
    with ProcessPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_photos, chunks))
    (root / DONE).write_text(str(count))
    return root


def shard_copy(tree: Path, out: Path, shards: int = 20) -> Path:
    """The tree's photos as ``shards`` tar shards (shuffled), made once."""
    if not (out / DONE).is_file():
        shutil.rmtree(out, ignore_errors=True)
        files = list_photo_files(str(tree), "folder")
        write_photo_shards(files, out, max(1, -(-len(files) // shards)))
        (out / DONE).write_text("done")
    return out


def _pan(base: np.ndarray, frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(frames, H, W, 3) uint8: a window panning across ``base`` (scaled to twice the frame), like a moving camera."""
    width, height = size
    image = np.asarray(Image.fromarray(base).resize((width * 2, height * 2), Image.Resampling.BILINEAR))
    dy, dx = rng.integers(-1, 2), rng.integers(1, 4)
    top, left = rng.integers(0, height + 1), rng.integers(0, width // 2)
    ys = np.clip(top + dy * np.arange(frames), 0, height)
    xs = np.clip(left + dx * np.arange(frames), 0, width)
    return np.stack([image[y : y + height, x : x + width] for y, x in zip(ys, xs, strict=True)])


def clip_tree(root: Path, count: int, distinct: int = 200, frames: int = 24, seed: int = 0) -> Path:
    """``count`` clip files under ``root/partNN/`` (1,000 per folder): ``distinct`` MJPEG clips of ``frames``
    160x120 frames, hard-linked (``count`` entries, ``distinct`` files' worth of disk)."""
    if (root / DONE).is_file() and (root / DONE).read_text() == str(count):
        return root
    shutil.rmtree(root, ignore_errors=True)
    bases = [to_uint8(p.image) for p in packaged_training_photos() if min(p.image.shape[1:]) >= 200]
    originals = root / "distinct"
    for number in range(distinct):
        rng = np.random.default_rng([seed, number])
        write_mjpeg_avi(originals / f"clip{number:04d}.avi", _pan(bases[number % len(bases)], frames, (160, 120), rng))
    for number in range(count):
        path = root / "clips" / f"part{number // PER_FOLDER:02d}" / f"clip{number:06d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(originals / f"clip{number % distinct:04d}.avi", path)
    (root / DONE).write_text(str(count))
    return root


def token_files(root: Path, gigabytes: float = 1.0) -> tuple[Path, Path, float]:
    """The State of the Union prepared (BPE of 2,048, as configs/text-cpu.yaml) and a copy whose ``train.bin`` is its
    training tokens tiled to ``gigabytes``: (small, large, seconds prepare-text took)."""
    small, large = root / "sotu", root / "tiled"
    seconds = float((root / "prepare_seconds").read_text()) if (root / "prepare_seconds").is_file() else -1.0
    if not (small / META).is_file():
        import time

        started = time.perf_counter()
        prepare_corpus(["sotu"], small, PrepareOptions(vocab_size=2048))
        seconds = time.perf_counter() - started
        (root / "prepare_seconds").write_text(str(seconds))
    if not (large / DONE).is_file():
        shutil.rmtree(large, ignore_errors=True)
        shutil.copytree(small, large)
        tokens = np.asarray(prepared_tokens(small, "train"))
        repeats = int(np.ceil(gigabytes * 1e9 / tokens.nbytes))
        with (large / "train.bin").open("wb") as handle:
            for _ in range(repeats):
                tokens.tofile(handle)
        meta = read_meta(small)
        meta["tokens"]["train"] = len(tokens) * repeats
        (large / META).write_text(json.dumps(meta, indent=1) + "\n")
        (large / DONE).write_text("done")
    return small, large, seconds
