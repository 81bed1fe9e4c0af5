"""Typed, frozen configuration: the only home of defaults.

``ExperimentConfig`` holds what every workload shares (descent, optimiser, training loop); each workload extends it
with its own sections (``ebt_vision.image.config.ImageConfig``: model, data, DiT baseline) and is named by the
``task`` key. A YAML file (or ``section.key=value`` overrides) is merged onto these dataclasses. Unknown keys and
values of the wrong type are errors, never silently ignored, and so is a key given twice in one YAML mapping (PyYAML
would keep the last one). PyYAML reads ``3e-4`` as a *string* (YAML 1.1 wants ``3.0e-4``), so float fields accept
numeric strings. Sizes are bounded (``ebt_vision.core.limits``) and ``name`` is a plain folder name, because configs
also arrive inside model folders that anyone may have edited.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .energy import ENERGY_KINDS, check_energy_step_size
from .errors import UserError
from .limits import size_problem
from .ops import ATTENTION_BACKENDS


class ConfigError(UserError):
    """A configuration file or override that does not fit the schema."""


@dataclass(frozen=True)
class Task:
    """A workload as the rest of the code finds it by name: its config schema and its training recipe (each
    ``"module:name"``, imported only when used), and the model families the recipe trains (the EBT first). A recipe
    is ``train_model(cfg, run_dir, model, resume, progress) -> TrainResult``; its data check (``core.data_check``)
    is ``missing_data(cfg, splits) -> list[Missing]``."""

    config: str
    recipe: str
    models: tuple[str, ...]
    data_check: str = ""


TASKS: dict[str, Task] = {
    "image": Task(
        "ebt_vision.image.config:ImageConfig",
        "ebt_vision.image.training:train_model",
        ("ebt", "dit", "transformer"),
        "ebt_vision.image.labelled:missing_data",
    ),
    "text": Task(
        "ebt_vision.text.config:TextConfig",
        "ebt_vision.text.training:train_model",
        ("ebt", "transformer"),
        "ebt_vision.text.corpora:missing_data",
    ),
    "video": Task(
        "ebt_vision.video.config:VideoConfig",
        "ebt_vision.video.training:train_model",
        ("ebt", "transformer", "dit"),
        "ebt_vision.video.data:missing_data",
    ),
}


@dataclass(frozen=True)
class TransformerConfig:
    """The trunk every energy model and baseline shares; workloads extend it (patch size, channels, vocabulary)."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    # "auto": efficient attention while training (fused forward, a backward that has its own backward, which the
    # second-order graph through the descent needs), fused otherwise. "math": the plain-ops reference.
    attention: str = "auto"
    # How the final tokens become per-position energies (ebt_vision.core.energy): linear | dot | l2 | residual.
    # Baselines that are not energy models ignore it.
    energy: str = "linear"


def check_energy_model(m: TransformerConfig, descent: DescentConfig) -> None:
    """The energy parameterisation and the descent's step size must fit together (``ebt_vision.core.energy``)."""
    problem = check_energy_step_size(m.energy, descent.step_size)
    check(problem is None, problem or "")


def check_transformer(m: TransformerConfig, section: str = "model") -> None:
    check(m.width >= 1 and m.depth >= 1 and m.heads >= 1, f"{section} sizes must be positive")
    check(m.width % m.heads == 0, f"{section}.width {m.width} must be divisible by {section}.heads {m.heads}")
    check(
        m.attention in ATTENTION_BACKENDS, f"{section}.attention must be one of {ATTENTION_BACKENDS}: {m.attention!r}"
    )
    check(m.energy in ENERGY_KINDS, f"{section}.energy must be one of {ENERGY_KINDS}: {m.energy!r}")


