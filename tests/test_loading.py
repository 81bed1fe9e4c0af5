"""Strict loading everywhere, and configs from model folders checked before anything is built (issue 27)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ebt_vision.cli import main
from ebt_vision.core import hub
from ebt_vision.core.checkpoint import CheckpointError, load_trained, save_pretrained_folder
from ebt_vision.core.config import ConfigError, from_dict, load_config, read_yaml
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.plain import PlainDenoisingObjective
from ebt_vision.text.baseline import TransformerPlusPlusObjective
from ebt_vision.text.objective import TextEBTObjective
from ebt_vision.video.dit import VideoDiTObjective
from ebt_vision.video.objective import VideoObjective
from ebt_vision.video.plain import PlainVideoObjective

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {
    "ebt-image-s": DenoisingObjective,
    "ebt-image-s-stage1": DenoisingObjective,
    "dit-image-s": DiTObjective,
    "dit-image-s-stage1": DiTObjective,
    "transformer-image-s": PlainDenoisingObjective,
    "transformer-image-s-long": PlainDenoisingObjective,
    "text-sotu-s": TextEBTObjective,
    "text-sotu-s-transformer": TransformerPlusPlusObjective,
    "video-mmnist-s": VideoObjective,
    "video-mmnist-s-dit": VideoDiTObjective,
    "video-mmnist-s-transformer": PlainVideoObjective,
    "video-real-s": VideoObjective,
    "video-real-s-dit": VideoDiTObjective,
    "video-real-s-transformer": PlainVideoObjective,
}


@pytest.fixture
def model_folder(tmp_path, tiny_cfg) -> Path:
    return save_pretrained_folder(DenoisingObjective(tiny_cfg), tiny_cfg, tmp_path / "model")


def rewrite_weights(folder: Path, change) -> None:
    """Rewrite a folder's model.safetensors with ``change(tensors)`` applied, keeping its metadata."""
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def refusals(folder: Path, match: str) -> None:
    """Both load paths (the Hub mixin's and ours) refuse ``folder`` with a CheckpointError matching ``match``."""
    with pytest.raises(CheckpointError, match=match):
        DenoisingObjective.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=match):
        load_trained(folder, DenoisingObjective, "an image EBT")


def test_a_missing_or_unexpected_tensor_is_one_error_naming_it(model_folder):
    rewrite_weights(model_folder, lambda t: t.pop("model.condition"))
    refusals(model_folder, r"does not fit .*: missing model\.condition$")
    restored = {"model.condition": torch.zeros(16), "model.stray": torch.ones(2)}
    rewrite_weights(model_folder, lambda t: t.update(restored))
    refusals(model_folder, r"unexpected model\.stray$")


def test_weights_of_another_shape_are_one_error_naming_them(model_folder):
    rewrite_weights(model_folder, lambda t: t.update({"model.condition": torch.zeros(3)}))
    refusals(model_folder, r"shapes differ for model\.condition$")


def test_non_finite_weights_are_refused_naming_the_tensor(model_folder):
    def poison(tensors):
        tensors["model.embed.weight"][0, 0] = float("nan")

    rewrite_weights(model_folder, poison)
    refusals(model_folder, r"NaN or infinite weights in model\.embed\.weight;")


@pytest.mark.parametrize("name, cls", SHIPPED.items())
def test_shipped_models_load_strictly(name, cls):
    folder = REPO / "checkpoints" / name
    model = cls.from_pretrained(folder)
    stored = load_file(folder / "model.safetensors")
    loaded = model.state_dict()
    for key, value in stored.items():  # old checkpoints hold the linear energy head as <head>.weight
        assert torch.equal(loaded[key.replace("head.weight", "head.out.weight") if key not in loaded else key], value)
    assert not model.training
    load_trained(folder, cls, name)


