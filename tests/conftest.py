from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ebt_vision.core.checkpoint import latest_checkpoint
from ebt_vision.core.config import from_dict
from ebt_vision.image.config import ImageConfig
from ebt_vision.image.data import DenoisingBatch
from ebt_vision.image.noise import NoiseLevel

TINY = {
    "name": "tiny",
    "model": {"patch_size": 4, "width": 16, "depth": 1, "heads": 2},
    "descent": {"num_steps": 2, "step_size": 5.0},
    "data": {"crop_size": 16, "batch_size": 4},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "train": {"steps": 6, "log_every": 1, "checkpoint_every": 2, "seed": 0},
}


@pytest.fixture
def tiny_cfg() -> ImageConfig:
    return from_dict(TINY)


def denoising_batch(noisy: torch.Tensor, clean: torch.Tensor, sigma: float = 25.0) -> DenoisingBatch:
    """A denoising batch of given noisy and clean images, labelled with Gaussian ``sigma``."""
    return DenoisingBatch(
        noisy, clean, NoiseLevel("gaussian", torch.full((clean.shape[0],), sigma, device=clean.device))
    )


def load_script(name: str):
    """``scripts/<name>`` (a file with dashes, not importable by name) loaded as a module, so a test calls its
    ``main`` in-process."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def noisy_batch(clean: torch.Tensor, sigma: float = 25.0) -> DenoisingBatch:
    """A denoising batch of ``clean`` with Gaussian noise of ``sigma`` (0-255)."""
    noise = NoiseLevel("gaussian", torch.full((clean.shape[0],), sigma, device=clean.device))
    return DenoisingBatch(noise.add_to(clean), clean, noise)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def kill_group_after_checkpoint(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    """Wait (at most 120 s, or until ``process`` ends) for a checkpoint at ``step`` or later in ``run_dir``, then
    SIGKILL the process's whole session (a launcher and its workers, or a training and its data workers) and reap it.
    ``process`` must have been started with ``start_new_session=True``."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        found = latest_checkpoint(run_dir)
        if found is not None and found.name >= f"step_{step:07d}":
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny tensors gain nothing from threads, and on a shared 2-core machine two threads per op waiting for each other
    made such tests ~25x slower (0.75 s vs 0.03 s per text training step), app calls up to 200x. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
