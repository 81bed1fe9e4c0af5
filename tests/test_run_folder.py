"""A model or a run is never replaced unasked; resume never starts over; failures are one line (issue 27)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from ebt_vision.cli import main
from ebt_vision.core.checkpoint import CheckpointError, latest_checkpoint, save_training_checkpoint, step_folders
from ebt_vision.core.config import load_config
from ebt_vision.core.train import RunConflict
from ebt_vision.image.training import train_model as train_denoiser

from .conftest import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path) -> Path:
    """A tiny run: 6 steps, a checkpoint every 2 (the newest 2 kept), on two random photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    values = {**TINY, "data": {**TINY["data"], "source": str(photos)}}
    values["train"] = {**TINY["train"], "keep_checkpoints": 2}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def train_cli(capsys, *args: str) -> tuple[int, str]:
    """``ebt-vision train`` in this process -> (exit code, stderr)."""
    code = main(["train", "--quiet", *args])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def same_weights(a: Path, b: Path) -> bool:
    want, got = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_model_folder_is_never_replaced_unasked(tmp_path, config, capsys):
    shipped = tmp_path / "ebt-image-s"
    shutil.copytree(REPO / "checkpoints" / "ebt-image-s", shipped)
    original = (shipped / "model.safetensors").read_bytes()
    code, err = train_cli(capsys, "--config", str(config), "--out", str(shipped))
    assert code == 2 and "already holds a model (model.safetensors, config.json)" in one_line(err)
    code, err = train_cli(capsys, "--config", str(config), "--out", str(shipped), "--resume")
    assert code == 2 and "no checkpoint to resume from" in one_line(err)
    code, err = train_cli(capsys, "--config", str(config), "--out", str(shipped), "--resume", "--overwrite")
    assert code == 2 and "choose one" in one_line(err)
    assert (shipped / "model.safetensors").read_bytes() == original and not (shipped / "checkpoints").exists()

    code, err = train_cli(capsys, "--config", str(config), "--out", str(shipped), "--overwrite")
    assert code == 0 and err.startswith(f"moved the earlier content of {shipped} to ") and err.count("\n") == 1
    backup = Path(err.split(" to ")[-1].strip())
    assert backup.parent == tmp_path and backup.name.startswith("ebt-image-s.backup-")
    assert (backup / "model.safetensors").read_bytes() == original and (backup / "step_schedule.json").is_file()
    assert (shipped / "checkpoints").is_dir() and not (shipped / "step_schedule.json").exists()


def test_a_run_folder_is_refused_without_resume_and_a_run_killed_before_its_first_checkpoint_starts_over(
    tmp_path, config, capsys
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: tiny\n")
    (run / "metrics.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(RunConflict, match=r"already holds a run \(config\.yaml, metrics\.csv\); pass --resume"):
        train_denoiser(load_config(config), run, progress=False)
    result = train_denoiser(load_config(config), run, resume=True, progress=False)  # nothing to lose: from step 0
    assert result.step == 6 and result.resumed_from == 0


@pytest.fixture
def finished(tmp_path, config) -> Path:
    """A finished 6-step run (checkpoints 4 and 6) and, beside it, a copy to damage."""
    train_denoiser(load_config(config), tmp_path / "reference", progress=False)
    shutil.copytree(tmp_path / "reference", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("latest", ["missing", "dangling", "older"])
def test_resume_takes_the_newest_complete_checkpoint_whatever_latest_says(finished, config, latest):
    pointer = finished / "checkpoints" / "latest"
    if latest == "missing":
        pointer.unlink()
    else:
        pointer.write_text("step_0000099" if latest == "dangling" else "step_0000004")
    (finished / "model.safetensors").unlink()  # the run as a kill after its last checkpoint leaves it
    result = train_denoiser(load_config(config), finished, resume=True, progress=False)
    assert result.resumed_from == 6 and same_weights(finished, finished.parent / "reference")


@pytest.mark.parametrize("file", ["train_state.pt", "model.safetensors"])
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(finished, config, file):
    target = finished / "checkpoints" / "step_0000006" / file
    target.write_bytes(target.read_bytes()[:100])
    (finished / "model.safetensors").unlink()
    with pytest.warns(UserWarning, match=f"resuming from step_0000004, .* left in place: step_0000006: {file}"):
        result = train_denoiser(load_config(config), finished, resume=True, progress=False)
    assert result.resumed_from == 4 and same_weights(finished, finished.parent / "reference")


def test_no_readable_checkpoint_is_one_error_and_nothing_starts_over(finished, config, capsys):
    for folder in step_folders(finished):
        (folder / "train_state.pt").write_bytes(b"garbage")
    before = sorted(p.name for p in (finished / "checkpoints").iterdir())
    code, err = train_cli(capsys, "--config", str(config), "--out", str(finished), "--resume")
    assert code == 2 and "cannot resume" in one_line(err) and "none of its 2 checkpoint(s) can be read" in err
    assert sorted(p.name for p in (finished / "checkpoints").iterdir()) == before
    with pytest.raises(CheckpointError, match="none of its 2"):
        train_denoiser(load_config(config), finished, resume=True, progress=False)


def test_pruning_orders_checkpoints_by_step_number_and_keeps_the_one_just_written(tmp_path, tiny_cfg):
    module = nn.Linear(2, 2)
    for step in (9_999_998, 9_999_999, 10_000_000):  # the last one's name sorts first
        save_training_checkpoint(tmp_path, step, module, tiny_cfg, {}, keep=2)
    assert [f.name for f in step_folders(tmp_path)] == ["step_9999999", "step_10000000"]
    assert latest_checkpoint(tmp_path).name == "step_10000000"
    written = save_training_checkpoint(tmp_path, 2, module, tiny_cfg, {}, keep=1)  # older than the others
    assert written.is_dir() and (tmp_path / "checkpoints" / "latest").read_text() == "step_0000002"


@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path, config, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "run", "unwritable": Path("/proc/ebt")}
    code, err = train_cli(capsys, "--config", str(config), "--out", str(out[where]))
    assert code == 2 and f"cannot write the run folder {out[where]}" in one_line(err)
