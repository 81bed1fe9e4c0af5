"""The text experiment: train the text EBT and the Transformer++ on the same token windows for the same number of
steps, evaluate both on held-out State of the Union years and out-of-distribution texts, write ``reports/text.*``.

Settings (step counts, stopping, best-of-N) are chosen on the validation years and reported on the test years and
on every out-of-distribution corpus; nothing is chosen on a test or out-of-distribution text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.config import with_overrides
from ...core.data_check import check_data
from ...core.errors import UserError
from ...core.reports import make_meta
from ...core.train import resolve_device
from ...text.baseline import TransformerPlusPlusObjective
from ...text.checkpoints import load_text_ebt, load_transformer
from ...text.config import TextConfig
from ...text.corpora import OOD_CORPORA, Document, corpus_splits, missing_ood, ood_documents
from ...text.costs import pass_flops, training_step_flops
from ...text.data import evaluation_windows, token_stream
from ...text.evaluate import (
    System2Settings,
    compressor_rows,
    correlation,
    predicted_bytes,
    score_ebt,
    score_transformer,
)
from ...text.objective import TextEBTObjective
from ...text.prepare import is_prepared, prepared_tokens
from ...text.tokenizer import TextTokenizer
from ...text.training import MODELS, prepare_tokenizer, train_model
from .report import write_text_report


@dataclass(frozen=True)
class TextOptions:
    windows: int = 64  # evaluation windows per corpus (each seq_len + 1 tokens, spread evenly over the corpus)
    system2: System2Settings = field(default_factory=System2Settings)
    ood: tuple[str, ...] = OOD_CORPORA  # out-of-distribution corpora: names in OOD_CORPORA or folders of .txt
    load: bool = False  # evaluate finished runs without training
    models: tuple[str, str] | None = None  # with load: the EBT's and the Transformer++'s folders, not <runs>/ebt etc.
    device: str = "auto"
    stem: str = "text"


def _labels(corpus: str) -> dict:
    held_out = corpus in ("validation", "test")
    return {
        "corpus": f"sotu_{corpus}" if held_out else Path(corpus).name,
        "split": "id" if held_out else "ood",
        "eval_split": "validation" if corpus == "validation" else "test",
    }


def _with_costs(row: dict, flops: dict[str, float], guesses: bool) -> dict:
    """The row with its FLOPs per token: an EBT encodes the context once per descent (shared by all N starts; also
    with no step when the descent starts from its guess, which reads the encoding), pays each energy evaluation
    (forward pass) and gradient (backward pass) of the candidate stream, and reads its answer as logits."""
    if row["method"] == "transformer":
        per_token = row["forward_passes"] * flops["transformer_forward"]
    else:
        encode = flops["ebt_encode"] if row["forward_passes"] or guesses else 0.0
        passes = row["forward_passes"] * flops["ebt_forward"] + row["backward_passes"] * flops["ebt_backward"]
        per_token = encode + passes + flops["ebt_readout"]
    return {
        **row,
        "flops_per_token": per_token,
        "transformer_forward_equivalents": per_token / flops["transformer_forward"],
    }


def evaluate_text_models(
    ebt: TextEBTObjective,
    transformer: TransformerPlusPlusObjective,
    tokenizer: TextTokenizer,
    corpora: dict[str, list[Document] | np.ndarray],
    options: TextOptions,
    progress: bool = False,
) -> tuple[list[dict], list[dict], dict[str, float], list[dict]]:
    """Score both models on ``options.windows`` windows of every corpus -> (perplexity and bits-per-byte rows,
    uncertainty rows, FLOPs per token, compressor rows). ``corpora`` maps "validation", "test" and
    out-of-distribution names to documents (or to the memory-mapped tokens of a prepared corpus's split). The
    compressors see exactly the bytes the models are charged for (``text.evaluate.predicted_bytes``)."""
    seq_len = ebt.cfg.data.seq_len
    flops = pass_flops(ebt, transformer, seq_len)
    table = tokenizer.token_bytes()
    rows, uncertainty, compressors = [], [], []
    for name, documents in corpora.items():
        stream = documents if isinstance(documents, np.ndarray) else token_stream(tokenizer, documents)
        windows = evaluation_windows(stream, seq_len, options.windows)
        labels = {**_labels(name), "windows": windows.shape[0]}
        text = predicted_bytes(windows, table)
        compressors += [{**labels, "tokens": windows[:, 1:].numel(), **row} for row in compressor_rows(text)]
        ebt_scores = score_ebt(ebt, windows, options.system2, progress=progress)
        transformer_scores = score_transformer(transformer, windows, options.system2.batch_size)
        scored = ebt_scores.rows(len(text)) + transformer_scores.rows(len(text))
        rows += [_with_costs({**labels, **row}, flops, ebt.guesses) for row in scored]
        for method, scores, signal in (("ebt", ebt_scores, "energy"), ("transformer", transformer_scores, "entropy")):
            steps = ebt.cfg.descent.num_steps if method == "ebt" else 0
            stats = correlation(scores.uncertainty, scores.losses)
            uncertainty.append({**labels, "method": method, "steps": steps, "signal": signal, **stats})
    return rows, uncertainty, flops, compressors


def _train_or_load(cfg: TextConfig, runs: Path, options: TextOptions, splits: dict, progress: bool):
    """Both models and their shared tokenizer: trained (or resumed) under ``runs``, or loaded with ``load``."""
    if options.load:
        device = resolve_device(options.device if options.device != "auto" else cfg.train.device)
        ebt_folder, transformer_folder = options.models or (runs / "ebt", runs / "transformer")
        ebt, tokenizer = load_text_ebt(ebt_folder, device)
        transformer, other = load_transformer(transformer_folder, device)
        if other.token_bytes() != tokenizer.token_bytes():
            raise UserError(f"{ebt_folder} and {transformer_folder} use different tokenizers: scored on the same "
                            "windows, both models must read the same tokens")  # fmt: skip
        return ebt, transformer, tokenizer, None
    tokenizer = prepare_tokenizer(cfg, runs, splits["train"])
    results = {}
    for model in MODELS:
        run_cfg = cfg if model == "ebt" else dataclasses.replace(cfg, name=f"{cfg.name}-transformer")
        results[model] = train_model(run_cfg, runs / model, model, resume=True, progress=progress,
                                          tokenizer=tokenizer, splits=splits)  # fmt: skip
    device = resolve_device(cfg.train.device)
    ebt, _ = load_text_ebt(runs / "ebt", device)
    transformer, _ = load_transformer(runs / "transformer", device)
    return ebt, transformer, tokenizer, results


def run_text_experiment(
    cfg: TextConfig, runs: str | Path, out: str | Path, options: TextOptions | None = None, progress: bool = True
) -> Path:
    """Train (or resume, or ``load``) the text EBT and the Transformer++ under ``runs`` on the same windows for
    ``train.steps`` steps each, evaluate both, and write ``<out>/<stem>.{md,json,png}``. Returns the .md path."""
    runs, options = Path(runs), options or TextOptions()
    check_data(cfg, also=missing_ood(options.ood))  # every corpus, before the tokenizer and the training
    if options.device != "auto" and not options.load:
        cfg = with_overrides(cfg, [f"train.device={options.device}"])
    if is_prepared(cfg.data.corpus):  # held-out splits straight from the memory-mapped token files
        splits = {"train": [], **{split: prepared_tokens(cfg.data.corpus, split) for split in ("validation", "test")}}
    else:
        splits = corpus_splits(cfg.data.corpus)
    corpora = {"validation": splits["validation"], "test": splits["test"]}
    corpora.update({name: ood_documents(name) for name in options.ood})
    ebt, transformer, tokenizer, results = _train_or_load(cfg, runs, options, splits, progress)
    rows, uncertainty, flops, compressors = evaluate_text_models(
        ebt, transformer, tokenizer, corpora, options, progress
    )
    costs = {
        **{f"{k}_flops_per_token": v for k, v in flops.items()},
        "ebt_training_flops_per_token": training_step_flops(ebt, ebt.cfg.data.batch_size, ebt.cfg.data.seq_len),
        "transformer_training_flops_per_token": training_step_flops(
            transformer, ebt.cfg.data.batch_size, ebt.cfg.data.seq_len
        ),
    }
    data = ebt.cfg.data
    if data.corpus == "sotu":
        corpus, held_out = "State of the Union addresses", "held-out years (validation: years ending in 3, test: in 7)"
    elif is_prepared(data.corpus):
        corpus, held_out = f"the prepared tokens of {data.corpus}", "its validation.bin and test.bin (text.prepare)"
    else:
        corpus, held_out = f"the .txt files of {data.corpus}", "held-out files or text ends (text.corpora.split_folder)"
    tokenizer_kind = "a BPE trained on it" if data.tokenizer == "bpe" else "GPT-2's BPE"
    description = (
        f"train: {corpus} (training split), {tokenizer_kind} ({tokenizer.vocab_size} tokens), windows of "
        f"{data.seq_len} tokens; {options.windows} evaluation windows per corpus: {held_out}; out of distribution: "
        f"{', '.join(Path(name).name for name in options.ood) or '-'}"
    )
    steps, batch = ebt.cfg.train.steps, data.batch_size
    tokens = steps * batch * data.seq_len
    budget = f"same windows for both models: {steps} steps of {batch} x {data.seq_len} tokens ({tokens:,} tokens)"
    if results is not None:
        budget += "; " + ", ".join(f"{name} {r.seconds / 60:.1f} min" for name, r in results.items())
    meta = make_meta(next(ebt.parameters()).device, options.system2.seed, description, budget)
    return write_text_report(rows, uncertainty, costs, ebt, transformer, meta, out, options.stem, compressors)
