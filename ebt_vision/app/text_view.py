"""Watching the text EBT write: a continuation with every token coloured by its energy, beside the Transformer++'s.

Everything the text tab displays is computed here and tested without a browser: both continuations of one
prompt with their costs in passes and seconds, and HTML in which each generated token's background shows the energy
the EBT gave it (its uncertainty: a token it was sure of is pale, one it hesitated over is dark), with a legend.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import defaults
from ..core.errors import InputError
from ..core.inference import Thinking
from ..core.maps import colorize, distinct_labels, range_labels, relative_spread, robust_range, spread_note
from ..text.baseline import TransformerPlusPlusObjective
from ..text.generate import Generation, Sampling, generate_ebt, generate_transformer
from ..text.objective import TextEBTObjective
from ..text.tokenizer import TextTokenizer

ENERGY_CMAP = "YlOrRd"  # sequential, pale to dark: black text stays readable on most of it
PROMPT_SHOWN = 300  # characters of the prompt shown before the continuation


@dataclass
class TextStory:
    """One prompt continued by both models, with what each cost."""

    prompt: str
    prompt_tokens: int
    context_length: int
    ebt: Generation
    ebt_seconds: float
    num_steps: int
    best_of: int
    transformer: Generation | None = None
    transformer_seconds: float = 0.0
    temperature: float = 0.0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ebt_passes(self) -> tuple[int, int, int]:
        """(context encodings, energy evaluations, gradients) for the whole continuation, as ``system2.think`` runs
        them per token: the real tokens encoded once, then N starts x (S steps + the final energy) forward and
        N x S backward passes of the candidate stream."""
        tokens = len(self.ebt.tokens)
        return tokens, tokens * self.best_of * (self.num_steps + 1), tokens * self.best_of * self.num_steps


def _check_settings(num_steps: int, best_of: int) -> None:
    if not 1 <= num_steps <= defaults.APP_MAX_STEPS:
        raise InputError(f"descent steps must be in [1, {defaults.APP_MAX_STEPS}], got {num_steps}")
    if not 1 <= best_of <= defaults.APP_MAX_BEST_OF:
        raise InputError(f"best-of-N must be in [1, {defaults.APP_MAX_BEST_OF}], got {best_of}")


def continue_prompt(
    ebt: TextEBTObjective,
    tokenizer: TextTokenizer,
    prompt: str | bytes,
    sampling: Sampling,
    thinking: Thinking,
    transformer: TransformerPlusPlusObjective | None = None,
    transformer_tokenizer: TextTokenizer | None = None,
) -> TextStory:
    """Continue ``prompt`` with the EBT (``thinking``: descent steps per token, best-of-N by lowest energy) and, when
    given, the Transformer++ baseline with its own tokenizer (default: the EBT's), same sampling."""
    num_steps, best_of = thinking.steps(ebt.cfg.descent.num_steps), thinking.n_candidates
    _check_settings(num_steps, best_of)
    started = time.perf_counter()
    generation = generate_ebt(ebt, tokenizer, prompt, sampling, thinking)
    story = TextStory(
        prompt=generation.prompt,
        prompt_tokens=len(tokenizer.encode(generation.prompt)),
        context_length=ebt.cfg.model.context_length,
        ebt=generation,
        ebt_seconds=time.perf_counter() - started,
        num_steps=num_steps,
        best_of=best_of,
        temperature=sampling.temperature,
        seed=sampling.seed,
    )
    if transformer is not None:
        started = time.perf_counter()
        story.transformer = generate_transformer(transformer, transformer_tokenizer or tokenizer, prompt, sampling)
        story.transformer_seconds = time.perf_counter() - started
    if story.prompt_tokens > story.context_length:
        story.notes.append(
            f"the prompt is {story.prompt_tokens} tokens; the models read only its last {story.context_length}"
        )
    return story


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def _text_colour(rgb: np.ndarray) -> str:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    return "#000" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "#fff"


def _prompt_html(prompt: str) -> str:
    shown = prompt if len(prompt) <= PROMPT_SHOWN else "…" + prompt[-PROMPT_SHOWN:]
    return f'<span style="color:#666">{html.escape(shown)}</span>'


def _box(inner: str, elem_id: str) -> str:
    # explicit colours: the box must read the same in Gradio's light and dark themes
    style = (
        "background:#fff;color:#000;padding:10px;border:1px solid #ddd;border-radius:6px;line-height:1.8;"
        "font-size:15px;white-space:pre-wrap;overflow-wrap:anywhere"  # keep newlines; break even unspaced runs
    )
    return f'<div id="{elem_id}" style="{style}">{inner}</div>'


def energy_legend(low: float, high: float, cmap: str = ENERGY_CMAP) -> str:
    """A colour bar in HTML: the token colours from ``low`` to ``high`` energy, with both ends labelled."""
    stops = colorize(torch.linspace(low, high, 9), cmap, low, high)
    gradient = ", ".join(_hex(rgb) for rgb in stops)
    bar = "display:inline-block;width:160px;height:12px;vertical-align:middle"
    high_label, low_label = range_labels(low, high, 2)
    spread = relative_spread(low, high)
    note = spread_note(torch.tensor([low, high]), "token energies")
    warning = f'<div style="color:#a33" id="energy-spread-note">{html.escape(note)}</div>' if note else ""
    return (
        '<div style="font-size:12px;margin-top:6px">'
        f"energy per token (uncertainty): low {low_label} "
        f'<span style="{bar};background:linear-gradient(to right, {gradient})"></span> high {high_label} '
        f"(a spread of {spread:.1%} of the energy's size) · "
        f"pale = the EBT was sure, dark = it hesitated; hover a token for its energy{warning}</div>"
    )


def energy_html(prompt: str, pieces: list[str], energies: list[float], cmap: str = ENERGY_CMAP) -> str:
    """The prompt (grey) and each generated token on a background coloured by its energy, with a legend. The
    colour range is robust (2nd-98th percentile), so one outlying token does not wash out the others."""
    if len(pieces) != len(energies):
        raise ValueError(f"{len(pieces)} tokens but {len(energies)} energies")
    values = torch.tensor(energies, dtype=torch.float32)
    low, high = robust_range(values) if len(energies) else (0.0, 1.0)
    colours = colorize(values, cmap, low, high) if len(energies) else []
    spans = [
        f'<span title="energy {label}" style="background:{_hex(rgb)};color:{_text_colour(rgb)};'
        f'border-radius:3px">{html.escape(piece)}</span>'
        for piece, label, rgb in zip(pieces, distinct_labels(list(energies)), colours, strict=True)
    ]
    return _box(_prompt_html(prompt) + "".join(spans), "ebt-tokens") + energy_legend(low, high, cmap)


def plain_html(prompt: str, continuation: str) -> str:
    """The prompt (grey) and a continuation in plain text, in the same box as the EBT's."""
    return _box(_prompt_html(prompt) + html.escape(continuation), "transformer-tokens")


def text_summary(story: TextStory) -> str:
    """Markdown lines for the UI: what was generated, what each model spent."""
    sampling = "greedy" if story.temperature == 0 else f"temperature {story.temperature:g}, seed {story.seed}"
    lines = [f"**Prompt**: {story.prompt_tokens} tokens; {sampling}"]
    encodings, forward, backward = story.ebt_passes
    count = len(story.ebt.tokens)
    ebt = f"**EBT**: {count} tokens, {story.num_steps} descent steps per token"
    if story.best_of > 1:
        ebt += f", best of {story.best_of} starts by lowest energy"
    mean = sum(story.ebt.energies) / count
    ebt += (f"; {encodings} context encodings + {forward} forward + {backward} backward passes, "
            f"{story.ebt_seconds:.2f} s; mean energy {mean:.3g}")  # fmt: skip
    lines.append(ebt)
    if story.transformer is not None:
        tokens = len(story.transformer.tokens)
        lines.append(f"**Transformer++**: {tokens} tokens, {tokens} forward passes, {story.transformer_seconds:.2f} s")
    lines += [f"*{note}*" for note in story.notes]
    return "\n\n".join(lines)
