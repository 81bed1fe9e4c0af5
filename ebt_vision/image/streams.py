"""Photo trees streamed from disk: random crops decoded in DataLoader workers, exactly resumable, for datasets far
larger than memory (COCO, ImageNet, your own tree).

``data.format`` says how ``data.source`` is laid out:

- ``folder``: every image under a folder, recursively (an ImageFolder tree, or a plain folder). A folder holding a
  ``train/`` sub-folder is read from ``train/`` alone, so its ``val/`` and ``test/`` never enter training.
- ``list``: a text file naming one image per line (relative to the list's folder, or absolute; the first
  whitespace-separated field, so ``path label`` lines work).
- ``webdataset``: tar shards (``webdataset``'s layout: ``KEY.jpg`` members), a folder of ``.tar`` files or a
  brace pattern ``shards/train-{000000..000099}.tar``. For trees with too many files to list.
- ``memory``: the photos decoded up front, in the training process (``data.CropSampler``): the packaged photos, and a
  handful of large photos where decoding a whole photo per crop would waste most of the work.
- ``auto``: ``memory`` for ``packaged``, ``list`` for a file, ``webdataset`` for ``.tar`` paths or a folder of them,
  ``folder`` otherwise.

Folder and list streams are pure functions of (seed, global sample index): every epoch visits the files in a fresh
seeded order, each crop, flip, turn and noise draw comes from a generator seeded by the sample's index, so the stream
is the same for any number of workers and a resumed run continues it exactly (``core.streams``). Tar shards are read
in order: each epoch deals the shards, in a seeded order, to the readers (processes x workers); each reader shuffles
blocks of ``SHUFFLE_BLOCK`` samples; its position (epoch, shard, sample) travels in the checkpoint.
"""

from __future__ import annotations

import glob
import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.defaults import MAX_FILE_PIXELS
from ..core.errors import InputError, UserError
from ..core.streams import ON_ERROR, FileSource, Unusable, WorkerStream, permutation, sample_generator
from .config import FORMATS, DataConfig
from .data import DenoisingBatch
from .files import READABLE, read_image
from .noise import NoiseLevel, training_noise

EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")
SHUFFLE_BLOCK = 256  # samples of a tar shard shuffled together (raw bytes: ~40 MB for 150 kB JPEGs)
IMAGE_KEYS = tuple(suffix.lstrip(".") for suffix in READABLE)


