"""The text report: settings chosen on the validation years and quoted on every test corpus, perplexity and bits per
byte beside gzip, bz2 and xz of the same bytes, perplexity per number of test-time steps, best-of-N, energy as
uncertainty, cost per token, goal verdicts, and a figure (perplexity vs steps per corpus, bits per byte per corpus).
"""

from __future__ import annotations

from pathlib import Path

from ...core.layers import count_parameters
from ...core.reports import markdown_table, write_report
from .. import selection

EBT_METHODS = ("ebt", "ebt_stop", "ebt_langevin", "ebt_best_of_n")
CURVES = {"ebt": "descent", "ebt_stop": "stop when energy rises", "ebt_langevin": "Langevin noise"}


def config_key(row: dict) -> tuple:
    return row["method"], row["steps"], row.get("n_candidates", 1)


def config_label(row: dict) -> str:
    """``ebt@2``, ``ebt_stop@8``, ``ebt_best_of_n@2 (N=4)``."""
    label = f"{row['method']}@{row['steps']}"
    return label + (f" (N={row['n_candidates']})" if "n_candidates" in row else "")


def choose_on_validation(rows: list[dict], methods: tuple[str, ...] = EBT_METHODS) -> dict | None:
    """The validation row of the configuration among ``methods`` with the lowest validation perplexity."""
    best = selection.best_on_validation(rows, lambda r: r["method"] in methods or None, "perplexity", lowest=True)
    return best.get(True)


def _find(rows: list[dict], corpus: str, key: tuple) -> dict | None:
    return next((r for r in rows if r["corpus"] == corpus and config_key(r) == key), None)


def _ppl(row: dict | None) -> str:
    return "-" if row is None else f"{row['perplexity']:.2f}"


def _bpb(row: dict | None) -> str:
    return "-" if row is None or "bits_per_byte" not in row else f"{row['bits_per_byte']:.3f}"


def thinks_longer(row: dict, trained: int) -> bool:
    """Does a configuration spend more descent than the trained one: more steps, or more than one candidate?"""
    return row["steps"] > trained or row.get("n_candidates", 1) > 1


def system2_goals(verdicts: list[dict]) -> dict[str, bool]:
    """The text goals of thinking longer, from ``headline``'s verdicts. A gain only counts as one *from steps* when
    the validation-chosen configuration thinks longer than the trained descent: choosing fewer steps (the guess
    alone, say) beats the trained count without any extra step helping."""
    longer = bool(verdicts) and all(v["ebt_chosen_thinks_longer"] for v in verdicts)
    ood = [v["system2_gain_pct"] for v in verdicts if v["split"] == "ood"]
    in_dist = [v["system2_gain_pct"] for v in verdicts if v["split"] == "id"]
    return {
        "improves_with_steps": longer and all(v["system2_gain_pct"] > 0 for v in verdicts),
        "gain_larger_out_of_distribution": longer and bool(ood and in_dist)
                                           and sum(ood) / len(ood) > sum(in_dist) / len(in_dist),
        "matches_or_beats_transformer_ood": bool(ood) and all(v["ebt_system2_beats_transformer"] for v in verdicts
                                                              if v["split"] == "ood"),
    }  # fmt: skip


