"""Watching the video EBT predict: one rollout as pictures, a plot and a summary that a UI (or a notebook) can show.

Everything the video tab displays is computed here and tested without a browser: checked uploads cut into a
clip, the EBT's rollout with every descent step's candidate, the per-patch energy map of every predicted frame, the
baselines' rollouts of the same context, PSNR per horizon step and the passes each method spent. Frames are
(C, H, W) in [-1, 1]; pictures are (h, w, 3) uint8.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..core import defaults
from ..core.errors import InputError, UserError
from ..core.inference import Thinking
from ..core.maps import distinct_labels, render_map, spread_note
from ..core.metrics import psnr
from ..video.config import SOURCES, VideoConfig
from ..video.data import held_out
from ..video.objective import VideoObjective
from ..video.reader import DecordVideo, open_video, read_clip
from ..video.rollout import Rollout
from ..video.strips import BORDER, LABEL_WIDTH, strip_image
from .common import check_upload, legend_above, upload_errors

TILE_SIDE = 96  # frames are drawn at least this large: Moving MNIST's 64 px and a tiny model's 16 px alike
HEADER = 14  # pixels above a strip for its column labels

Baseline = Callable[[Tensor, int], Rollout]  # (context (B, T, C, H, W), horizon) -> its rollout


def sample_clips(cfg: VideoConfig, per_source: int = 6) -> tuple[dict[str, Tensor], list[str]]:
    """Clips a user can pick, all from fixed test splits no model is trained on: the first ``per_source`` Moving
    MNIST test sequences and up to ``per_source`` real test clips spread over the test scenes, each (T, C, S, S) in
    [-1, 1] at the model's frame size, channels and clip length. -> ({name: clip}, notes on sources unavailable)."""
    samples, notes = {}, []
    for source in SOURCES:
        try:
            names, clips = held_out(replace(cfg, data=replace(cfg.data, source=source)), "test")
        except UserError as error:  # data not fetched: the other source, or an upload, still works
            notes.append(f"{source} samples unavailable: {error}")
            continue
        chosen = _spread(names, per_source)
        samples.update({names[i]: clips[i].clone() for i in chosen})  # clone: the rest of the split can go
    return samples, notes


def _spread(names: list[str], count: int) -> list[int]:
    """Indices of up to ``count`` clips taken in turn from each scene (``scene@start`` names; one scene otherwise)."""
    scenes: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        scenes.setdefault(name.split("@")[0], []).append(i)
    order: list[int] = []
    for rank in range(count):  # round robin over the scenes
        order += [indices[rank] for indices in scenes.values() if rank < len(indices)]
    return sorted(order[:count])


def load_video_upload(
    path: str | Path, frames: int, frame_size: int, channels: int, stride: int = 1
) -> tuple[Tensor, list[str]]:
    """An uploaded video file -> (T, C, S, S) in [-1, 1]: its first T = ``frames`` frames every ``stride``; and notes.

    Unreadable, corrupt, oversized and too-short files are ``InputError``s naming the file (never the server's
    temporary folder).
    """
    with upload_errors(path):
        path = check_upload(path, defaults.APP_MAX_VIDEO_BYTES)
        video, side = open_video(path), defaults.MAX_FRAME_SIDE
        if isinstance(video, DecordVideo) and max(video.height, video.width) > side:
            raise InputError(f"{path.name} has {video.width}x{video.height} frames; the limit is {side} px")
        clip = read_clip(video, frames, stride, 0, frame_size, channels)
    kind = "grey" if channels == 1 else "RGB"
    last = (frames - 1) * stride
    every = f" (every {stride}th)" if stride > 1 else ""
    notes = [f"frames 0-{last}{every} of {len(video)}, resized and centre-cropped to {frame_size}x{frame_size} {kind}"]
    return clip, notes


@dataclass
class Contender:
    """One method's rollout of the context: (H, C, h, w) predictions, passes per predicted frame, seconds in all."""

    name: str
    predictions: Tensor
    forward_passes: int
    backward_passes: int
    seconds: float
    psnrs: list[float] | None = None  # per horizon step, when the real frames are known


@dataclass
class VideoStory:
    """One rollout, step by step: the context, the EBT with every descent step and energy map, the baselines."""

    context: Tensor  # (T, C, h, w) real frames
    truth: Tensor | None  # (H, C, h, w) the real frames that followed, when known
    ebt: Contender
    steps: Tensor  # (H, S + 1, C, h, w): each predicted frame's candidate after 0..S descent steps
    energies: list[float]  # (H): the energy of each predicted frame (lower = more confident)
    energy_maps: Tensor  # (H, h/p, w/p): the same per patch
    baselines: list[Contender]
    num_steps: int
    best_of: int
    seed: int = 0
    name: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def horizon(self) -> int:
        return self.ebt.predictions.shape[0]


