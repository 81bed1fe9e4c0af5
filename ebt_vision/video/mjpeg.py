"""Writing small test videos without an encoder: MJPEG frames in an AVI container, which decord reads."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_mjpeg_avi(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """A minimal AVI (RIFF) container of JPEG frames (n, H, W, 3) uint8: what decord's FFmpeg reads as MJPEG video.
    Hand-written, so that a test clip is byte for byte the same on every machine, whatever encoder is installed: the
    tests and the data benchmark make their clips with it."""

    def chunk(fourcc: bytes, data: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")

    def group(kind: bytes, body: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body

    count, height, width, _ = frames.shape
    jpegs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    largest = max(len(j) for j in jpegs)
    avih = struct.pack("<14I", 1_000_000 // fps, 0, 0, 0x10, count, 0, 1, largest, width, height, 0, 0, 0, 0)
    strh = b"vidsMJPG" + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, fps, 0, count, largest, 0xFFFFFFFF, 0, 0, 0,
                                     width, height)  # fmt: skip
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = group(b"hdrl", chunk(b"avih", avih) + group(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf)))
    movie, index, offset = b"", b"", 4
    for jpeg in jpegs:
        index += b"00dc" + struct.pack("<III", 0x10, offset, len(jpeg))
        movie += chunk(b"00dc", jpeg)
        offset += len(chunk(b"00dc", jpeg))
    body = b"AVI " + header + group(b"movi", movie) + chunk(b"idx1", index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