def resolve_format(source: str, fmt: str = "auto") -> str:
    """The layout of ``data.source`` (``FORMATS`` without auto)."""
    if fmt not in FORMATS:
        raise UserError(f"data.format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    path = Path(source).expanduser()
    if source in ("packaged", "fashion-mnist"):
        return "memory"
    if ".tar" in path.name or (path.is_dir() and any(path.glob("*.tar"))):
        return "webdataset"
    return "list" if path.is_file() else "folder"


def photo_root(source: str) -> Path:
    """The folder a folder-format stream reads: ``source``, or its ``train/`` sub-folder when it has one."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise InputError(f"photo folder not found: {root}")
    return root / "train" if (root / "train").is_dir() else root


def list_photo_files(source: str, fmt: str) -> list[str]:
    """The image files of a ``folder`` or ``list`` source, sorted (folder) or in list order."""
    if fmt == "folder":
        root = photo_root(source)
        files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in READABLE)
        if not files:
            raise InputError(f"no images ({', '.join(READABLE)}) found under {root}")
        return files
    listing = Path(source).expanduser()
    if not listing.is_file():
        raise InputError(f"photo list not found: {listing}")
    files = []
    for line in listing.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            path = Path(fields[0]).expanduser()
            files.append(str(path if path.is_absolute() else listing.parent / path))
    if not files:
        raise InputError(f"{listing} names no images")
    return files


def list_shards(source: str) -> list[str]:
    """The tar shards of a ``webdataset`` source: a folder of ``.tar`` files, one file, or a brace pattern."""
    from braceexpand import braceexpand

    path = Path(source).expanduser()
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
    else:
        shards = [s for pattern in braceexpand(str(path)) for s in sorted(glob.glob(pattern))]
    if not shards:
        raise InputError(f"no tar shards found at {source}")
    return shards


def decode_photo(data: str | bytes, name: str, resize: int = 0) -> np.ndarray:
    """An image file (a path, or its bytes) -> (H, W, 3) uint8, the shorter side scaled to ``resize`` when given
    (JPEGs decode at a reduced scale first: much faster). Clear ``InputError``s naming ``name``."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
            if width * height > MAX_FILE_PIXELS:
                raise InputError(f"{name} is {width}x{height}; the limit is {MAX_FILE_PIXELS // 1_000_000} megapixels")
            if image.mode not in EIGHT_BIT_MODES:  # 16-bit and float images: the one reader that handles them
                return _resized(_wide_pixels(data, name), resize)
            if resize and image.format == "JPEG":
                scale = resize / min(width, height)
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            pixels = np.asarray(image.convert("RGB"))
    except InputError:
        raise
    except Exception as error:  # every decoder raises its own type for a corrupt or truncated file
        raise InputError(f"cannot read {name} as an image ({type(error).__name__}: {error})") from None
    return _resized(pixels, resize)


def _wide_pixels(data: str | bytes, name: str) -> np.ndarray:
    """A 16-bit or float image through ``files.read_image`` (bytes from a shard go through a temporary file) ->
    (H, W, 3) uint8."""
    import tempfile

    if isinstance(data, str):
        rgb = read_image(data).rgb
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(name).name
            path.write_bytes(data)
            rgb = read_image(path).rgb
    return ((rgb + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def _resized(pixels: np.ndarray, resize: int) -> np.ndarray:
    if not resize or min(pixels.shape[:2]) == resize:
        return pixels
    height, width = pixels.shape[:2]
    scale = resize / min(height, width)
    size = (max(resize, round(width * scale)), max(resize, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


def noisy_crop(pixels: np.ndarray, cfg: DataConfig, generator: torch.Generator, name: str):
    """(H, W, 3) uint8 -> (clean (3, S, S) in [-1, 1], noise level (1,), noisy (3, S, S)): a random crop, flip and
    90-degree turn, then training noise, every draw from ``generator`` (in ``data.CropSampler``'s order)."""
    size = cfg.crop_size
    height, width = pixels.shape[:2]
    if min(height, width) < size:
        raise Unusable(f"{name} is {width}x{height}, smaller than the {size}px crop (data.crop_size)")
    top = int(torch.randint(height - size + 1, (1,), generator=generator))
    left = int(torch.randint(width - size + 1, (1,), generator=generator))
    crop = torch.from_numpy(pixels[top : top + size, left : left + size].copy()).permute(2, 0, 1)
    clean = crop.float() / 255.0 * 2 - 1
    if torch.rand((), generator=generator) < 0.5:
        clean = clean.flip(2)
    clean = torch.rot90(clean, int(torch.randint(4, (1,), generator=generator)), dims=(1, 2)).contiguous()
    noise = training_noise(cfg, 1, generator)
    return clean, noise.value, noise.add_to(clean[None], generator)[0]


def collate_crops(items: list, kind: str) -> DenoisingBatch:
    clean, level, noisy = zip(*items, strict=True)
    return DenoisingBatch(torch.stack(noisy), torch.stack(clean), NoiseLevel(kind, torch.cat(level)))


class PhotoFiles(FileSource):
    """Noisy crops of a list of photo files, one decoded per sample in a worker (``core.streams.FileSource``)."""

    def __init__(self, files: list[str], cfg: DataConfig, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        super().__init__(files, cfg.batch_size, seed, cfg.on_error, shard, shards)
        self.cfg = cfg

    def read(self, path: str, generator: torch.Generator):
        return noisy_crop(decode_photo(path, path, self.cfg.resize), self.cfg, generator, path)

    def collate(self, items: list) -> DenoisingBatch:
        return collate_crops(items, self.cfg.noise)


class PhotoShards:
    """Noisy crops of the photos in tar shards, read in order by each reader (process x worker), blocks of
    ``SHUFFLE_BLOCK`` shuffled; a reader's position is (epoch, its shard number, samples of that shard done)."""

    def __init__(self, shards: list[str], cfg: DataConfig, seed: int = 0, shard: int = 0, shards_total: int = 1):
        if cfg.on_error not in ON_ERROR:
            raise UserError(f"data.on_error must be one of {ON_ERROR}, got {cfg.on_error!r}")
        self.shards, self.cfg, self.seed = list(shards), cfg, seed
        self.rank, self.ranks = shard, shards_total

    def signature(self) -> dict:
        return {"shards": len(self.shards), "processes": self.ranks}

    def start(self, slot: int, slots: int) -> tuple[int, int, int]:
        return (0, 0, 0)

    def check_readers(self, slots: int) -> None:
        readers = self.ranks * slots
        if len(self.shards) < readers:
            raise UserError(
                f"{len(self.shards)} tar shard(s) for {readers} readers (processes x data.workers): every reader needs "
                "at least one shard. Write more, smaller shards, or use fewer workers"
            )

    def _members(self, index: int, epoch: int):
        """(name, image bytes) of shard ``index`` in its shuffled order; a broken shard raises ``InputError``."""
        import webdataset

        path, block, samples = self.shards[index], [], []
        try:
            for sample in webdataset.tarfile_samples([{"url": path}]):
                key = next((k for k in IMAGE_KEYS if k in sample), None)
                if key is not None:
                    samples.append((f"{path}:{sample['__key__']}.{key}", sample[key]))
        except Exception as error:  # tarfile's ReadError, truncated members
            samples.append((path, InputError(f"cannot read tar shard {path} ({type(error).__name__}: {error})")))
        for start in range(0, len(samples), SHUFFLE_BLOCK):
            block = samples[start : start + SHUFFLE_BLOCK]
            order = permutation(len(block), self.seed, epoch, index, start)
            yield from (block[i] for i in order)

    def _samples(self, reader: int, readers: int, position: tuple[int, int, int]):
        """This reader's (name, bytes, generator, position after it), endlessly, from ``position``."""
        epoch, turn, done = position
        while True:
            mine = permutation(len(self.shards), self.seed, epoch)[reader::readers]
            for number in range(turn, len(mine)):
                index = int(mine[number])
                for j, (name, data) in enumerate(self._members(index, epoch)):
                    if j >= done:
                        yield name, data, sample_generator(self.seed, epoch, index, j), (epoch, number, j + 1)
                done = 0
            epoch, turn = epoch + 1, 0

    def batches(self, slot: int, slots: int, position: tuple[int, int, int]):
        self.check_readers(slots)
        items, skipped = [], ()
        for name, data, generator, after in self._samples(self.rank * slots + slot, self.ranks * slots, position):
            try:
                if isinstance(data, InputError):
                    raise data
                items.append(noisy_crop(decode_photo(data, name, self.cfg.resize), self.cfg, generator, name))
            except InputError as error:
                if self.cfg.on_error == "raise" and not isinstance(error, Unusable):
                    raise
                skipped += (name,)
            if len(items) == self.cfg.batch_size:
                yield collate_crops(items, self.cfg.noise), after, skipped
                items, skipped = [], ()


def write_photo_shards(files: list[str], out: str | Path, per_shard: int = 1000, seed: int = 0) -> list[Path]:
    """Copy image files into tar shards of ``per_shard`` photos (``out/shard-000000.tar`` ...), in a seeded random
    order so that every shard is a fair sample of the tree. -> the shard paths."""
    import webdataset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = permutation(len(files), seed)
    with webdataset.ShardWriter(str(out / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as writer:
        for number, i in enumerate(order):
            path = Path(files[i])
            key = f"{number:09d}_{re.sub(r'[^A-Za-z0-9_-]', '_', path.stem)}"
            writer.write({"__key__": key, path.suffix.lower().lstrip("."): path.read_bytes()})
    return sorted(out.glob("shard-*.tar"))


def photo_stream(cfg: DataConfig, seed: int, shard: int = 0, shards: int = 1, pin_memory: bool = False):
    """The streaming training batches of a ``folder``, ``list`` or ``webdataset`` source (``WorkerStream``)."""
    fmt = resolve_format(cfg.source, cfg.format)
    if fmt == "webdataset":
        source = PhotoShards(list_shards(cfg.source), cfg, seed, shard, shards)
        source.check_readers(max(1, cfg.workers))
    elif fmt in ("folder", "list"):
        source = PhotoFiles(list_photo_files(cfg.source, fmt), cfg, seed, shard, shards)
    else:
        raise UserError(f"data.format {fmt} is not a streaming format")
    return WorkerStream(source, cfg.workers, pin_memory)
