"""Ready-made wiring of data, objective and loop: what ``ebt-vision train`` runs."""

from __future__ import annotations

from pathlib import Path

from ..core import distributed
from ..core.train import TrainResult, seed_everything, train
from ..image.config import ImageConfig
from ..image.data import CropSampler, TensorSampler, training_photos
from ..image.labelled import fashion_mnist
from ..image.objective import DenoisingObjective


def train_denoiser(
    cfg: ImageConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, model: str = "ebt"
) -> TrainResult:
    """Train a denoiser on ``cfg.data.source`` (packaged photos by default; never the held-out set).

    ``model``: "ebt" (the image EBT of ``cfg.model``) or "dit" (the diffusers DiT matched to it in size).
    Under ``torchrun`` (after ``distributed.init_from_environment``) this is one process of a DDP run.
    """
    if model not in ("ebt", "dit"):
        raise ValueError(f"model must be ebt or dit, got {model!r}")
    seed_everything(cfg.train.seed)
    if model == "dit":
        from ..image.dit import DiTObjective

        objective = DiTObjective(cfg)
    else:
        objective = DenoisingObjective(cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    sampler = make_sampler(cfg, ctx.rank, ctx.world_size)
    return train(objective, iter(sampler), cfg, run_dir, resume=resume, sampler_state=sampler, progress=progress)


def make_sampler(cfg: ImageConfig, shard: int = 0, shards: int = 1) -> CropSampler | TensorSampler:
    """The training stream of ``data.source``: "fashion-mnist" (its unlabelled training images, for probing
    pre-training), or photos ("packaged" or a folder) cut into random crops."""
    if cfg.data.source == "fashion-mnist":
        images = fashion_mnist("train", cfg.data.crop_size, cfg.model.channels).images
        return TensorSampler(images, cfg.data, cfg.train.seed, shard, shards)
    return CropSampler(training_photos(cfg.data), cfg.data, cfg.train.seed, shard, shards)
