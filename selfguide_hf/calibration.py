"""Label maths for annotation by likelihood: calibrating label scores, balanced assignment, class balance.

Pure functions on lists of floats (no model, no torch), so each rule can be
tested against a direct computation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

__all__ = [
    "assign_balanced_labels",
    "balance_classes",
    "balanced_prior",
    "calibrate_label_scores",
    "mean_columns",
    "softmax",
]

BALANCED_ITERATIONS = 100


def calibrate_label_scores(
    scores: Sequence[Sequence[float]], method: str, fixed_prior: Sequence[float] | None = None
) -> tuple[list[list[float]], list[float] | None]:
    """Label probabilities of every input after dividing out a label prior, and that prior.

    ``scores`` are label log-likelihoods, one row per input. ``batch`` divides by
    the mean probability over these inputs, ``balanced`` by the prior that
    spreads them evenly over the labels, ``content_free`` by ``fixed_prior``
    (computed by the caller), ``none`` by nothing.
    """
    probs = [softmax(row) for row in scores]
    if method == "none":
        return probs, None
    if method == "batch":
        prior = mean_columns(probs)
    elif method == "balanced":
        prior = balanced_prior(probs)
    elif method == "content_free" and fixed_prior is not None:
        prior = list(fixed_prior)
    else:
        raise ValueError(f"label_calibration: unknown method {method!r} or missing prior")
    return [_normalize([p / max(q, 1e-12) for p, q in zip(row, prior)]) for row in probs], prior


def assign_balanced_labels(probs: Sequence[Sequence[float]]) -> list[int]:
    """A label per input with class sizes as equal as possible, each input where it fits best.

    Pairs (input, label) are taken in order of probability, best first; a label
    stops taking inputs at its quota (ceil(n / labels)). Balancing downsamples
    every class to the smallest one, so with plain argmax a skewed split
    (task190: 5 / 24 / 19) throws most inputs away; here each class gets the
    inputs that are most its own and nearly nothing is dropped.
    """
    if not probs:
        return []
    quota = math.ceil(len(probs) / len(probs[0]))
    pairs = sorted(
        ((p, i, j) for i, row in enumerate(probs) for j, p in enumerate(row)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    choice: list[int] = [-1] * len(probs)
    taken = [0] * len(probs[0])
    for _, i, j in pairs:
        if choice[i] < 0 and taken[j] < quota:
            choice[i] = j
            taken[j] += 1
    return choice  # the quotas add up to at least n, so every input has a label


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return _normalize(exps)


def balanced_prior(probs: Sequence[Sequence[float]], iterations: int = BALANCED_ITERATIONS) -> list[float]:
    """The label prior that, divided out, gives every label the same total probability.

    Batch calibration divides by the mean probability once; repeating it
    (Sinkhorn scaling) converges to the prior under which the inputs spread
    evenly over the labels, so downsampling to the smallest class keeps most.
    """
    prior = [1.0] * len(probs[0])
    for _ in range(iterations):
        scaled = [_normalize([p / max(q, 1e-12) for p, q in zip(row, prior)]) for row in probs]
        mass = mean_columns(scaled)
        prior = [q * m * len(prior) for q, m in zip(prior, mass)]
    return _normalize(prior)


def mean_columns(rows: Sequence[Sequence[float]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*rows)]


def _normalize(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values] if total > 0 else [1.0 / len(values)] * len(values)


def balance_classes(rows: list[dict[str, Any]], method: str, seed: int) -> list[dict[str, Any]]:
    """Downsample every class present to the size of the smallest (seeded); keep row order."""
    if method == "none" or not rows:
        return list(rows)
    by_class: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_class.setdefault(row["output"], []).append(i)
    smallest = min(len(ix) for ix in by_class.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted(by_class):
        keep.update(rng.sample(by_class[label], smallest))
    return [row for i, row in enumerate(rows) if i in keep]
