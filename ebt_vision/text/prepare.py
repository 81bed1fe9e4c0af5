"""A corpus tokenised once into flat token files that training reads through a memory map (``ebt-vision
prepare-text``), so a corpus far larger than memory trains like a small one.

``prepare_corpus(["sotu"] or paths, out)`` writes into ``out``: ``train.bin``, ``validation.bin`` and ``test.bin``
(every document's tokens followed by the end-of-text token, as ``text.data.token_stream`` makes them; uint16 when
the vocabulary fits in 16 bits, else uint32), the tokenizer (``tokenizer.json`` for a trained BPE) and
``corpus.json`` (dtype, vocabulary, tokens and documents per split, sources). Inputs: ``sotu`` (its fixed year
split), folders of ``.txt`` and ``.jsonl`` files (one document per file, or per JSON line's ``"text"``), or such
files. Documents are split as ``text.corpora.split_folder`` does (document ``i`` to validation when ``i % 10 == 3``,
to test when ``i % 10 == 7``; fewer than ten ``.txt`` files: each file's last 20% of characters), so a folder
prepared here holds exactly the tokens the in-memory path trained on. Documents are read and encoded in chunks: the
memory needed is one chunk's, whatever the corpus size. The BPE is trained on the first ``tokenizer_sample_mb`` of
the training split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from .corpora import SPLITS, Document, corpus_splits, sotu_split_of, split_folder
from .tokenizer import TOKENIZER_FILE, BPETokenizer, GPT2Tokenizer, TextTokenizer

META = "corpus.json"
FORMAT = "ebt-vision tokens 1"
CHUNK_CHARACTERS = 8_000_000  # documents encoded together (the tokenizers library encodes a batch in parallel)


@dataclass(frozen=True)
class PrepareOptions:
    tokenizer: str = "bpe"  # "bpe": trained on the training split; "gpt2": GPT-2's BPE
    vocab_size: int = 4096  # the trained BPE's size
    tokenizer_from: str = ""  # a folder holding a tokenizer.json to use instead of training one
    tokenizer_sample_mb: float = 200.0  # the BPE is trained on the first this many MB of the training split


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def is_prepared(corpus: str) -> bool:
    """Whether ``corpus`` names a folder written by ``prepare_corpus``."""
    return corpus not in ("sotu", "") and (Path(corpus).expanduser() / META).is_file()


def _files(paths: Iterable[str]) -> list[Path]:
    found = []
    for item in map(lambda p: Path(p).expanduser(), paths):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        elif item.is_file():
            found.append(item)
        else:
            raise UserError(f"no such corpus file or folder: {item}")
    if not found:
        raise UserError(f"no .txt or .jsonl files found in {', '.join(map(str, paths))}")
    return found


def _read_documents(files: list[Path]) -> Iterator[Document]:
    for path in files:
        try:
            if path.suffix == ".jsonl":
                with path.open(encoding="utf-8") as handle:
                    for number, line in enumerate(handle):
                        if line.strip():
                            yield Document(f"{path.name}:{number}", json.loads(line)["text"])
            else:
                yield Document(path.name, path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UserError(f"{path}: every line must be a JSON object with a 'text' string ({error})") from None


def labelled_documents(sources: list[str]) -> Callable[[], Iterator[tuple[str, Document]]]:
    """A function that reads the corpus once more: (split, document) pairs. ``sotu`` by year, few ``.txt`` files in
    memory by characters, anything else streamed and split by document index."""
    if sources == ["sotu"] or (len(files := _files(sources)) < 10 and all(p.suffix == ".txt" for p in files)):
        splits = corpus_splits("sotu") if sources == ["sotu"] else split_folder(list(_read_documents(files)))
        return lambda: ((split, document) for split in SPLITS for document in splits[split])
    return lambda: ((sotu_split_of(i), document) for i, document in enumerate(_read_documents(files)))


def _sample(documents: Iterable[Document], megabytes: float) -> Iterator[Document]:
    budget = int(megabytes * 1e6)
    for document in documents:
        if budget <= 0:
            return
        budget -= len(document.text)
        yield document


def build_prepared_tokenizer(training: Iterable[Document], options: PrepareOptions) -> TextTokenizer:
    if options.tokenizer_from:
        return BPETokenizer.load(options.tokenizer_from)
    if options.tokenizer == "gpt2":
        return GPT2Tokenizer()
    if options.tokenizer != "bpe":
        raise UserError(f"tokenizer must be bpe or gpt2, got {options.tokenizer!r}")
    return BPETokenizer.train(list(_sample(training, options.tokenizer_sample_mb)), options.vocab_size)


class TokenWriter:
    """Documents -> a flat token file (each document followed by end-of-text), encoded in chunks and written
    atomically (beside the file, then renamed: processes writing the same file never see half of it)."""

    def __init__(self, tokenizer: TextTokenizer, path: str | Path) -> None:
        self.tokenizer, self.path = tokenizer, Path(path)
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.handle = self.partial.open("wb")
        self.chunk: list[str] = []
        self.size = self.tokens = self.documents = 0

    def add(self, document: Document) -> None:
        self.chunk.append(document.text)
        self.size += len(document.text)
        if self.size >= CHUNK_CHARACTERS:
            self._flush()

    def _flush(self) -> None:
        for ids in self.tokenizer.encode_batch(self.chunk):
            np.asarray([*ids, self.tokenizer.end_of_text], dtype=self.dtype).tofile(self.handle)
            self.tokens += len(ids) + 1
        self.documents += len(self.chunk)
        self.chunk, self.size = [], 0

    def close(self) -> tuple[int, int]:
        """-> (tokens, documents) written."""
        self._flush()
        self.handle.close()
        os.replace(self.partial, self.path)
        return self.tokens, self.documents


def write_tokens(tokenizer: TextTokenizer, documents: Iterable[Document], path: str | Path) -> tuple[int, int]:
    """Encode ``documents`` into the flat token file ``path``. -> (tokens, documents)."""
    writer = TokenWriter(tokenizer, path)
    for document in documents:
        writer.add(document)
    return writer.close()


def prepare_corpus(sources: list[str], out: str | Path, options: PrepareOptions = PrepareOptions()) -> dict:
    """Tokenise ``sources`` into ``out`` (see the module docstring). -> the ``corpus.json`` contents."""
    out = Path(out)
    corpus = labelled_documents(list(sources))
    tokenizer = build_prepared_tokenizer((d for split, d in corpus() if split == "train"), options)
    tokenizer.save(out)
    writers = {split: TokenWriter(tokenizer, out / f"{split}.bin") for split in SPLITS}
    for split, document in corpus():
        writers[split].add(document)
    counts = {split: writer.close() for split, writer in writers.items()}
    meta = {
        "format": FORMAT,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "end_of_text": tokenizer.end_of_text,
        "tokens": {split: tokens for split, (tokens, _) in counts.items()},
        "documents": {split: documents for split, (_, documents) in counts.items()},
        "sources": [str(s) for s in sources],
    }
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_meta(folder: str | Path) -> dict:
    path = Path(folder).expanduser() / META
    if not path.is_file():
        raise UserError(f"{folder} is not a prepared corpus (no {META}); make one with ebt-vision prepare-text")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not an ebt-vision token folder ({meta.get('format')!r})")
    return meta


def open_tokens(path: str | Path, dtype: str | np.dtype) -> np.ndarray:
    """A flat token file as a read-only memory map: (N,) of ``dtype``; nothing is read until windows are taken."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"token file not found: {path}")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def prepared_tokens(folder: str | Path, split: str) -> np.ndarray:
    """One split of a prepared corpus, memory-mapped."""
    return open_tokens(Path(folder).expanduser() / f"{split}.bin", read_meta(folder)["dtype"])


def prepared_tokenizer(folder: str | Path) -> TextTokenizer:
    """The tokenizer a prepared corpus was encoded with."""
    meta = read_meta(folder)
    if meta["tokenizer"] == "gpt2":
        return GPT2Tokenizer()
    if not (Path(folder).expanduser() / TOKENIZER_FILE).is_file():
        raise UserError(f"{folder} has no {TOKENIZER_FILE}")
    return BPETokenizer.load(Path(folder).expanduser())
