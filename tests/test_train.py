"""The training loop: checkpoints, resume after kill -9, divergence, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from ebt_vision.core.checkpoint import CheckpointError, latest_checkpoint, save_weights
from ebt_vision.core.config import load_config
from ebt_vision.core.inference import Thinking
from ebt_vision.core.objective import StepOutput
from ebt_vision.core.train import RunConflict, TrainingDiverged, train
from ebt_vision.image.inference import denoise, load_denoiser
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.training import train_model

from .conftest import TINY

skimage = pytest.importorskip("skimage", reason="scikit-image (a dependency) ships the photos")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_run_config(tmp_path) -> Path:
    """A YAML config training on a folder of two real photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(photos / "coffee.png")
    Image.fromarray(skimage.data.rocket()[::4, ::4]).save(photos / "rocket.png")
    values = {**TINY, "data": {**TINY["data"], "source": str(photos)}}
    values["train"] = {**TINY["train"], "steps": 60, "checkpoint_every": 5}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, tiny_cfg):
    objective = DenoisingObjective(tiny_cfg).eval()
    with torch.no_grad():
        objective.model.head.out.weight.normal_()
    save_weights(objective, tiny_cfg, tmp_path / "m.safetensors")
    loaded = load_denoiser(tmp_path / "m.safetensors")
    assert loaded.cfg == tiny_cfg
    noisy = torch.randn(1, 3, 32, 48)
    expected, _ = denoise(objective, noisy, Thinking(2))
    got, _ = denoise(loaded, noisy, Thinking(2))
    assert torch.equal(expected.final, got.final) and torch.equal(expected.energies, got.energies)


def test_unreadable_checkpoints_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"definitely not safetensors")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_denoiser(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_denoiser(tmp_path / "missing.safetensors")


def test_killed_run_resumes_like_an_uninterrupted_one(tmp_path, tiny_run_config):
    cfg = load_config(tiny_run_config)
    reference = train_model(cfg, tmp_path / "reference", progress=False)

    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "ebt_vision", "train", "--config", str(tiny_run_config)]
    process = subprocess.Popen([*command, "--out", str(killed_dir), "--quiet"], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = latest_checkpoint(killed_dir)
        if found is not None and found.name >= "step_0000010":
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stopped_at = latest_checkpoint(killed_dir)
    assert stopped_at is not None and not (killed_dir / "model.safetensors").exists(), "was not killed mid-run"

    resumed = train_model(cfg, killed_dir, resume=True, progress=False)
    assert resumed.step == reference.step == 60
    want, got = load_file(tmp_path / "reference" / "model.safetensors"), load_file(killed_dir / "model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    rows = (killed_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 61 and rows[-1].split(",")[0] == "60"
    assert (killed_dir / "loss.png").stat().st_size > 0


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_to_overwrite(tmp_path, tiny_run_config):
    run = tmp_path / "run"
    train_model(load_config(tiny_run_config, ["train.steps=4"]), run, progress=False)
    with pytest.raises(RunConflict, match=r"optim\.lr: 0\.001 -> 0\.5"):
        train_model(load_config(tiny_run_config, ["train.steps=6", "optim.lr=0.5"]), run, resume=True)
    with pytest.raises(RunConflict, match=r"model\.depth: 1 -> 2"):  # refused before any weights are loaded
        train_model(load_config(tiny_run_config, ["train.steps=6", "model.depth=2"]), run, resume=True)
    with pytest.raises(RunConflict, match="--resume"):
        train_model(load_config(tiny_run_config, ["train.steps=4"]), run, progress=False)
    longer = train_model(load_config(tiny_run_config, ["train.steps=6"]), run, resume=True, progress=False)
    assert longer.step == 6  # train.steps (and logging/checkpoint cadence) may change on resume


def test_training_state_loads_without_unrestricted_pickle(tmp_path, tiny_run_config):
    run = tmp_path / "run"
    train_model(load_config(tiny_run_config, ["train.steps=2"]), run, progress=False)
    state = torch.load(latest_checkpoint(run) / "train_state.pt", weights_only=True)
    assert state["step"] == 2 and {"optimizer", "scheduler", "rng", "sampler"} <= set(state)


class Exploding(nn.Module):
    """A stand-in objective that diverges on its fifth step: the loop must stop and keep step 4."""

    def __init__(self, failure: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.failure, self.calls = failure, 0

    def forward(self, batch) -> StepOutput:
        self.calls += 1
        loss = (self.weight**2).sum()
        energy = torch.tensor(1.0)
        if self.calls == 5:
            loss = loss * float("nan") if self.failure == "loss" else loss
            energy = torch.tensor(1e12)
        return StepOutput(loss, {"loss": loss.detach(), "energy_abs_max": energy})

    def param_groups(self, optim):
        return [{"params": [self.weight]}]


@pytest.mark.parametrize("failure, message", [("loss", "non-finite loss"), ("energy", "energy exploded")])
def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, tiny_cfg, failure, message):
    batches = iter(lambda: [torch.zeros(1)], None)
    with pytest.raises(TrainingDiverged, match=message):
        train(Exploding(failure), batches, tiny_cfg, tmp_path, progress=False)
    last = latest_checkpoint(tmp_path)
    assert last is not None and last.name == "step_0000004"
    assert torch.isfinite(load_file(last / "model.safetensors")["weight"]).all()


def test_cli_train_and_eval_end_to_end(tmp_path, tiny_run_config):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    train_cmd = [sys.executable, "-m", "ebt_vision", "train", "--config", str(tiny_run_config), "--out", str(run)]
    done = subprocess.run([*train_cmd, "--set", "train.steps=3", "--quiet"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (run / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    eval_cmd = [sys.executable, "-m", "ebt_vision", "eval", "--checkpoint", str(run / "model.safetensors")]
    eval_cmd += [
        "--max-side",
        "48",
        "--limit",
        "2",
        "--sigmas",
        "25",
        "80",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "rep"),
    ]
    done = subprocess.run(eval_cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "| sigma | split | NOISY | CBM3D | EBT 1 step | EBT 2 steps |" in done.stdout
    for suffix in (".md", ".json", ".png"):
        assert (tmp_path / "rep" / f"denoise_eval{suffix}").stat().st_size > 0
    bad = subprocess.run([*train_cmd, "--set", "optim.lr=fast"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "optim.lr: expected a number" in bad.stderr
    changed = subprocess.run([*train_cmd, "--resume", "--set", "optim.lr=0.5"], capture_output=True, text=True, env=env)
    assert changed.returncode == 2 and "optim.lr" in changed.stderr and "Traceback" not in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1


def test_init_from_starts_a_fresh_run_from_trained_weights(tmp_path, tiny_run_config):
    cfg = load_config(tiny_run_config, ["train.steps=3", "train.log_every=1"])
    train_model(cfg, tmp_path / "first", progress=False)
    first = load_file(str(tmp_path / "first" / "model.safetensors"))
    init = f"train.init_from={tmp_path / 'first'}"
    tuned = load_config(tiny_run_config, ["train.steps=1", "optim.lr=1e-30", init])  # one step that moves nothing
    train_model(tuned, tmp_path / "tuned", progress=False)
    loaded = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert all(torch.allclose(first[k], loaded[k], rtol=0, atol=1e-20) for k in first)
    other = load_config(tiny_run_config, ["train.steps=1", "model.width=32", init])
    with pytest.raises(CheckpointError, match="do not fit"):
        train_model(other, tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match="init_from"):
        train_model(load_config(tiny_run_config, ["train.init_from=nowhere/model"]), tmp_path / "x", progress=False)
