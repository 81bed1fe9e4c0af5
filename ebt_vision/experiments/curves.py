"""Training curves of several runs side by side: pilots of one recipe's variants, compared at equal steps.

Reads each run folder's ``metrics.csv`` (what ``ebt-vision train`` logs), keeps the steps every run reached, and
writes a report: the mean of ``--metric`` over a window of steps per run (the pilots' figure of merit), the last
common value, and the curves. Runs must share their data, seed, batch and learning-rate schedule for the comparison
to mean anything; the report states the run folders, and each folder's ``config.yaml`` holds the rest.

    python -m ebt_vision.experiments.curves linear=runs/a residual=runs/b --metric loss_last --window 300 425 \\
        --out reports --stem text_pilots --note "..."
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

from ..core.errors import UserError
from ..core.reports import make_meta, markdown_table, write_report


def read_curve(folder: str | Path, metric: str) -> dict[int, float]:
    """{step: value} of ``metric`` from ``folder/metrics.csv`` (clear errors for a missing file or column)."""
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: give run folders that ebt-vision train wrote")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or metric not in rows[0]:
        known = ", ".join(rows[0]) if rows else "none"
        raise UserError(f"{path} has no column {metric!r} (columns: {known})")
    return {int(row["step"]): float(row[metric]) for row in rows}


def compare(curves: dict[str, dict[int, float]], window: tuple[int, int]) -> tuple[list[dict], list[list]]:
    """-> (rows: every run's value at every common step, table: per run the window mean and the last common value)."""
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    if not common:
        raise UserError("the runs share no logged step")
    low, high = window
    inside = [s for s in common if low <= s <= high]
    if not inside:
        raise UserError(f"no common step in the window [{low}, {high}] (common steps: {common[0]}..{common[-1]})")
    rows = [{"method": label, "step": step, "value": curve[step]} for label, curve in curves.items() for step in common]
    table = [[label, f"{sum(curve[s] for s in inside) / len(inside):.3f}", f"{curve[common[-1]]:.3f}"]
             for label, curve in curves.items()]  # fmt: skip
    return rows, table


def plot(curves: dict[str, dict[int, float]], metric: str, window: tuple[int, int], path: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.8))
    ax = figure.subplots()
    for label, curve in curves.items():
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], label=label)
    ax.axvspan(*window, color="grey", alpha=0.15, label="compared window")
    ax.set(xlabel="training step", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER, one per run")
    parser.add_argument("--metric", default="loss_last", help="a column of metrics.csv (default: loss_last)")
    parser.add_argument("--window", nargs=2, type=int, required=True, metavar=("FIRST", "LAST"),
                        help="the steps whose mean is compared")  # fmt: skip
    parser.add_argument("--out", default="runs/curves")
    parser.add_argument("--stem", default="curves")
    parser.add_argument("--note", default="", help="what was compared and how (the report's first paragraph)")
    args = parser.parse_args(argv)
    pairs = [run.split("=", 1) for run in args.runs]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("give every run as LABEL=RUN_FOLDER")
    curves = {label: read_curve(folder, args.metric) for label, folder in pairs}
    window = (args.window[0], args.window[1])
    rows, table = compare(curves, window)
    command = shlex.join(["python", "-m", "ebt_vision.experiments.curves", *(argv or sys.argv[1:])])
    budget = "; ".join(f"{label}: {folder} ({max(curves[label])} steps logged)" for label, folder in pairs)
    meta = make_meta("cpu", 0, "the runs' own training data (each folder's config.yaml)", budget, command)
    last = max(r["step"] for r in rows)
    body = (
        f"{args.note}\n\n"
        + markdown_table(
            ["run", f"mean {args.metric}, steps {window[0]}-{window[1]}", f"{args.metric} at step {last}"], table
        )  # fmt: skip
        + f"\n\n![{args.metric} per step]({args.stem}.png)"
    )
    md = write_report(args.out, args.stem, meta, rows, body, metric=args.metric, window=list(window))
    plot(curves, args.metric, window, md.with_suffix(".png"))
    print(md)
    return md


if __name__ == "__main__":
    main()