def headline(rows: list[dict], trained: int) -> tuple[list[dict], str]:
    """Per test corpus: Transformer++, the EBT at its trained step count, and the EBT configuration chosen on the
    validation years (overall and among plain descents); -> verdict rows and the Markdown table."""
    chosen, chosen_plain = choose_on_validation(rows), choose_on_validation(rows, ("ebt",))
    test_corpora = list(dict.fromkeys(r["corpus"] for r in rows if r["eval_split"] == "test"))
    verdicts, table = [], []
    for corpus in test_corpora:
        transformer = _find(rows, corpus, ("transformer", 0, 1))
        at_trained = _find(rows, corpus, ("ebt", trained, 1))
        system2 = _find(rows, corpus, config_key(chosen)) if chosen else None
        plain = _find(rows, corpus, config_key(chosen_plain)) if chosen_plain else None
        if not (transformer and at_trained and system2 and plain):
            continue
        gain = 100 * (at_trained["perplexity"] - system2["perplexity"]) / at_trained["perplexity"]
        verdicts.append({
            "corpus": corpus, "split": transformer["split"], "transformer_perplexity": transformer["perplexity"],
            "ebt_trained_steps_perplexity": at_trained["perplexity"], "ebt_chosen": config_label(chosen),
            "ebt_chosen_perplexity": system2["perplexity"], "ebt_chosen_steps": chosen_plain["steps"],
            "ebt_chosen_steps_perplexity": plain["perplexity"], "system2_gain_pct": gain,
            "ebt_chosen_thinks_longer": thinks_longer(chosen, trained),
            "ebt_system2_beats_transformer": system2["perplexity"] <= transformer["perplexity"],
        })  # fmt: skip
        if "bits_per_byte" in transformer:
            verdicts[-1].update(transformer_bits_per_byte=transformer["bits_per_byte"],
                                ebt_trained_steps_bits_per_byte=at_trained["bits_per_byte"],
                                ebt_chosen_bits_per_byte=system2["bits_per_byte"])  # fmt: skip
        table.append([corpus, transformer["split"], _ppl(transformer), _ppl(at_trained),
                      f"{_ppl(plain)} ({config_label(chosen_plain)})", f"{_ppl(system2)} ({config_label(chosen)})",
                      f"{gain:+.1f}%", "yes" if verdicts[-1]["ebt_system2_beats_transformer"] else "no"])  # fmt: skip
    headers = ["corpus", "split", "Transformer++", f"EBT @{trained} (trained)", "EBT steps chosen on validation",
               "EBT System 2 chosen on validation", "System-2 gain", "EBT System 2 <= Transformer++"]  # fmt: skip
    return verdicts, markdown_table(headers, table)


BITS_PER_BYTE_NOTE = (
    "Bits per byte: the summed negative log-likelihood in bits of the predicted tokens of every window (positions "
    "1..L of a window of L + 1 tokens; the first token is context only and is not charged) over the UTF-8 bytes "
    "those tokens stand for, counted exactly per token from the tokenizer (a document's end-of-text token counts "
    "as one separator byte). gzip -9, bz2 -9 and xz -9e compress exactly those bytes, window after window, as one "
    "stream, container included. A compressor has no training data, unlike the models (trained on the training "
    "years, the tokenizer too): it learns the text as it reads it, so on an evaluated text this small (bytes "
    "below) it compresses far worse than on a whole corpus; its rows say what plain statistics of these very "
    "bytes give, not how well a compressor does on the language. EBT settings chosen on the validation years."
)


def bits_per_byte_table(rows: list[dict], compressors: list[dict], trained: int) -> str:
    """Per corpus: the evaluated text's size, perplexity and bits per byte of the Transformer++, the EBT at its
    trained step count and at the setting chosen on validation, and gzip / bz2 / xz of the same bytes."""
    chosen = choose_on_validation(rows)
    table = []
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        transformer = _find(rows, corpus, ("transformer", 0, 1))
        at_trained = _find(rows, corpus, ("ebt", trained, 1))
        system2 = _find(rows, corpus, config_key(chosen)) if chosen else None
        packed = {c["method"]: c for c in compressors if c["corpus"] == corpus}
        if transformer is None or "bytes" not in transformer:
            continue
        size = (
            f"{transformer['tokens']:,} / {transformer['bytes']:,} ({transformer['bytes'] / transformer['tokens']:.2f})"
        )
        table.append([corpus, transformer["split"], size, _ppl(transformer), _bpb(transformer), _ppl(at_trained),
                      _bpb(at_trained), _ppl(system2), _bpb(system2),
                      *(_bpb(packed.get(name)) for name in ("gzip", "bz2", "xz"))])  # fmt: skip
    label = config_label(chosen) if chosen else "-"
    headers = ["corpus", "split", "tokens / bytes (bytes per token)", "Transformer++ ppl", "Transformer++ bpb",
               f"EBT @{trained} ppl", f"EBT @{trained} bpb", f"EBT {label} ppl", f"EBT {label} bpb", "gzip -9 bpb",
               "bz2 -9 bpb", "xz -9e bpb"]  # fmt: skip
    return markdown_table(headers, table)


