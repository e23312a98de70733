"""The rows a model is scored on: a user's eval file (JSONL or CSV) or a bundled task's split.

Every row is checked (an input, an output, a label the task knows) and a bad one is named by
file and line, before any model loads; a subset is the same fixed draw on every run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from selfguide_hf.errors import UserError
from selfguide_hf.task import TaskSpec

DEFAULT_MAX_EVAL = 200  # rows a run scores (0 = all): the one declaration, read by settings
EVAL_SUBSET_SEED = 1234  # fixed, so the baseline and the tuned model see the same rows


class EvalDataError(UserError):
    """An eval file or split that cannot be scored; the message names file, row and field."""


# ------------------------------------------------------------------- data
def load_eval_rows(
    spec: TaskSpec,
    eval_file: str | os.PathLike[str] | None = None,
    split: str = "test",
    max_eval: int | None = DEFAULT_MAX_EVAL,
) -> list[dict[str, Any]]:
    """Rows `{"input": str, "output": list[str]}` from a user file or a bundled split.

    With `max_eval`, a fixed random subset (the same every run) rather than the
    head of the file, which is often sorted by source or label.
    """
    if eval_file is not None:
        rows = read_eval_file(Path(eval_file), spec)
    else:
        from selfguide_hf.bundled import bundled_task_names, load_eval_split

        if spec.name not in bundled_task_names():
            raise EvalDataError(
                f"task {spec.name!r} is not bundled, so it has no built-in {split} split; "
                "pass an eval file (JSONL or CSV with 'input' and 'output')"
            )
        rows = [{"input": r["input"], "output": list(r["output"])} for r in load_eval_split(spec.name, split)]
    if max_eval is not None and 0 < max_eval < len(rows):
        import random

        picked = sorted(random.Random(EVAL_SUBSET_SEED).sample(range(len(rows)), max_eval))
        rows = [rows[i] for i in picked]
    return rows


def read_eval_file(path: Path, spec: TaskSpec) -> list[dict[str, Any]]:
    """Read and validate a JSONL or CSV eval file (`output` may be a list of references)."""
    if not path.is_file():
        raise EvalDataError(f"{path}: no such eval file")
    suffix = path.suffix.lower()
    try:
        raw_rows = _read_rows(path, suffix)
    except UnicodeDecodeError as exc:
        raise EvalDataError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8"
        ) from None
    rows = [_validate_row(path, lineno, row, spec) for lineno, row in raw_rows]
    if not rows:
        raise EvalDataError(f"{path}: no rows")
    return rows


def _read_rows(path: Path, suffix: str) -> list[tuple[int, Any]]:
    if suffix in (".jsonl", ".json"):
        raw_rows = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            missing = {"input", "output"} - set(reader.fieldnames or [])
            if missing:
                raise EvalDataError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
            raw_rows = [(i + 2, dict(row)) for i, row in enumerate(reader)]
    else:
        raise EvalDataError(f"{path}: unsupported eval file type {suffix!r}; use .jsonl or .csv")
    return raw_rows


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from exc
    return rows


def _validate_row(path: Path, lineno: int, row: Any, spec: TaskSpec) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    if not isinstance(row, dict):
        raise EvalDataError(f"{where}: expected an object with 'input' and 'output'")
    for column in ("input", "output"):
        if column not in row:
            raise EvalDataError(f"{where}: missing field '{column}'")
    text = row["input"]
    if not isinstance(text, str) or not text.strip():
        raise EvalDataError(f"{where}: field 'input' is empty or not a string")
    refs = row["output"]
    if isinstance(refs, str) and refs.startswith("[") and path.suffix.lower() in (".csv", ".tsv"):
        with contextlib.suppress(json.JSONDecodeError):  # a plain string starting with "["
            refs = json.loads(refs)
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
        raise EvalDataError(f"{where}: field 'output' must be a non-empty string or list of strings")
    if spec.is_classification:
        for ref in refs:
            if spec.canonical_label(ref) is None:
                raise EvalDataError(
                    f"{where}: field 'output': {ref!r} is not one of the task's labels {list(spec.labels or ())}"
                )
    return {"input": text, "output": [r.strip() for r in refs]}


def majority_class(rows: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    """The most common first reference and its share (%), the score of always answering it."""
    if not rows:
        return None, None
    counts = Counter(row["output"][0].strip().lower() for row in rows)
    label, count = counts.most_common(1)[0]
    return label, 100.0 * count / len(rows)
