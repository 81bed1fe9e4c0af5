"""Generating text from a prompt with the text EBT (next-token logits found by descent) or the Transformer++.

Each new token re-reads the last ``context_length`` tokens. The EBT descends the logits of every position and keeps
the last one; its energy there is reported per generated token (the uncertainty the app colours by). Greedy at
temperature 0, sampled otherwise; a seed makes both reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.defaults import MAX_NEW_TOKENS, MAX_PROMPT_CHARS
from ..core.errors import InputError
from ..core.inference import Thinking
from .baseline import TransformerPlusPlusObjective
from .objective import TextEBTObjective
from .system2 import think
from .tokenizer import TextTokenizer, token_texts


@dataclass
class Generation:
    """A continuation: its text, its token ids and each token's text; for the EBT each token's energy."""

    prompt: str
    text: str
    tokens: list[int]
    pieces: list[str]
    energies: list[float] | None = None  # EBT only: the final energy of the position that chose each token


def check_prompt(prompt: str | bytes, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """A prompt as text; clear errors for bytes that are not UTF-8, an empty prompt, or one over ``max_chars``. A
    command-line argument whose bytes are not UTF-8 arrives as text holding lone surrogates (Python's
    ``surrogateescape``); it is judged by its bytes."""
    if isinstance(prompt, str) and not prompt.isascii():
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            prompt = prompt.encode("utf-8", "surrogateescape")
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


@dataclass(frozen=True)
class Sampling:
    """How a continuation is drawn: ``max_new_tokens`` tokens, greedy at ``temperature`` 0 and sampled otherwise,
    reproducible by ``seed`` (the EBT's best-of-N starts and Langevin noise too)."""

    max_new_tokens: int = 50
    temperature: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}")


NextToken = Callable[[Tensor, int], tuple[Tensor, float | None]]  # (context (1, L), index) -> (V,) logits, energy


def _continue(objective: nn.Module, tokenizer: TextTokenizer, prompt: str | bytes, sampling: Sampling,
              next_token: NextToken) -> Generation:  # fmt: skip
    """The loop both models share: each new token re-reads the last ``context_length`` tokens."""
    sampling.check()
    cfg = objective.cfg.model
    text, ids = _prompt_ids(tokenizer, prompt, cfg.vocab_size)
    generator = torch.Generator().manual_seed(sampling.seed)
    device = next(objective.parameters()).device
    new, energies = [], []
    objective.eval()
    for i in range(sampling.max_new_tokens):
        context = torch.tensor([(ids + new)[-cfg.context_length :]], device=device)  # (1, L)
        logits, energy = next_token(context, i)
        new.append(_choose(logits, sampling.temperature, generator))
        energies.append(energy)
    known = None if None in energies else energies
    return Generation(text, tokenizer.decode(new), new, token_texts(tokenizer, new), known)


def generate_ebt(
    objective: TextEBTObjective,
    tokenizer: TextTokenizer,
    prompt: str | bytes,
    sampling: Sampling = Sampling(),
    thinking: Thinking = Thinking(),
) -> Generation:
    """Continue ``prompt`` with the text EBT; ``thinking`` sets steps, best-of-N, stopping and Langevin noise."""

    def next_token(context: Tensor, index: int) -> tuple[Tensor, float]:
        prediction = think(objective, context, thinking, sampling.seed + index)
        return prediction.logits[0, -1], float(prediction.energies[0, -1])

    return _continue(objective, tokenizer, prompt, sampling, next_token)


def generate_transformer(
    objective: TransformerPlusPlusObjective,
    tokenizer: TextTokenizer,
    prompt: str | bytes,
    sampling: Sampling = Sampling(),
) -> Generation:
    """Continue ``prompt`` with the Transformer++ baseline (one forward pass per token)."""

    @torch.no_grad()
    def next_token(context: Tensor, index: int) -> tuple[Tensor, None]:
        return objective.model(context)[0, -1], None

    return _continue(objective, tokenizer, prompt, sampling, next_token)
