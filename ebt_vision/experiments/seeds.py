"""One comparison run with several training seeds: the mean and spread of every contender's chosen test figures.

Reads the JSON of reports that ``ebt-vision video`` or ``ebt-vision text`` wrote for the same config and data with
different ``train.seed`` (a video report's ``chosen`` rows: each method's setting chosen on validation, quoted on
test; a text report's ``verdicts``: per test corpus the Transformer++ and the EBT at its validation-chosen setting),
checks that they compare the same methods on the same clips or windows, and writes a report: per method the mean and
the sample standard deviation over the seeds of each metric, the setting each seed chose, and a figure of the
per-seed values. Text rows are named ``corpus: model``; the best mean is marked within each corpus.

    python -m ebt_vision.experiments.seeds reports/video_real.json runs/seed1/video_real_seed1.json ... \\
        --seeds 0 1 2 --metrics mse psnr ssim --out reports --stem video_real_seeds
    python -m ebt_vision.experiments.seeds reports/text.json reports/text_seed1.json reports/text_seed2.json \\
        --seeds 0 1 2 --metrics perplexity bits_per_byte --out reports --stem text_seeds
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from ..core.errors import UserError
from ..core.reports import make_meta, markdown_table, write_report

HIGHER_IS_BETTER = {"psnr", "ssim"}
DECIMALS = {"ssim": 3, "bits_per_byte": 3}  # decimals shown per metric (2 otherwise)


def read_chosen(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """-> (meta, {method: chosen test row}) of one report's JSON (clear errors for anything else)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable report JSON ({error})") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: not a report JSON (an object with 'meta' and its rows)")
    if "chosen" not in payload and isinstance(payload.get("verdicts"), list) and payload["verdicts"]:
        windows = {row["corpus"]: row.get("windows") for row in payload.get("rows", []) if "corpus" in row}
        return payload.get("meta", {}), _text_rows(payload["verdicts"], windows)
    chosen = payload.get("chosen")
    if not isinstance(chosen, list) or not chosen:
        raise UserError(f"{path} has no 'chosen' rows (video) or 'verdicts' (text): give the JSON of ebt-vision "
                        "video or text reports")  # fmt: skip
    return payload.get("meta", {}), {row["method"]: row for row in chosen}


def _text_rows(verdicts: list[dict], windows: dict[str, int | None]) -> dict[str, dict]:
    """A text report's per-corpus verdicts as rows ``corpus: transformer`` and ``corpus: ebt`` (the EBT at the
    setting chosen on validation), each with perplexity, bits per byte and the corpus's evaluation windows."""
    rows = {}
    for verdict in verdicts:
        corpus, count = verdict["corpus"], windows.get(verdict["corpus"])
        for model, chosen, prefix in (("transformer", "transformer", "transformer"),
                                      ("ebt", verdict["ebt_chosen"], "ebt_chosen")):  # fmt: skip
            figures = {m: verdict[f"{prefix}_{m}"] for m in ("perplexity", "bits_per_byte")}
            rows[f"{corpus}: {model}"] = {"chosen": chosen, "clips": count, **figures}
    return rows


def aggregate(runs: list[dict[str, dict]], metrics: list[str]) -> list[dict]:
    """Per method: the mean and sample sd over the runs of each metric, and the settings the runs chose."""
    if len(runs) < 2:
        raise UserError("give at least two reports (one per seed)")
    methods = list(runs[0])
    for i, run in enumerate(runs[1:], start=2):
        if set(run) != set(methods):
            raise UserError(f"report {i} compares {sorted(run)}, report 1 {sorted(methods)}: not the same run")
    for method in methods:
        clips = {run[method].get("clips") for run in runs}
        if len(clips) != 1:
            raise UserError(
                f"{method}: the reports were measured on different numbers of clips (or windows) "
                f"{sorted(clips, key=str)}"
            )
    missing = [m for m in metrics if any(m not in run[method] for run in runs for method in methods)]
    if missing:
        raise UserError(f"the reports have no metric {missing[0]!r}")
    rows = []
    for method in methods:
        row = {"method": method, "seeds": len(runs), "chosen": [run[method].get("chosen", "") for run in runs]}
        for metric in metrics:
            values = [float(run[method][metric]) for run in runs]
            row[metric] = values
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_sd"] = statistics.stdev(values)
        rows.append(row)
    return rows