@dataclass(frozen=True)
class DescentConfig:
    num_steps: int = 2
    # Initial step size. Energies are SUMS over positions (patches, frames, tokens), so one step moves a candidate
    # element by step_size * dE/dx independently of how many positions there are (a mean would divide it by N).
    step_size: float = 50.0
    learn_step_size: bool = True
    step_size_lr_multiplier: float = 100.0  # the log step size gets its own optimiser group at lr * this
    langevin_noise: float = 0.0
    # Training only: per-sample number of steps drawn from [min_steps, num_steps] and step size scaled by a
    # log-uniform factor in [1/step_size_jitter, step_size_jitter]. Randomisation makes extra test steps safer.
    min_steps: int = 2
    step_size_jitter: float = 1.0
    detach_between_steps: bool = True
    # Evaluation only: keep a position's candidate when a step raises its energy, and stop descending it there.
    stop_when_energy_rises: bool = False
    # Clamp the candidate into the workload's valid range after every step (pixels: [-1, 1]).
    clamp_candidate: bool = False
    # Training only: recompute each descent step's graph in the backward pass instead of keeping all K of them
    # (activation checkpointing at the granularity where it pays: memory of one step, ~1/3 more compute).
    checkpoint_steps: bool = False
    # Training only: keep the second-order graph through the last graph_steps steps only (0: all). The earlier steps
    # run first-order and each sample's steps are its last ones, so long randomised descents train the energy on the
    # states a long test-time descent reaches, at the cost of the graph steps alone (the original work's truncation).
    graph_steps: int = 0
    # Training only: keep this many past (context, candidate, target) rows and start replay_fraction of every batch
    # from them (the original work's System-2 recipe). 0 turns replay off.
    replay_buffer_size: int = 0
    replay_fraction: float = 0.5


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
    # "smooth_l1" | "mse" | "log_mse" (per-sample log MSE: every sample weighted by 1 / its error, core.objective)
    loss: str = "smooth_l1"
    loss_on_steps: str = "all"  # "all": averaged over every descent step's candidate; "last": the final one only
    max_abs_energy: float = 1e6  # stop when any energy exceeds this: the landscape is exploding
    # Landscape terms of an EBT objective (0 = off), so the answer is the energy's minimum and the energy ranks
    # quality. stationarity: the loss of the step the descent would take AT the target (it should not move).
    # rank: hinge on E(target) + rank_margin * |x - target|^2 / (2 descent.step_size) <= E(x) for the descent's final
    # candidate x and a perturbed target x, so stopping and best-of-N have an energy that orders answers by error.
    stationarity_weight: float = 0.0
    rank_weight: float = 0.0
    rank_margin: float = 1.0
    # What trains an EBT (ebt_vision.core.objective): "unrolled": the loss of the candidates a descent from the start
    # reaches (backpropagated through the steps; the original work's objective); "equilibrium": the energy's gradient
    # itself, at random points between the start and the target, so that one step from there moves towards the
    # target by min(gamma, equilibrium_max_move) of (start - target), gamma the point's distance from the target as a
    # fraction of the start's: the gradient vanishes at the target (Equilibrium Matching's truncated decay, written
    # in the descent's own step size); "both": their sum, the equilibrium term weighted by equilibrium_weight.
    objective: str = "unrolled"
    equilibrium_max_move: float = 1.0
    equilibrium_weight: float = 1.0
    # 0: the equilibrium objective's points lie between the start and the target; K > 0: half of them are instead the
    # states a first-order descent from the start reaches after 1..K steps (the field trained where descents go).
    equilibrium_visited: int = 0
    # Exponential moving average of the weights (0 = off): what evaluation and the saved model use when on; the decay
    # ramps up as min(ema_decay, (1 + step) / (10 + step)) so short runs average their later steps only.
    ema_decay: float = 0.0
    # Early stopping (0 = off; tasks with a validation split: video): score the model on validation at every
    # checkpoint, stop after this many checkpoints without a new best, and keep the best weights.
    early_stopping: int = 0
    # A wall-clock budget (0 = off): training stops after the first step at which its summed step time reaches this
    # many seconds, checkpoints there and saves the model like a finished run (which records the step it reached).
    # For a fixed time slot (a lent GPU); comparisons at equal budget then train the next model for that step count.
    max_seconds: float = 0.0
    # Fine-tuning: a fresh run starts from these weights (a model folder or .safetensors of the same architecture; an
    # image EBT also from a plain denoiser's, see DenoisingObjective.initial_weights) instead of a random
    # initialisation; a resumed run ignores it (its checkpoint holds the weights).
    init_from: str = ""


OBJECTIVES = ("unrolled", "equilibrium", "both")

