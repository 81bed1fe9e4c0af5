"""What the app's tabs share: user errors shown as one clean message, and finding a tab's trained checkpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ebt_vision.core.errors import UserError
from ebt_vision.core.paths import resolve_path


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


def unavailable_message(tab: str, reason: str) -> str:
    """Markdown shown in place of a tab whose model cannot be loaded."""
    return f"### The {tab} tab is not available\n\n{reason}"
