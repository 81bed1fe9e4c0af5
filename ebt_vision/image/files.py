"""Image files in and out, the one reader every caller uses (training folders, opencv-doc's photos, the app's
uploads, ``ebt-vision denoise``): 8- and 16-bit, grey, RGB, with or without alpha; results never overwrite inputs.

Models work on RGB in [-1, 1]. Grey images are denoised as three equal channels and written back grey; an alpha
channel is kept as it was and re-attached; CMYK, palette and YCbCr images are converted to RGB. 16-bit images are
denoised at full precision and written back at 16 bits: as TIFF for TIFF inputs, as PNG for the others (8-bit images
too: lossless, so no compression artefacts are added to the result).

A file is checked from its header before anything is decoded (``check_image_file``): missing, empty, not an image,
over the pixel limit (every frame counted), or holding several frames, each is one clear error naming the file.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.defaults import DENOISE_MEMORY_GIB, MAX_IMAGE_PIXELS
from ..core.errors import InputError

READABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm", ".pgm")
TIFF = (".tif", ".tiff")
MEMORY_BUDGET = f"what denoise holds in {DENOISE_MEMORY_GIB} GiB of memory"  # why denoise's MAX_FILE_PIXELS is
# Pillow's modes that are not grey or RGB(A): converted to RGB(A) as Pillow does (CMYK naively, without a colour
# profile: the JPEG's four channels were once taken as RGBA, inverted and transparent)
_CONVERTED = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


@dataclass
class UserImage:
    """One image as read from disk: RGB for the model, and what is needed to write the result back alike."""

    path: Path
    rgb: Tensor  # (3, H, W) in [-1, 1]
    alpha: np.ndarray | None  # (H, W), the original alpha values and dtype
    bit_depth: int  # 8 or 16
    grey: bool


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any pixel is decoded."""

    width: int
    height: int
    frames: int  # > 1: an animation or a multi-page file


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, why: str = "") -> ImageHeader:
    """The header of an image file this can read, or an ``InputError`` naming the file: missing, unsupported suffix,
    empty, not an image, more than ``max_pixels`` decoded pixels (all frames counted: a small animated PNG can
    decode to gigabytes; ``why``: the limit's reason, for the message), or several frames. Nothing is decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    if path.suffix.lower() not in READABLE:
        raise InputError(f"{path.name} is not an image this can read: unsupported format {path.suffix!r}; "
                         f"supported: {', '.join(READABLE)}")  # fmt: skip
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)")
    header = _tiff_header(path) if path.suffix.lower() in TIFF else _pillow_header(path)
    pixels = header.width * header.height * header.frames
    if pixels > max_pixels:
        frames = f" x {header.frames} frames" if header.frames > 1 else ""
        raise InputError(f"{path.name} is {header.width}x{header.height}{frames} ({pixels / 1e6:.1f} megapixels); "
                         f"the limit is {max_pixels / 1e6:g} megapixels{f', {why}' if why else ''}")  # fmt: skip
    if header.frames > 1:
        raise InputError(f"{path.name} holds {header.frames} frames (an animation or a multi-page file); give one "
                         "image per file")  # fmt: skip
    return header


def _not_an_image(path: Path, error: Exception) -> InputError:
    kind = "TIFF" if path.suffix.lower() in TIFF else path.suffix.lstrip(".").upper()
    return InputError(f"{path.name} is not an image: cannot read its content as {kind} ({error})")


def _pillow_header(path: Path) -> ImageHeader:
    from PIL import Image, UnidentifiedImageError

    # Pillow warns of images over 89 megapixels as it opens them; the limit that applies is checked here, in one line
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(path) as image:  # reads the header only
            return ImageHeader(*image.size, getattr(image, "n_frames", 1))
    except UnidentifiedImageError as error:
        raise _not_an_image(path, error) from None
    except Image.DecompressionBombError as error:  # Pillow's own limit (179 megapixels), above ours
        raise InputError(f"{path.name} has more pixels than Pillow decodes ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:  # a header cut short or damaged
        raise InputError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from None


def _tiff_header(path: Path) -> ImageHeader:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            sizes = dict(zip(series.axes, series.shape, strict=True))
            frames = int(np.prod([n for axis, n in sizes.items() if axis not in "YXS"]))
            return ImageHeader(sizes.get("X", 1), sizes.get("Y", 1), frames)
    except tifffile.TiffFileError as error:
        raise _not_an_image(path, error) from None
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise InputError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from None


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, why: str = "") -> UserImage:
    """Read a PNG/JPEG/TIFF/WebP/BMP/PPM/PGM file; clear errors naming the file for what cannot be read. The header
    is checked first (``check_image_file``), so a file over ``max_pixels`` is refused before it is decoded."""
    path = Path(path)
    check_image_file(path, max_pixels, why)
    try:
        array = _read_tiff(path) if path.suffix.lower() in TIFF else _read_pillow(path)
    except InputError:
        raise
    except Exception as error:  # every decoder raises its own type for a corrupt file
        raise InputError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from None
    if array.dtype.byteorder == ">":  # big-endian 16-bit samples, as Pillow gives some
        array = array.astype(array.dtype.newbyteorder("="))
    return from_pixels(array, path)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        if image.format == "PNG" and image.tile and image.tile[0][3] in _PNG16:
            return _png16(path, image.tile[0][3])
        mode = _CONVERTED.get(image.mode)
        if image.mode in ("P", "PA") and "transparency" in image.info:
            mode = "RGBA"
        return np.asarray(image.convert(mode) if mode else image)


# 16-bit colour PNGs: Pillow's colour modes hold 8 bits a channel, so it decodes these to 8 (41743 becomes 163). Its
# decoder still unfilters each pixel's full 6 or 8 bytes; the raw mode only picks the bytes it keeps: "RGB;16B" the
# high byte of each channel, "RGB;16L" (meant for little-endian files) the other one, here the low byte. Two decodes
# give both halves, with Pillow's C decoder for every PNG filter and interlacing. Grey+alpha decodes whole as "RGBA".
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_PNG16 = (*_PNG16_LOW_BYTES, "LA;16B")


def _decode_png(path: Path, rawmode: str | None = None) -> np.ndarray:
    """The first frame's pixels as Pillow decodes them, with ``rawmode`` in place of the file's own."""
    from PIL import Image

    with Image.open(path) as image:
        if rawmode:
            image.tile = [(*tile[:3], rawmode) for tile in image.tile]
        return np.asarray(image).astype(np.uint16)


def _png16(path: Path, rawmode: str) -> np.ndarray:
    """(H, W, C) uint16 pixels of a 16-bit RGB, RGBA or grey+alpha PNG whose raw mode is ``rawmode``."""
    if rawmode == "LA;16B":
        both = _decode_png(path, "RGBA")  # (H, W, 4): grey high, grey low, alpha high, alpha low
        return np.stack([both[..., 0] << 8 | both[..., 1], both[..., 2] << 8 | both[..., 3]], axis=-1)
    return _decode_png(path) << 8 | _decode_png(path, _PNG16_LOW_BYTES[rawmode])


def _read_tiff(path: Path) -> np.ndarray:
    """tifffile keeps 16 bits (Pillow would not); palette, YCbCr and other colour spaces go to Pillow."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        photometric, pixels = page.photometric, page.asarray()
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE and pixels.dtype in (np.uint8, np.uint16):
        return np.iinfo(pixels.dtype).max - pixels
    if photometric == tifffile.PHOTOMETRIC.SEPARATED and pixels.dtype in (np.uint8, np.uint16) and pixels.ndim == 3:
        return _cmyk_to_rgb(pixels)
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
        return pixels
    return _read_pillow(path)


