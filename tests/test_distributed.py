"""DDP under torchrun: two CPU processes (gloo) in the real training loop, kill -9 and resume, gradient accumulation."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from ebt_vision.core.checkpoint import latest_checkpoint
from ebt_vision.core.config import from_dict, load_config
from ebt_vision.core.train import seed_everything, train
from ebt_vision.image.data import CropSampler, folder_photos
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.training import train_model

from .conftest import TINY, denoising_batch, kill_group_after_checkpoint

skimage = pytest.importorskip("skimage", reason="scikit-image (a dependency) ships the photos")
REPO = Path(__file__).resolve().parents[1]
STEPS, PER_RANK_BATCH = 40, 4


def _config(folder: Path, batch: int, name: str) -> Path:
    photos = folder / "photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        Image.fromarray(skimage.data.coffee()[::4, ::4]).save(photos / "coffee.png")
        Image.fromarray(skimage.data.astronaut()[::4, ::4]).save(photos / "astronaut.png")
    values = {
        **TINY,
        "data": {**TINY["data"], "source": str(photos), "batch_size": batch},
        "train": {**TINY["train"], "steps": STEPS, "checkpoint_every": 5, "device": "cpu"},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _torchrun(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ebt_vision", "train", "--config", str(config), "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _losses(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as handle:
        return {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted 2-process DDP run (batch 4 each) and a 1-process run with the global batch of 8."""
    folder = tmp_path_factory.mktemp("ddp")
    ddp_config = _config(folder, PER_RANK_BATCH, "ddp")
    done = subprocess.run(_torchrun(ddp_config, folder / "ddp"), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout
    single = train_model(load_config(_config(folder, 2 * PER_RANK_BATCH, "single")), folder / "one", progress=False)
    return {"folder": folder, "config": ddp_config, "ddp": folder / "ddp", "single": single.run_dir}


def test_two_processes_train_exactly_like_one_with_the_global_batch(runs):
    ddp, single = _losses(runs["ddp"]), _losses(runs["single"])
    assert sorted(ddp) == sorted(single) == list(range(1, STEPS + 1))
    for step in ddp:
        assert ddp[step] == pytest.approx(single[step], rel=1e-4), step
    want, got = load_file(runs["single"] / "model.safetensors"), load_file(runs["ddp"] / "model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    # rank 0 alone wrote the files: one checkpoint folder per save, no second metrics writer
    saved = sorted(p.name for p in (runs["ddp"] / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert saved == ["step_0000035", "step_0000040"]


def test_killed_ddp_run_resumes_from_its_step_with_the_same_loss(runs):
    killed = runs["folder"] / "killed"
    process = subprocess.Popen(
        _torchrun(runs["config"], killed), env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    kill_group_after_checkpoint(process, killed, 10)  # the launcher and both workers, at once
    stopped_at = latest_checkpoint(killed)
    assert stopped_at is not None and not (killed / "model.safetensors").exists(), "was not killed mid-run"
    resume_step = int(stopped_at.name.split("_")[1])

    done = subprocess.run(_torchrun(runs["config"], killed, "--resume"), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    resumed, uninterrupted = _losses(killed), _losses(runs["ddp"])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed[resume_step + 1] == pytest.approx(uninterrupted[resume_step + 1], rel=1e-6)
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5), step
    want, got = load_file(runs["ddp"] / "model.safetensors"), load_file(killed / "model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_with_checkpointed_descent_steps_trains_the_same(runs):
    """Reentrant checkpointing delivers each parameter's gradient once per descent step, which DDP reduces wrongly
    (45% off, even with static_graph): these runs average gradients by hand, and must train like the DDP run."""
    out = runs["folder"] / "checkpointed"
    command = _torchrun(runs["config"], out, "--set", "descent.checkpoint_steps=true")
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    want, got = _losses(runs["ddp"]), _losses(out)
    assert sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_resuming_with_another_number_of_processes_warns_and_continues(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["ddp"], run)
    cfg = load_config(runs["config"], ["train.steps=42"])  # two more steps, in one process
    with pytest.warns(UserWarning, match="written by 2 process"):
        result = train_model(cfg, run, resume=True, progress=False)
    assert result.step == 42 and sorted(_losses(run))[-3:] == [40, 41, 42]


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Two micro-batches of 4 accumulate to the gradient of the batch of 8 they split."""
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        cfg = from_dict({**TINY, "train": {**TINY["train"], "steps": 3, "grad_accumulation": accumulation}})
        seed_everything(0)
        objective = DenoisingObjective(cfg)
        clean = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))

        def batches(noisy=noisy, clean=clean, batch=batch):
            while True:
                for start in range(0, 8, batch):
                    yield denoising_batch(noisy[start : start + batch], clean[start : start + batch])

        result = train(objective, batches(), cfg, tmp_path / f"acc{accumulation}", progress=False)
        results.append((result.final_metrics["loss"], load_file(tmp_path / f"acc{accumulation}" / "model.safetensors")))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, value in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_crop_sampler_shards_partition_the_global_batch(tmp_path):
    cfg = from_dict({**TINY, "data": {**TINY["data"], "batch_size": 3}}).data
    photo = folder_photos(_config(tmp_path, 3, "x").parent / "photos")
    whole = CropSampler(photo, from_dict({**TINY, "data": {**TINY["data"], "batch_size": 6}}).data, seed=5).sample()
    shards = [CropSampler(photo, cfg, seed=5, shard=r, shards=2).sample() for r in range(2)]
    for field in ("noisy", "clean"):
        torch.testing.assert_close(torch.cat([getattr(s, field) for s in shards]), getattr(whole, field))
    torch.testing.assert_close(torch.cat([s.noise.value for s in shards]), whole.noise.value)
    with pytest.raises(ValueError, match="shard"):
        CropSampler(photo, cfg, shard=2, shards=2)


def test_killed_ddp_run_over_tar_shards_resumes_each_ranks_readers(tmp_path):
    """Tar-shard readers differ by rank, so every rank's stream position is saved and restored: a 2-process run with
    a data worker each, killed and resumed, trains exactly like the uninterrupted one."""
    from ebt_vision.image.streams import list_photo_files, write_photo_shards

    from .test_streams import photo_tree

    tree = photo_tree(tmp_path / "tree", 16)
    write_photo_shards(list_photo_files(str(tree), "folder"), tmp_path / "shards", per_shard=3)  # unequal
    values = {
        **TINY,
        "data": {**TINY["data"], "source": str(tmp_path / "shards"), "workers": 1, "batch_size": 2},
        "train": {**TINY["train"], "steps": 16, "checkpoint_every": 4, "device": "cpu"},
    }
    config = tmp_path / "shards.yaml"
    config.write_text(yaml.safe_dump(values))
    done = subprocess.run(_torchrun(config, tmp_path / "reference"), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    process = subprocess.Popen(_torchrun(config, killed), env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_group_after_checkpoint(process, killed, 4)
    stopped = latest_checkpoint(killed)
    assert stopped is not None and stopped.name < "step_0000016", "was not killed mid-run"
    streams = torch.load(stopped / "train_state.pt", weights_only=True)["samplers"]
    assert streams[0]["slots"] != streams[1]["slots"]  # the ranks' readers stand at different places
    done = subprocess.run(_torchrun(config, killed, "--resume"), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(killed) == pytest.approx(_losses(tmp_path / "reference"), rel=1e-6)
    want, got = load_file(tmp_path / "reference" / "model.safetensors"), load_file(killed / "model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)
