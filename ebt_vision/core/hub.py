"""Sharing models the way the Hugging Face ecosystem does: ``save_pretrained(folder)`` writes ``config.json`` (the
full experiment config) beside ``model.safetensors``; ``from_pretrained(folder or repo id)`` rebuilds the model and
loads its weights; ``push_to_hub(repo id)`` uploads the folder. All from ``huggingface_hub``'s mixin."""

from __future__ import annotations

from typing import Any

from huggingface_hub import PyTorchModelHubMixin

from .config import ExperimentConfig, from_dict, to_dict


class HubModel(
    PyTorchModelHubMixin,
    library_name="ebt-vision",
    tags=["energy-based-transformer", "ebt-vision"],
    coders={ExperimentConfig: (to_dict, from_dict)},
):
    """Mixed into every trainable objective (``class X(nn.Module, HubModel)``); its ``__init__`` takes ``cfg``."""


def as_config(cfg: ExperimentConfig | dict[str, Any]) -> ExperimentConfig:
    """A config, or its plain-dict form as stored in a ``config.json``, as a validated config."""
    return cfg if isinstance(cfg, ExperimentConfig) else from_dict(cfg)
