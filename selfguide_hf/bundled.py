"""Eval splits of the Natural Instructions tasks shipped inside the package.

Bundled so that examples, tests and benchmarks run offline; the data is built
by `dataset_scripts/build_bundled_tasks.py` and never read from `../shared`.
The tasks' specs are read by `selfguide_hf.task` (re-exported here).
"""

from __future__ import annotations

from typing import Any

from selfguide_hf.task import bundled_spec, bundled_task_dir, bundled_task_names

__all__ = ["SPLITS", "bundled_spec", "bundled_task_names", "load_eval_split"]

SPLITS: tuple[str, ...] = ("validation", "test")


def load_eval_split(name: str, split: str = "test") -> Any:
    """A bundled split as a `datasets.Dataset` with `input` and `output` (a list of references)."""
    from datasets import Dataset

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for bundled task {name!r}; known: {list(SPLITS)}")
    return Dataset.from_parquet(str(bundled_task_dir(name) / f"{split}.parquet"))
