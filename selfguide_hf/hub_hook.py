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

from selfguide_hf.fingerprints import stage_sources_hash

DATASET_NAME = "selfguide"
BUILDER_MODULE = "selfguide_hf.builder"


def code_hash() -> str:
    """Hash of every module the builder runs, so a code change never serves stale rows."""
    return stage_sources_hash(BUILDER_MODULE.rsplit(".", 1)[1])


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
