"""Task inputs from a user's own unlabeled text, retrieved for the task (ReBase, arXiv 2407.05463).

Users often hold in-domain text (tickets, reviews, questions) and no labels.
The rows most relevant to the task are found with BM25 (`bm25s`), the query
being the instruction and the demonstration inputs, and then either used as
task inputs directly (``inputs``) or rewritten by the model into one new input
in the demonstrations' format (``rewrite``); both then go through the same
input filters and annotation as generated inputs.

A corpus is JSONL, JSON, CSV/TSV, Parquet, plain text (one row per line) or a
folder saved with `datasets.save_to_disk`; ``field`` names the text column.
Its fingerprint (the files' bytes) keys the synthetic data's cache, so an
edited corpus is never served from an old cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from selfguide_hf.labels import normalize_answer
from selfguide_hf.task import TaskSpec

__all__ = ["CorpusError", "corpus_fingerprint", "load_corpus", "rank_corpus"]

TEXT_SUFFIXES = (".txt", ".text")


class CorpusError(ValueError):
    """A corpus that cannot be used; the message names the file and the field."""


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def corpus_fingerprint(path: str | os.PathLike[str]) -> str:
    """A short hash of the corpus's bytes (every file of a saved folder)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in _files(root):
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _read(path: Path) -> Any:
    """The corpus as a `datasets.Dataset` (plain text: one row per line, in column ``text``)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if path.is_dir():
        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if "train" not in data:
                raise CorpusError(f"{path}: a saved DatasetDict without a 'train' split (has {list(data)})")
            data = data["train"]
        return data
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(str(path))
    if suffix in (".csv", ".tsv"):
        return Dataset.from_csv(str(path), sep="\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    if suffix in TEXT_SUFFIXES:
        lines = path.read_text(encoding="utf-8").splitlines()
        return Dataset.from_dict({"text": lines})
    raise CorpusError(
        f"{path}: unsupported corpus type {suffix!r}; use .jsonl, .json, .csv, .tsv, .parquet, .txt or a saved folder"
    )


def load_corpus(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """The corpus's non-empty texts in ``field``, stripped, duplicates (after normalisation) removed."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such corpus file or folder")
    try:
        data = _read(path)
    except CorpusError:
        raise
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except Exception as exc:  # a malformed JSON/CSV/Parquet file: datasets' own error, on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorpusError(f"{path}: cannot read the corpus ({type(exc).__name__}: {first})") from None
    if field not in data.column_names:
        raise CorpusError(
            f"{path}: no field {field!r} (it has {data.column_names}); pass the text column's name"
        )
    texts, seen = [], set()
    for value in data[field]:
        if not isinstance(value, str) or not value.strip():
            continue
        key = normalize_answer(value)
        if key and key not in seen:
            seen.add(key)
            texts.append(value.strip())
    if not texts:
        raise CorpusError(f"{path}: field {field!r} holds no non-empty text")
    return texts


def rank_corpus(texts: list[str], spec: TaskSpec) -> list[int]:
    """Indices of ``texts`` by BM25 relevance to the task (instruction and demonstration inputs), best first.

    Rows that share no word with the query come last, in corpus order.
    """
    import bm25s

    query = " ".join([spec.instruction, *(d.input for d in spec.demonstrations)])
    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    found, scores = retriever.retrieve(
        bm25s.tokenize([query], stopwords="en", show_progress=False), k=len(texts), show_progress=False
    )
    ranked = sorted(zip(found[0].tolist(), scores[0].tolist()), key=lambda pair: (-pair[1], pair[0]))
    return [index for index, _ in ranked]
