"""Linear probing: the probe itself, frozen and deterministic feature extraction, the datasets, end to end."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ebt_vision.core.errors import InputError
from ebt_vision.experiments.image.probe import (
    ProbeSettings,
    accuracy,
    dit_features,
    ebt_features,
    split_validation,
    train_probe,
)
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.labelled import LabelledImages, fashion_mnist, few_shot, image_folder, read_idx
from ebt_vision.image.objective import DenoisingObjective

from .conftest import TINY


def test_probe_reaches_full_accuracy_on_linearly_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator) * 4
    labels = torch.arange(5).repeat(80)
    features = centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=generator)
    probe = train_probe(features[:300], labels[:300], 5, ProbeSettings(steps=300, batch=64))
    top1, top5 = accuracy(probe, features[300:], labels[300:], 5)
    assert top1 > 99 and top5 == 100
    shuffled = labels[torch.randperm(len(labels), generator=generator)]  # no signal: near chance
    assert accuracy(train_probe(features[:300], shuffled[:300], 5, ProbeSettings(steps=300)), features[300:],
                    shuffled[300:], 5)[0] < 45  # fmt: skip


def test_feature_extraction_is_frozen_and_deterministic(tiny_cfg):
    cfg = replace(tiny_cfg, model=replace(tiny_cfg.model, sigma_conditioning=True))
    ebt, dit = DenoisingObjective(cfg), DiTObjective(tiny_cfg)
    for objective in (ebt, dit):
        with torch.no_grad():
            for p in objective.parameters():
                p.add_(0.05 * torch.randn_like(p))
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    before = {n: p.detach().clone() for n, p in [*ebt.named_parameters(), *dit.named_parameters()]}
    first = ebt_features(ebt, images, 25.0, batch=4)
    assert len(first) == cfg.model.depth + 1 and all(f.shape == (6, cfg.model.width) for f in first)
    assert all(torch.equal(a, b) for a, b in zip(first, ebt_features(ebt, images, 25.0, batch=4), strict=True))
    layers = dit_features(dit, images, 25.0, batch=4)
    assert len(layers) == dit.model.depth + 1  # the patch embedding and every block, captured by forward hooks
    width = dit.model.heads * dit.model.head_dim
    assert all(f.shape == (6, width) for f in layers) and not any(f.requires_grad for f in layers)
    assert all(torch.equal(a, b) for a, b in zip(layers, dit_features(dit, images, 25.0, batch=4), strict=True))
    after = dict([*ebt.named_parameters(), *dit.named_parameters()])
    assert all(torch.equal(before[n], after[n]) and after[n].grad is None for n in before)


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "x-idx3-ubyte.gz"
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + pixels.tobytes()))
    assert np.array_equal(read_idx(good), pixels)
    truncated = tmp_path / "t-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + pixels.tobytes()[:-5]))
    with pytest.raises(InputError, match="truncated"):
        read_idx(truncated)
    foreign = tmp_path / "f.gz"
    foreign.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(InputError, match="magic"):
        read_idx(foreign)
    with pytest.raises(InputError, match="gzip"):
        (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08 broken")
        read_idx(tmp_path / "broken.gz")


def test_image_folder_and_few_shot(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
                    tmp_path / split / name / f"{i}.png"
                )
    train = image_folder(tmp_path, "train", size=16)
    assert (
        train.images.shape == (6, 3, 16, 16)
        and train.classes == ("cat", "dog")
        and train.labels.tolist() == [0] * 3 + [1] * 3
    )
    assert -1 <= float(train.images.min()) and float(train.images.max()) <= 1
    shots = few_shot(train, 2, seed=1)
    assert sorted(shots.labels.tolist()) == [0, 0, 1, 1]
    with pytest.raises(InputError, match="fewer than"):
        few_shot(train, 4)
    with pytest.raises(InputError, match="no test/ folder"):
        image_folder(tmp_path, "test")


def test_fashion_mnist_is_the_published_split():
    try:
        test = fashion_mnist("test")
    except InputError as error:
        pytest.skip(str(error))
    assert test.images.shape == (10_000, 1, 32, 32) and len(test.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    fit, held = split_validation(LabelledImages(torch.zeros(60, 1), torch.zeros(60, dtype=torch.long), ("a",)))
    assert len(held) == 10 and not set(fit.tolist()) & set(held.tolist())


def test_probe_command_end_to_end_on_a_tiny_budget(tmp_path):
    from ebt_vision.core.config import from_dict
    from ebt_vision.experiments.image.probe_run import ProbeOptions, run_probe

    try:
        fashion_mnist("test")
    except InputError as error:
        pytest.skip(str(error))
    values = {
        **TINY,
        "name": "probe-tiny",
        "model": {**TINY["model"], "channels": 1},
        "data": {**TINY["data"], "source": "fashion-mnist", "crop_size": 32},
        "train": {**TINY["train"], "steps": 2},
    }
    # the shipped recipe in miniature: the trunk with ``values``, then an EBT stage (relative residual energy)
    # started from it, on the probe's images (the stage's own data and channels are replaced)
    warm = from_dict({**TINY, "name": "warm-tiny", "model": {**TINY["model"], "energy": "residual",
                                                             "relative_to_noisy": True},
                      "descent": {**TINY["descent"], "step_size": 1.0},
                      "data": {**TINY["data"], "source": "packaged"},
                      "train": {**TINY["train"], "steps": 2}})  # fmt: skip
    options = ProbeOptions(ProbeSettings(steps=20), limit=600, warm=warm, dit_steps=(2, 3))
    report = run_probe(from_dict(values), tmp_path / "runs", tmp_path / "out", options, progress=False)
    meta_rows = json.loads((tmp_path / "out" / "probe.json").read_text())
    results = meta_rows["rows"]
    assert {r["method"] for r in results} == {"ebt", "dit", "dit-3", "ebt-random", "dit-random", "pixels",
                                              "ebt-photo", "dit-photo"}  # fmt: skip
    assert all(0 <= r["top1"] <= 100 and r["top1"] <= r["top5"] for r in results)
    assert "10-shot" in report.read_text() and (tmp_path / "out" / "probe.png").stat().st_size > 10_000
    for stage in ("trunk", "ebt", "dit", "dit-3"):  # resumable pre-training runs, a DiT per step count
        assert (tmp_path / "runs" / stage / "model.safetensors").is_file()
    stage = yaml.safe_load((tmp_path / "runs" / "ebt" / "config.yaml").read_text())
    assert stage["model"]["channels"] == 1 and stage["data"]["source"] == "fashion-mnist"
    assert stage["train"]["init_from"] == str(tmp_path / "runs" / "trunk") and stage["model"]["relative_to_noisy"]
    ebt = next(r for r in results if r["method"] == "ebt")
    budget = meta_rows["meta"]["budget"]
    assert "trunk 2 steps" in ebt["note"] and "then 2 EBT steps" in budget and "dit-3 3 steps" in budget
    assert "counted training PFLOP: ebt " in budget  # every model's FLOPs, the EBT's trunk included


def test_probe_command_runs_the_protocol_on_an_image_folder(tmp_path):
    """A user's ImageFolder tree (train/ and val/ of class folders): one command pre-trains, probes and reports."""
    from ebt_vision.cli import main

    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 4)):
        for name, level in (("dark", 40), ("bright", 200)):  # separable classes
            (tmp_path / "tree" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "tree" / split / name / f"{i}.png")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "name": "probe-folder", "data": {**TINY["data"], "crop_size": 32},
                                      "train": {**TINY["train"], "steps": 2}}))  # fmt: skip
    code = main(["probe", "--config", str(config), "--data", str(tmp_path / "tree"), "--probe-steps", "30",
                 "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--quiet",
                 "--warm-config", "none"])  # fmt: skip
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert code == 0 and "ImageFolder" in report["meta"]["data"] and "2 classes" in report["meta"]["data"]
    pixels = next(r for r in report["rows"] if r["method"] == "pixels")
    assert pixels["top1"] == 100.0  # the classes differ in brightness: a linear probe on pixels separates them
    assert main(["probe", "--data", str(tmp_path / "nowhere"), "--quiet"]) == 2  # one clear line, no traceback
    assert main(["probe", "--warm-config", "configs/text-cpu.yaml", "--quiet"]) == 2  # a text config: refused
