"""Short content hashes that key every cache: source code, rows, nested settings.

One place, so that the synthetic data, the adapter and each evaluation are
reused only when what they depend on is unchanged. Values go through
`datasets.fingerprint.Hasher` (the hash `datasets` keys its own caches with).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from importlib import resources
from typing import Any

__all__ = ["hash_value", "source_hash"]

# The modules whose code decides what a stage produces; a change to any of them redoes the stage.
TRAINING_SOURCES = ("prompts.py", "trainer.py", "labels.py", "task.py")
EVALUATION_SOURCES = (
    "prompts.py",
    "evaluation.py",
    "generation.py",
    "labels.py",
    "metrics/core.py",
    "task.py",
)


def hash_value(value: Any) -> str:
    """A 16-hex-digit hash of any picklable value (dicts, lists of rows, strings)."""
    from datasets.fingerprint import Hasher

    return Hasher.hash(value)[:16]


@functools.cache
def source_hash(names: Iterable[str]) -> str:
    """Hash of the package's own source files ``names`` (paths relative to the package)."""
    digest = hashlib.sha256()
    package = resources.files("selfguide_hf")
    for name in names:
        digest.update(name.encode())
        target = package
        for part in name.split("/"):
            target = target.joinpath(part)
        digest.update(target.read_bytes())
    return digest.hexdigest()[:16]
