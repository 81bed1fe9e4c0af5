"""The one image reader and writer (``image.files``): 16-bit PNGs kept at 16 bits, CMYK converted to RGB, files
checked from their header (empty, not an image, decompression bombs counted over every frame) before decoding."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from ebt_vision.core.errors import InputError
from ebt_vision.image.denoise_files import plan_denoise
from ebt_vision.image.files import check_image_file, png16_bytes, read_image, to_array, write_image

rng = np.random.default_rng(0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = (x.astype(np.int32) for x in (a, b, c))
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_all_filters(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint16 -> a 16-bit PNG whose row k uses filter k % 5 (none, sub, up, average, Paeth), written
    independently of the library's writer (which uses one filter), so the reader is tested on every filter."""
    height, width, channels = pixels.shape
    raw = pixels.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = 2 * channels
    rows = []
    for k in range(height):
        row, up = raw[k], raw[k - 1] if k else np.zeros_like(raw[0])
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        predicted = [0, left, up, (left + up) // 2, _paeth(left, up, upper_left)][k % 5]
        rows.append(bytes([k % 5]) + ((row - predicted) % 256).astype(np.uint8).tobytes())
    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_pngs_are_read_at_16_bits_with_every_filter(tmp_path, channels):
    """Issue 27: Pillow reads a 16-bit RGB PNG as 8-bit (41743 becomes 163)."""
    pixels = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
    pixels[0, 0, 0] = 41743
    path = tmp_path / "deep.png"
    path.write_bytes(png_all_filters(pixels))
    if channels == 3:  # an independent decoder agrees on the high bytes: the file is a valid PNG
        assert np.array_equal(np.asarray(Image.open(path)), (pixels >> 8).astype(np.uint8))
    image = read_image(path)
    assert image.bit_depth == 16
    assert np.array_equal(to_array(image, image.rgb), pixels)  # every value back, the alpha too


def test_16_bit_png_round_trip_keeps_16_bits(tmp_path):
    pixels = rng.integers(0, 65536, (16, 24, 3), dtype=np.uint16)
    source = tmp_path / "in.png"
    source.write_bytes(png16_bytes(pixels))
    assert np.array_equal(np.asarray(Image.open(source)), (pixels >> 8).astype(np.uint8))  # Pillow's view: valid
    image = read_image(source)
    out = tmp_path / "out.png"
    write_image(to_array(image, image.rgb), out)  # what a 0-step denoise writes
    again = read_image(out)
    assert again.bit_depth == 16 and torch.equal(again.rgb, image.rgb)
    assert np.abs(to_array(again, again.rgb).astype(int) - pixels.astype(int)).max() <= 1  # within 1/65535
    grey = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    write_image(grey, tmp_path / "grey.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grey.png")), grey)  # Pillow reads 16-bit grey whole


def test_cmyk_images_are_converted_to_rgb(tmp_path):
    """Issue 27: a CMYK JPEG's four channels were taken as RGBA: colour-inverted, transparent."""
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "red.jpg")  # cyan 0, magenta + yellow: red
    image = read_image(tmp_path / "red.jpg")
    assert image.alpha is None and not image.grey and image.bit_depth == 8
    red, green, blue = to_array(image, image.rgb)[16, 16].astype(int)
    assert red > 240 and green < 15 and blue < 15
    cmyk = np.zeros((8, 8, 4), np.uint16)
    cmyk[..., 2] = 65535  # full yellow: red + green
    tifffile.imwrite(tmp_path / "yellow.tif", cmyk, photometric="separated")
    image = read_image(tmp_path / "yellow.tif")
    assert image.alpha is None and image.bit_depth == 16
    assert to_array(image, image.rgb)[0, 0].tolist() == [65535, 65535, 0]


def test_empty_and_text_files_named_as_images_say_so_in_one_line(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("hello, this is text\n")
    (tmp_path / "notes.tif").write_text("hello, this is text\n")
    for name, message in (("empty.png", "empty.png is empty (0 bytes)"), ("notes.png", "notes.png is not an image"),
                          ("notes.tif", "notes.tif is not an image")):  # fmt: skip
        with pytest.raises(InputError) as error:
            read_image(tmp_path / name)
        assert message in str(error.value) and "\n" not in str(error.value) and "pip install" not in str(error.value)


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its data a few bytes): a bomb as the reader first sees it."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header_counting_every_frame(tmp_path):
    """Issue 27: the check multiplied the first two dimensions only, so an animated PNG of 3 big frames was decoded
    whole before the refusal."""
    frames = [Image.new("RGB", (1000, 1000), (60 * k, 0, 0)) for k in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"1000x1000 x 3 frames \(3.0 megapixels\); the limit is 2 megapixels"):
        check_image_file(tmp_path / "anim.png", max_pixels=2_000_000)
    with pytest.raises(InputError, match="holds 3 frames"):  # within the limit, but an animation is not one image
        read_image(tmp_path / "anim.png")
    (tmp_path / "huge.png").write_bytes(_header_only_png(12000, 12000))
    with pytest.raises(InputError, match=r"12000x12000 \(144.0 megapixels\); the limit is 100 megapixels"):
        read_image(tmp_path / "huge.png")
    (_, why), *_ = plan_denoise([tmp_path / "huge.png"], tmp_path / "out", "ebt").failed  # before any model
    assert why.endswith("the limit is 16 megapixels, what denoise holds in 8 GiB of memory")
    (_, why), *_ = plan_denoise([tmp_path / "huge.png"], tmp_path / "out", "ebt", best_of=4).failed
    assert why.endswith("the limit is 4 megapixels, what denoise holds in 8 GiB of memory with --best-of 4")
    (_, why), *_ = plan_denoise([tmp_path / "huge.png"], tmp_path / "out", "ebt", best_of=2, views=4).failed
    assert why.endswith(
        "the limit is 2 megapixels, what denoise holds in 8 GiB of memory with --best-of 2 and --views 4"
    )
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((3, 100, 100), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="100x100 x 3 frames"):
        check_image_file(tmp_path / "pages.tif", max_pixels=20_000)
    with pytest.raises(InputError, match="pages.tif holds 3 frames"):
        check_image_file(tmp_path / "pages.tif")


def test_palette_and_bilevel_images_read_as_rgb_and_grey(tmp_path):
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "bits.png")
    assert not read_image(tmp_path / "palette.png").grey
    bits = read_image(tmp_path / "bits.png")
    assert bits.grey and bits.bit_depth == 8 and float(bits.rgb.min()) == 1.0
    assert Path(tmp_path / "bits.png").is_file()
