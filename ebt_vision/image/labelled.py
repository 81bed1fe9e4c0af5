"""Labelled images for linear probing: Fashion-MNIST from its IDX files (offline, Debian ``dataset-fashion-mnist``)
and any ImageFolder-style tree (``train/`` and ``val/`` of class sub-folders, e.g. ImageNet), via torchvision."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.data_check import Missing
from ..core.errors import InputError
from ..core.paths import debian_file

FASHION_MNIST = "usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")  # fmt: skip
FASHION_FIX = "install the Debian package dataset-fashion-mnist or run scripts/fetch-data.sh"
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


@dataclass
class LabelledImages:
    """Images (N, C, H, W) in [-1, 1] with integer labels (N,) and the class names."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> LabelledImages:
        return LabelledImages(self.images[index], self.labels[index], self.classes)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) -> its array; a clear error for a truncated or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"IDX file not found: {path} (scripts/fetch-data.sh unpacks Fashion-MNIST)")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise InputError(f"{path} is not a readable gzip file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise InputError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise InputError(f"{path} is truncated or padded: {len(raw)} bytes for shape {shape}, expected {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _to_images(pixels: np.ndarray, size: int, channels: int) -> Tensor:
    """(N, H, W) uint8 -> (N, channels, size, size) in [-1, 1], zero-padded (28 -> 32: patches of 4 tile it)."""
    images = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)[:, None]
    pad = size - images.shape[-1]
    if pad < 0:
        raise InputError(f"images of {images.shape[-1]}px do not fit {size}px")
    images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)  # the background is black
    return images.expand(-1, channels, -1, -1).contiguous()


def fashion_mnist(split: str, size: int = 32, channels: int = 1, folder: str | Path | None = None) -> LabelledImages:
    """The published Fashion-MNIST split ("train": 60,000, "test": 10,000), 28px centred in ``size``px."""
    if split not in ("train", "test"):
        raise InputError(f"Fashion-MNIST splits are train and test, got {split!r}")
    root = Path(folder) if folder else debian_file(FASHION_MNIST)
    if root is None:
        raise InputError("Fashion-MNIST not found: install the Debian package dataset-fashion-mnist or run "
                         "scripts/fetch-data.sh")  # fmt: skip
    prefix = "train" if split == "train" else "t10k"
    pixels = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    if len(pixels) != len(labels):
        raise InputError(f"{root}: {len(pixels)} images but {len(labels)} labels")
    return LabelledImages(_to_images(pixels, size, channels), torch.from_numpy(labels.astype(np.int64)),
                          FASHION_CLASSES)  # fmt: skip


def image_folder(root: str | Path, split: str, size: int = 32, channels: int = 3) -> LabelledImages:
    """``root/<split>/<class>/<image>`` (torchvision's ImageFolder): resized (shorter side) and centre-cropped to
    ``size``. For ImageNet-style folders: ``split`` "train" or "val"."""
    from torchvision import datasets, transforms

    folder = Path(root) / split
    if not folder.is_dir():
        raise InputError(f"no {split}/ folder of class sub-folders under {root}")
    mode = "L" if channels == 1 else "RGB"
    transform = transforms.Compose([
        transforms.Lambda(lambda image: image.convert(mode)), transforms.Resize(size), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels),
    ])  # fmt: skip
    try:
        dataset = datasets.ImageFolder(str(folder), transform=transform)
        images = torch.stack([image for image, _ in dataset])
    except (OSError, ValueError, FileNotFoundError) as error:
        raise InputError(f"cannot read {folder} as an image folder ({error})") from None
    return LabelledImages(images, torch.tensor(dataset.targets), tuple(dataset.classes))


def few_shot(data: LabelledImages, per_class: int, seed: int = 0) -> LabelledImages:
    """``per_class`` images of every class, drawn with a seed."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(data.classes)):
        index = torch.nonzero(data.labels == label).flatten()
        if len(index) < per_class:
            raise InputError(f"class {data.classes[label]} has {len(index)} images, fewer than {per_class}")
        chosen.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
    return data.subset(torch.cat(chosen))


def missing_data(cfg, splits: tuple[str, ...] = ("train", "validation", "test")) -> list[Missing]:
    """What the image config's training source lacks (``core.data_check``), looked for, never read: Fashion-MNIST's
    IDX files (its training images for train and the validation images held out of them, ``t10k`` for test) or a
    photo path. The held-out photos of denoising ship inside pip packages."""
    source = cfg.data.source
    if source == "fashion-mnist":
        root = debian_file(FASHION_MNIST)
        missing = []
        for split in splits:
            prefix = "t10k" if split == "test" else "train"
            files = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
            if root is None or not all((root / name).is_file() for name in files):
                missing.append(Missing(split, f"Fashion-MNIST {' and '.join(files)} (/{FASHION_MNIST})", FASHION_FIX))
        return missing
    if source != "packaged" and "train" in splits and not Path(source).expanduser().exists():
        return [Missing("train", f"photo source {source}", "point data.source at a folder, list file or tar shards")]
    return []