def steps_table(rows: list[dict], corpora: list[str]) -> str:
    """Perplexity per number of test-time steps, per corpus: plain descent / stopping when the energy rises."""
    steps = sorted({r["steps"] for r in rows if r["method"] == "ebt"})
    methods = [m for m in CURVES if any(r["method"] == m for r in rows)]
    table = []
    for k in steps:
        cells = [" / ".join(_ppl(_find(rows, c, (m, k, 1))) for m in methods) for c in corpora]
        table.append([k, *cells])
    return markdown_table(["steps", *[f"{c} ({' / '.join(methods)})" for c in corpora]], table)


def best_of_table(rows: list[dict], corpora: list[str]) -> str:
    found = sorted({config_key(r) for r in rows if r["method"] == "ebt_best_of_n"}, key=lambda key: key[2])
    table = [[n, steps, *[_ppl(_find(rows, c, ("ebt_best_of_n", steps, n))) for c in corpora]] for _, steps, n in found]
    return markdown_table(["N", "steps", *corpora], table) if table else "(best-of-N not measured)"


def uncertainty_table(uncertainty: list[dict]) -> str:
    table = [
        [u["corpus"], u["method"], u["signal"], f"{u['pearson']:.3f}", f"{u['spearman']:.3f}"] for u in uncertainty
    ]
    return markdown_table(["corpus", "model", "signal", "Pearson r with token loss", "Spearman rho"], table)


def cost_table(rows: list[dict], costs: dict[str, float]) -> str:
    """Passes and FLOPs per token of every measured configuration, and of one training step of each model."""
    seen, table = set(), []
    for row in rows:
        skip = row["eval_split"] != "validation" or (row["steps"] == 0 and row["method"] != "transformer")
        if skip or config_key(row) in seen:
            continue
        seen.add(config_key(row))
        mflops, relative = row["flops_per_token"] / 1e6, row["transformer_forward_equivalents"]
        table.append(
            [config_label(row), row["forward_passes"], row["backward_passes"], f"{mflops:.3f}", f"{relative:.1f}"]
        )
    ebt, transformer = costs["ebt_training_flops_per_token"], costs["transformer_training_flops_per_token"]
    training = (f"Training FLOPs per token: EBT {ebt / 1e6:.3f} M, Transformer++ {transformer / 1e6:.3f} M "
                f"({ebt / transformer:.1f}x).")  # fmt: skip
    headers = ["configuration", "forward passes / token", "backward passes / token", "MFLOPs / token",
               "x Transformer++ forward"]  # fmt: skip
    return markdown_table(headers, table) + "\n\n" + training


