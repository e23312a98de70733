"""Evaluation metrics shipped inside the package (Hub metric scripts are unreachable offline).

Two ``evaluate`` modules live next to this file and are loaded **by path**:

- ``ni_exact_match/`` -- Natural Instructions exact match for classification
  (label extraction + normalisation), result key ``"exact_match"``;
- ``ni_rouge_l/`` -- word-level ROUGE-L F1 with stemming, max over references,
  result key ``"rouge_l"``.

Result keys equal the metric names (``TaskSpec.metric``), so
``load_metric(spec.metric).compute(...)[spec.metric]`` is the headline score.
All scores are on a 0-100 scale.

The plain-python helpers (re-exported from :mod:`selfguide_hf.metrics.core`) are the
one implementation both modules use; call them directly when ``evaluate`` is not
wanted. ``evaluate`` is imported only by :func:`load_metric`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from selfguide_hf.metrics.core import (
    compute_exact_match,
    compute_rouge_l,
    exact_match_score,
    extract_label,
    normalize_answer,
    rouge_l_score,
)

if TYPE_CHECKING:  # pragma: no cover
    import evaluate

__all__ = [
    "METRIC_NAMES",
    "compute_exact_match",
    "compute_rouge_l",
    "exact_match_score",
    "extract_label",
    "load_metric",
    "metric_path",
    "normalize_answer",
    "rouge_l_score",
]

_HERE = Path(__file__).resolve().parent

#: metric name (as in ``TaskSpec.metric``) -> folder of its ``evaluate`` module
_MODULE_DIRS: dict[str, Path] = {
    "exact_match": _HERE / "ni_exact_match",
    "rouge_l": _HERE / "ni_rouge_l",
}
METRIC_NAMES: tuple[str, ...] = tuple(_MODULE_DIRS)

_loaded: dict[str, evaluate.EvaluationModule] = {}
_lock = threading.Lock()


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in _MODULE_DIRS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
    return key


def metric_path(name: str) -> str:
    """The folder to pass to ``evaluate.load`` for metric ``name``."""
    return str(_MODULE_DIRS[_canonical(name)])


def load_metric(name: str) -> evaluate.EvaluationModule:
    """The ``evaluate`` module for ``"exact_match"`` or ``"rouge_l"``, loaded by path.

    Works offline: ``evaluate`` copies the module file into its modules cache
    (``$HF_MODULES_CACHE``, default ``$HF_HOME/modules``, which must be writable) and
    imports it from there; the copy imports the scoring code from this package.
    Loaded once per process (``keep_in_memory=True``, so no arrow cache files) and
    then reused; each ``compute`` call starts from an empty state.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    key = _canonical(name)
    with _lock:
        module = _loaded.get(key)
        if module is None:
            import evaluate

            module = evaluate.load(str(_MODULE_DIRS[key]), keep_in_memory=True)
            _loaded[key] = module
    return module
