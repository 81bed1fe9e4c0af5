"""Sharing models the way the Hugging Face ecosystem does: ``save_pretrained(folder)`` writes ``config.json`` (the
full experiment config) beside ``model.safetensors``; ``from_pretrained(folder or repo id)`` rebuilds the model and
loads its weights; ``push_to_hub(repo id)`` uploads the folder. Saving and uploading come from ``huggingface_hub``'s
mixin; loading is our own, because the mixin's loads non-strictly by default (a missing tensor stays at its random
initialisation without a word) and builds the model before anything checks its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, hf_hub_download

from .checkpoint import WEIGHTS, load_weights, read_pretrained
from .config import ExperimentConfig, from_dict, to_dict


class HubModel(
    PyTorchModelHubMixin,
    library_name="ebt-vision",
    tags=["energy-based-transformer", "ebt-vision"],
    coders={ExperimentConfig: (to_dict, from_dict)},
):
    """Mixed into every trainable objective (``class X(nn.Module, HubModel)``); its ``__init__`` takes ``cfg``."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        map_location: str = "cpu",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ):
        """The model saved in a local folder or a Hub repository (``config.json`` + ``model.safetensors``), in eval
        mode on ``map_location``. The config is validated (sizes included) before the model is built; the weights load
        strictly: a missing, unexpected, misshapen or non-finite tensor is a CheckpointError naming it."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.exists():  # a repository id
            options = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
                           local_files_only=local_files_only)  # fmt: skip
            hf_hub_download(str(pretrained_model_name_or_path), "config.json", **options)
            folder = Path(hf_hub_download(str(pretrained_model_name_or_path), WEIGHTS, **options)).parent
        tensors, cfg, _ = read_pretrained(folder)
        model = cls(cfg)
        load_weights(model, tensors, folder / WEIGHTS, f"a {cls.__name__}")
        return model.to(map_location).eval()


def as_config(cfg: ExperimentConfig | dict[str, Any]) -> ExperimentConfig:
    """A config, or its plain-dict form as stored in a ``config.json``, as a validated config."""
    return cfg if isinstance(cfg, ExperimentConfig) else from_dict(cfg)
