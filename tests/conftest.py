from __future__ import annotations

import pytest
import torch

from ebt_vision.config import ExperimentConfig, from_dict

TINY = {
    "name": "tiny",
    "model": {"patch_size": 4, "width": 16, "depth": 1, "heads": 2},
    "descent": {"num_steps": 2, "step_size": 5.0},
    "data": {"crop_size": 16, "batch_size": 4},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "train": {"steps": 6, "log_every": 1, "checkpoint_every": 2, "seed": 0},
}


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return from_dict(TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
