"""Photos for denoising: the packaged sets, fixed validation and test splits, a folder loader, random training crops.

Pixels are float tensors in [-1, 1], shape (C, H, W). Everything here works offline: the packaged photos ship inside
installed packages (scikit-image, PyWavelets, scikit-learn) and the Debian package ``opencv-doc``. Three disjoint
sets: training photos, a validation split (where settings such as step counts are chosen) and a test split (where
they are reported); neither held-out split ever enters training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import InputError, UserError
from ..core.sampling import ShardedSampler
from .config import DataConfig
from .files import READABLE, from_pixels, read_image
from .noise import NoiseLevel, training_noise

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# Real photos among opencv-doc's samples; logos, charts, chessboards, text, renders and paintings are left out.
OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "box_in_scene.png", "building.jpg",
    "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg", "messi5.jpg",
    "orange.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "basketball1.png", "left.jpg",
)  # fmt: skip
# The test split: 8 lossless photos that never enter training (5 colour, 3 grey shown as 3 channels).
TEST_PHOTOS = (
    "skimage:astronaut", "skimage:coffee", "skimage:chelsea", "skimage:immunohistochemistry",
    "skimage:motorcycle_left", "skimage:camera", "skimage:moon", "pywt:ascent",
)  # fmt: skip
# The validation split: settings (step counts, variants, best-of-N) are chosen here, never on the test split. The
# opencv-doc photos are left out of training for this; without that Debian package only retina remains.
VALIDATION_PHOTOS = (
    "skimage:retina", "opencv:chicky_512.png", "opencv:stuff.jpg", "opencv:board.jpg", "opencv:blox.jpg",
)  # fmt: skip
SPLITS = {"test": TEST_PHOTOS, "validation": VALIDATION_PHOTOS}
# Training photos from the Python packages. Near-duplicates of held-out photos are excluded on purpose:
# skimage's cat() is chelsea(), and motorcycle_right is the stereo twin of motorcycle_left.
PACKAGE_TRAIN = (
    "skimage:rocket", "skimage:hubble_deep_field", "skimage:coins", "skimage:brick", "skimage:grass",
    "skimage:gravel", "skimage:clock", "pywt:aero", "sklearn:china", "sklearn:flower",
)  # fmt: skip


class DataUnavailable(UserError):
    """A packaged photo source is not installed."""


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, clamped."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def downscale(image: Tensor, factor: float) -> Tensor:
    """Antialiased resize of a (3, H, W) image by ``factor`` (< 1 to suppress JPEG artefacts)."""
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[2] * factor)))
    return torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]


def _packaged_array(name: str) -> Callable[[], np.ndarray]:
    """The function that returns a Python package's photo as pixels."""
    source, key = name.split(":")
    if source == "skimage":
        import skimage.data

        if key in ("motorcycle_left", "motorcycle_right"):
            return lambda: skimage.data.stereo_motorcycle()[0 if key.endswith("left") else 1]
        return getattr(skimage.data, key)
    if source == "pywt":
        import pywt.data

        return getattr(pywt.data, key)
    if source == "sklearn":
        from sklearn.datasets import load_sample_image

        return lambda: load_sample_image(f"{key}.jpg")
    raise KeyError(f"unknown packaged photo {name!r}")


def load_packaged(name: str) -> Tensor:
    """A named photo (``"skimage:astronaut"``, ``"opencv:stuff.jpg"``) -> (3, H, W). JPEG sources are downscaled by 2
    against artefacts."""
    source, key = name.split(":")
    try:
        if source == "opencv":
            if not (OPENCV_DATA / key).is_file():
                raise ImportError(f"{OPENCV_DATA / key} not found (Debian package opencv-doc)")
            image = read_image(OPENCV_DATA / key).rgb
        else:
            image = from_pixels(np.asarray(_packaged_array(name)()), name).rgb
    except ImportError as error:
        raise DataUnavailable(f"{name}: its package is not installed ({error})") from None
    jpeg = name.startswith("sklearn:") or name.endswith((".jpg", "rocket", "hubble_deep_field", "retina"))
    return downscale(image, 0.5) if jpeg else image


@dataclass(frozen=True)
class Photo:
    name: str
    image: Tensor  # (3, H, W) in [-1, 1]


