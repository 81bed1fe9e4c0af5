"""Reading real video: files through decord, folders of numbered frames through PIL, as clips of T frames.

A ``Video`` is anything with a length and ``read(indices, shorter) -> (n, H, W, 3) uint8``, resized while reading
when ``shorter`` is given: decord's decoder scales 1280x720 footage ~6x faster than decoding it at full size and
resizing afterwards. ``open_video`` opens a file (.mp4, .avi, .mov, .mpg, ...) or a folder of numbered frames (.png,
.pgm, .jpg, ...); ``find_videos`` also takes a folder of videos. ``read_clip`` cuts T frames at a stride and turns
them into model input: the shorter side resized to the frame size and centre-cropped, grey or RGB, (T, C, S, S) in
[-1, 1]. Unreadable, corrupt and too-short inputs are ``InputError``s naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..core.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mpg", ".mpeg", ".mkv", ".webm", ".m4v")
FRAME_SUFFIXES = (".png", ".pgm", ".ppm", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


class Video(Protocol):
    name: str

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int], shorter: int | None = None) -> np.ndarray:
        """-> (n, H, W, 3) uint8 frames at ``indices``; the shorter side resized to ``shorter`` when given."""
        ...


def scaled_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) scaled so that the shorter side is ``shorter``."""
    scale = shorter / min(height, width)
    return max(shorter, round(height * scale)), max(shorter, round(width * scale))


def _decord_failure(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]


class DecordVideo:
    """A video file decoded by decord on the CPU (decord 0.6 reads opencv-doc's vtest/Megamind/tree.avi)."""

    def __init__(self, path: str | Path) -> None:
        import decord

        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            raise InputError(f"no such video file: {self.path}")
        decord.logging.set_level(decord.logging.QUIET)  # ffmpeg's own messages about broken input flood stderr
        try:
            self.reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0))
            self.length = len(self.reader)
            self.height, self.width = self.reader[0].shape[:2] if self.length else (0, 0)
        except (RuntimeError, decord.DECORDError) as error:
            raise InputError(
                f"cannot read {self.path} as a video ({_decord_failure(error)}); is it corrupt or truncated?"
            ) from None
        if self.length < 1:
            raise InputError(f"{self.path} holds no video frames")
        self.scaled: dict[int, object] = {}  # shorter side -> a reader that decodes at that size

    def __len__(self) -> int:
        return self.length

    def _reader(self, shorter: int | None):
        if shorter is None:
            return self.reader
        if shorter not in self.scaled:
            import decord

            height, width = scaled_size(self.height, self.width, shorter)
            self.scaled[shorter] = decord.VideoReader(str(self.path), ctx=decord.cpu(0), width=width, height=height)
        return self.scaled[shorter]

    def read(self, indices: Sequence[int], shorter: int | None = None) -> np.ndarray:
        """Frames (n, H, W, 3) uint8, decoded already scaled when ``shorter`` is given (the caller resizes what is not:
        decord 0.6 fails to scale some videos down to very small sizes, e.g. 128x128 to 16, so a failed scaled decode
        falls back to full size)."""
        import decord

        try:
            return self._reader(shorter).get_batch(list(indices)).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            if shorter is not None:
                self.scaled.pop(shorter, None)
                return self.read(indices, None)
            raise InputError(
                f"cannot decode frames of {self.path} ({_decord_failure(error)}); is it corrupt or truncated?"
            ) from None


