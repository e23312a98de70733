"""The Natural Instructions tasks shipped inside the package.

Bundled so that examples, tests and benchmarks run offline; the data is built
by `dataset_scripts/build_bundled_tasks.py` and never read from `../shared`.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from selfguide_hf.task import TaskSpec, TaskSpecError

SPLITS: tuple[str, ...] = ("validation", "test")


def _tasks_dir() -> Path:
    return Path(str(resources.files("selfguide_hf") / "data" / "tasks"))


@lru_cache(maxsize=1)
def _index() -> tuple[dict, ...]:
    index_file = _tasks_dir() / "index.json"
    if not index_file.is_file():
        raise TaskSpecError(
            f"{index_file}: bundled task index missing; rebuild it with "
            "`python dataset_scripts/build_bundled_tasks.py`"
        )
    return tuple(json.loads(index_file.read_text(encoding="utf-8")))


def bundled_task_names() -> list[str]:
    """Names of the bundled tasks, e.g. ``task190``."""
    return [entry["task"] for entry in _index()]


def _task_dir(name: str) -> Path:
    if name not in bundled_task_names():
        raise TaskSpecError(
            f"unknown bundled task {name!r}; known tasks: {', '.join(bundled_task_names())} "
            "(or pass a spec file or an NI task file path)"
        )
    return _tasks_dir() / name


@cache
def bundled_spec(name: str) -> TaskSpec:
    """The `TaskSpec` of a bundled task."""
    return TaskSpec.from_spec_file(_task_dir(name) / "spec.json")


def load_eval_split(name: str, split: str = "test"):
    """A bundled split as a `datasets.Dataset` with `input` and `output` (a list of references)."""
    from datasets import Dataset

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for bundled task {name!r}; known: {list(SPLITS)}")
    return Dataset.from_parquet(str(_task_dir(name) / f"{split}.parquet"))
