"""Streamed photo trees (folder, list file, WebDataset tar shards) read by DataLoader workers: the same stream for any
number of workers, no overlap across processes, exact resume (kill -9 included), corrupt files; the packaged photos'
stream unchanged; the COCO-scale config's tiny twin."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from ebt_vision.core.checkpoint import latest_checkpoint
from ebt_vision.core.config import flatten, from_dict, load_config, to_dict
from ebt_vision.core.errors import InputError, UserError
from ebt_vision.core.streams import WorkerStream
from ebt_vision.image.data import CropSampler, Photo, packaged_training_photos
from ebt_vision.image.noise import training_noise
from ebt_vision.image.streams import PhotoFiles, list_photo_files, resolve_format, write_photo_shards
from ebt_vision.image.training import make_sampler, train_model

from .conftest import TINY, kill_group_after_checkpoint

REPO = Path(__file__).resolve().parents[1]
PHOTOS = 36


def photo_tree(root: Path, count: int = PHOTOS, suffix: str = ".png") -> Path:
    """An ImageFolder tree (``train/`` of three class folders, and a ``val/`` that training must never read) of
    ``count`` photos, each one solid colour that names it (red = 6 * number), of varying sizes."""
    for number in range(count):
        folder = root / "train" / f"class{number % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.empty((20 + number % 7, 24 + number % 5, 3), dtype=np.uint8)
        pixels[:] = (6 * number, 255 - 6 * number, 128)
        Image.fromarray(pixels).save(folder / f"photo{number:02d}{suffix}")
    (root / "val").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "val" / "held-out.png")
    return root


def numbers(batch) -> list[int]:
    """Which photos of ``photo_tree`` a batch's clean crops come from."""
    red = ((batch.clean[:, 0, 0, 0] + 1) / 2 * 255).round().long()
    return (red // 6).tolist()


def data_cfg(source: Path | str, **data):
    values = {**TINY, "data": {**TINY["data"], "source": str(source), "crop_size": 16, "batch_size": 3, **data}}
    return from_dict(values)


def take(stream, count: int) -> list:
    batches = iter(stream)
    return [next(batches) for _ in range(count)]


def same(first: list, second: list) -> bool:
    pairs = zip(first, second, strict=True)
    return all(torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean) for a, b in pairs)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return photo_tree(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_photo_shards(list_photo_files(str(tree), "folder"), out, per_shard=6)
    return out


def test_formats_are_detected_and_imagefolder_trees_read_train_only(tree, shards, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(f"{p} {i % 3}" for i, p in enumerate(list_photo_files(str(tree), "folder"))))
    assert [resolve_format(s) for s in ("packaged", str(tree), str(listing), str(shards))] == [
        "memory", "folder", "list", "webdataset",
    ]  # fmt: skip
    files = list_photo_files(str(tree), "folder")
    assert len(files) == PHOTOS and not any("held-out" in f for f in files)
    assert list_photo_files(str(listing), "list") == files
    with pytest.raises(UserError, match="data.format"):
        resolve_format(str(tree), "zip")


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_any_number_of_workers_gives_one_stream_that_resumes_exactly(tree, shards, fmt):
    source = tree if fmt == "folder" else shards
    reference = take(make_sampler(data_cfg(source, workers=2)), 8)
    if fmt == "folder":  # a pure function of (seed, sample index): the workers do not matter
        assert same(take(make_sampler(data_cfg(source)), 8), reference)
        assert same(take(make_sampler(data_cfg(source, workers=1)), 8), reference)
    stream = make_sampler(data_cfg(source, workers=2))
    take(stream, 5)
    state = stream.state_dict()
    resumed = make_sampler(data_cfg(source, workers=2))
    resumed.load_state_dict(state)
    assert same(take(resumed, 3), reference[5:])
    other_seed = from_dict({**to_dict(data_cfg(source, workers=2)), "train": {**TINY["train"], "seed": 1}})
    assert not same(take(make_sampler(other_seed), 2), reference[:2])
    with pytest.raises(UserError, match="same number"):
        make_sampler(data_cfg(source, workers=1)).load_state_dict(state)


def test_folder_stream_visits_every_photo_once_per_epoch_across_processes(tree):
    """Two processes (batch 3 each, global batch 6): six steps are one epoch, each photo exactly once, no overlap."""
    seen = []
    for rank in range(2):
        cfg = data_cfg(tree)
        stream = WorkerStream(PhotoFiles(list_photo_files(str(tree), "folder"), cfg.data, 0, rank, 2), workers=2)
        seen.append([n for batch in take(stream, PHOTOS // 6) for n in numbers(batch)])
    assert sorted(seen[0] + seen[1]) == list(range(PHOTOS))
    whole = [n for batch in take(make_sampler(data_cfg(tree, batch_size=6)), PHOTOS // 6) for n in numbers(batch)]
    interleaved = [n for step in range(PHOTOS // 6) for rank in range(2) for n in seen[rank][3 * step : 3 * step + 3]]
    assert interleaved == whole  # the two processes together see what one process with the global batch sees


def test_shards_are_dealt_to_readers_once_per_epoch(shards):
    """Six shards of six photos, two readers: each reader's 18 samples (six batches of 3) are one epoch of its three
    shards; together they are every photo once."""
    seen = [n for batch in take(make_sampler(data_cfg(shards, workers=2)), 12) for n in numbers(batch)]
    assert sorted(seen) == list(range(PHOTOS))
    with pytest.raises(UserError, match="every reader needs at least one shard"):
        make_sampler(data_cfg(shards, workers=7))


def test_list_files_stream_like_the_folder_they_list(tree, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(os.path.relpath(p, tmp_path) for p in list_photo_files(str(tree), "folder")) + "\n")
    assert same(take(make_sampler(data_cfg(listing)), 4), take(make_sampler(data_cfg(tree)), 4))


def _corrupt_tree(root: Path) -> Path:
    photo_tree(root, 12, ".jpg")
    broken = root / "train" / "class1" / "photo04.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    return broken


def test_a_corrupt_photo_is_one_error_naming_it_or_skipped_and_counted(tmp_path):
    broken = _corrupt_tree(tmp_path / "tree")
    with pytest.raises(InputError, match=r"cannot read .*photo04\.jpg"):
        take(make_sampler(data_cfg(tmp_path / "tree", workers=2)), 8)
    stream = make_sampler(data_cfg(tmp_path / "tree", workers=2, on_error="skip"))
    with pytest.warns(UserWarning, match="photo04.jpg"):
        batches = take(stream, 8)
    assert all(batch.clean.shape == (3, 3, 16, 16) for batch in batches)
    assert stream.state_dict()["skipped"] == {str(broken): 2}  # 24 samples: two epochs of 12 photos


def test_a_corrupt_member_of_a_tar_shard_is_named(tmp_path):
    _corrupt_tree(tmp_path / "tree")
    write_photo_shards(list_photo_files(str(tmp_path / "tree"), "folder"), tmp_path / "shards", per_shard=4)
    with pytest.raises(InputError, match=r"cannot read .*shard-\d+\.tar:.*photo04\.jpg"):
        take(make_sampler(data_cfg(tmp_path / "shards", workers=2)), 8)
    stream = make_sampler(data_cfg(tmp_path / "shards", on_error="skip"))
    with pytest.warns(UserWarning, match="photo04.jpg"):
        take(stream, 8)
    assert sum(stream.state_dict()["skipped"].values()) == 2


class FrozenCropSampler:
    """The packaged photos' crop stream as the shipped reports were trained on it (CropSampler at commit e960b4f),
    frozen here: the packaged path must keep producing exactly these batches."""

    def __init__(self, photos: list[Photo], cfg, seed: int) -> None:
        self.images, self.cfg = [p.image for p in photos], cfg
        self.generator = torch.Generator().manual_seed(seed)
        areas = torch.tensor([float(im.shape[1] * im.shape[2]) for im in self.images])
        self.weights = areas / areas.sum()

    def _crop(self) -> torch.Tensor:
        g, size = self.generator, self.cfg.crop_size
        image = self.images[int(torch.multinomial(self.weights, 1, generator=g))]
        top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=g))
        crop = image[:, top : top + size, left : left + size]
        if torch.rand((), generator=g) < 0.5:
            crop = crop.flip(2)
        return torch.rot90(crop, int(torch.randint(4, (1,), generator=g)), dims=(1, 2))

    def sample(self):
        clean = torch.stack([self._crop() for _ in range(self.cfg.batch_size)])
        noise = training_noise(self.cfg, clean.shape[0], self.generator)
        return noise.add_to(clean, self.generator), clean, noise.value


@pytest.mark.parametrize("config", ["configs/quickstart.yaml", "configs/paper-cpu.yaml"])
def test_the_packaged_photo_stream_is_unchanged(config):
    cfg = load_config(REPO / config)
    stream = make_sampler(cfg)
    assert isinstance(stream, CropSampler)  # the packaged photos stay in memory, behind the same interface
    frozen = FrozenCropSampler(packaged_training_photos(), cfg.data, cfg.train.seed)
    for batch in take(stream, 3):
        noisy, clean, level = frozen.sample()
        assert torch.equal(batch.noisy, noisy) and torch.equal(batch.clean, clean)
        assert torch.equal(batch.noise.value, level)


def _losses(run: Path) -> dict[int, dict[str, float]]:
    with (run / "metrics.csv").open() as handle:
        return {int(float(r["step"])): {k: float(v) for k, v in r.items()} for r in csv.DictReader(handle)}


@pytest.mark.parametrize("workers", [0, 2])
def test_starting_a_stream_leaves_the_global_random_state_alone(tree, workers):
    """The descent draws its random steps from the global torch RNG; a stream that drew from it when it started (as
    a DataLoader iterator does by default) shifted those draws after a resume (bench-data found it)."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    iterator = iter(make_sampler(data_cfg(tree, workers=workers)))
    next(iterator)
    assert torch.equal(torch.get_rng_state(), before)
    iterator.close()


def test_killed_run_with_workers_resumes_bitwise_and_logs_throughput(tree, tmp_path):
    values = {**TINY, "data": {**TINY["data"], "source": str(tree), "workers": 2, "batch_size": 4}}
    # randomised descent steps and step sizes (drawn from the global torch RNG) as every shipped config trains
    values["descent"] = {**TINY["descent"], "min_steps": 1, "step_size_jitter": 2.0}
    values["train"] = {**TINY["train"], "steps": 30, "checkpoint_every": 5, "device": "cpu"}
    config = tmp_path / "workers.yaml"
    config.write_text(yaml.safe_dump(values))
    cfg = load_config(config)
    reference = train_model(cfg, tmp_path / "reference", progress=False)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "ebt_vision", "train", "--config", str(config), "--out", str(killed), "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    kill_group_after_checkpoint(process, killed, 10)  # the training process and its data workers
    stopped = latest_checkpoint(killed)
    assert stopped is not None and not (killed / "model.safetensors").exists(), "was not killed mid-run"

    resumed = train_model(cfg, killed, resume=True, progress=False)
    assert resumed.step == reference.step == 30
    want, got = load_file(tmp_path / "reference" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(got[name], want[name]) for name in want)
    rows = _losses(killed)
    assert sorted(rows) == list(range(1, 31))
    assert all(rows[s]["loss"] == _losses(tmp_path / "reference")[s]["loss"] for s in rows)
    assert all(r["samples_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in rows.values())


def test_the_coco_scale_config_and_its_tiny_twin_differ_only_in_size(tree):
    big, tiny = load_config(REPO / "configs/coco-128.yaml"), load_config(REPO / "configs/coco-128-tiny.yaml")
    differ = {k for k, v in flatten(to_dict(big)).items() if flatten(to_dict(tiny))[k] != v}
    assert differ <= {"name", "model.width", "model.depth", "model.heads", "data.batch_size", "data.workers",
                      "optim.warmup_steps", "train.steps", "train.log_every", "train.checkpoint_every"}  # fmt: skip
    assert (big.data.crop_size, big.model.width, big.model.depth, big.data.noise) == (128, 1536, 24, "diffusion")
    cfg = load_config(REPO / "configs/coco-128-tiny.yaml", [f"data.source={tree}"])  # photos resized to 128 px
    result = train_model(cfg, tree.parent / "coco-tiny", progress=False)
    assert result.step == 3 and np.isfinite(result.final_metrics["loss"])
