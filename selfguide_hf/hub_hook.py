"""Teach ``datasets.load_dataset`` the name "selfguide" (installed by ``import selfguide_hf``).

datasets 4+ dropped loading scripts, so a plugin cannot ship a script the
Hub would find. Instead, `install()` wraps ``datasets.load.dataset_module_factory``
(the one function ``load_dataset_builder`` asks to turn a name into a builder
module) so that exactly the name "selfguide" resolves to
:mod:`selfguide_hf.builder`; every other name goes to the original function.

This touches a datasets internal on purpose and nowhere else;
``tests/test_builder.py::test_hook_relies_on_datasets_internals`` fails loudly
if the internals it relies on change.
"""

from __future__ import annotations

import functools
from typing import Any

from selfguide_hf.fingerprints import source_hash

DATASET_NAME = "selfguide"
BUILDER_MODULE = "selfguide_hf.builder"
# The code that decides what rows a config produces; its hash keys the datasets cache.
_HASHED_SOURCES = (
    "builder.py",
    "synthesis.py",
    "annotation.py",
    "synthesis_config.py",
    "calibration.py",
    "checkpoints.py",
    "corpus.py",
    "engines.py",
    "vllm_engine.py",
    "distributed.py",
    "filters.py",
    "labels.py",
    "prompts.py",
    "generation.py",
    "task.py",
)


def code_hash() -> str:
    """Hash of the modules that make the data, so a code change never serves stale rows."""
    return source_hash(_HASHED_SOURCES)


def install() -> None:
    """Route ``load_dataset("selfguide", ...)`` to our builder; idempotent."""
    import datasets.load as load

    original = load.dataset_module_factory
    if getattr(original, "_selfguide_hook", False):
        return

    @functools.wraps(original)
    def dataset_module_factory(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == DATASET_NAME:
            return load.DatasetModule(BUILDER_MODULE, code_hash(), {"dataset_name": DATASET_NAME})
        return original(path, *args, **kwargs)

    dataset_module_factory._selfguide_hook = True  # type: ignore[attr-defined]
    load.dataset_module_factory = dataset_module_factory
