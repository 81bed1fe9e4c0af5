"""Checkpoints: weights as safetensors with the resolved config inside, training state beside, written atomically.

A training run keeps ``<run>/checkpoints/step_XXXXXXX/{model.safetensors, config.yaml, train_state.pt}`` and a
``latest`` file naming the newest complete one. Each checkpoint is written to a temporary folder and renamed into
place, then ``latest`` is replaced atomically, so a run killed at any moment (even kill -9) leaves either the old
or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ExperimentConfig, dump_yaml, from_dict, to_dict
from .errors import UserError
from .paths import resolve_path

WEIGHTS = "model.safetensors"
STATE = "train_state.pt"


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def save_weights(module: nn.Module, cfg: ExperimentConfig, path: str | Path, extra: dict[str, Any] | None = None):
    """Write ``module``'s state dict and the config (in the safetensors metadata) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    metadata = {"config": json.dumps(to_dict(cfg)), "extra": json.dumps(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """-> (config, extra metadata) of a file written by ``save_weights``, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({error})") from None
    if "config" not in metadata:
        raise CheckpointError(f"{path} has no config in its metadata; was it written by ebt-vision?")
    return from_dict(json.loads(metadata["config"])), json.loads(metadata.get("extra", "{}"))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ExperimentConfig, dict[str, Any]]:
    """-> (state dict, config, extra metadata) from a file written by ``save_weights``."""
    cfg, extra = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({error})") from None
    return tensors, cfg, extra


def save_pretrained_folder(module: nn.Module, cfg: ExperimentConfig, folder: str | Path, extra: dict | None = None):
    """A folder in the Hugging Face layout: ``config.json`` (``{"cfg": config}``, what ``from_pretrained`` reads)
    beside ``model.safetensors`` (which also carries the config and ``extra`` in its metadata)."""
    folder = Path(folder)
    save_weights(module, cfg, folder / WEIGHTS, extra=extra)
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps({"cfg": to_dict(cfg)}, indent=2) + "\n")
    os.replace(tmp, folder / "config.json")
    return folder


def read_pretrained(folder: str | Path) -> tuple[dict[str, torch.Tensor], ExperimentConfig, dict[str, Any]]:
    """-> (state dict, config, extra metadata) from a folder in the Hugging Face layout (``save_pretrained``):
    ``config.json`` with the config under ``cfg`` beside ``model.safetensors``."""
    folder = Path(folder)
    config, weights = folder / "config.json", folder / WEIGHTS
    if not config.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder} is not a saved model folder (it needs config.json and {WEIGHTS})")
    try:
        cfg = from_dict(json.loads(config.read_text())["cfg"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config} does not hold an ebt-vision config ({error})") from None
    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as handle:
            extra = json.loads((handle.metadata() or {}).get("extra", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({error})") from None
    return tensors, cfg, extra


def read_checkpoint(
    path: str | Path, what: str = "checkpoint"
) -> tuple[Path, dict[str, torch.Tensor], ExperimentConfig, dict[str, Any]]:
    """-> (the resolved path, state dict, config, extra metadata) of a ``.safetensors`` file with the config in its
    metadata or a folder in the Hugging Face layout; relative paths are also looked up in the project checkout."""
    path = resolve_path(path, what, CheckpointError)
    return (path, *(read_pretrained(path) if path.is_dir() else read_weights(path)))


def load_trained(
    path: str | Path, build: Callable[[ExperimentConfig], nn.Module], what: str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """A module built from the checkpoint's own config by ``build``, its weights loaded, in eval mode on ``device``;
    and the checkpoint's extra metadata. ``path``: a ``.safetensors`` file with the config in its metadata, or a
    folder in the Hugging Face layout (``save_pretrained``); relative paths are also looked up in the project
    checkout. ``what`` names the model in the error when the weights do not fit."""
    path, tensors, cfg, extra = read_checkpoint(path)
    module = build(cfg)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit {what}: {error}") from None
    return module.to(device).eval(), extra


def save_training_checkpoint(
    run_dir: Path, step: int, module: nn.Module, cfg: ExperimentConfig, state: dict, keep: int
):
    """Write checkpoint ``step`` (weights, config, optimiser/scheduler/RNG state) and point ``latest`` at it."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step:07d}"
    tmp = folder / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(module, cfg, tmp / WEIGHTS, extra={"step": step})
    (tmp / "config.yaml").write_text(dump_yaml(cfg))
    torch.save(state, tmp / STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = folder / "latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / "latest")
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / WEIGHTS).is_file() and (folder / STATE).is_file() else None


def checkpoint_config(folder: Path) -> ExperimentConfig:
    """The config a training checkpoint was written with."""
    return read_metadata(Path(folder) / WEIGHTS)[0]


def load_training_checkpoint(folder: Path, module: nn.Module) -> dict:
    """Load weights into ``module`` and return the saved training state (optimiser, scheduler, step, RNG, data
    stream). The state holds only tensors and plain Python values, so it is read with ``weights_only=True``: no
    arbitrary pickle runs."""
    tensors, _, _ = read_weights(Path(folder) / WEIGHTS)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{folder} does not fit the model: {error}") from None
    return torch.load(Path(folder) / STATE, weights_only=True)