def group_of(method: str) -> str:
    """The group a method's row competes in: the corpus of a text row ``corpus: model``, one group otherwise."""
    return method.split(": ", 1)[0] if ": " in method else ""


def best_marks(rows: list[dict], metrics: list[str]) -> set[tuple[str, str]]:
    """{(metric, method)} of the best mean per metric within each group (lowest, or highest for PSNR and SSIM)."""
    marks = set()
    for group in dict.fromkeys(group_of(r["method"]) for r in rows):
        members = [r for r in rows if group_of(r["method"]) == group]
        for m in metrics:
            pick = max if m in HIGHER_IS_BETTER else min
            marks.add((m, pick(members, key=lambda r: r[f"{m}_mean"])["method"]))
    return marks


def plot(rows: list[dict], metrics: list[str], path: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.4 * len(metrics), 3.4))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for x, row in enumerate(rows):
            ax.scatter([x] * len(row[metric]), row[metric], color="C0", alpha=0.6, s=18)
            ax.errorbar(x + 0.15, row[f"{metric}_mean"], yerr=row[f"{metric}_sd"], fmt="o", color="C3", capsize=3)
        ax.set_xticks(range(len(rows)), [r["method"] for r in rows], rotation=30)
        ax.set_title(f"{metric} (seeds; mean ± sd)")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="the JSON of each seed's report")
    parser.add_argument("--seeds", nargs="+", type=int, required=True, help="each report's train.seed, in order")
    parser.add_argument("--metrics", nargs="+", default=["mse", "psnr", "ssim"])
    parser.add_argument("--out", default="runs/seeds")
    parser.add_argument("--stem", default="seeds")
    parser.add_argument("--note", default="", help="what was run (the report's first paragraph)")
    args = parser.parse_args(argv)
    if len(args.seeds) != len(args.reports) or len(set(args.seeds)) != len(args.seeds):
        parser.error("give one distinct --seeds value per report")
    read = [read_chosen(path) for path in args.reports]
    runs = [chosen for _, chosen in read]
    rows = aggregate(runs, args.metrics)
    best = best_marks(rows, args.metrics)

    def cell(r: dict, m: str) -> str:
        digits = DECIMALS.get(m, 2)
        text = f"{r[f'{m}_mean']:.{digits}f} ± {r[f'{m}_sd']:.{digits}f}"
        return f"**{text}**" if (m, r["method"]) in best else text

    first_metric = args.metrics[0]
    table = [[r["method"], ", ".join(r["chosen"]), *(cell(r, m) for m in args.metrics),
              " / ".join(f"{v:.{DECIMALS.get(first_metric, 2)}f}" for v in r[first_metric])] for r in rows]  # fmt: skip
    command = shlex.join(["python", "-m", "ebt_vision.experiments.seeds", *(argv or sys.argv[1:])])
    first = read[0][0]
    pairs = zip(args.seeds, read, strict=True)
    budget = "; ".join(f"seed {seed}: {meta.get('budget', '?')}" for seed, (meta, _) in pairs)
    meta = make_meta("cpu", args.seeds[0], first.get("data", "?"), budget, command)
    meta["device"] = "; ".join(sorted({m.get("device", "?") for m, _ in read}))
    meta["seed"] = ", ".join(map(str, args.seeds))
    meta["machine"] = "; ".join(sorted({m.get("machine", "?") for m, _ in read}))
    body = (
        (f"{args.note}\n\n" if args.note else "")
        + f"{len(runs)} reports, one per training seed ({', '.join(map(str, args.seeds))}); "
        "each method's setting chosen on validation in its own report, figures on the test split; "
        "mean ± sample standard deviation over the seeds (best mean in bold"
        + (", per corpus" if any(group_of(r["method"]) for r in rows) else "")
        + ").\n\n"
        + markdown_table(
            ["method", "chosen per seed", *(f"{m} mean ± sd" for m in args.metrics), f"{args.metrics[0]} per seed"],
            table,
        )
        + f"\n\n![per-seed figures]({args.stem}.png)"
    )
    md = write_report(args.out, args.stem, meta, rows, body, reports=[str(p) for p in args.reports])
    plot(rows, args.metrics, md.with_suffix(".png"))
    print(md)
    return md


if __name__ == "__main__":
    main()
