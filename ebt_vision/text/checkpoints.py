"""Loading trained text models with their tokenizer: a run folder (or shipped model folder) holds ``config.json``,
``model.safetensors`` and, for the trained BPE, ``tokenizer.json`` beside them."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.checkpoint import load_trained
from ..core.paths import resolve_path
from .baseline import TransformerPlusPlusObjective
from .objective import TextEBTObjective
from .tokenizer import TextTokenizer, load_tokenizer


def _folder(path: str | Path) -> Path:
    """The folder that holds a checkpoint (and its tokenizer): the path itself, or a weights file's parent."""
    path = resolve_path(path, "checkpoint")
    return path if path.is_dir() else path.parent


def load_text_ebt(path: str | Path, device: str | torch.device = "cpu") -> tuple[TextEBTObjective, TextTokenizer]:
    """A trained text EBT (with its learned step size) in eval mode, and its tokenizer."""
    objective = load_trained(path, TextEBTObjective, "a text EBT", device)[0]
    return objective, load_tokenizer(_folder(path), objective.cfg.data)


def load_transformer(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[TransformerPlusPlusObjective, TextTokenizer]:
    """A trained Transformer++ baseline in eval mode, and its tokenizer."""
    objective = load_trained(path, TransformerPlusPlusObjective, "a Transformer++ text model", device)[0]
    return objective, load_tokenizer(_folder(path), objective.cfg.data)
