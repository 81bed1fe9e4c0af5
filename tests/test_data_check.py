"""Every split's data is checked before the first training step (``core.data_check``): a run without its data stops
in well under a second with one line naming what is missing, by split, and how to get it; nothing is trained."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ebt_vision.cli import main
from ebt_vision.core.config import load_config, with_overrides
from ebt_vision.core.data_check import DataMissing, Missing, check_data, describe, missing_data
from ebt_vision.core.paths import PROJECT_ROOT, data_root
from ebt_vision.video import clips
from ebt_vision.video.mjpeg import write_mjpeg_avi

CONFIGS = PROJECT_ROOT / "configs"


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """An empty data root, and no Debian package installed system-wide either."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("EBT_VISION_DATA", str(empty))
    for module in ("ebt_vision.video.clips", "ebt_vision.image.labelled", "ebt_vision.text.corpora"):
        monkeypatch.setattr(f"{module}.debian_file", _unpacked_only)
    return empty


def _unpacked_only(path: str) -> Path | None:
    """``core.paths.debian_file`` as on a machine without the packages installed: only what the script unpacked."""
    candidate = data_root() / "debian" / path
    return candidate if candidate.exists() else None


def _never_trains(*args, **kwargs):
    raise AssertionError("training started before the data check")


def _fails_fast(run, match: str) -> str:
    start = time.perf_counter()
    with pytest.raises(DataMissing, match=match) as caught:
        run()
    assert time.perf_counter() - start < 1.0
    message = str(caught.value)
    assert "\n" not in message and message.startswith("data missing, nothing was trained")
    return message


def test_the_real_clip_comparison_fails_before_training_naming_every_missing_split(no_data, tmp_path, monkeypatch):
    from ebt_vision.experiments.video import run

    monkeypatch.setattr(run, "train_contenders", _never_trains)
    cfg = load_config(CONFIGS / "video-real-cpu.yaml")
    message = _fails_fast(
        lambda: run.run_video_comparison(cfg, tmp_path / "runs", tmp_path / "out", run.VideoCompareOptions()),
        "scripts/fetch-data.sh",
    )
    for split in ("train", "validation", "test"):
        assert f"{split}: " in message or f"{split}, " in message
    assert "visp:mbt-cube" in message and "opencv:tree.avi" in message
    assert not (tmp_path / "runs").exists()


def test_moving_mnist_text_and_probing_fail_before_training(no_data, tmp_path, monkeypatch):
    from ebt_vision.experiments.image import probe_run
    from ebt_vision.experiments.text import run as text_run
    from ebt_vision.experiments.video import run as video_run

    monkeypatch.setattr(video_run, "train_contenders", _never_trains)
    monkeypatch.setattr(text_run, "_train_or_load", _never_trains)
    monkeypatch.setattr(probe_run, "pretrain", _never_trains)
    mmnist = load_config(CONFIGS / "video-mmnist-cpu.yaml")
    options = video_run.VideoCompareOptions()
    _fails_fast(lambda: video_run.run_video_comparison(mmnist, tmp_path, tmp_path, options), "all splits: MNIST digits")
    message = _fails_fast(
        lambda: text_run.run_text_experiment(load_config(CONFIGS / "text-cpu.yaml"), tmp_path, tmp_path),
        "State of the Union",
    )
    assert "out of distribution: Shakespeare" in message and "World English Bible" in message
    message = _fails_fast(lambda: probe_run.run_probe(load_config(CONFIGS / "probe-cpu.yaml"), tmp_path), "Fashion")
    assert "train, validation: " in message and "test: " in message and "dataset-fashion-mnist" in message


def test_the_train_command_prints_one_line_and_exits_2(no_data, tmp_path, capsys):
    start = time.perf_counter()
    code = main(["train", "--config", str(CONFIGS / "video-real-cpu.yaml"), "--out", str(tmp_path / "run")])
    assert code == 2 and time.perf_counter() - start < 1.0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data missing, nothing was trained") and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_users_video_too_short_for_its_validation_part_is_named_before_training(tmp_path):
    frames = np.full((40, 32, 32, 3), 100, dtype=np.uint8)
    write_mjpeg_avi(tmp_path / "videos" / "short.avi", frames)  # 10% = 4 frames: too few for a clip of 6
    cfg = with_overrides(
        load_config(CONFIGS / "video-real-cpu.yaml"),
        [f"data.source={tmp_path / 'videos'}", "data.frames=6", "data.context_frames=3", "data.stride=1"],
    )
    missing = missing_data(cfg)
    assert [m.split for m in missing] == ["validation", "test"]
    assert "no validation part of the videos" in missing[0].what
    with pytest.raises(DataMissing, match="validation: no validation part"):
        check_data(cfg)
    gone = with_overrides(cfg, [f"data.source={tmp_path / 'nowhere'}"])
    assert {m.split for m in missing_data(gone)} == {"train", "validation", "test"}


def test_the_message_groups_splits_and_fixes():
    text = describe([Missing("train", "A", "fix 1"), Missing("validation", "A", "fix 1"), Missing("test", "B", "f2")])
    assert text == "data missing, nothing was trained. train, validation: A; test: B. To get it: fix 1; f2"


@pytest.mark.skipif(
    any(not found for found, _ in map(clips.real_clip_sources, clips.SPLITS)), reason="offline footage not unpacked"
)
def test_with_the_data_unpacked_nothing_is_missing():
    assert missing_data(load_config(CONFIGS / "video-real-cpu.yaml")) == []