def _check_settings(horizon: int, num_steps: int, best_of: int, truth: Tensor | None) -> None:
    if not 1 <= horizon <= defaults.MAX_HORIZON:
        raise InputError(f"horizon must be in [1, {defaults.MAX_HORIZON}], got {horizon}")
    if truth is not None and truth.shape[0] < horizon:
        raise InputError(f"the clip holds {truth.shape[0]} frames after the context; choose a horizon up to that")
    if not 1 <= num_steps <= defaults.APP_MAX_STEPS:
        raise InputError(f"descent steps must be in [1, {defaults.APP_MAX_STEPS}], got {num_steps}")
    if not 1 <= best_of <= defaults.APP_MAX_BEST_OF:
        raise InputError(f"best-of-N must be in [1, {defaults.APP_MAX_BEST_OF}], got {best_of}")


def _contender(name: str, rollout: Callable[[], Rollout], truth: Tensor | None) -> tuple[Contender, Rollout]:
    started = time.perf_counter()
    result = rollout()
    seconds = time.perf_counter() - started
    predictions = result.predictions[0].cpu()
    psnrs = psnr(predictions, truth[: len(predictions)]).tolist() if truth is not None else None
    return Contender(name, predictions, result.forward_passes, result.backward_passes, seconds, psnrs), result


def predict_story(
    objective: VideoObjective,
    context: Tensor,
    horizon: int,
    truth: Tensor | None = None,
    num_steps: int = 2,
    best_of: int = 1,
    baselines: Mapping[str, Baseline] | None = None,
    seed: int = 0,
) -> VideoStory:
    """(T, C, h, w) context [, (>= horizon, C, h, w) truth] -> VideoStory of ``horizon`` predicted frames.

    The EBT rolls out with ``num_steps`` descent steps and best-of-``best_of`` per frame, recording every step, and
    each of ``baselines`` ({name: (context (1, T, C, h, w), horizon) -> Rollout}) rolls out the same context.

    ``truth`` (at least ``horizon`` real frames that followed) gives PSNR per horizon step. Passes are per predicted
    frame, as ``VideoObjective.rollout`` counts them; the energy maps' extra forward pass is not counted.
    """
    _check_settings(horizon, num_steps, best_of, truth)
    batch = context[None]  # (1, T, C, h, w)

    def ebt() -> Rollout:
        thinking = Thinking(num_steps, n_candidates=best_of)
        return objective.rollout(batch, horizon, thinking, seed=seed, energy_maps=True, record_steps=True)

    contender, found = _contender("EBT", ebt, truth)
    rivals = []
    for name, run in (baselines or {}).items():
        rivals.append(_contender(name, lambda run=run: run(batch, horizon), truth)[0])
    return VideoStory(
        context=context,
        truth=truth[:horizon] if truth is not None else None,
        ebt=contender,
        steps=found.steps[0].cpu(),
        energies=found.energies[0].tolist(),
        energy_maps=found.energy_maps[0].cpu(),
        baselines=rivals,
        num_steps=num_steps,
        best_of=best_of,
        seed=seed,
    )


def labelled_strip(rows: dict[str, Tensor], first_predicted: int, column_labels: list[str]) -> np.ndarray:
    """{row label: frames (n, C, h, w)} -> a strip picture (``strips.strip_image``, frames enlarged to at least
    ``TILE_SIDE`` px) with ``column_labels`` above the columns; frames from column ``first_predicted`` on are framed
    red (predicted), the others grey (real context)."""
    height = next(iter(rows.values())).shape[2]
    scale = max(1, math.ceil(TILE_SIDE / height))
    strip = strip_image(rows, first_predicted, scale)
    cell = (strip.width - LABEL_WIDTH) // len(column_labels)
    picture = Image.new("RGB", (strip.width, strip.height + HEADER), (255, 255, 255))
    picture.paste(strip, (0, HEADER))
    draw = ImageDraw.Draw(picture)
    for column, label in enumerate(column_labels):
        draw.text((LABEL_WIDTH + column * cell + BORDER + 2, 1), label, fill=(0, 0, 0))
    return np.asarray(picture)


def _future(horizon: int) -> list[str]:
    return [f"t+{k}" for k in range(1, horizon + 1)]


def context_strip(story: VideoStory) -> np.ndarray:
    """The real context frames in one row, oldest first, the newest labelled t."""
    count = story.context.shape[0]
    labels = [f"t-{count - 1 - k}" if k < count - 1 else "t" for k in range(count)]
    return labelled_strip({"context": story.context}, count, labels)


def comparison_strip(story: VideoStory) -> np.ndarray:
    """The last real frame, then each horizon step: one row for the truth (when known), the EBT and each baseline."""
    last = story.context[-1:]
    rows = {"truth": story.truth} if story.truth is not None else {}
    rows.update({c.name: c.predictions for c in (story.ebt, *story.baselines)})
    rows = {name: torch.cat([last, frames]) for name, frames in rows.items()}  # each row starts from the real frame t
    return labelled_strip(rows, 1, ["t", *_future(story.horizon)])


