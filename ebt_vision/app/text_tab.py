"""The text tab: watch the text EBT write. A thin layer over ``text_view``.

Give a prompt, choose the length, temperature, descent steps and best-of-N, and read the EBT's continuation with every
token coloured by its energy (its uncertainty), beside the Transformer++ baseline's continuation of the same prompt,
with the passes and seconds each spent.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

from ..core import defaults
from .common import (
    MODELS,
    Workers,
    find_checkpoint,
    initial,
    initial_result,
    open_tab,
    train_command,
    without_traceback,
)

DEFAULT_TOKENS = 40
# in distribution (State of the Union addresses) first, then out of it (Shakespeare, the World English Bible)
EXAMPLE_PROMPTS = [
    "The state of our Union is",
    "Fellow citizens of the Senate and House of Representatives:",
    "To be, or not to be, that is the question:",
    "In the beginning, God created the heavens and the earth.",
]


class TextTab:
    """The text tab's handler, independent of Gradio so tests can call it directly.

    The EBT checkpoint is required (a ``UserError`` naming the path and the training command otherwise); without the
    Transformer++ checkpoint the tab shows the EBT alone and says why.
    """

    def __init__(
        self,
        checkpoint: str | Path = defaults.TEXT_EBT,
        transformer_checkpoint: str | Path | None = defaults.TEXT_TRANSFORMER,
    ) -> None:
        from ..core.errors import UserError
        from ..text.checkpoints import load_text_ebt, load_transformer

        config = defaults.TEXT_CONFIG
        path = find_checkpoint(checkpoint, "text EBT", train_command(config, "ebt", checkpoint), "--text-checkpoint")
        self.objective, self.tokenizer = load_text_ebt(path)
        self.transformer = self.transformer_tokenizer = None
        self.missing = ""  # why there is no baseline, shown in its place
        if transformer_checkpoint:
            what, option = "Transformer++ text baseline", "--text-transformer-checkpoint"
            command = train_command(config, "transformer", transformer_checkpoint)
            try:
                found = find_checkpoint(transformer_checkpoint, what, command, option)
                self.transformer, self.transformer_tokenizer = load_transformer(found)
            except UserError as error:
                self.missing = str(error)

    @property
    def trained_steps(self) -> int:
        return self.objective.cfg.descent.num_steps

    def run(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        steps: int,
        best_of: int,
        seed: int = 0,
    ) -> tuple[str, str, str]:
        """-> (the EBT's continuation as HTML coloured by energy, the baseline's as HTML, summary markdown)."""
        from ..core.errors import InputError
        from ..core.inference import Thinking
        from ..text.generate import Sampling
        from .text_view import continue_prompt, energy_html, plain_html, text_summary

        if not 1 <= int(max_new_tokens) <= defaults.APP_MAX_NEW_TOKENS:
            raise InputError(f"new tokens must be in [1, {defaults.APP_MAX_NEW_TOKENS}], got {max_new_tokens}")
        sampling = Sampling(int(max_new_tokens), float(temperature), int(seed))
        thinking = Thinking(int(steps), n_candidates=int(best_of))
        story = continue_prompt(self.objective, self.tokenizer, prompt, sampling, thinking, self.transformer,
                                self.transformer_tokenizer)  # fmt: skip
        ebt = energy_html(story.prompt, story.ebt.pieces, story.ebt.energies)
        if story.transformer is not None:
            baseline = plain_html(story.prompt, story.transformer.text)
        else:
            baseline = f"<p>{html.escape(self.missing or 'No Transformer++ baseline given.')}</p>"
        return ebt, baseline, text_summary(story)


def open_text_tab(
    checkpoint: str | Path | None = defaults.TEXT_EBT,
    transformer_checkpoint: str | Path | None = defaults.TEXT_TRANSFORMER,
) -> TextTab | str:
    """The tab's handler, or (when the EBT cannot be loaded) the Markdown message the tab shows instead."""
    return open_tab("text", lambda: TextTab(checkpoint or "", transformer_checkpoint))


def build_text_tab(tab: TextTab | str, workers: Workers | None = None) -> None:
    """The text tab's components and events (or its message), inside the app's ``gr.Blocks``."""
    import gradio as gr

    with gr.Tab("Text"):
        if isinstance(tab, str):
            gr.Markdown(tab, elem_id="text-unavailable")
            return
        trained = tab.trained_steps
        gr.Markdown(
            "The text EBT chooses each next token by **descending its energy** over the next-token distribution. "
            "Each generated token is coloured by the energy it ended with: the model's own uncertainty. The "
            "Transformer++ baseline (same size, same tokens) continues the same prompt."
        )
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(EXAMPLE_PROMPTS[0], lines=3, elem_id="text-prompt",
                                    label=f"Prompt (up to {defaults.MAX_PROMPT_CHARS} characters)")  # fmt: skip
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], [prompt], label="In distribution, then out of it")
                tokens = gr.Slider(1, defaults.APP_MAX_NEW_TOKENS, value=DEFAULT_TOKENS, step=1, label="New tokens")
                temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature (0 = greedy)")
                most = defaults.APP_MAX_STEPS
                steps = gr.Slider(1, most, value=min(trained, most), step=1,
                                  label=f"EBT descent steps per token (trained with {trained})")  # fmt: skip
                best_of = gr.Slider(1, defaults.APP_MAX_BEST_OF, value=1, step=1,
                                    label="Best-of-N per token (lowest energy wins)")  # fmt: skip
                seed = gr.Number(0, precision=0, label="Seed (sampling, best-of-N starts)", elem_id="text-seed")
                run = gr.Button("Generate", variant="primary", elem_id="text-button")
            # the default prompt's continuations, computed once now: the tab opens showing a result
            first = initial_result(tab.run, EXAMPLE_PROMPTS[0], DEFAULT_TOKENS, 0.7, min(trained, most), 1, 0)
            with gr.Column(scale=2):
                summary = gr.Markdown(initial(first, 2), elem_id="text-summary")
                html_box = partial(gr.HTML, show_label=True, container=True, js_on_load=None)  # no click handler needed
                with gr.Row():
                    ebt = html_box(initial(first, 0), label="EBT: each token coloured by its energy")
                    baseline = html_box(initial(first, 1), label="Transformer++ baseline")
        run.click(
            without_traceback(tab.run, workers),
            [prompt, tokens, temperature, steps, best_of, seed],
            [ebt, baseline, summary],
            concurrency_id=MODELS,
        )
