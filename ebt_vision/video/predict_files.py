"""``ebt-vision predict``: the next frames of a user's clip, predicted by a video EBT and written as files.

The clip is a video file decord reads or a folder of numbered frames, of any length and size (up to
``defaults.MAX_FRAME_SIDE`` px). The context is the clip's *last* ``data.context_frames`` frames at the model's
``data.stride``, so the prediction continues the clip. Each frame is resized so that its shorter side is the model's
frame size (antialiased bilinear) and centre-cropped to a square; a grey model reads luma (ITU-R BT.601). The EBT
then predicts ``frames`` frames autoregressively, each from the real context and the frames it predicted before.

Written to the output folder: ``predicted_001.png``, ... (model resolution), ``prediction.gif`` and the same as an
H.264 ``prediction.mp4`` (context, then the prediction framed red, beside each predicted frame's per-patch energy map)
and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..core import defaults
from ..core.errors import InputError
from ..core.inference import Thinking
from ..core.maps import colorize, robust_range
from ..core.progress import progress as progress_bar
from .objective import VideoObjective
from .reader import DecordVideo, open_video, to_model_frames
from .strips import write_gif, write_mp4

SUMMARY = "summary.json"
GIF = "prediction.gif"
MP4 = "prediction.mp4"
FRAME_PATTERN = "predicted_{:03d}.png"
RESIZE_RULE = "shorter side resized to {size} px (antialiased bilinear), centre-cropped to {size}x{size}"


@dataclass(frozen=True)
class PredictOptions:
    frames: int | None = None  # predicted frames (None: the model's trained horizon)
    steps: int | None = None  # descent steps per frame (None: as trained)
    best_of: int = 1
    seed: int = 0
    overwrite: bool = False
    steps_from: str = ""  # where ``steps`` came from, for the summary (e.g. "chosen on 23 validation clips")

    def horizon(self, cfg) -> int:
        """The frames to predict for a model of ``cfg``, after checking every option (clear errors)."""
        count = self.frames if self.frames is not None else cfg.data.frames - cfg.data.context_frames
        if not 1 <= count <= defaults.MAX_HORIZON:
            raise InputError(f"--frames must be in [1, {defaults.MAX_HORIZON}], got {count}")
        if self.steps is not None and not 1 <= self.steps <= defaults.MAX_STEPS:
            raise InputError(f"--steps must be in [1, {defaults.MAX_STEPS}], got {self.steps}")
        if not 1 <= self.best_of <= defaults.MAX_FILE_CANDIDATES:
            raise InputError(f"--best-of must be in [1, {defaults.MAX_FILE_CANDIDATES}], got {self.best_of}")
        return count


def check_output(out: str | Path, overwrite: bool) -> Path:
    """The output folder, refused when it holds an earlier prediction (its summary.json) unless ``overwrite``; then
    the earlier prediction's files are removed first, so none is left over from a longer one."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"the output {out} is a file, not a folder")
    if (out / SUMMARY).exists():
        if not overwrite:
            raise InputError(f"{out} holds an earlier prediction ({SUMMARY}); choose another folder or --overwrite")
        for old in [out / SUMMARY, out / GIF, out / MP4, *out.glob(FRAME_PATTERN.replace("{:03d}", "[0-9][0-9][0-9]"))]:
            old.unlink(missing_ok=True)
    return out


def read_context(clip: str | Path, objective: VideoObjective) -> tuple[Tensor, dict]:
    """The clip's last context frames at the model's stride -> ((T, C, S, S) in [-1, 1], what was read)."""
    data, channels = objective.cfg.data, objective.cfg.model.channels
    video = open_video(clip)  # clear errors for missing, unsupported, unreadable and corrupt inputs
    if isinstance(video, DecordVideo) and max(video.height, video.width) > defaults.MAX_FRAME_SIDE:
        raise InputError(f"{clip} has {video.width}x{video.height} frames; the limit is {defaults.MAX_FRAME_SIDE} px")
    needed = (data.context_frames - 1) * data.stride + 1
    if len(video) < needed:
        stride = f" every {data.stride}th frame ({needed} frames)" if data.stride > 1 else ""
        raise InputError(
            f"{clip} has {len(video)} frames, fewer than the model's context of {data.context_frames} frames{stride}; "
            "use a longer clip"
        )
    indices = list(range(len(video) - needed, len(video), data.stride))
    decoded = video.read(indices, shorter=data.frame_size)
    context = to_model_frames(decoded, data.frame_size, channels)
    read = {
        "clip": str(clip),
        "clip_frames": len(video),
        "clip_size": list(_size(video)),  # width, height
        "context_frame_indices": indices,
        "resize": RESIZE_RULE.format(size=data.frame_size),
        "colour": "grey (BT.601 luma)" if channels == 1 else "RGB",
    }
    return context, read


