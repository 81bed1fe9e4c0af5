"""Pictures of predictions beside the truth: a PNG grid (one row per method, one column per frame), and an animated GIF
or an H.264 MP4 (the methods side by side, playing in time). Predicted frames are framed in red, real context frames
in grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

BORDER = 2
LABEL_WIDTH = 90
LABEL_HEIGHT = 14
CONTEXT_COLOUR = (110, 110, 110)
PREDICTED_COLOUR = (220, 40, 40)


def _tile(frame: Tensor, scale: int, predicted: bool) -> Image.Image:
    """(C, H, W) in [-1, 1] -> an RGB tile, enlarged ``scale`` times (nearest) and framed."""
    pixels = ((frame.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    pixels = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    framed = Image.new(
        "RGB", (image.width + 2 * BORDER, image.height + 2 * BORDER), PREDICTED_COLOUR if predicted else CONTEXT_COLOUR
    )
    framed.paste(image, (BORDER, BORDER))
    return framed


def _check(rows: dict[str, Tensor]) -> tuple[int, ...]:
    shapes = {tuple(frames.shape) for frames in rows.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"every row must be frames (T, C, H, W) of one shape, got {sorted(shapes)}")
    return next(iter(shapes))


def strip_image(rows: dict[str, Tensor], context_frames: int, scale: int = 1) -> Image.Image:
    """{label: frames (T, C, H, W)} -> one row per label (truth first, by convention), frame t in column t; frames
    from ``context_frames`` on are predictions (red frame)."""
    count, _, height, width = _check(rows)
    cell_w, cell_h = width * scale + 2 * BORDER, height * scale + 2 * BORDER
    grid = Image.new("RGB", (LABEL_WIDTH + count * cell_w, len(rows) * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, frames) in enumerate(rows.items()):
        draw.text((4, r * cell_h + cell_h // 2 - 6), label, fill=(0, 0, 0))
        for t in range(count):
            grid.paste(_tile(frames[t], scale, t >= context_frames), (LABEL_WIDTH + t * cell_w, r * cell_h))
    return grid


def _panels(rows: dict[str, Tensor], context_frames: int, scale: int) -> list[Image.Image]:
    """{label: frames (T, C, H, W)} -> one picture per time step: the labelled panels side by side."""
    count, _, height, width = _check(rows)
    cell_w, cell_h = width * scale + 2 * BORDER, height * scale + 2 * BORDER
    pictures = []
    for t in range(count):
        picture = Image.new("RGB", (len(rows) * cell_w, LABEL_HEIGHT + cell_h), (255, 255, 255))
        draw = ImageDraw.Draw(picture)
        for c, (label, frames) in enumerate(rows.items()):
            draw.text((c * cell_w + 2, 1), label, fill=(0, 0, 0))
            picture.paste(_tile(frames[t], scale, t >= context_frames), (c * cell_w, LABEL_HEIGHT))
        pictures.append(picture)
    return pictures


def write_gif(path: str | Path, rows: dict[str, Tensor], context_frames: int, scale: int = 2, fps: float = 4.0) -> Path:
    """{label: frames (T, C, H, W)} -> an animated GIF at ``path``: the labelled panels side by side, frame by frame
    (real context frames framed grey, predictions red), looping."""
    pictures = _panels(rows, context_frames, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    return path


def write_mp4(path: str | Path, rows: dict[str, Tensor], context_frames: int, scale: int = 2, fps: int = 4) -> Path:
    """The same panels as ``write_gif`` as an H.264 MP4 (PyAV's libx264, yuv420p, near-lossless CRF 12), which
    browsers and players show; the picture is padded white to even sides (what yuv420p needs)."""
    import av  # PyAV: imported only when a video file is written

    pictures = _panels(rows, context_frames, scale)
    width, height = pictures[0].size
    even_w, even_h = width + width % 2, height + height % 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        stream.options = {"crf": "12", "preset": "medium"}
        for picture in pictures:
            padded = Image.new("RGB", (even_w, even_h), (255, 255, 255))
            padded.paste(picture, (0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(padded)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path