def test_a_checkpoint_from_before_the_energy_heads_loads_its_linear_head(model_folder):
    """Checkpoints written before the head had kinds hold the linear energy head as ``<head>.weight``."""
    weights = load_file(model_folder / "model.safetensors")["model.head.out.weight"]
    rewrite_weights(model_folder, lambda t: t.update({"model.head.weight": t.pop("model.head.out.weight")}))
    for model in (
        DenoisingObjective.from_pretrained(model_folder),
        load_trained(model_folder, DenoisingObjective, "an image EBT")[0],
    ):
        torch.testing.assert_close(model.state_dict()["model.head.out.weight"], weights)


def test_from_pretrained_on_a_hub_repository_loads_strictly(model_folder, monkeypatch):
    calls = []

    def download(repo_id, filename, **options):
        calls.append((repo_id, filename))
        return str(model_folder / filename)

    monkeypatch.setattr(hub, "hf_hub_download", download)
    model = DenoisingObjective.from_pretrained("someone/tiny-ebt", revision="main")
    assert calls == [("someone/tiny-ebt", "config.json"), ("someone/tiny-ebt", "model.safetensors")]
    assert torch.equal(model.model.condition, load_file(model_folder / "model.safetensors")["model.condition"])
    rewrite_weights(model_folder, lambda t: t.pop("model.condition"))
    with pytest.raises(CheckpointError, match="missing model.condition"):
        DenoisingObjective.from_pretrained("someone/tiny-ebt")


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        ("model", "width", 2**20, r"model\.width = 1048576 is above the limit"),
        ("model", "depth", 100_000, r"model\.depth = 100000 is above the limit"),
        ("data", "crop_size", 2**20, r"data\.crop_size = 1048576 is above the limit"),
        ("model", "width", 16_384, r"the model would hold about .* weights, above the limit"),
    ],
)
def test_a_tampered_config_json_is_refused_before_anything_is_built(model_folder, section, key, value, match):
    path = model_folder / "config.json"
    stored = json.loads(path.read_text())
    stored["cfg"][section][key] = value
    if key == "width":
        stored["cfg"]["model"]["heads"] = 2
    path.write_text(json.dumps(stored))
    started = time.perf_counter()
    refusals(model_folder, f"config.json: {match}")
    assert time.perf_counter() - started < 5  # nothing was allocated


def test_a_huge_vocabulary_is_refused():
    with pytest.raises(ConfigError, match=r"model\.vocab_size = 1073741824 is above the limit"):
        from_dict({"task": "text", "model": {"vocab_size": 2**30}, "data": {"vocab_size": 2**30}})


@pytest.mark.parametrize("text", ["[1, 2]", '"cfg"', '{"cfg": [1]}', '{"other": {}}', "{not json"])
def test_a_config_json_that_is_not_an_object_is_one_line(model_folder, text, capsys, tmp_path):
    (model_folder / "config.json").write_text(text)
    refusals(model_folder, "config.json")
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["denoise", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(model_folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "config.json" in err


def test_duplicate_yaml_keys_are_refused_with_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\noptim:\n  lr: 1.0e-3\n  lr: 5.0e-4\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:3: YAML error: duplicate key 'lr' \(first on line 3\)"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="duplicate key 'width'"):
        load_config(None, ["model={width: 8, width: 16}"])
    path.write_text("base: &base {lr: 1.0e-3}\noptim:\n  <<: *base\n  lr: 5.0e-4\n")  # a merge key may be overridden
    assert read_yaml(path)["optim"] == {"lr": 5.0e-4}


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".", ""])
def test_a_run_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        from_dict({"name": name})


def test_a_run_named_outside_runs_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "escape.yaml"
    config.write_text("name: ../../escaped\n")
    assert main(["train", "--config", str(config), "--quiet"]) == 2
    assert "must be a plain folder name" in capsys.readouterr().err
    assert not any(tmp_path.parent.parent.glob("escaped")) and not (tmp_path / "runs").exists()
