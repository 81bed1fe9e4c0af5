"""The configuration reference of the documentation, generated from the config dataclasses themselves (their fields,
types, defaults and the comments written beside them), so it cannot drift from what ``load_config`` accepts. Used
by the documentation build (``scripts/mkdocs_hooks.py``)."""

from __future__ import annotations

import dataclasses
import html
import inspect
import re

from .config import TASKS, config_class

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s?(.*))?$")


def field_comments(cls: type) -> dict[str, str]:
    """Each field of ``cls`` (and of the dataclasses it extends) -> the comment written above it or after it."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source[1:]:
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("#").strip())
                continue
            found = _FIELD.match(line)
            if found and found.group(1) in {f.name for f in dataclasses.fields(klass)}:
                text = " ".join([*pending, found.group(2) or ""]).strip()
                if text:
                    comments[found.group(1)] = text
            pending = []
    return comments


def _default(value: object) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "`" + repr(value).replace("|", "\\|") + "`" if value != "" else '`""`'


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def config_reference() -> str:
    """Markdown: per task, every section and key with its type, default and meaning."""
    lines = [
        "_Generated from the config dataclasses (`ebt_vision/core/config.py` and each workload's `config.py`) when "
        "the documentation is built: every key `load_config` accepts, with its default._",
    ]
    for task in TASKS:
        cls = config_class(task)
        cfg = cls()
        lines += ["", f"## `task: {task}` (`{cls.__module__}.{cls.__name__}`)", ""]
        top = [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(getattr(cfg, f.name))]
        notes = field_comments(cls)
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{f.name}` | `{f.type}` | {_default(getattr(cfg, f.name))} | {_cell(notes.get(f.name, ''))} |"
                  for f in top]  # fmt: skip
        for section in (f for f in dataclasses.fields(cls) if dataclasses.is_dataclass(getattr(cfg, f.name))):
            value = getattr(cfg, section.name)
            notes = field_comments(type(value))
            doc = inspect.getdoc(type(value)) or ""
            lines += ["", f"### `{section.name}` (`{type(value).__name__}`)", ""]
            if doc and not doc.startswith(f"{type(value).__name__}("):  # a written docstring, not dataclass's own
                lines += [" ".join(doc.split()), ""]
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
            for f in dataclasses.fields(value):
                lines.append(f"| `{section.name}.{f.name}` | `{f.type}` | {_default(getattr(value, f.name))} | "
                             f"{_cell(notes.get(f.name, ''))} |")  # fmt: skip
    return "\n".join(lines) + "\n"
