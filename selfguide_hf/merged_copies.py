"""Merged copies of a model and its adapter, written for vLLM where it cannot serve the adapter.

A copy is the size of the model (~15 GB for 7B) and lives in the system temp folder, outside any
run folder, so it records the process that writes it; a later run removes every copy whose
process is gone (a kill -9 runs no cleanup).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["MERGED_PREFIX", "OWNER_FILE", "remove_stale_merged_copies"]

MERGED_PREFIX = "selfguide-merged-"  # a merged base + adapter for vLLM, in the system temp folder
OWNER_FILE = "selfguide_owner.pid"  # the process that writes it: a copy whose process is gone is stale


def remove_stale_merged_copies(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove merged copies left by killed runs (~15 GB each for a 7B model); returns what was removed.

    A copy is stale when the process named in its owner file no longer runs, or when it has no
    owner file and is over an hour old (a copy being written right now always has one).
    """
    import shutil
    import tempfile
    import time

    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(MERGED_PREFIX + "*"):
        if not folder.is_dir():
            continue
        owner = folder / OWNER_FILE
        try:
            alive = owner.is_file() and _process_alive(int(owner.read_text().strip() or 0))
            stale = not alive and (owner.is_file() or time.time() - folder.stat().st_mtime > 3600)
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("removed %s, left by a run that was killed", folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
