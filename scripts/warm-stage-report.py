"""Choose the shipped EBT's second stage on the validation photos: reports/warm_stage.{md,json,png}.

Reads the validation evaluations (``ebt-vision eval --split validation --no-schedule --no-bm3d``) of EBT stages
trained from one trunk at equal training FLOPs, and the DiT's validation evaluation, and picks the stage with the
smallest worst in-distribution gap to the DiT (each at its best step count on validation) among those whose descent
holds steady (no step count from 2 on more than 0.2 dB below the best):

python scripts/warm-stage-report.py --dit reports/denoise_eval_validation.json \
    --stage 1-2:runs/val-ebt-s-n2g1/denoise_eval.json --stage 1-4:runs/val-ebt-s-n4g2/denoise_eval.json \
    --stage 1-8:runs/val-ebt-s-n8g2/denoise_eval.json --out reports
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.core.reports import make_meta, markdown_table, write_report  # noqa: E402

IN_DISTRIBUTION = (15.0, 25.0, 50.0)
INTRO = (
    "The shipped EBT's second stage, chosen on the **validation** photos (full resolution, blind, one pass of 1-6 "
    "descent steps, no step schedule): EBT stages trained from the same trunk, each with the training FLOPs the trunk "
    "leaves of the DiT's (so every EBT below has the DiT's counted training compute), differing in the descents they "
    "train on (randomised 1-N steps); the chosen stage's figures on the test photos are reports/denoise_eval.md."
)
STEADY_DB = 0.2  # the landscape issue's "thinking longer": no step count from 2 on more than this below the best


def drift(curve: dict[float, dict[int, float]]) -> float:
    """The largest fall below its best of any step count from 2 on, over the in-distribution sigmas (dB)."""
    return max(max(curve[s].values()) - min(p for k, p in curve[s].items() if k >= 2) for s in IN_DISTRIBUTION)


def named(label: str) -> str:
    """A stage's row name: a bare range of descent steps ("1-4") reads "1-4 steps", any other label as given."""
    return f"{label} steps" if re.fullmatch(r"\d+-\d+", label) else label


def validation_rows(path: Path, method: str) -> dict[float, dict[int, float]]:
    """sigma -> steps -> mean validation PSNR of ``method`` in one eval report."""
    out: dict[float, dict[int, float]] = {}
    for row in json.loads(path.read_text())["rows"]:
        if row["eval_split"] == "validation" and row["method"] == method:
            out.setdefault(row["sigma"], {})[row["steps"]] = row["psnr"]
    if not out:
        raise SystemExit(f"{path}: no validation rows of {method!r}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dit", type=Path, required=True, help="the DiT's validation eval (.json)")
    parser.add_argument("--stage", action="append", required=True, help="LABEL:eval.json of one EBT stage")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--stem", default="warm_stage", help="report file name stem")
    parser.add_argument("--intro", default=INTRO, help="the report's first paragraph (what the stages are)")
    args = parser.parse_args(argv)

    dit = {s: max(v.values()) for s, v in validation_rows(args.dit, "dit_ddim").items()}
    stages, budgets, trunks = {}, {}, {}
    for spec in args.stage:
        label, _, path = spec.partition(":")
        report = json.loads(Path(path).read_text())
        stages[label] = validation_rows(Path(path), "ebt")
        budgets[label] = report["meta"]["budget"]
        if any(r["method"] == "transformer" for r in report["rows"]):
            trunks[label] = {s: max(v.values()) for s, v in validation_rows(Path(path), "transformer").items()}
    gaps = {label: {s: max(curve[s].values()) - dit[s] for s in IN_DISTRIBUTION} for label, curve in stages.items()}
    drifts = {label: drift(curve) for label, curve in stages.items()}
    steady = [label for label in stages if drifts[label] <= STEADY_DB] or list(stages)
    chosen = max(steady, key=lambda label: min(gaps[label].values()))

    sigmas = sorted(set(dit).intersection(*(curve.keys() for curve in stages.values())))  # those every report has
    table = [[named(label) + (" **(chosen)**" if label == chosen else "")]
             + [f"{max(stages[label][s].values()):.2f} ({max(stages[label][s], key=stages[label][s].get)})"
                for s in sigmas]
             + [f"{min(gaps[label].values()):+.2f}", f"{drifts[label]:.2f}"] for label in stages]  # fmt: skip
    for label, trunk in trunks.items():
        name = "the trunk alone (one pass)" if len(stages) == 1 else f"{label}: its trunk alone (one pass)"
        table.append([name] + [f"{trunk[s]:.2f}" for s in sigmas] + ["-", "-"])
    table.append(["DiT (best DDIM steps)"] + [f"{dit[s]:.2f}" for s in sigmas] + ["-", "-"])
    headers = ["stage (descents in training)", *(f"sigma {s:g}" for s in sigmas),
               "worst in-distribution gap to the DiT (dB)", "largest fall after step 2 (dB)"]  # fmt: skip
    body = "\n\n".join([
        args.intro + " Cells: mean validation PSNR (dB) at the best step count (in brackets). Chosen: among the "
        f"stages whose descent holds steady in distribution (sigma 15 / 25 / 50: no step count from 2 on more than "
        f"{STEADY_DB} dB below its best, the landscape issue's bar for thinking longer), the one with the smallest "
        "worst in-distribution gap to the DiT.",
        markdown_table(headers, table),
        "Budgets: " + "; ".join(f"{label}: {budget}" for label, budget in budgets.items()),
        f"![Validation PSNR per descent step]({args.stem}.png)",
    ])  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.2 * len(sigmas), 3.2))
    for ax, s in zip(axes, sigmas, strict=True):
        for label, curve in stages.items():
            steps = sorted(curve[s])
            ax.plot(steps, [curve[s][k] for k in steps], marker="o", label=f"EBT {label}")
        ax.axhline(dit[s], color="k", ls="--", label="DiT (best)")
        for (label, trunk), style in zip(trunks.items(), (":", "-.", "--"), strict=False):
            ax.axhline(
                trunk[s], color="grey", ls=style, label=f"{label}: trunk alone" if len(trunks) > 1 else "trunk alone"
            )
        ax.set_title(f"sigma {s:g}")
        ax.set_xlabel("descent steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation PSNR (dB)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / f"{args.stem}.png", dpi=100)
    plt.close(fig)

    rows = [{"stage": label, "sigma": s, "steps": k, "psnr": p}
            for label, curve in stages.items() for s, by_steps in curve.items()
            for k, p in by_steps.items()]  # fmt: skip
    data = "validation photos, full resolution (5: skimage:retina, opencv:chicky_512.png, opencv:stuff.jpg, " \
           "opencv:board.jpg, opencv:blox.jpg)"  # fmt: skip
    meta = make_meta("cpu", 0, data, "each stage the FLOPs the trunk leaves of the DiT's (see Budgets)",
                     command=shlex.join(["python", "scripts/warm-stage-report.py", *argv]))  # fmt: skip
    trunk = next(iter(trunks.values())) if len(trunks) == 1 else None  # one trunk: as before
    extra = {"dit": dit, "trunk": trunk, "trunks": trunks, "gaps": gaps, "drifts": drifts, "chosen": chosen}
    md = write_report(args.out, args.stem, meta, rows, body, **extra)
    print(f"report: {md}; chosen: {chosen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