def _size(video) -> tuple[int, int]:
    """(width, height) of the clip's frames as stored."""
    if isinstance(video, DecordVideo):
        return video.width, video.height
    with Image.open(video.files[0]) as first:
        return first.size


def predict_frames(
    objective: VideoObjective, context: Tensor, options: PredictOptions, progress: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """(T, C, S, S) context -> (predictions (N, C, S, S), energies (N,), energy maps (N, S/p, S/p)), one frame at a
    time (a progress bar per frame), each frame seeded ``seed + k``."""
    count = options.horizon(objective.cfg)
    thinking = Thinking(options.steps, n_candidates=options.best_of)
    frames, predictions, energies, maps = context[None], [], [], []
    for k in progress_bar(range(count), desc="predicting", unit="frame", disable=not progress):
        step = objective.rollout(frames, 1, thinking, seed=options.seed + k, energy_maps=True)
        frame = step.predictions[:, :1].detach()
        frames = torch.cat([frames, frame.to(frames.device)], dim=1)
        predictions.append(frame[0, 0].cpu())
        energies.append(step.energies[0, 0].item())
        maps.append(step.energy_maps[0, 0].detach().cpu())
    return torch.stack(predictions), torch.tensor(energies), torch.stack(maps)


def energy_frames(maps: Tensor, size: int) -> Tensor:
    """(N, h, w) per-patch energies -> (N, 3, size, size) colour pictures in [-1, 1] on one shared robust range (so
    frames compare), each patch a block of pixels."""
    low, high = robust_range(maps)
    pictures = []
    for energy in maps:
        rgb = torch.from_numpy(colorize(energy, "viridis", low, high)).permute(2, 0, 1).float()  # (3, h, w) 0-255
        rgb = torch.nn.functional.interpolate(rgb[None], size=(size, size), mode="nearest")[0]
        pictures.append(rgb / 127.5 - 1)
    return torch.stack(pictures)


def write_prediction(out: Path, context: Tensor, predictions: Tensor, maps: Tensor) -> dict[str, list[str] | str]:
    """The predicted PNGs, the GIF and the MP4 (the clip: context then prediction; beside it the energy map of each
    predicted frame, black during the context) -> their file names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for k, frame in enumerate(predictions, start=1):
        pixels = ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(pixels.squeeze(2) if pixels.shape[2] == 1 else pixels)).save(
            out / FRAME_PATTERN.format(k)
        )
        names.append(FRAME_PATTERN.format(k))
    clip = torch.cat([context, predictions]).expand(-1, 3, -1, -1)
    size = clip.shape[-1]
    energy = torch.cat([torch.full((context.shape[0], 3, size, size), -1.0), energy_frames(maps, size)])
    scale = max(1, 128 // size)
    panels = {"clip": clip, "energy per patch": energy}
    write_gif(out / GIF, panels, context.shape[0], scale=scale)
    write_mp4(out / MP4, panels, context.shape[0], scale=scale)
    return {"frames": names, "gif": GIF, "mp4": MP4}


def predict_clip(
    objective: VideoObjective,
    clip: str | Path,
    out: str | Path,
    options: PredictOptions,
    checkpoint: str = "",
    progress: bool = True,
) -> dict:
    """Read ``clip``, predict its next frames with ``objective`` and write them to ``out`` -> the summary (also
    ``out/summary.json``). The output folder is checked before the clip is read."""
    options.horizon(objective.cfg)  # the options, then the output folder, before the clip is decoded
    out = check_output(out, options.overwrite)
    started = time.perf_counter()
    context, read = read_context(clip, objective)
    predictions, energies, maps = predict_frames(objective, context, options, progress)
    files = write_prediction(out, context, predictions, maps)
    cfg = objective.cfg
    summary = {
        **read,
        "checkpoint": checkpoint,
        "model_frame_size": cfg.data.frame_size,
        "stride": cfg.data.stride,
        "context_frames": cfg.data.context_frames,
        "predicted_frames": len(predictions),
        "descent_steps": options.steps or cfg.descent.num_steps,
        "descent_steps_from": options.steps_from or ("--steps" if options.steps else "as trained"),
        "best_of": options.best_of,
        "seed": options.seed,
        "energies": [round(e, 6) for e in energies.tolist()],
        "seconds": round(time.perf_counter() - started, 3),
        "files": files,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