# Settings a resumed run may change: they decide how long and how loudly it runs, not what it learns.
RESUMABLE_CHANGES = ("name", "train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.device", "train.early_stopping", "train.max_seconds")  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    """What every workload shares; workloads subclass it with their model and data sections."""

    name: str = "ebt"
    task: str = "image"
    descent: DescentConfig = field(default_factory=DescentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def expand(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Hook for shorthands (e.g. a model preset) applied to raw values before they are typed."""
        return values

    def validate(self) -> None:
        """Range checks that types alone cannot express; subclasses extend it."""
        problem = size_problem(to_dict(self))  # first: a workload's own checks may already build something
        check(problem is None, problem or "")
        check_run_name(self.name)
        d, o, t = self.descent, self.optim, self.train
        check(d.num_steps >= 1, f"descent.num_steps must be >= 1, got {d.num_steps}")
        check(1 <= d.min_steps <= d.num_steps, f"descent.min_steps must be in [1, num_steps], got {d.min_steps}")
        check(d.step_size > 0, f"descent.step_size must be > 0, got {d.step_size}")
        check(d.step_size_jitter >= 1.0, f"descent.step_size_jitter must be >= 1, got {d.step_size_jitter}")
        check(d.langevin_noise >= 0, "descent.langevin_noise must be >= 0")
        check(d.replay_buffer_size >= 0, f"descent.replay_buffer_size must be >= 0, got {d.replay_buffer_size}")
        check(0 <= d.graph_steps <= d.num_steps, f"descent.graph_steps must be in [0, num_steps], got {d.graph_steps}")
        check(t.stationarity_weight >= 0 and t.rank_weight >= 0 and t.rank_margin >= 0,
              "train.stationarity_weight, rank_weight and rank_margin must be >= 0")  # fmt: skip
        check(0.0 <= d.replay_fraction <= 1.0, "descent.replay_fraction must be in [0, 1]")
        check(o.lr > 0 and o.grad_clip > 0, "optim.lr and optim.grad_clip must be > 0")
        check(t.steps >= 1 and t.checkpoint_every >= 1 and t.log_every >= 1, "train step counts must be >= 1")
        check(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
        check(t.grad_accumulation >= 1, f"train.grad_accumulation must be >= 1, got {t.grad_accumulation}")
        check(
            not (t.compile and d.checkpoint_steps),
            "train.compile and descent.checkpoint_steps do not combine; the compiler rematerialises activations itself",
        )
        check(t.objective in OBJECTIVES, f"train.objective must be one of {OBJECTIVES}, got {t.objective!r}")
        check(0 < t.equilibrium_max_move <= 1, "train.equilibrium_max_move must be in (0, 1]")
        check(t.equilibrium_weight >= 0, "train.equilibrium_weight must be >= 0")
        check(0 <= t.equilibrium_visited <= 64, "train.equilibrium_visited must be in [0, 64]")
        check(0 <= t.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
        check(t.max_seconds >= 0, f"train.max_seconds must be >= 0 (0 = no time limit), got {t.max_seconds}")
        check(t.early_stopping >= 0, f"train.early_stopping must be >= 0 checkpoints, got {t.early_stopping}")
        check(t.loss in ("smooth_l1", "mse", "log_mse"), f"train.loss must be smooth_l1|mse|log_mse, got {t.loss!r}")
        check(t.loss_on_steps in ("all", "last"), f"train.loss_on_steps must be all|last, got {t.loss_on_steps!r}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_run_name(name: str) -> None:
    """``name`` becomes the run folder ``runs/<name>``: a plain folder name, so no config writes outside ``runs/``."""
    plain = name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
    check(plain, f"name {name!r} must be a plain folder name (no /, \\ or ..): it names the run folder runs/<name>")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return annotation(**_typed_fields(annotation, value, where))
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


def _typed_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against ``cls``'s fields and converted to their types (unknown keys are errors)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where or 'config'}: unknown key {key!r}; {hint}valid keys: {sorted(names)}")
    return {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in values.items()}


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    return TASKS[task]


def _resolve(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def config_class(task: str) -> type[ExperimentConfig]:
    """The config schema of a workload (``TASKS``)."""
    return _resolve(_task(task).config)


def data_check_of(task: str) -> Callable[..., Any] | None:
    """The data check of a workload (``TASKS``; ``core.data_check``), None when it names none."""
    target = _task(task).data_check
    return _resolve(target) if target else None


def training_recipe(task: str, model: str) -> Callable[..., Any]:
    """The training recipe of a workload (``TASKS``) for one of its model families."""
    found = _task(task)
    if model not in found.models:
        raise ConfigError(f"{model} is not a {task} model; choose from {', '.join(found.models)}")
    return _resolve(found.recipe)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *defaults`` is meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):  # the base class reports it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML text as Python values (safe: no arbitrary objects), refusing duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def parse_override(text: str) -> dict[str, Any]:
    """``"descent.num_steps=3"`` -> ``{"descent": {"num_steps": 3}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value: Any = load_yaml(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error.problem})") from None
    for part in reversed(dotted.strip().split(".")):
        value = {part: value}
    return value


def from_dict(values: dict[str, Any] | None) -> ExperimentConfig:
    """Build a validated config of the task named by ``values["task"]`` (default ``image``)."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(values).__name__}")
    values = dict(values or {})
    task = values.get("task", "image")
    if not isinstance(task, str):
        raise ConfigError(f"task: expected a string, got {task!r}")
    cls = config_class(task)
    return cls(**_typed_fields(cls, cls.expand(values), ""))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; syntax errors become one line naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        kind = "YAML error" if isinstance(error, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(f"{where}: {kind}: {problem}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded or {}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML file (optional) and apply ``section.key=value`` overrides on top."""
    values = read_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(values, overrides))


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Config values (as from YAML or ``to_dict``) with ``section.key=value`` overrides merged in."""
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    return values


def with_overrides(cfg: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """``cfg`` with ``section.key=value`` overrides applied (validated again)."""
    return from_dict(apply_overrides(to_dict(cfg), overrides))


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


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(stored: ExperimentConfig, requested: ExperimentConfig, ignore=RESUMABLE_CHANGES) -> list[str]:
    """``"key: stored -> requested"`` for every setting that differs, except the ``ignore``d ones."""
    old, new = flatten(to_dict(stored)), flatten(to_dict(requested))
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k) and k not in ignore]
