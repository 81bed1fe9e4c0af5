"""Checkpoints: weights as safetensors with the resolved config inside, training state beside, written atomically.

A training run keeps ``<run>/checkpoints/step_XXXXXXX/{model.safetensors, config.yaml, train_state.pt}`` and a
``latest`` file naming the newest one written. Each checkpoint is written to a temporary folder and renamed into
place, then ``latest`` is replaced atomically, so a run killed at any moment (even kill -9) leaves either the old
or the new checkpoint, never half of one. Readers do not trust ``latest`` (a kill between the two renames leaves it
one checkpoint behind; a copied run folder may lack it): checkpoints are ordered by their step number.

Every load is strict: a tensor the model lacks, a parameter the file lacks, a shape that differs or a weight that is
not finite is a ``CheckpointError`` naming the tensors, never a model left partly at its random initialisation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, ExperimentConfig, dump_yaml, from_dict, to_dict
from .errors import UserError
from .paths import resolve_path

WEIGHTS = "model.safetensors"
STATE = "train_state.pt"
POINTER = "latest"
STEP_FOLDER = re.compile(r"step_(\d+)")
# What a training state must hold to resume (older checkpoints may lack the later additions: sampler, ema).
STATE_KEYS = ("optimizer", "scheduler", "step", "seconds", "rng")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def name_list(names: list[str], limit: int = 4) -> str:
    """``a, b, c, d and 3 more``: names for a one-line message."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def first_line(error: BaseException) -> str:
    """The first sentence of an exception's message (PyTorch's load errors go on for lines about its own options)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path, what: str) -> None:
    """Load ``tensors`` into ``module`` strictly: every parameter and buffer present, nothing extra, every shape equal,
    every floating-point value finite; else one CheckpointError naming the tensors (``what`` names the model)."""
    broken = non_finite(tensors)
    if broken:
        raise CheckpointError(f"{source} holds NaN or infinite weights in {name_list(broken)}; the file is damaged or "
                              "was saved from a diverged run")  # fmt: skip
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # shapes that differ: raised even when not strict, one line per tensor
        misshapen = re.findall(r"size mismatch for ([^:]+):", str(error))
        reason = f"shapes differ for {name_list(misshapen)}" if misshapen else first_line(error)
        raise CheckpointError(f"{source} does not fit {what}: {reason}") from None
    problems = [f"{label} {name_list(names)}" for label, names in (("missing", missing), ("unexpected", unexpected))
                if names]  # fmt: skip
    if problems:
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(problems))


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
    try:
        values, extra = json.loads(metadata["config"]), json.loads(metadata.get("extra", "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({error})") from None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: its extra metadata is not a JSON object")
    return config_from(values, path), extra


def config_from(values: object, source: str | Path) -> ExperimentConfig:
    """The validated config stored in a model file or folder (sizes included: ``ebt_vision.core.limits``), checked
    before any model is built; a bad one is a CheckpointError naming ``source``."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: the stored config is a JSON {type(values).__name__}, not an object")
    try:
        return from_dict(values)
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None


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
        stored = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config} is not valid JSON ({error})") from None
    if not isinstance(stored, dict) or "cfg" not in stored:
        raise CheckpointError(f"{config} does not hold an ebt-vision config (a JSON object with the config under cfg)")
    cfg = config_from(stored["cfg"], config)
    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as handle:
            extra = json.loads((handle.metadata() or {}).get("extra", "{}"))
    except (SafetensorError, OSError, ValueError) as error:  # JSONDecodeError is a ValueError
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
    load_weights(module, tensors, path, what)
    return module.to(device).eval(), extra


def save_training_checkpoint(
    run_dir: Path, step: int, module: nn.Module, cfg: ExperimentConfig, state: dict, keep: int
) -> Path:
    """Write checkpoint ``step`` (weights, config, optimiser/scheduler/RNG state), point ``latest`` at it and prune
    all but the ``keep`` newest complete checkpoints (by step number; never this one or the one ``latest`` names)."""
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
    pointer = folder / f"{POINTER}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / POINTER)
    prune_checkpoints(folder, keep, final)
    return final


def checkpoint_step(folder: Path) -> int | None:
    """The step number in a checkpoint folder's name (``step_0001250`` -> 1250), None for any other name."""
    match = STEP_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def step_folders(run_dir: str | Path) -> list[Path]:
    """A run's ``checkpoints/step_*`` folders, oldest first by step number (names sort wrong past 9,999,999)."""
    folder = Path(run_dir) / "checkpoints"
    found = [f for f in folder.glob("step_*") if f.is_dir() and checkpoint_step(f) is not None]
    return sorted(found, key=checkpoint_step)


def missing_files(folder: Path) -> list[str]:
    """The files a resumable checkpoint needs that ``folder`` lacks (its config.yaml is a copy for people; the
    weights' metadata holds the config that is read)."""
    return [name for name in (WEIGHTS, STATE) if not (folder / name).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest complete checkpoint by step number, whatever ``latest`` says (None when there is none)."""
    complete = [f for f in step_folders(run_dir) if not missing_files(f)]
    return complete[-1] if complete else None


def prune_checkpoints(folder: Path, keep: int, written: Path) -> None:
    """Delete the step folders older than the ``keep`` newest complete ones, except ``written`` and the one the
    ``latest`` pointer names. Newer folders stay whatever their state: a damaged one is left for people to see."""
    steps = step_folders(folder.parent)
    complete = [f for f in steps if not missing_files(f)]
    if len(complete) <= keep:
        return
    oldest_kept = checkpoint_step(complete[-keep])
    pointer = folder / POINTER
    protected = {written.name, pointer.read_text().strip() if pointer.is_file() else ""}
    for old in steps:
        if checkpoint_step(old) < oldest_kept and old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_config(folder: Path) -> ExperimentConfig:
    """The config a training checkpoint was written with."""
    return read_metadata(Path(folder) / WEIGHTS)[0]


def read_training_state(folder: Path) -> dict:
    """A checkpoint's training state (optimiser, scheduler, step, RNG, data stream). It holds only tensors and plain
    Python values, so it is read with ``weights_only=True``: no arbitrary pickle runs."""
    path = Path(folder) / STATE
    try:
        state = torch.load(path, weights_only=True)
    except Exception as error:  # a damaged file fails in the zip reader, the unpickler or the storage: any of them
        reason = first_line(error)
        raise CheckpointError(f"{path} is not a readable training state: damaged or cut short ({reason})") from None
    lacking = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if lacking:
        raise CheckpointError(f"{path} is not a training state: it lacks {name_list(lacking)}")
    if state["step"] != checkpoint_step(Path(folder)):
        raise CheckpointError(f"{path} holds the state of step {state['step']}, not of its folder's step")
    return state


def load_training_checkpoint(folder: Path, module: nn.Module) -> dict:
    """Load weights into ``module`` and return the saved training state. Both files are read in full before the
    module is touched, so an unreadable checkpoint leaves the module as it was."""
    tensors, _, _ = read_weights(Path(folder) / WEIGHTS)
    state = read_training_state(folder)
    load_weights(module, tensors, Path(folder) / WEIGHTS, "the model")
    return state
