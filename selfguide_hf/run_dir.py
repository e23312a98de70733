"""A run's folders on disk: what identifies a result, and when a finished one may be reused.

An adapter is reused only when *everything it depends on* is unchanged: the
task's content, the base weights, the synthetic rows it was trained on, every
training setting that changes the weights (method, epochs, learning rate,
LoRA and quantization settings, max length, seed, ...), the number of
processes and the code that renders and tokenizes the rows. That identity is
written into ``selfguide_run.json`` with ``complete: false`` when training
starts and rewritten with ``complete: true`` and the size and hash of every
saved file once the save has succeeded. So a run killed mid-save, a
truncated weight file or another setting is never taken as finished: the
rerun says which fields changed and trains again.

The recipe refuses an output folder that holds a *different run* (another
task, base model or method) unless told to overwrite it; the `selfguide`
command owns its adapter folder and always retrains there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from selfguide_hf.methods import TrainingConfigError

__all__ = [
    "MANIFEST_NAME",
    "AdapterMismatchError",
    "RunMismatchError",
    "adapter_state",
    "describe_changes",
    "file_digests",
    "read_manifest",
    "write_json_atomic",
]

MANIFEST_NAME = "selfguide_run.json"
# Keys of the manifest that say *which* run a folder holds; another value means another run.
RUN_IDENTITY_KEYS: tuple[str, ...] = ("task", "task_fingerprint", "weights_fingerprint", "method")
# What a trainer leaves in an output directory; a folder holding any of these is a run.
WEIGHT_FILES: tuple[str, ...] = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
)
RUN_ARTIFACTS: tuple[str, ...] = (*WEIGHT_FILES, "trainer_state.json", "training_args.bin", MANIFEST_NAME)
# Files whose hash a finished manifest records (sharded full models add model-*.safetensors).
VERIFIED_PATTERNS: tuple[str, ...] = (
    "adapter_model.*",
    "adapter_config.json",
    "model*.safetensors",
    "config.json",
)
HASH_LIMIT_BYTES = (
    1 << 30
)  # larger files are checked by size only (hashing a 7B model on every rerun is minutes)


class RunMismatchError(TrainingConfigError):
    """The output directory holds another run (other task, base model or method)."""


class RunLockedError(TrainingConfigError):
    """Another process is running in the same output folder."""


class AdapterMismatchError(TrainingConfigError):
    """An adapter was trained on another base model than the one it is being loaded onto."""


# ------------------------------------------------------------------ locks
LOCK_NAME = ".selfguide.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "run") -> Iterator[None]:
    """Hold ``<folder>/.selfguide.lock`` for the whole block, or fail at once if another process holds it.

    Two runs writing one folder would both work to the end and the last writer
    would win, mixing their files; a lock makes the second one stop with a clear line.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"{folder}: another {what} holds this folder (lock {folder / LOCK_NAME}); wait for it to "
            "finish or choose another output folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------ files