def _natural_key(path: Path) -> list:
    """Sort ``frame_9`` before ``frame_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)


class FrameFolder:
    """A folder of numbered frame images (``image.0001.pgm``, ``frame_000100.jpg``), in numeric order."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        if not self.folder.is_dir():
            raise InputError(f"no such frame folder: {self.folder}")
        self.files = frame_files(self.folder)
        if not self.files:
            raise InputError(f"no frames ({', '.join(FRAME_SUFFIXES)}) in {self.folder}")

    def __len__(self) -> int:
        return len(self.files)

    def _frame(self, path: Path, shorter: int | None) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InputError(f"cannot read frame {path} ({error})") from None
        if shorter is not None:
            height, width = scaled_size(image.height, image.width, shorter)
            image = image.resize((width, height), Image.Resampling.BILINEAR)  # PIL widens the filter: antialiased
        return np.asarray(image)

    def read(self, indices: Sequence[int], shorter: int | None = None) -> np.ndarray:
        frames = [self._frame(self.files[i], shorter) for i in indices]
        if len({f.shape for f in frames}) > 1:
            raise InputError(f"the frames in {self.folder} differ in size")
        return np.stack(frames)


def open_video(path: str | Path) -> Video:
    """A video file or a folder of numbered frames."""
    path = Path(path).expanduser()
    if path.is_dir():
        return FrameFolder(path)
    if not path.exists():
        raise InputError(f"no such video: {path}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{path} is not a video file; supported: {', '.join(VIDEO_SUFFIXES)} or a frame folder")
    return DecordVideo(path)


def find_videos(path: str | Path) -> list[Video]:
    """Every video under ``path``: a video file, a frame folder, or a folder of both (searched recursively)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return [open_video(path)]
    found: list[Video] = [FrameFolder(path)] if frame_files(path) else []
    for child in sorted(path.iterdir(), key=_natural_key):
        if child.is_dir():
            found += _videos_below(child)
        elif child.suffix.lower() in VIDEO_SUFFIXES:
            found.append(DecordVideo(child))
    if not found:
        raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or numbered frames found under {path}")
    return found


def _videos_below(folder: Path) -> list[Video]:
    try:
        return find_videos(folder)
    except InputError:  # a sub-folder without videos is not an error of the folder above
        return []


def to_model_frames(frames: np.ndarray, size: int, channels: int, crop: bool = True) -> Tensor:
    """(n, H, W, 3) uint8 -> (n, C, S, S) float in [-1, 1]: shorter side resized to ``size`` (antialiased) unless it
    already is, and centre-cropped (``crop``; otherwise (n, C, h, w) with the shorter side ``size``). C = 1 is luma."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (n, 3, H, W) on 0-255
    shape = scaled_size(*video.shape[2:], size)
    if shape != tuple(video.shape[2:]):
        video = F.interpolate(video, size=shape, mode="bilinear", antialias=True, align_corners=False)
    if channels == 1:  # after resizing: both are linear, and the resize then moves a third of the data
        video = (video * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if crop:
        top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
        video = video[:, :, top : top + size, left : left + size]
    return (video / 127.5 - 1.0).clamp(-1.0, 1.0).contiguous()


def clip_indices(length: int, frames: int, stride: int, start: int = 0, name: str = "video") -> list[int]:
    """Frame indices of a clip of ``frames`` frames every ``stride`` from ``start``; InputError when too short."""
    if frames < 1 or stride < 1 or start < 0:
        raise InputError(f"need frames >= 1, stride >= 1 and start >= 0, got {frames}, {stride}, {start}")
    needed = start + (frames - 1) * stride + 1
    if needed > length:
        raise InputError(
            f"{name} has {length} frames; a clip of {frames} frames at stride {stride} from frame {start} needs "
            f"{needed}. Use a longer video, fewer frames or a smaller stride"
        )
    return list(range(start, needed, stride))


def read_clip(
    video: str | Path | Video, frames: int, stride: int = 1, start: int = 0, frame_size: int = 64, channels: int = 1
) -> Tensor:
    """A clip of ``frames`` frames at ``stride`` from ``start`` -> (T, C, S, S) in [-1, 1], resized and cropped."""
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    video = open_video(video) if isinstance(video, (str, Path)) else video
    indices = clip_indices(len(video), frames, stride, start, video.name)
    return to_model_frames(video.read(indices, shorter=frame_size), frame_size, channels)
