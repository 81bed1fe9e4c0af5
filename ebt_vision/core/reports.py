"""Reports under ``reports/``: NAME.md for people, NAME.json for programs, NAME*.png plots (see docs/reports.md)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def describe_machine() -> str:
    cores = os.cpu_count() or 0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cores}-core {platform.machine()} CPU, {gpu}, torch {torch.__version__}"


def describe_device(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"


def _program() -> str:
    """How this process was started, as a user would type it: ``ebt-vision`` for the command and for
    ``python -m ebt_vision`` (the same program), else ``python <script>``."""
    first = sys.argv[0]
    if first.endswith("ebt-vision") or Path(first).parent.name == "ebt_vision":
        return "ebt-vision"
    return f"python {first}"


def make_meta(device: torch.device | str, seed: int, data: str, budget: str, command: str | None = None) -> dict:
    """The ``meta`` block every report carries."""
    return {
        "command": command or " ".join([_program(), *map(shlex.quote, sys.argv[1:])]),
        "machine": describe_machine(),
        "device": describe_device(device),
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "seed": seed,
        "data": data,
        "budget": budget,
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; a row whose cell count differs from the header's is a bug in the caller (the renderer
    would show its extra cells under no heading), so it raises."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells for {len(headers)} headers: {row!r}")

    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def meta_markdown(meta: dict) -> str:
    return "\n".join(f"- **{key}**: {'`' + value + '`' if key == 'command' else value}" for key, value in meta.items())


def _strict_json(value: Any) -> Any:
    """NaN and infinities become null: JSON has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def write_report(out_dir: str | Path, stem: str, meta: dict, rows: list[dict], body: str, **extra: Any) -> Path:
    """Write ``stem.json`` ({meta, rows, ...extra}) and ``stem.md`` (title, meta, body). Returns the .md path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = _strict_json({"meta": meta, "rows": rows, **extra})
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    md = out_dir / f"{stem}.md"
    md.write_text(f"# {stem}\n\n{meta_markdown(meta)}\n\n{body}\n")
    return md


def curve_plot(path: str | Path, steps: list[float], curves: list[tuple[str, list[float], dict]], ylabel: str,
               log_y: bool = False) -> Path:  # fmt: skip
    """A training curve figure at ``path``: each (label, values, matplotlib keyword arguments) against ``steps``;
    ``log_y`` only where every value is positive (a log-MSE loss is negative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values, style in curves:
        ax.plot(steps, values, label=label, **style)
    if log_y and all(v > 0 for _, values, _ in curves for v in values if v == v):
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
