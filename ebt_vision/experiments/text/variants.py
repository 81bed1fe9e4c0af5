"""Text EBT variants side by side: one ``ebt-vision text`` report per variant (each with its own Transformer++ of the
same run), the EBT's setting chosen on the validation years and quoted on every test corpus, its cost, and how its
perplexity moves with more test-time steps.

    python -m ebt_vision.experiments.text.variants 'logits (shipped)=reports/text.json' \\
        'embedding=runs/eval/text_embedding.json' --out reports --stem text_candidates --note '...'

A variant trained with other tokens or parameters than the others says so in its label and the note; the table shows
the parameters and training FLOPs per token of each, so nothing unequal hides.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ...core.errors import UserError
from ...core.reports import make_meta, markdown_table, write_report
from .report import choose_on_validation, config_key


def load_report(path: str | Path) -> dict:
    """A text report's JSON (clear errors for anything else)."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not the JSON of an ebt-vision text report ({error})") from None
    missing = [k for k in ("meta", "rows", "verdicts", "costs") if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UserError(f"{path}: not the JSON of an ebt-vision text report (no {', '.join(missing)})")
    return payload


def read_variant(label: str, path: str | Path, payload: dict) -> dict:
    """One variant's figures from its text report (``load_report`` of ``path``): the validation-chosen EBT setting on
    every test corpus, the Transformer++ of the same run, costs, and the plain descent's perplexity per step count."""
    rows, verdicts, costs = payload["rows"], payload["verdicts"], payload["costs"]
    chosen = choose_on_validation(rows)
    if chosen is None:
        raise UserError(f"{path}: no EBT rows on the validation split")
    corpora = {v["corpus"]: v for v in verdicts}
    plain = {}
    for row in rows:
        if row["method"] == "ebt":
            plain.setdefault(row["corpus"], {})[row["steps"]] = row["perplexity"]
    chosen_test = {r["corpus"]: r for r in rows if config_key(r) == config_key(chosen)}
    return {
        "variant": label,
        "report": str(path),
        "ebt_params": payload.get("ebt_params"),
        "transformer_params": payload.get("transformer_params"),
        "chosen": corpora[next(iter(corpora))]["ebt_chosen"],
        "validation_perplexity": chosen["perplexity"],
        "ebt_training_flops_per_token": costs["ebt_training_flops_per_token"],
        "ebt_flops_per_token": chosen_test[next(iter(corpora))]["flops_per_token"],
        "corpora": {
            name: {
                "ebt_perplexity": v["ebt_chosen_perplexity"],
                "ebt_bits_per_byte": v["ebt_chosen_bits_per_byte"],
                "transformer_perplexity": v["transformer_perplexity"],
                "transformer_bits_per_byte": v["transformer_bits_per_byte"],
            }
            for name, v in corpora.items()
        },
        "perplexity_per_step": {name: [by_step[k] for k in sorted(by_step)] for name, by_step in plain.items()},
    }


def table(variants: list[dict]) -> str:
    corpora = list(variants[0]["corpora"])
    headers = ["variant", "EBT params", "EBT train MFLOPs / token", "chosen on validation", "its MFLOPs / token",
               "validation ppl"]  # fmt: skip
    headers += [f"{c} ppl (x Transformer++)" for c in corpora] + [f"{corpora[0]} bits per byte"]
    lines = []
    for v in variants:
        cells = [v["variant"], f"{v['ebt_params']:,}", f"{v['ebt_training_flops_per_token'] / 1e6:.1f}", v["chosen"],
                 f"{v['ebt_flops_per_token'] / 1e6:.2f}", f"{v['validation_perplexity']:.2f}"]  # fmt: skip
        for c in corpora:
            f = v["corpora"][c]
            cells.append(f"{f['ebt_perplexity']:.2f} ({f['ebt_perplexity'] / f['transformer_perplexity']:.3f}x)")
        cells.append(f"{v['corpora'][corpora[0]]['ebt_bits_per_byte']:.3f}")
        lines.append(cells)
    return markdown_table(headers, lines)


def step_table(variants: list[dict]) -> str:
    """Per variant and corpus: perplexity at 0 steps (the start), the best step count and its perplexity, and at
    the most steps scored: does thinking longer help?"""
    headers = ["variant", "corpus", "start (0 steps)", "best steps", "best ppl", "most steps", "ppl there"]
    lines = []
    for v in variants:
        for corpus, curve in v["perplexity_per_step"].items():
            best = min(range(len(curve)), key=curve.__getitem__)
            lines.append([v["variant"], corpus, f"{curve[0]:.2f}", best, f"{curve[best]:.2f}", len(curve) - 1,
                          f"{curve[-1]:.2f}"])  # fmt: skip
    return markdown_table(headers, lines)


def plot(variants: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    corpora = [c for c in variants[0]["perplexity_per_step"] if c != "sotu_validation"]
    figure = Figure(figsize=(3.6 * len(corpora), 3.4))
    axes = figure.subplots(1, len(corpora), squeeze=False)[0]
    for ax, corpus in zip(axes, corpora, strict=True):
        for i, v in enumerate(variants):
            curve = v["perplexity_per_step"].get(corpus)
            if curve:
                ax.plot(range(len(curve)), curve, marker="o", ms=3, color=f"C{i}", label=v["variant"])
                transformer = v["corpora"].get(corpus, {}).get("transformer_perplexity")
                if transformer:
                    ax.axhline(transformer, color=f"C{i}", ls=":", lw=1)
        ax.set_title(f"{corpus} (dotted: each run's Transformer++)", fontsize=9)
        ax.set_xlabel("test-time descent steps")
        ax.set_ylabel("perplexity")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="LABEL=path/to/text_report.json, one per variant")
    parser.add_argument("--out", default="runs/text-variants")
    parser.add_argument("--stem", default="text_variants")
    parser.add_argument("--note", default="", help="what was run (the report's first paragraph)")
    args = parser.parse_args(argv)
    pairs = [item.split("=", 1) for item in args.variants]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        parser.error("give each variant as LABEL=path/to/report.json")
    payloads = [load_report(path) for _, path in pairs]
    variants = [read_variant(label, path, payload) for (label, path), payload in zip(pairs, payloads, strict=True)]
    corpora = [set(v["corpora"]) for v in variants]
    if any(c != corpora[0] for c in corpora):
        raise UserError(f"the reports score different corpora: {[sorted(c) for c in corpora]}")
    first = payloads[0]["meta"]
    command = shlex.join(["python", "-m", "ebt_vision.experiments.text.variants", *sys.argv[1:]])
    meta = make_meta("cpu", first.get("seed", 0), first.get("data", ""), "each variant's own report (below)", command)
    meta["device"] = first.get("device", meta["device"])
    meta["machine"] = first.get("machine", meta["machine"])
    budgets = "\n".join(f"- {v['variant']}: `{v['report']}`" for v in variants)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot(variants, out / f"{args.stem}.png")
    body = (f"{args.note}\n\n" if args.note else "") + (
        "EBT settings chosen on the validation years (lowest perplexity over step counts, stopping and best-of-N), "
        "quoted on every test corpus; in brackets the EBT's perplexity over the Transformer++ of the same report.\n\n"
        f"{table(variants)}\n\n## Thinking longer (plain descent)\n\n{step_table(variants)}\n\n"
        f"![perplexity per test-time step]({figure.name})\n\n## Reports\n\n{budgets}"
    )
    return write_report(out, args.stem, meta, variants, body)


if __name__ == "__main__":
    print(main())