def steps_strip(story: VideoStory) -> np.ndarray:
    """The EBT's descent: one row per step (its start, then after each step), one column per predicted frame, and
    the truth underneath."""
    rows = {"start" if k == 0 else f"step {k}": story.steps[:, k] for k in range(story.steps.shape[1])}
    if story.truth is not None:
        rows["truth"] = story.truth
    return labelled_strip(rows, 0, _future(story.horizon))


def energy_map_frames(story: VideoStory) -> list[tuple[np.ndarray, str]]:
    """Per predicted frame, its per-patch energy map with a colour bar (each its own robust range, so a frame's
    structure shows; the totals, comparable across frames, are in the captions and the plot)."""
    height = 2 * TILE_SIDE
    labels = distinct_labels(list(story.energies))  # frames' totals told apart, however close
    return [
        (render_map(energy_map, f"t+{k + 1}: energy per patch", height=height), f"t+{k + 1} · E {label}")
        for k, (energy_map, label) in enumerate(zip(story.energy_maps, labels, strict=True))
    ]


def energy_spread_notes(story: VideoStory) -> list[str]:
    """A note when the per-patch energies of predicted frames spread too little to read as uncertainty."""
    flat = [k + 1 for k, energy_map in enumerate(story.energy_maps) if spread_note(energy_map, "") is not None]
    if not flat:
        return []
    frames = ", ".join(f"t+{k}" for k in flat)
    return [spread_note(story.energy_maps[flat[0] - 1], f"per-patch energies of frame{'s' * (len(flat) > 1)} "
                        f"{frames}")]  # fmt: skip


def _finite(values: list[float]) -> list[float]:
    """inf (a prediction identical to the truth, e.g. copy-last on a still video) cannot be plotted: left out."""
    return [v if math.isfinite(v) else float("nan") for v in values]


def horizon_figure(story: VideoStory):
    """PSNR per horizon step of every method (when the truth is known) and the EBT's energy per predicted frame."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 3.4))  # not pyplot's: a figure per click must not pile up in its global registry
    ax = fig.subplots()
    steps = list(range(1, story.horizon + 1))
    lines = []
    markers = "osd^vx"
    for i, contender in enumerate(c for c in (story.ebt, *story.baselines) if c.psnrs is not None):
        lines += ax.plot(steps, _finite(contender.psnrs), f"{markers[i % 6]}-", color=f"C{i}",
                         label=f"{contender.name} PSNR")  # fmt: skip
    ax.set_xlabel("predicted frame (t + k)")
    ax.set_ylabel("PSNR (dB)" if lines else "")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.7, story.horizon + 0.3)
    ax.grid(alpha=0.3)
    right = ax.twinx() if lines else ax  # energy on its own axis beside PSNR, or alone without the truth
    label = "EBT energy (right axis)" if lines else "EBT energy"
    lines += right.plot(steps, story.energies, "*--", color="0.35", label=label)
    right.set_ylabel("energy (lower = more confident)", color="0.35")
    legend_above(ax, lines)
    fig.tight_layout()
    return fig


def _mean_psnr(contender: Contender) -> str:
    if contender.psnrs is None:
        return ""
    mean = sum(contender.psnrs) / len(contender.psnrs)
    return f"; mean PSNR {mean:.2f} dB" if math.isfinite(mean) else "; PSNR ∞ (identical to the truth)"


def story_summary(story: VideoStory) -> str:
    """Markdown lines for the UI: what was predicted, what each method cost per frame, how good it is."""
    count, channels, height, width = story.context.shape
    kind = "grey" if channels == 1 else "RGB"
    lines = [f"**{story.name or 'clip'}**: {count} real frames in, {story.horizon} predicted, {width}x{height} {kind}, "
             f"seed {story.seed}"]  # fmt: skip
    ebt = story.ebt
    text = f"**EBT**: {story.num_steps} descent steps per frame"
    if story.best_of > 1:
        text += f", best of {story.best_of} starts by lowest energy"
    text += (f"; {ebt.forward_passes} forward + {ebt.backward_passes} backward passes per frame, {ebt.seconds:.2f} s"
             f"{_mean_psnr(ebt)}")  # fmt: skip
    lines.append(text)
    for rival in story.baselines:
        cost = "no network" if rival.forward_passes == 0 else f"{rival.forward_passes} forward passes per frame"
        lines.append(f"**{rival.name}**: {cost}, {rival.seconds:.2f} s{_mean_psnr(rival)}")
    lines += [f"*{note}*" for note in [*story.notes, *energy_spread_notes(story)]]
    return "\n\n".join(lines)
