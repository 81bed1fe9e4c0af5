"""The README's headline table, read from the committed report of the shipped image models
(``reports/denoise_eval.json``), so the numbers on the front page cannot drift from the report. The DiT's DDIM step
count at each noise level is the one with the best mean PSNR on the validation photos
(``reports/denoise_eval_validation.json``, the same command on ``--split validation``), never read off the test photos.

``python scripts/readme-table.py`` rewrites the table between the README's markers; ``--check`` (and
``tests/test_docs.py``) fails when they differ. The documentation build embeds the same table."""

from __future__ import annotations

import json
from pathlib import Path

REPORT = "denoise_eval"
VALIDATION = "denoise_eval_validation"  # the same models on the validation photos: where the DiT's steps are chosen
BEGIN, END = "<!-- headline-table: begin (python scripts/readme-table.py) -->", "<!-- headline-table: end -->"


def _mean(rows: list[dict], method: str, sigma: float) -> dict | None:
    found = [r for r in rows if r["method"] == method and r["sigma"] == sigma]
    return found[0] if found else None


def _cell(row: dict | None, note: str = "") -> str:
    if row is None:
        return "-"
    return f"{row['psnr']:.2f} / {row['ssim']:.3f}{note}"


def dit_steps_on_validation(reports: str | Path = "reports") -> dict[float, int]:
    """Per noise level: the DiT's DDIM step count with the best mean validation PSNR (``VALIDATION``'s report)."""
    data = json.loads((Path(reports) / f"{VALIDATION}.json").read_text())
    dits = [r for r in data["rows"] if r["method"] == "dit_ddim" and r.get("eval_split") == "validation"]
    if not dits:
        raise ValueError(f"{VALIDATION}.json has no DiT rows on the validation split")
    return {sigma: max((r for r in dits if r["sigma"] == sigma), key=lambda r: r["psnr"])["steps"]
            for sigma in sorted({r["sigma"] for r in dits})}  # fmt: skip


def headline_table(reports: str | Path = "reports") -> str:
    """Markdown: per noise level of the report, mean test PSNR (dB) / SSIM of the noisy input, CBM3D (told the true
    sigma), the DiT at the DDIM step count chosen on the validation photos and the EBT with the steps its schedule
    (fitted on validation crops) reads off the estimated noise (both blind), and the EBT's lead over that DiT in dB."""
    data = json.loads((Path(reports) / f"{REPORT}.json").read_text())
    rows = [r for r in data["rows"] if r.get("eval_split", "test") == "test"]
    sigmas = sorted({r["sigma"] for r in rows})
    chosen = dit_steps_on_validation(reports)
    lines = [
        "| noise sigma | noisy | CBM3D (told sigma) | DiT (blind, DDIM steps chosen on validation) | EBT (blind, steps "
        "from the estimated noise) | EBT - DiT |",
        "|---|---|---|---|---|---|",
    ]
    for sigma in sigmas:
        split = next(r["split"] for r in rows if r["sigma"] == sigma)
        dits = [
            r for r in rows if r["method"] == "dit_ddim" and r["sigma"] == sigma and r["steps"] == chosen.get(sigma)
        ]
        dit = dits[0] if dits else None
        ebt, how = _mean(rows, "ebt_auto", sigma), ""
        if ebt is None:  # a checkpoint without a step schedule: its best fixed step count
            fixed = [r for r in rows if r["method"] == "ebt" and r["sigma"] == sigma]
            ebt = max(fixed, key=lambda r: r["psnr"]) if fixed else None
            how = f" ({ebt['steps']} steps)" if ebt else ""
        lead = f"{ebt['psnr'] - dit['psnr']:+.2f} dB" if ebt and dit else "-"
        label = "in distribution" if split == "id" else "out of distribution"
        dit_steps = f" ({dit['steps']} steps)" if dit else ""
        lines.append(
            f"| {sigma:g} ({label}) | {_cell(_mean(rows, 'noisy', sigma))} | {_cell(_mean(rows, 'cbm3d', sigma))} | "
            f"{_cell(dit, dit_steps)} | {_cell(ebt, how)} | {lead} |"
        )
    return "\n".join(lines) + "\n"


def readme_with_table(readme: str, reports: str | Path = "reports") -> str:
    """``readme`` with the text between the headline markers replaced by ``headline_table``."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"the README has no headline-table markers ({BEGIN} ... {END})")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{headline_table(reports)}{END}{tail}"
