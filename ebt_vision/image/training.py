"""Training an image model: data, objective and the one training loop wired together. What ``ebt-vision train`` runs
for ``task: image`` (registered in ``core.config.TASKS``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core import distributed
from ..core.errors import UserError
from ..core.streams import WorkerStream, pin_memory_for
from ..core.train import TrainResult, seed_everything, train
from .config import ImageConfig
from .data import CropSampler, TensorSampler, training_photos
from .labelled import fashion_mnist
from .objective import DenoisingObjective
from .streams import photo_stream, resolve_format

MODELS = ("ebt", "dit", "transformer")


def build_model(kind: str, cfg: ImageConfig) -> nn.Module:
    """A fresh objective: "ebt" (the image EBT of ``cfg.model``), "dit" (the diffusers DiT matched to it in size) or
    "transformer" (the EBT's own trunk predicting the clean image in one pass: what the energy adds, apart)."""
    if kind == "ebt":
        return DenoisingObjective(cfg)
    if kind == "dit":
        from .dit import DiTObjective  # diffusers is imported only when a DiT is wanted

        return DiTObjective(cfg)
    if kind == "transformer":
        from .plain import PlainDenoisingObjective

        return PlainDenoisingObjective(cfg)
    raise UserError(f"image model must be one of {MODELS}, got {kind!r}")


def make_sampler(cfg: ImageConfig, shard: int = 0, shards: int = 1) -> CropSampler | TensorSampler | WorkerStream:
    """The training stream of ``data.source``: "fashion-mnist" (its unlabelled training images, for probing
    pre-training), or photos cut into random crops: held in memory ("packaged", or ``data.format: memory``) or
    streamed from disk by ``data.workers`` processes (a folder, a list file or tar shards; ``image.streams``). Every
    one yields ``DenoisingBatch``es and has ``state_dict``/``load_state_dict`` for an exact resume."""
    if cfg.data.source == "fashion-mnist":
        images = fashion_mnist("train", cfg.data.crop_size, cfg.model.channels).images
        return TensorSampler(images, cfg.data, cfg.train.seed, shard, shards)
    if resolve_format(cfg.data.source, cfg.data.format) == "memory":
        return CropSampler(training_photos(cfg.data), cfg.data, cfg.train.seed, shard, shards)
    return photo_stream(cfg.data, cfg.train.seed, shard, shards, pin_memory_for(cfg.train.device))


def train_model(
    cfg: ImageConfig, run_dir: str | Path, model: str = "ebt", resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train a denoiser (``model``: one of ``MODELS``) on ``cfg.data.source`` (packaged photos by default; never the
    held-out set). Under ``torchrun`` (after ``distributed.init_from_environment``) this is one process of a DDP run.
    """
    if model not in MODELS:
        raise UserError(f"image model must be one of {MODELS}, got {model!r}")
    seed_everything(cfg.train.seed)
    objective = build_model(model, cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    sampler = make_sampler(cfg, ctx.rank, ctx.world_size)
    return train(objective, iter(sampler), cfg, run_dir, resume=resume, sampler_state=sampler, progress=progress)
