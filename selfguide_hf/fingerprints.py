"""Short content hashes that key every cache: source code, rows, nested settings.

One place, so that the synthetic data, the adapter and each evaluation are
reused only when what they depend on is unchanged. Values go through
`datasets.fingerprint.Hasher` (the hash `datasets` keys its own caches with).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["hash_value", "source_hash", "stage_sources", "stage_sources_hash"]


def hash_value(value: Any) -> str:
    """A 16-hex-digit hash of any picklable value (dicts, lists of rows, strings)."""
    from datasets.fingerprint import Hasher

    return Hasher.hash(value)[:16]


def source_hash(names: Iterable[str], root: Path | None = None) -> str:
    """Hash of the package's own source files ``names`` (paths relative to the package, or to ``root``)."""
    return _installed_source_hash(tuple(names)) if root is None else _source_hash(tuple(names), root)


@functools.cache
def _installed_source_hash(names: tuple[str, ...]) -> str:  # the installed code does not change in a run
    return _source_hash(names, resources.files("selfguide_hf"))


def _source_hash(names: tuple[str, ...], package: Any) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        target = package
        for part in name.split("/"):
            target = target.joinpath(part)
        digest.update(target.read_bytes())
    return digest.hexdigest()[:16]


PACKAGE = "selfguide_hf"


def _module_files(root: Path, dotted: str) -> list[str]:
    """The source files of a package module (``x.py``, or every file of a sub-package)."""
    parts = dotted.split(".")
    folder = root.joinpath(*parts)
    if folder.is_dir():
        return sorted(str(p.relative_to(root)) for p in folder.rglob("*.py"))
    file = root.joinpath(*parts[:-1], parts[-1] + ".py")
    return [str(file.relative_to(root))] if file.is_file() else []


def _imported_modules(source: str, package: str) -> set[str]:
    """Package modules a file imports anywhere in it (lazy imports in functions count: they run)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(package + "."):
                found.add(name[len(package) + 1 :])
    return found


def stage_sources(stage_module: str, root: Path | None = None) -> tuple[str, ...]:
    """Every package source file ``stage_module`` runs: itself and what it imports, transitively.

    Derived from the code, so a module a stage starts importing keys its cache at once
    (a hand-kept list once left out the module that loads the model for training).
    """
    root = Path(str(resources.files(PACKAGE))) if root is None else root
    seen: set[str] = set()
    todo = [stage_module]
    files: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _module_files(root, module):
            if name in files:
                continue
            files.add(name)
            for imported in _imported_modules((root / name).read_text(encoding="utf-8"), PACKAGE):
                todo.append(imported)
    return tuple(sorted(Path(f).as_posix() for f in files))


def stage_sources_hash(stage_module: str, root: Path | None = None) -> str:
    """The hash of every source file ``stage_module`` runs (see `stage_sources`)."""
    return source_hash(stage_sources(stage_module, root), root)
