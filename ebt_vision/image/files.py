"""Image files in and out, the one reader every caller uses (training folders, opencv-doc's photos, the app's
uploads, ``ebt-vision denoise``): 8- and 16-bit, grey, RGB, with or without alpha; results never overwrite inputs.

Models work on RGB in [-1, 1]. Grey images are denoised as three equal channels and written back grey; an alpha
channel is kept as it was and re-attached; 16-bit images are denoised at full precision and written as 16-bit TIFF
(8-bit ones as PNG: lossless, so no compression artefacts are added to the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.defaults import MAX_FILE_PIXELS
from ..core.errors import InputError

READABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm", ".pgm")


@dataclass
class UserImage:
    """One image as read from disk: RGB for the model, and what is needed to write the result back alike."""

    path: Path
    rgb: Tensor  # (3, H, W) in [-1, 1]
    alpha: np.ndarray | None  # (H, W), the original alpha values and dtype
    bit_depth: int  # 8 or 16
    grey: bool


def read_image(path: str | Path, max_pixels: int = MAX_FILE_PIXELS) -> UserImage:
    """Read a PNG/JPEG/TIFF/WebP/BMP/PPM/PGM file; clear errors naming the file for what cannot be read. Images over
    ``max_pixels`` are refused from their header, before anything large is decoded."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    if path.suffix.lower() not in READABLE:
        raise InputError(f"{path.name} is not an image this can read: unsupported format {path.suffix!r}; "
                         f"supported: {', '.join(READABLE)}")  # fmt: skip
    try:
        shape = iio.improps(path).shape
        if int(np.prod(shape[:2])) > max_pixels:
            raise InputError(f"{path.name} is {shape[1]}x{shape[0]}; the limit is {max_pixels // 1_000_000} megapixels")
        array = iio.imread(path)
    except InputError:
        raise
    except Exception as error:  # every decoder raises its own type for a corrupt file
        raise InputError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from None
    return from_pixels(np.asarray(array), path)


def from_pixels(array: np.ndarray, path: str | Path = "image") -> UserImage:
    """(H, W) or (H, W, C) 8- or 16-bit pixels -> a ``UserImage`` whose ``rgb`` is (3, H, W) in [-1, 1]: grey is
    repeated, alpha kept apart."""
    path = Path(path)
    if array.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif array.dtype == np.uint16:
        depth, scale = 16, 65535.0
    else:
        raise InputError(f"{path.name}: {array.dtype} pixels are not supported; use 8- or 16-bit integer images")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path.name}: expected one grey, grey+alpha, RGB or RGBA image, got shape {array.shape}")
    channels = array.shape[2]
    alpha = array[:, :, -1].copy() if channels in (2, 4) else None
    colour = array[:, :, : 1 if channels <= 2 else 3].astype(np.float32) / scale
    grey = colour.shape[2] == 1
    rgb = torch.from_numpy(np.repeat(colour, 3, axis=2) if grey else colour).permute(2, 0, 1) * 2 - 1
    return UserImage(path, rgb.contiguous(), alpha, depth, grey)


def output_path(path: Path, bit_depth: int, out_dir: Path, tag: str, relative_to: Path | None = None) -> Path:
    """``OUT/<name>.<tag>.png`` (8-bit) or ``.tif`` (16-bit); images from a folder keep their sub-folders."""
    relative = path.relative_to(relative_to) if relative_to else Path(path.name)
    suffix = ".tif" if bit_depth == 16 else ".png"
    return out_dir / relative.parent / f"{relative.stem}.{tag}{suffix}"


def to_array(image: UserImage, rgb: Tensor) -> np.ndarray:
    """A result (3, H, W) in [-1, 1] -> the input's layout: grey or RGB, alpha re-attached, 8 or 16 bit."""
    unit = ((rgb.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    if image.grey:
        unit = unit.mean(axis=2, keepdims=True)
    scale, dtype = (65535.0, np.uint16) if image.bit_depth == 16 else (255.0, np.uint8)
    pixels = np.round(unit * scale).astype(dtype)
    if image.alpha is not None:
        pixels = np.concatenate([pixels, image.alpha.astype(dtype)[:, :, None]], axis=2)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def write_image(array: np.ndarray, path: Path) -> None:
    """Write atomically: a killed run never leaves half a file under the final name."""
    import imageio.v3 as iio
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".tif":
        tifffile.imwrite(tmp, array, photometric="minisblack" if array.ndim == 2 else None)
    else:
        iio.imwrite(tmp, array)
    tmp.replace(path)


def collect_inputs(inputs: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """Files as given, and the images under each folder (recursively): (path, the folder it came from or None)."""
    found: list[tuple[Path, Path | None]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in READABLE)
            if not images:
                raise InputError(f"no images ({', '.join(READABLE)}) found under {item}")
            found += [(p, item) for p in images]
        elif item.is_file():
            found.append((item, None))
        else:
            raise InputError(f"no such file or folder: {item}")
    return found
