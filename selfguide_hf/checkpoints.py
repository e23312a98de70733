"""Round checkpoints of a synthesis run: one JSON file per finished round, written atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3


class RoundCheckpoints:
    """One JSON file per finished round in ``directory``, each written atomically.

    A file exists only once its round is complete (write to a temporary file,
    fsync, rename), so a run killed at any moment leaves only whole rounds.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, fingerprint: str, is_writer: bool = True):
        self.directory = Path(directory) if directory is not None else None
        self.fingerprint = fingerprint
        self.is_writer = is_writer

    def path(self, round_index: int) -> Path:
        assert self.directory is not None
        return self.directory / f"round_{round_index:05d}.json"

    def load(self, num_rounds: int) -> list[dict[str, Any]]:
        """The finished rounds 0..k-1 (stops at the first missing or unreadable one)."""
        if self.directory is None:
            return []
        rounds = []
        for r in range(num_rounds):
            path = self.path(r)
            if not path.is_file():
                break
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                logger.warning(
                    "ignoring unreadable checkpoint %s (%s); regenerating from round %d", path, exc, r
                )
                break
            if data.get("fingerprint") != self.fingerprint or data.get("version") != CHECKPOINT_VERSION:
                logger.warning(
                    "checkpoint %s belongs to another configuration; regenerating from round %d", path, r
                )
                break
            rounds.append(data)
        return rounds

    def save(self, round_index: int, data: dict[str, Any]) -> None:
        if self.directory is None or not self.is_writer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint, **data}
        fd, tmp = tempfile.mkstemp(prefix=".round-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(round_index))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
