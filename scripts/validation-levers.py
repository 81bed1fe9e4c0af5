"""Candidates side by side on the validation photos: reports/<stem>.{md,json,png}.

Each row is one method of one evaluation (``ebt-vision eval --split validation``), at its best step count per sigma;
the figure is the gap of every row to a reference row (the DiT of the same recipe, say):

python scripts/validation-levers.py --stem sigma15_levers \
    --reference 'DiT:runs/evalval-dit/denoise_eval.json:dit_ddim' \
    --row 'shipped EBT:runs/evalval-ebt/denoise_eval.json:ebt' \
    --row 'its trunk:runs/evalval-ebt/denoise_eval.json:transformer'
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.core.reports import make_meta, markdown_table, write_report  # noqa: E402


def best_per_sigma(spec: str) -> tuple[str, dict[float, tuple[float, int]], dict]:
    """ "LABEL:eval.json:method" -> (label, sigma -> (best mean validation PSNR, its step count), the report's meta).
    Several evaluations (of different sigmas, say) pool their rows: "LABEL:a.json,b.json:method", and a row may be
    one of several methods (a setting named after what it does at each sigma): "LABEL:a.json:m1|m2"."""
    label, paths, method = spec.rsplit(":", 2)
    reports = [json.loads(Path(path).read_text()) for path in paths.split(",")]
    commands = " and ".join(f"`{each['meta']['command']}`" for each in reports)
    report = {
        "meta": {**reports[0]["meta"], "commands": commands},
        "rows": [row for each in reports for row in each["rows"]],
    }
    best: dict[float, tuple[float, int]] = {}
    for row in report["rows"]:
        if row["eval_split"] == "validation" and row["method"] in method.split("|"):
            if row["sigma"] not in best or row["psnr"] > best[row["sigma"]][0]:
                best[row["sigma"]] = (row["psnr"], row["steps"])
    if not best:
        raise SystemExit(f"{paths}: no validation rows of {method!r}")
    return label, best, report["meta"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="LABEL:eval.json:method the gaps are measured to")
    parser.add_argument("--row", action="append", required=True, help="LABEL:eval.json:method (repeatable)")
    parser.add_argument("--intro", default="", help="the report's first paragraph (what the rows are)")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--stem", default="validation_levers")
    args = parser.parse_args(argv)

    reference = best_per_sigma(args.reference)
    rows = [best_per_sigma(spec) for spec in args.row]
    sigmas = sorted(set(reference[1]).intersection(*(best for _, best, _ in rows)))
    if not sigmas:
        raise SystemExit("no sigma is in every evaluation")

    def cell(value: tuple[float, int]) -> str:  # PSNR (its step count, where the evaluation counted steps)
        return f"{value[0]:.2f}" + (f" ({value[1]})" if value[1] else "")

    table = [[label] + [f"{cell(best[s])} {best[s][0] - reference[1][s][0]:+.2f}" for s in sigmas]
             for label, best, _ in rows]  # fmt: skip
    table.append([f"{reference[0]} (the reference)"] + [cell(reference[1][s]) for s in sigmas])
    evaluations: dict[str, list[str]] = {}  # the evaluations' commands -> the rows read off them
    for label, _, meta in [reference, *rows]:
        evaluations.setdefault(meta["commands"], []).append(label)
    body = "\n\n".join(part for part in [
        args.intro,
        "Cells: mean validation PSNR (dB) at the best step count (in brackets), then the difference to "
        f"{reference[0]}.",
        markdown_table(["candidate", *(f"sigma {s:g}" for s in sigmas)], table),
        "Evaluations: " + "; ".join(f"{', '.join(labels)}: {commands}" for commands, labels in evaluations.items()),
        f"![Difference to {reference[0]}]({args.stem}.png)",
    ] if part)  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2 + 0.25 * len(rows)))
    width = 0.8 / len(rows)
    for i, (label, best, _) in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(sigmas))]
        ax.bar(xs, [best[s][0] - reference[1][s][0] for s in sigmas], width, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(sigmas)), [f"sigma {s:g}" for s in sigmas])
    ax.set_ylabel(f"validation PSNR - {reference[0]} (dB)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / f"{args.stem}.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    data = reference[2]["data"]
    meta = make_meta("cpu", reference[2]["seed"], data, "see each evaluation's report",
                     command=shlex.join(["python", "scripts/validation-levers.py", *argv]))  # fmt: skip
    out_rows = [{"candidate": label, "sigma": s, "psnr": best[s][0], "steps": best[s][1],
                 "gap_to_reference": best[s][0] - reference[1][s][0]}
                for label, best, _ in rows for s in sigmas]  # fmt: skip
    md = write_report(args.out, args.stem, meta, out_rows, body,
                      reference={"label": reference[0], **{str(s): reference[1][s][0] for s in sigmas}})  # fmt: skip
    print(f"report: {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
