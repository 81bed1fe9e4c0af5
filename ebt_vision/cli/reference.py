"""The command-line reference of the documentation, generated from the parser itself (``build_parser``), so the
documented options, defaults and help cannot drift from ``--help``. Used by the documentation build
(``scripts/mkdocs_hooks.py``) and checked by ``tests/test_cli.py``."""

from __future__ import annotations

import argparse
import html

from .parser import COMMANDS, DESCRIPTION, build_parser, default_text


def _cell(text: str) -> str:
    """Help text as one Markdown table cell."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _usage(action: argparse.Action) -> str:
    """``-o, --output OUTPUT`` / ``--sigmas SIGMAS [SIGMAS ...]`` / ``--models EBT TRANSFORMER`` / ``inputs``, as in
    ``--help``."""
    if not action.option_strings:
        return action.metavar or action.dest
    metavar = action.metavar or action.dest.upper()
    if action.nargs == 0:
        argument = ""
    elif action.choices is not None and action.metavar is None:
        argument = " {" + ",".join(map(str, action.choices)) + "}"
    elif isinstance(metavar, tuple):  # nargs=N with one name per value
        argument = " " + " ".join(metavar)
    elif action.nargs in ("+", "*"):
        argument = f" {metavar} [{metavar} ...]"
    else:
        argument = f" {metavar}"
    return ", ".join(action.option_strings) + argument


def cli_reference() -> str:
    """Markdown: the program's description, then per command its summary, description and a table of its options
    (each once, with its help and default, as ``ebt-vision COMMAND --help`` prints them)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    lines = [
        "# Command line",
        "",
        "_Generated from the parser (`ebt_vision/cli/parser.py`) when the documentation is built: it is what "
        "`ebt-vision COMMAND --help` prints._",
        "",
        "```text",
        DESCRIPTION,
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#ebt-vision-{name}) | {_cell(summary)} |" for name, _, summary, *_ in COMMANDS]
    for name, _, summary, description, _ in COMMANDS:
        sub = commands[name]
        lines += ["", f"## `ebt-vision {name}`", "", f"{summary}.", "", "```text", description, "```", ""]
        lines += ["| argument | help | default |", "|---|---|---|"]
        for action in sub._actions:
            if action.dest == "help":
                continue
            default = default_text(action)
            shown = "required" if action.required else (f"`{default}`" if default is not None else "")
            lines.append(f"| `{_usage(action)}` | {_cell(action.help or '')} | {shown} |")
    return "\n".join(lines) + "\n"
