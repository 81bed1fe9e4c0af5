"""Clip folders (SSv2, UCF-101, Kinetics layouts) streamed by decord in DataLoader workers: split lists, the same
stream for any number of workers, exact resume, corrupt and short clips; the SSv2-scale config's tiny twin."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ebt_vision.core.config import flatten, from_dict, load_config, to_dict
from ebt_vision.core.errors import InputError, UserError
from ebt_vision.video.clip_files import clip_files, read_split_list, resolve_entries, split_clips, video_format
from ebt_vision.video.data import held_out, training_stream
from ebt_vision.video.mjpeg import write_mjpeg_avi
from ebt_vision.video.training import train_model

REPO = Path(__file__).resolve().parents[1]
CLIPS = 20


def clip(number: int, frames: int = 10) -> np.ndarray:
    """(frames, 24, 32, 3) uint8: a square moving right, its brightness naming the clip."""
    video = np.full((frames, 24, 32, 3), 10, dtype=np.uint8)
    for t in range(frames):
        video[t, 6:18, t : t + 12] = 100 + 7 * number
    return video


@pytest.fixture(scope="module")
def clip_tree(tmp_path_factory) -> Path:
    """A UCF-101-like tree: class folders of MJPEG clips, one of them too short for a window."""
    root = tmp_path_factory.mktemp("clips")
    for number in range(CLIPS):
        folder = root / f"Action{number % 4}"
        folder.mkdir(exist_ok=True)
        write_mjpeg_avi(folder / f"v_Action{number % 4}_g{number:02d}.avi", clip(number, 3 if number == 5 else 10))
    return root


def cfg_for(root: Path, **data):
    values = {
        "task": "video", "name": "clips",
        "model": {"patch_size": 8, "width": 32, "depth": 1, "heads": 2, "channels": 3},
        "data": {"source": str(root), "frames": 4, "context_frames": 2, "frame_size": 16, "stride": 2,
                 "batch_size": 3, "validation_clips": 2, "test_clips": 2, **data},
        "optim": {"warmup_steps": 2}, "train": {"steps": 3, "log_every": 1, "checkpoint_every": 3},
    }  # fmt: skip
    return from_dict(values)


def take(stream, count: int) -> list[torch.Tensor]:
    batches = iter(stream)
    return [next(batches) for _ in range(count)]


def test_a_folder_of_many_clips_is_a_clip_dataset_split_by_file_index(clip_tree):
    cfg = cfg_for(clip_tree)
    assert video_format(cfg.data) == "clips" and len(clip_files(str(clip_tree))) == CLIPS
    splits = {split: split_clips(cfg.data, split) for split in ("train", "validation", "test")}
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [16, 2, 2]
    assert not set(splits["train"]) & (set(splits["validation"]) | set(splits["test"]))
    names, clips = held_out(cfg, "test")
    assert clips.shape == (2, 4, 3, 16, 16) and all(name.endswith(".avi") for name in names)


def test_split_lists_in_ssv2_ucf_and_kinetics_formats(clip_tree, tmp_path):
    files = clip_files(str(clip_tree))
    (tmp_path / "ssv2.json").write_text(json.dumps([{"id": "v_Action1_g01", "label": "x"}, {"id": "v_Action2_g02"}]))
    (tmp_path / "ucf.txt").write_text("Action1/v_Action1_g01.avi 2\nAction2/v_Action2_g02.avi 3\n")
    with (tmp_path / "kinetics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerow(["x", "abc", "3", "13", "train"])
    assert read_split_list(tmp_path / "kinetics.csv") == ["abc_000003_000013"]
    for listing in ("ssv2.json", "ucf.txt"):
        found = resolve_entries(read_split_list(tmp_path / listing), str(clip_tree), files)
        assert [Path(f).name for f in found] == ["v_Action1_g01.avi", "v_Action2_g02.avi"]
    with pytest.raises(InputError, match="not under"):
        resolve_entries(["missing_clip"], str(clip_tree), files)
    assert resolve_entries(["missing_clip"], str(clip_tree), files, on_error="skip") == []


def test_clip_stream_is_the_same_for_any_workers_and_resumes_exactly(clip_tree):
    cfg, two = cfg_for(clip_tree, on_error="skip"), cfg_for(clip_tree, on_error="skip", workers=2)
    with pytest.warns(UserWarning, match="g05"):  # the clip too short for a window is skipped and counted
        reference = take(training_stream(cfg), 8)
    assert reference[0].shape == (3, 4, 3, 16, 16) and reference[0].min() >= -1 and reference[0].max() <= 1
    stream = training_stream(two)
    with pytest.warns(UserWarning, match="g05"):
        assert all(torch.equal(a, b) for a, b in zip(take(stream, 5), reference[:5], strict=True))
    state = stream.state_dict()
    assert state["batches"] == 5 and state["skipped"]
    resumed = training_stream(two)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(take(resumed, 3), reference[5:], strict=True))
    with pytest.raises(UserError, match="changed"):
        resumed.load_state_dict({**state, "signature": {"files": 3}})


def test_a_corrupt_clip_is_one_error_naming_it_or_skipped(clip_tree, tmp_path):
    root = tmp_path / "tree"
    for number in range(12):
        write_mjpeg_avi(root / f"clip{number:02d}.avi", clip(number))
    (root / "clip04.avi").write_bytes(b"not a video at all" * 40)
    cfg = cfg_for(root, workers=2)
    with pytest.raises(InputError, match=r"cannot read .*clip04\.avi as a video"):
        take(training_stream(cfg), 6)
    skipping = training_stream(cfg_for(root, workers=2, on_error="skip"))
    with pytest.warns(UserWarning, match="clip04.avi"):
        batches = take(skipping, 6)
    assert all(batch.shape == (3, 4, 3, 16, 16) for batch in batches)
    assert list(skipping.state_dict()["skipped"]) == [str(root / "clip04.avi")]


def test_the_ssv2_scale_config_and_its_tiny_twin_differ_only_in_size(clip_tree, tmp_path):
    big, tiny = load_config(REPO / "configs/ssv2.yaml"), load_config(REPO / "configs/ssv2-tiny.yaml")
    differ = {k for k, v in flatten(to_dict(big)).items() if flatten(to_dict(tiny))[k] != v}
    sizes = {"name", "model.patch_size", "model.width", "model.depth", "model.heads", "data.frames",
             "data.context_frames", "data.frame_size", "data.batch_size", "data.workers", "data.validation_clips",
             "data.test_clips", "prediction.train_frames", "optim.warmup_steps", "train.steps", "train.log_every",
             "train.checkpoint_every"}  # fmt: skip
    assert differ <= sizes and big.data.format == "clips" and big.model.width == 768
    files = [Path(f).stem for f in clip_files(str(clip_tree))]
    (tmp_path / "train.json").write_text(json.dumps([{"id": stem} for stem in files[:14]]))
    (tmp_path / "validation.json").write_text(json.dumps([{"id": stem} for stem in files[14:]]))
    lists = [f"data.{split}_list={tmp_path / 'validation.json'}" for split in ("validation", "test")]
    overrides = [f"data.source={clip_tree}", f"data.train_list={tmp_path / 'train.json'}", *lists]
    cfg = load_config(REPO / "configs/ssv2-tiny.yaml", overrides)
    with pytest.warns(UserWarning, match="g05"):
        result = train_model(cfg, tmp_path / "ssv2-tiny", progress=False)
    assert result.step == 3 and np.isfinite(result.final_metrics["loss"])
    assert held_out(cfg, "validation")[1].shape == (2, 4, 3, 16, 16)