def _cmyk_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 4 + extra) CMYK (+ alpha) -> (H, W, 3 + extra) RGB, Pillow's formula (no colour profile) at any depth."""
    top = float(np.iinfo(pixels.dtype).max)
    cmy, black = pixels[..., :3].astype(np.float64), pixels[..., 3:4].astype(np.float64)
    rgb = np.round((top - cmy) * (top - black) / top).astype(pixels.dtype)
    return np.concatenate([rgb, pixels[..., 4:]], axis=-1)


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


def output_path(
    path: Path, out_dir: Path, tag: str, relative_to: Path | None = None, suffix: str | None = None
) -> Path:
    """``OUT/<input name>.<tag>.png``, or ``.tif`` for a TIFF input (``suffix`` overrides): the input's whole name, so
    ``a.png`` and ``a.jpg`` give different results. Images from a folder keep their sub-folders."""
    relative = path.relative_to(relative_to) if relative_to else Path(path.name)
    suffix = suffix or (".tif" if path.suffix.lower() in TIFF else ".png")
    return out_dir / relative.parent / f"{relative.name}.{tag}{suffix}"


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
    """(H, W[, C]) uint8 or uint16 -> a PNG (16-bit PNGs too) or TIFF file, written atomically: a killed run never
    leaves half a file under the final name."""
    import tifffile
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".tif":
        tifffile.imwrite(tmp, array, photometric="minisblack" if array.ndim == 2 else None)
    elif array.dtype == np.uint16:
        tmp.write_bytes(png16_bytes(array))
    else:
        Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


def png16_bytes(array: np.ndarray) -> bytes:
    """(H, W[, C]) uint16 -> a 16-bit PNG file (grey, grey+alpha, RGB or RGBA), which Pillow cannot write. Every row
    is stored as its difference to the row above (PNG filter 2), which photos compress better than raw samples."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)  # big-endian bytes, as PNG stores
    up = rows.copy()
    up[1:] -= rows[:-1]  # byte-wise modulo 256, as the filter is defined
    data = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)  # 16 bits, no interlacing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data, 6)) + chunk(b"IEND", b"")


def collect_inputs(inputs: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """Files as given, and the images under each folder (recursively; hidden files, such as a killed write's
    temporary file, left out): (path, the folder it came from or None)."""
    found: list[tuple[Path, Path | None]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in READABLE
                            and not p.name.startswith("."))  # fmt: skip
            if not images:
                raise InputError(f"no images ({', '.join(READABLE)}) found under {item}")
            found += [(p, item) for p in images]
        elif item.is_file():
            found.append((item, None))
        else:
            raise InputError(f"no such file or folder: {item}")
    return found