def plot_perplexity(rows: list[dict], trained: int, path: Path, compressors: list[dict] | None = None) -> Path:
    """One panel per corpus: perplexity vs test-time descent steps (each curve), Transformer++ as a dashed line;
    with ``compressors`` (and bits per byte in the rows) a last panel: bits per byte per corpus of the
    Transformer++, the EBT at its trained step count, gzip, bz2 and xz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    bars = bool(compressors) and all("bits_per_byte" in r for r in rows)
    panels = len(corpora) + int(bars)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6), squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=False):
        here = [r for r in rows if r["corpus"] == corpus]
        for method, label in CURVES.items():
            curve = sorted((r["steps"], r["perplexity"]) for r in here if r["method"] == method and r["steps"] > 0)
            if curve:
                ax.plot(*zip(*curve, strict=True), marker="o", ms=3, label=f"EBT {label}")
        best = [r for r in here if r["method"] == "ebt_best_of_n"]
        if best:
            top = max(best, key=lambda r: r["n_candidates"])
            ax.scatter([top["steps"]], [top["perplexity"]], marker="*", s=80, color="C3", zorder=3,
                       label=f"EBT best-of-{top['n_candidates']}")  # fmt: skip
        transformer = next(r for r in here if r["method"] == "transformer")
        ax.axhline(transformer["perplexity"], color="k", ls="--", lw=1, label="Transformer++")
        ax.axvline(trained, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{corpus} ({here[0]['split']})")
        ax.set_xlabel("test-time descent steps (dotted: trained)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("perplexity")
    axes[0][0].legend(fontsize=7)
    if bars:
        _plot_bits_per_byte(axes[0][-1], rows, compressors, corpora, trained)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_bits_per_byte(ax, rows: list[dict], compressors: list[dict], corpora: list[str], trained: int) -> None:
    """Grouped bars: bits per byte per corpus, models and compressors of the same bytes side by side."""
    series = {"Transformer++": lambda c: _find(rows, c, ("transformer", 0, 1)),
              f"EBT @{trained}": lambda c: _find(rows, c, ("ebt", trained, 1))}  # fmt: skip
    for name in ("gzip", "bz2", "xz"):
        series[name] = lambda c, name=name: next((r for r in compressors if r["corpus"] == c and r["method"] == name),
                                                 None)  # fmt: skip
    width = 0.8 / len(series)
    for i, (label, find) in enumerate(series.items()):
        values = [(find(c) or {}).get("bits_per_byte", float("nan")) for c in corpora]
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(corpora))], values, width, label=label)
    ax.set_xticks(range(len(corpora)), corpora, rotation=20, fontsize=8)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("bits per byte, same bytes")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)


def write_text_report(rows: list[dict], uncertainty: list[dict], costs: dict[str, float], ebt, transformer,
                      meta: dict, out: str | Path, stem: str = "text",
                      compressors: list[dict] | None = None) -> Path:  # fmt: skip
    """Write ``<out>/<stem>.{md,json,png}``; returns the .md path. ``compressors``: gzip / bz2 / xz rows of the
    bytes every corpus's rows were scored on (``text.evaluate.compressor_rows``), shown beside bits per byte."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trained = ebt.cfg.descent.num_steps
    params = {"ebt_params": count_parameters(ebt.model), "transformer_params": count_parameters(transformer.model)}
    rows = [
        {**r, "params": params["ebt_params" if r["method"] != "transformer" else "transformer_params"]} for r in rows
    ]
    verdicts, headline_md = headline(rows, trained)
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    goals = system2_goals(verdicts)
    compressors = compressors or []
    plot = plot_perplexity(rows, trained, out / f"{stem}.png", compressors)
    bpb = (f"## Bits per byte\n\n{BITS_PER_BYTE_NOTE}\n\n{bits_per_byte_table(rows, compressors, trained)}"
           if any("bits_per_byte" in r for r in rows) else "")  # fmt: skip
    body = "\n\n".join([
        f"EBT {params['ebt_params']:,} parameters, Transformer++ {params['transformer_params']:,}; the EBT was "
        f"trained with {ebt.cfg.descent.min_steps}-{trained} descent steps. Perplexity on the test corpora; EBT "
        "settings chosen on the validation years (lowest validation perplexity), never on a test corpus. *System-2 "
        "gain*: the chosen setting's perplexity against the trained step count's; the goals count it as a gain from "
        "thinking longer only when the chosen setting spends more descent (more steps, or best-of-N).",
        headline_md,
        "Goals: " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in goals.items()),
        *([bpb] if bpb else []),
        f"## Perplexity per number of test-time steps\n\n{steps_table(rows, corpora)}",
        f"## Best-of-N (lowest energy per token)\n\n{best_of_table(rows, corpora)}",
        f"## Energy as uncertainty\n\nCorrelation of each token's energy (EBT, after {trained} steps) or predictive "
        f"entropy (Transformer++) with its cross-entropy.\n\n{uncertainty_table(uncertainty)}",
        f"## Cost per token\n\n{cost_table(rows, costs)}",
        f"![perplexity vs steps{', bits per byte' if compressors else ''}]({plot.name})",
    ])  # fmt: skip
    return write_report(out, stem, meta, rows, body, uncertainty=uncertainty, costs=costs, verdicts=verdicts,
                        goals=goals, compressors=compressors, **params)  # fmt: skip
