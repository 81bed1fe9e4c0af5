"""``ebt-vision predict``: a user's clip in, its next frames out (PNGs, a GIF and an MP4 with the energy map, a JSON
summary);
clear errors for short, corrupt and unsupported clips and for an output folder holding an earlier prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ebt_vision.cli import main
from ebt_vision.core.checkpoint import CheckpointError
from ebt_vision.core.config import from_dict
from ebt_vision.core.errors import InputError
from ebt_vision.video.loading import chosen_steps, default_video_checkpoint, write_chosen_steps
from ebt_vision.video.mjpeg import write_mjpeg_avi
from ebt_vision.video.objective import VideoObjective
from ebt_vision.video.predict_files import PredictOptions, predict_clip
from ebt_vision.video.reader import open_video

from .test_video import TINY, moving_square

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_ebt() -> VideoObjective:
    """An untrained 16 px video EBT reading 3 context frames at stride 2."""
    torch.manual_seed(0)
    cfg = from_dict({**TINY, "data": {**TINY["data"], "stride": 2}})
    return VideoObjective(cfg).eval()


@pytest.fixture
def clip(tmp_path):
    return write_mjpeg_avi(tmp_path / "square.avi", moving_square(12))  # 12 frames of 64x48


def test_predict_writes_frames_a_gif_an_mp4_and_a_summary(tiny_ebt, clip, tmp_path):
    out = tmp_path / "out"
    summary = predict_clip(tiny_ebt, clip, out, PredictOptions(frames=4), "tiny", progress=False)
    assert summary["context_frame_indices"] == [7, 9, 11]  # the clip's last 3 frames at stride 2
    assert summary["clip_frames"] == 12 and summary["clip_size"] == [64, 48]
    assert summary["predicted_frames"] == 4 and len(summary["energies"]) == 4
    assert "centre-cropped to 16x16" in summary["resize"]
    assert json.loads((out / "summary.json").read_text()) == summary
    pngs = sorted(p.name for p in out.glob("predicted_*.png"))
    assert pngs == [f"predicted_00{k}.png" for k in range(1, 5)]
    assert Image.open(out / "predicted_001.png").size == (16, 16)
    with Image.open(out / "prediction.gif") as gif:
        durations = []
        for index in range(gif.n_frames):  # PIL merges identical frames (an untrained model repeats its frame)
            gif.seek(index)
            durations.append(gif.info["duration"])
        assert sum(durations) == (3 + 4) * 250 and gif.width == 2 * (16 * 8 + 4)  # clip, energy map: 8x
        gif.seek(0)
        first_gif = np.asarray(gif.convert("RGB"), dtype=float)
    assert summary["files"]["mp4"] == "prediction.mp4"
    video = open_video(out / "prediction.mp4")  # H.264, read back by decord
    assert len(video) == 3 + 4 and (video.width, video.height) == (2 * (16 * 8 + 4), 14 + 16 * 8 + 4)
    first_mp4 = video.read([0])[0].astype(float)
    assert np.abs(first_mp4 - first_gif).mean() < 3  # the same picture, near-lossless


def test_a_frame_folder_predicts_like_the_video_file(tiny_ebt, clip, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(moving_square(12)):
        Image.fromarray(frame).save(folder / f"frame_{t}.png")
    from_file = predict_clip(tiny_ebt, clip, tmp_path / "a", PredictOptions(frames=2), progress=False)
    from_folder = predict_clip(tiny_ebt, folder, tmp_path / "b", PredictOptions(frames=2), progress=False)
    assert from_folder["context_frame_indices"] == from_file["context_frame_indices"]
    first = np.asarray(Image.open(tmp_path / "a" / "predicted_001.png"), dtype=float)
    second = np.asarray(Image.open(tmp_path / "b" / "predicted_001.png"), dtype=float)
    assert np.abs(first - second).mean() < 8  # JPEG vs lossless frames


def test_short_corrupt_and_unsupported_clips_fail_with_one_clear_line(tiny_ebt, tmp_path):
    short = write_mjpeg_avi(tmp_path / "short.avi", moving_square(4))  # 3 frames at stride 2 need 5
    with pytest.raises(InputError, match=r"short.avi has 4 frames, fewer than the model's context of 3 frames"):
        predict_clip(tiny_ebt, short, tmp_path / "o1", PredictOptions(), progress=False)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="cannot read .*garbage.mp4 as a video"):
        predict_clip(tiny_ebt, garbage, tmp_path / "o2", PredictOptions(), progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="not a video file; supported"):
        predict_clip(tiny_ebt, notes, tmp_path / "o3", PredictOptions(), progress=False)
    with pytest.raises(InputError, match="--frames must be in"):
        predict_clip(tiny_ebt, short.with_name("x.avi"), tmp_path / "o4", PredictOptions(frames=0), progress=False)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 4))  # nothing written for a failed clip


def test_an_earlier_prediction_is_kept_unless_overwrite(tiny_ebt, clip, tmp_path):
    out = tmp_path / "out"
    predict_clip(tiny_ebt, clip, out, PredictOptions(frames=3), progress=False)
    with pytest.raises(InputError, match="holds an earlier prediction"):
        predict_clip(tiny_ebt, clip, out, PredictOptions(frames=2), progress=False)
    predict_clip(tiny_ebt, clip, out, PredictOptions(frames=2, overwrite=True), progress=False)
    assert sorted(p.name for p in out.glob("predicted_*.png")) == ["predicted_001.png", "predicted_002.png"]


def test_the_command_says_which_model_and_refuses_to_overwrite(tmp_path, capsys):
    clip = write_mjpeg_avi(tmp_path / "square.avi", moving_square(24))  # the shipped real-footage EBT reads 19 frames
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-o", str(out), "--frames", "2", "--quiet", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "model: the real-footage video EBT (checkpoints/video-real-s)" in captured.err
    assert "2 frames predicted" in captured.out
    assert Image.open(out / "predicted_002.png").size == (64, 64)
    assert main(["predict", str(clip), "-o", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ") and (out / "predicted_002.png").exists()


def test_predict_defaults_to_the_step_count_chosen_on_validation(tiny_ebt, clip, tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_ebt.save_pretrained(folder)
    out = ["-o", str(tmp_path / "a"), "--checkpoint", str(folder), "--frames", "1", "--quiet", "--device", "cpu"]
    assert main(["predict", str(clip), *out]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["descent_steps_from"] == "as trained"
    write_chosen_steps(folder, 3, "5 validation clips, video_real.md")
    out[1] = str(tmp_path / "b")
    assert main(["predict", str(clip), *out]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["descent_steps"] == 3
    assert summary["descent_steps_from"] == "chosen on 5 validation clips, video_real.md"
    assert "descent steps: 3 per frame, chosen on 5 validation clips" in capsys.readouterr().err
    out[1] = str(tmp_path / "c")
    assert main(["predict", str(clip), *out, "--steps", "2"]) == 0  # --steps wins over the record
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["descent_steps"] == 2
    (folder / "chosen_steps.json").write_text('{"steps": 0}')
    with pytest.raises(CheckpointError, match="chosen_steps.json is damaged"):
        chosen_steps(folder)
    assert main(["predict", str(clip), *out[:1], str(tmp_path / "d"), *out[2:]]) == 2  # one clear line, no traceback


def test_the_default_checkpoint_prefers_a_shipped_real_footage_model(tmp_path):
    path, note = default_video_checkpoint(tmp_path)
    assert path == tmp_path / "checkpoints" / "video-mmnist-s" and "no real-footage model is shipped" in note
    (tmp_path / "checkpoints" / "video-real-s").mkdir(parents=True)
    (tmp_path / "checkpoints" / "video-real-s" / "model.safetensors").write_bytes(b"")
    path, note = default_video_checkpoint(tmp_path)
    assert path == tmp_path / "checkpoints" / "video-real-s" and note.startswith("the real-footage video EBT")
