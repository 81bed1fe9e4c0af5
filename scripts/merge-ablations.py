"""Merge the reports of several `ebt-vision ablate` runs of one base config into one report.

Ablations of many variants are run as parallel processes (one per core), each with its own --runs folder and its own
DiT reference (the same seed and crops, so the same DiT); this writes their variants side by side, with the first
report's DiT rows, and lists every part's command and commit in the header.

    python scripts/merge-ablations.py runs/landscape-a/landscape-a.json runs/landscape-b/landscape-b.json \
        --config configs/quickstart.yaml --out reports --stem landscape
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ebt_vision.core.config import load_config
from ebt_vision.experiments.image.ablation import AblationResult
from ebt_vision.experiments.image.ablation_report import write_ablation_report


def merge(paths: list[Path]) -> tuple[AblationResult, list[dict]]:
    """The variants of every report, in order, and the DiT rows of the first; -> (result, each part's meta)."""
    parts = [json.loads(path.read_text()) for path in paths]
    merged = AblationResult([], {}, {}, 0, 0)
    for index, part in enumerate(parts):
        variants = [v for v in part["seconds"] if v != "dit"]
        clash = set(variants) & set(merged.seconds)
        if clash:
            raise SystemExit(f"{paths[index]}: variants {sorted(clash)} are already in an earlier report")
        keep = set(variants) | ({"dit"} if index == 0 else set())
        merged.rows += [row for row in part["rows"] if row["variant"] in keep]
        for name in ("seconds", "step_sizes", "training_steps", "step_flops"):
            getattr(merged, name).update({k: v for k, v in part.get(name, {}).items() if k in keep})
    merged.max_steps = max(r["steps"] for r in merged.rows if r["method"] == "ebt")
    merged.best_of = max((r["n_candidates"] for r in merged.rows if "n_candidates" in r), default=0)
    merged.seconds["dit"] = merged.seconds.pop("dit")  # the reference row last
    return merged, [part["meta"] for part in parts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="the .json of each ablate run")
    parser.add_argument("--config", default="configs/quickstart.yaml", help="the base config every part used")
    parser.add_argument("--out", default="reports", help="report folder")
    parser.add_argument("--stem", default="landscape", help="report file name stem")
    args = parser.parse_args()
    result, metas = merge(args.reports)
    meta = dict(metas[0])
    meta["command"] = " ; ".join([*(m["command"] for m in metas), shlex.join(["python", *sys.argv])])
    meta["git_commit"] = ", ".join(dict.fromkeys(m["git_commit"] for m in metas))
    meta["date"] = ", ".join(dict.fromkeys(m["date"] for m in metas))
    sigmas = tuple(sorted({r["sigma"] for r in result.rows}))
    report = write_ablation_report(result, load_config(args.config), sigmas, meta, args.out, args.stem)
    print(f"report: {report} (+ .json, .png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
