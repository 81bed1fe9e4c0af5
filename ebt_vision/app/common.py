"""What the app's tabs share: user errors shown as one clean message, finding a tab's trained checkpoint (and saying
how to train one), a tab that shows why its model is missing, the gallery of descent steps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import InputError, UserError
from ..core.paths import resolve_path

Handler = TypeVar("Handler")


def without_traceback(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` for a Gradio event: a user error (bad input, missing data) becomes a message in the UI, with no
    stack trace there or in the console; anything else is a bug and keeps its traceback."""
    import gradio as gr

    @functools.wraps(handler)
    def run(*args: Any) -> Any:
        try:
            return handler(*args)
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return run


def find_checkpoint(path: str | Path | None, what: str, command: str, option: str) -> Path:
    """The checkpoint at ``path`` (as given, else in the project checkout), or a ``UserError`` whose message names
    the path, the command that trains it (``command``) and the app option (``option``) that points elsewhere."""
    if not path:
        raise UserError(f"no {what} given: start the app with `{option} PATH` to use this tab")
    try:
        found = resolve_path(path, what)
    except UserError:
        found = None
    if found is None or not found.exists():  # resolve_path returns an absolute path as given, even a missing one
        raise UserError(
            f"No {what} at `{path}` yet. Train one with `{command}`, or start the app with `{option} PATH` "
            "(a model folder or .safetensors file)."
        )
    return found


def check_upload(path: str | Path, max_bytes: int) -> Path:
    """An uploaded file that arrived and is at most ``max_bytes`` large, or an ``InputError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the upload {path.name} did not arrive; please try again")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {max_bytes // 2**20} MiB")
    return path


def train_command(config: str, kind: str, path: str | Path) -> str:
    """The command that trains the ``kind`` model of ``config`` into ``path``."""
    model = "" if kind == "ebt" else f" --model {kind}"
    return f"ebt-vision train --config {config}{model} --out {path}"


def unavailable_message(tab: str, reason: str) -> str:
    """Markdown shown in place of a tab whose model cannot be loaded."""
    return f"### The {tab} tab is not available\n\n{reason}"


def open_tab(tab: str, build: Callable[[], Handler]) -> Handler | str:
    """The tab's handler, or (when its model cannot be loaded: a ``UserError``) the Markdown message the tab shows
    instead."""
    try:
        return build()
    except UserError as error:
        return unavailable_message(tab, str(error))


def legend_above(ax, lines: list) -> None:
    """The legend of ``lines`` above the axes, where it cannot hide the curves' last points."""
    ax.legend(lines, [line.get_label() for line in lines], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
              fontsize=8, frameon=False)  # fmt: skip


def step_gallery(label: str, columns: int, elem_id: str, **options: Any):
    """A gallery of pictures (descent steps, energy maps), each shown whole."""
    import gradio as gr

    return gr.Gallery(label=label, columns=columns, height="auto", object_fit="contain", elem_id=elem_id, **options)