def held_out_photos(max_side: int | None = None, split: str = "test") -> list[Photo]:
    """A held-out split ("test" or "validation"), optionally downscaled so the longest side is at most ``max_side``.
    Validation photos whose package is missing are skipped (with a warning); test photos are required."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    photos = []
    for name in SPLITS[split]:
        try:
            image = load_packaged(name)
        except DataUnavailable as error:
            if split == "test":
                raise
            warnings.warn(f"validation photo skipped: {error}", stacklevel=2)
            continue
        if max_side and max(image.shape[1:]) > max_side:
            image = downscale(image, max_side / max(image.shape[1:]))
        photos.append(Photo(name, image))
    return photos


def square_crops(photos: list[Photo], size: int) -> tuple[list[str], Tensor]:
    """Photos with the shorter side resized to ``size`` (antialiased) and centre-cropped: names, (N, 3, size, size)."""
    names, images = [], []
    for photo in photos:
        _, h, w = photo.image.shape
        scale = size / min(h, w)
        shape = (max(size, round(h * scale)), max(size, round(w * scale)))
        resized = F.interpolate(photo.image[None], size=shape, mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (resized.shape[1] - size) // 2, (resized.shape[2] - size) // 2
        names.append(photo.name)
        images.append(resized[:, top : top + size, left : left + size].clamp(-1, 1))
    return names, torch.stack(images)


def packaged_training_photos() -> list[Photo]:
    """Training photos: the Python packages' photos plus opencv-doc's when that Debian package is installed."""
    photos = [Photo(name, load_packaged(name)) for name in PACKAGE_TRAIN]
    if OPENCV_DATA.is_dir():
        # JPEG sources: halve them so compression artefacts shrink below the noise we add.
        photos += [
            Photo(f"opencv:{n}", downscale(read_image(OPENCV_DATA / n).rgb, 0.5 if n.endswith(".jpg") else 1.0))
            for n in OPENCV_PHOTOS
            if (OPENCV_DATA / n).is_file() and f"opencv:{n}" not in VALIDATION_PHOTOS
        ]
    else:
        warnings.warn(
            f"{OPENCV_DATA} not found: training on the Python packages' photos only. "
            "Install the Debian package opencv-doc (scripts/install-system-deps.sh) for ~20 more photos.",
            stacklevel=2,
        )
    return photos


def folder_photos(root: str | Path) -> list[Photo]:
    """Every image under ``root`` (recursively), for training on your own photos. Corrupt files are errors."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"photo folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in READABLE)
    if not paths:
        raise InputError(f"no images ({', '.join(READABLE)}) found under {root}")
    return [Photo(str(p.relative_to(root)), read_image(p).rgb) for p in paths]


def training_photos(cfg: DataConfig) -> list[Photo]:
    photos = packaged_training_photos() if cfg.source == "packaged" else folder_photos(cfg.source)
    small = [p.name for p in photos if min(p.image.shape[1:]) < cfg.crop_size]
    if small:
        raise InputError(f"photos smaller than the {cfg.crop_size}px crop: {small[:5]}")
    return photos


@dataclass
class DenoisingBatch:
    """Noisy images, their clean originals (B, C, H, W) in [-1, 1], and the noise of each."""

    noisy: Tensor
    clean: Tensor
    noise: NoiseLevel

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DenoisingBatch:
        to = dict(device=device, non_blocking=non_blocking)
        return DenoisingBatch(self.noisy.to(**to), self.clean.to(**to), self.noise.to(**to))

    def pin_memory(self) -> DenoisingBatch:
        """Page-locked copies, for fast copies to a GPU (the DataLoader calls this)."""
        return DenoisingBatch(self.noisy.pin_memory(), self.clean.pin_memory(), self.noise.pin_memory())


class NoisedSampler(ShardedSampler):
    """What both photo streams share: clean images of a global batch get fresh training noise (``data.noise``), and
    this process keeps its rows. Resumable and sharded (``ShardedSampler``)."""

    def __init__(self, cfg: DataConfig, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        super().__init__(cfg.batch_size, seed, shard, shards)
        self.cfg = cfg

    def _noised(self, clean: Tensor) -> DenoisingBatch:
        """(shards * B, C, H, W) clean images -> this process's ``DenoisingBatch``."""
        noise = training_noise(self.cfg, clean.shape[0], self.generator)
        noisy = noise.add_to(clean, self.generator)
        mine = self.mine
        return DenoisingBatch(noisy[mine], clean[mine], NoiseLevel(noise.kind, noise.value[mine]))


class CropSampler(NoisedSampler):
    """Endless batches of random crops (flips and 90-degree turns) with fresh noise: yields ``DenoisingBatch``.
    Photos are drawn in proportion to their area so every pixel is equally likely."""

    def __init__(self, photos: list[Photo], cfg: DataConfig, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        super().__init__(cfg, seed, shard, shards)
        if not photos:
            raise InputError("no training photos")
        self.images = [p.image for p in photos]
        areas = torch.tensor([float(im.shape[1] * im.shape[2]) for im in self.images])
        self.weights = areas / areas.sum()

    def _crop(self) -> Tensor:
        g, size = self.generator, self.cfg.crop_size
        image = self.images[int(torch.multinomial(self.weights, 1, generator=g))]
        top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=g))
        crop = image[:, top : top + size, left : left + size]
        if torch.rand((), generator=g) < 0.5:
            crop = crop.flip(2)
        return torch.rot90(crop, int(torch.randint(4, (1,), generator=g)), dims=(1, 2))

    def sample(self) -> DenoisingBatch:
        return self._noised(torch.stack([self._crop() for _ in range(self.global_batch)]))


class TensorSampler(NoisedSampler):
    """Endless batches from a stack of equal-size images (e.g. Fashion-MNIST): random images, horizontal flips,
    fresh noise; yields ``DenoisingBatch``. Resumable and sharded like ``CropSampler`` (no 90-degree turns: a
    sideways garment is another picture)."""

    def __init__(self, images: Tensor, cfg: DataConfig, seed: int = 0, shard: int = 0, shards: int = 1) -> None:
        super().__init__(cfg, seed, shard, shards)
        if images.dim() != 4 or images.shape[-1] != cfg.crop_size or images.shape[-2] != cfg.crop_size:
            raise InputError(f"expected images (N, C, {cfg.crop_size}, {cfg.crop_size}), got {tuple(images.shape)}")
        self.images = images

    def sample(self) -> DenoisingBatch:
        count = self.global_batch
        index = torch.randint(len(self.images), (count,), generator=self.generator)
        flip = torch.rand(count, generator=self.generator) < 0.5
        return self._noised(torch.where(flip[:, None, None, None], self.images[index].flip(-1), self.images[index]))
