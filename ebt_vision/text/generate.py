"""Generating text from a prompt with the text EBT (next-token logits found by descent) or the Transformer++.

Each new token re-reads the last ``context_length`` tokens. The EBT descends the logits of every position and keeps
the last one; its energy there is reported per generated token (the uncertainty the app colours by). Greedy at
temperature 0, sampled otherwise; a seed makes both reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.errors import InputError
from .baseline import TransformerPlusPlusObjective
from .objective import TextEBTObjective
from .system2 import Thinking, think
from .tokenizer import TextTokenizer, token_texts

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512


@dataclass
class Generation:
    """A continuation: its text, its token ids and each token's text; for the EBT each token's energy."""

    prompt: str
    text: str
    tokens: list[int]
    pieces: list[str]
    energies: list[float] | None = None  # EBT only: the final energy of the position that chose each token


def check_prompt(prompt: str | bytes, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """A prompt as text; clear errors for bytes that are not UTF-8, an empty prompt, or one over ``max_chars``."""
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"the prompt is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be text, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("the prompt is empty; give at least one word to continue")
    if len(prompt) > max_chars:
        raise InputError(f"the prompt has {len(prompt)} characters; the limit is {max_chars}")
    return prompt


def _check_options(max_new_tokens: int, temperature: float) -> None:
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}")
    if not temperature >= 0:
        raise InputError(f"temperature must be >= 0, got {temperature}")


def _choose(logits: Tensor, temperature: float, generator: torch.Generator) -> int:
    """(V,) logits -> a token id: argmax at temperature 0, else a sample of softmax(logits / temperature)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = (logits.float().cpu() / temperature).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _prompt_ids(tokenizer: TextTokenizer, prompt: str | bytes, vocab_size: int) -> tuple[str, list[int]]:
    """The checked prompt and its token ids."""
    text = check_prompt(prompt)
    ids = tokenizer.encode(text)
    if max(ids) >= vocab_size:
        raise InputError(f"the tokenizer produced id {max(ids)} but the model knows {vocab_size} tokens")
    return text, ids


def generate_ebt(
    objective: TextEBTObjective,
    tokenizer: TextTokenizer,
    prompt: str | bytes,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    seed: int = 0,
    thinking: Thinking | None = None,
) -> Generation:
    """Continue ``prompt`` with the text EBT; ``thinking`` sets steps, best-of-N, stopping and Langevin noise."""
    _check_options(max_new_tokens, temperature)
    cfg = objective.cfg.model
    text, ids = _prompt_ids(tokenizer, prompt, cfg.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    device = next(objective.parameters()).device
    new, energies = [], []
    objective.eval()
    for i in range(max_new_tokens):
        context = torch.tensor([(ids + new)[-cfg.context_length :]], device=device)  # (1, L)
        prediction = think(objective, context, thinking or Thinking(), seed + i)
        new.append(_choose(prediction.logits[0, -1], temperature, generator))
        energies.append(float(prediction.energies[0, -1]))
    return Generation(text, tokenizer.decode(new), new, token_texts(tokenizer, new), energies)


def generate_transformer(
    objective: TransformerPlusPlusObjective,
    tokenizer: TextTokenizer,
    prompt: str | bytes,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    seed: int = 0,
) -> Generation:
    """Continue ``prompt`` with the Transformer++ baseline (one forward pass per token)."""
    _check_options(max_new_tokens, temperature)
    cfg = objective.cfg.model
    text, ids = _prompt_ids(tokenizer, prompt, cfg.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    device = next(objective.parameters()).device
    new = []
    objective.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            context = torch.tensor([(ids + new)[-cfg.context_length :]], device=device)  # (1, L)
            new.append(_choose(objective.model(context)[0, -1], temperature, generator))
    return Generation(text, tokenizer.decode(new), new, token_texts(tokenizer, new))
