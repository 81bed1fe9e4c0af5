"""Averaging over images, and choosing each model's settings on the validation split to report them on the test split.

A model's *configurations* are the settings a user would pick from (the DiT's DDIM step count; the EBT's number of
descent steps, energy-based stopping, best-of-N). Which one to use is decided per noise level (sigma, or diffusion
level) and noise-knowledge setting by the mean validation PSNR; the report quotes that configuration's test PSNR.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

MODEL_OF_METHOD = {
    "noisy": "noisy", "cbm3d": "cbm3d",
    "dit_ddim": "dit", "dit_compute_ddim": "dit_compute",
    "ebt": "ebt", "ebt_stop": "ebt", "ebt_best_of_n": "ebt",
    "ebt_cond": "ebt_cond", "ebt_cond_stop": "ebt_cond",
}  # fmt: skip
GROUP = ("eval_split", "noise", "sigma", "noise_level", "setting", "method", "steps", "n_candidates")
MEANS = ("psnr", "ssim", "forward_passes", "backward_passes", "dit_forward_equivalents")
CONDITION = ("noise", "sigma", "noise_level", "setting")  # a choice is made per condition
CONFIG = ("method", "steps", "n_candidates")  # what is chosen


def average(rows: list[dict], group_by: tuple[str, ...] = GROUP, fields: tuple[str, ...] = MEANS) -> list[dict]:
    """Mean of ``fields`` over images per ``group_by`` (by default: split, noise, sigma, level, setting, method, steps,
    candidates); keys a row lacks are left out of its group."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in group_by)].append(row)
    out = []
    for key, group in groups.items():
        kept = {k: v for k, v in zip(group_by, key, strict=True) if v is not None}
        means = {k: float(np.mean([r[k] for r in group])) for k in fields}
        out.append({**kept, "split": group[0]["split"], **means, "images": len(group)})
    return out


def model_of(row: dict) -> str:
    return MODEL_OF_METHOD[row["method"]]


def config_label(row: dict) -> str:
    """Human-readable configuration: ``ebt@2``, ``ebt_stop@8``, ``ebt_best_of_n@2 (N=4)``."""
    label = f"{row['method']}@{row['steps']}"
    return label + (f" (N={row['n_candidates']})" if "n_candidates" in row else "")


def _key(row: dict, fields: tuple[str, ...]) -> tuple:
    return tuple(row.get(k) for k in fields)


def choose(averaged: list[dict], models: set[str] | None = None, within=lambda row: True) -> dict[tuple, dict]:
    """Per condition (and model): the test row of the configuration with the best mean validation PSNR.

    ``models``: choose among these models' configurations together (e.g. every EBT variant competing in a setting);
    None: choose for every model separately. ``within(row)``: only configurations that pass (e.g. a cost limit).
    Returns ``{(condition..., model-or-joint): test row + validation_psnr + chosen}``.
    """
    validation = [r for r in averaged if r["eval_split"] == "validation" and within(r)]
    test = {(_key(r, CONDITION), _key(r, CONFIG)): r for r in averaged if r["eval_split"] == "test"}
    best: dict[tuple, dict] = {}
    for row in validation:
        model = model_of(row)
        if models is not None and model not in models:
            continue
        key = (*_key(row, CONDITION), "+".join(sorted(models)) if models else model)
        if key not in best or row["psnr"] > best[key]["psnr"]:
            best[key] = row
    chosen = {}
    for key, row in best.items():
        match = test.get((_key(row, CONDITION), _key(row, CONFIG)))
        if match is not None:
            chosen[key] = {**match, "validation_psnr": row["psnr"], "chosen": config_label(row)}
    return chosen