def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON through a temporary file and a rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _digest(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > HASH_LIMIT_BYTES:
        return {"size": size}
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return {"size": size, "sha256": digest.hexdigest()}


def file_digests(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Size and sha256 of the weight and config files a finished run saved."""
    folder = Path(folder)
    found = {p for pattern in VERIFIED_PATTERNS for p in folder.glob(pattern) if p.is_file()}
    return {p.name: _digest(p) for p in sorted(found)}


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # unreadable: treated as no finished run, and retrained
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------- identity
def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def describe_changes(saved: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """``"training.learning_rate: 0.0002 -> 0.0001"`` for every field that differs."""
    before, after = _flatten(saved or {}), _flatten(wanted)
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def adapter_state(folder: str | os.PathLike[str], identity: dict[str, Any]) -> tuple[bool, list[str]]:
    """(finished and reusable, why not): the manifest is complete, same identity, files intact."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False, ["no finished run in this folder"]
    if not manifest.get("complete"):
        return False, ["the previous training did not finish"]
    changes = describe_changes(manifest.get("identity"), identity)
    if changes:
        return False, changes
    saved_files = manifest.get("files") or {}
    if not saved_files:
        return False, ["the manifest lists no saved files"]
    for name, expected in saved_files.items():
        path = Path(folder) / name
        if not path.is_file():
            return False, [f"{name} is missing"]
        if path.stat().st_size != expected.get("size") or (
            "sha256" in expected and _digest(path).get("sha256") != expected["sha256"]
        ):
            return False, [f"{name} is damaged (size or hash differs from the saved run)"]
    return True, []


# ---------------------------------------------------------- output folder
def holds_run(folder: Path) -> bool:
    return folder.is_dir() and (
        any((folder / name).exists() for name in RUN_ARTIFACTS) or any(folder.glob("checkpoint-*"))
    )


def run_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
        for key in RUN_IDENTITY_KEYS
        if saved.get(key) != wanted.get(key)
    ]


def check_output_dir(output_dir: str | os.PathLike[str], manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse an output directory that holds another run (read-only: every process fails alike)."""
    folder = Path(output_dir)
    if overwrite or not holds_run(folder):
        return
    saved = read_manifest(folder)
    if saved is None:
        raise RunMismatchError(
            f"{folder}: holds training output that is not a self-guide run (no readable {MANIFEST_NAME}); "
            "choose another --output_dir or pass --overwrite_output_dir true to replace it"
        )
    diffs = run_differences(saved, manifest)
    if diffs:
        raise RunMismatchError(
            f"{folder}: holds a different run ({'; '.join(diffs)}); choose another --output_dir, "
            "or pass --overwrite_output_dir true to replace it"
        )


def clear_run(folder: Path, extra: Iterable[str] = ()) -> None:
    """Remove what a previous run left (checkpoints, weights, manifest, cards); other files stay."""
    for child in folder.glob("checkpoint-*"):
        if child.is_dir():
            shutil.rmtree(child)
    for name in (*RUN_ARTIFACTS, "README.md", *extra):
        target = folder / name
        if target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
    for shard in folder.glob("model-*.safetensors"):
        shard.unlink()


def remove_partial_saves(folder: Path) -> list[Path]:
    """Remove the temporary save folders a killed training left beside ``folder`` (``.adapter.saving-*``).

    Called with the run folder locked, so no other process is saving there.
    """
    removed = []
    for partial in folder.parent.glob(f".{folder.name}.saving*"):
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def move_saved_files(saved: Path, folder: Path) -> None:
    """Move every file of a finished save into ``folder`` (one rename each), then drop ``saved``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in saved.iterdir():
        if path.is_file():
            os.replace(path, folder / path.name)
    shutil.rmtree(saved, ignore_errors=True)


# --------------------------------------------------------------- adapters
def check_adapter_base(adapter_dir: str | os.PathLike[str], weights: str, given: str | None) -> None:
    """Raise `AdapterMismatchError` when the adapter was trained on other base weights.

    ``weights`` is the base model's weights fingerprint now. Compares the one
    recorded in the run manifest (checkpoints look one folder up); without a
    manifest there is nothing to compare, and the adapter loads as it is.
    """
    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").is_file():
        return  # a full-finetuning checkpoint: no separate base model
    manifest = read_manifest(folder) or read_manifest(folder.parent)
    if manifest and manifest.get("weights_fingerprint") and manifest["weights_fingerprint"] != weights:
        raise AdapterMismatchError(
            f"{folder}: adapter trained on base model {manifest.get('base_model')!r} "
            f"(weights {manifest['weights_fingerprint']}), but the base model now is {given!r} "
            f"(weights {weights}); pass the same --model, or train a new adapter in another --output_dir"
        )


def checkpoint_step(folder: str | os.PathLike[str]) -> int | None:
    """The global step a checkpoint holds, or None when it is incomplete (killed while saving).

    `Trainer` writes ``trainer_state.json`` last, so a readable one means the
    weights, optimizer and RNG states before it are complete.
    """
    state = Path(folder) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_complete_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete ``checkpoint-N`` folder (transformers' own pick ignores half-written ones)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.glob("checkpoint-*"):
        suffix = child.name.split("-", 1)[1]
        if child.is_dir() and suffix.isdigit() and checkpoint_step(child) is not None:
            found.append((int(suffix), child))
    return str(max(found)[1]) if found else None


def resume_checkpoint(value: Any, output_dir: str) -> str | None:
    """--resume_from_checkpoint: a folder, or true/last for the newest checkpoint in --output_dir."""
    if value in (None, "", False) or str(value).lower() in ("false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "latest", "yes", "1") or value is True:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise TrainingConfigError(
                f"--resume_from_checkpoint {value}: no checkpoint-* folder in {output_dir}; "
                "checkpoints are written with --save_strategy steps --save_steps N"
            )
        return last
    if not Path(str(value)).is_dir():
        raise TrainingConfigError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if checkpoint_step(value) is None:
        raise TrainingConfigError(
            f"--resume_from_checkpoint {value}: incomplete checkpoint (no readable trainer_state.json); "
            "pass an earlier one or 'last'"
        )
    return str(value)


def sanitized_command(argv: Sequence[str]) -> str:
    """The command line to reproduce a run, without any token value."""
    import shlex

    parts: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        key = arg.split("=", 1)[0].lower()
        if key.startswith("--") and "token" in key:
            skip = "=" not in arg
            continue
        parts.append(arg)
    return shlex.join(parts)
