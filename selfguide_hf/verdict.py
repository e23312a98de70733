"""Does a self-guided model beat its few-shot base? A paired bootstrap, the trivial baseline, one sentence.

A delta on a few hundred rows is noisy (+2 on 200 rows is within it), a model
can gain by learning the answer format alone, and a classification model can
sit below the score of always answering the majority class. So every report
carries the 95 % interval of the delta from a paired bootstrap over the
evaluation rows (both models scored on the same rows, resampled together),
the trivial baseline beside both scores, and the share of answers that are a
label (or that copy the input), and opens with a sentence built from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DEFAULT_RESAMPLES", "paired_bootstrap", "verdict_sentence", "verdict_word"]

DEFAULT_RESAMPLES = 2000
# Fewer training pairs than this is called out in the verdict, whatever --min-pairs let through.
FEW_PAIRS = 16
DEFAULT_SEED = 20240717  # fixed: the same rows give the same interval on every machine


def paired_bootstrap(
    base: Sequence[float],
    tuned: Sequence[float],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean of ``tuned - base`` per row and its percentile interval over ``resamples`` row resamples."""
    import numpy as np

    if len(base) != len(tuned):
        raise ValueError(f"paired bootstrap needs the same rows: {len(base)} vs {len(tuned)} scores")
    if not base:
        raise ValueError("paired bootstrap needs at least one row")
    diffs = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "delta": round(float(diffs.mean()), 2),
        "low": round(float(low), 2),
        "high": round(float(high), 2),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "rows": len(diffs),
    }


def verdict_word(interval: dict[str, Any]) -> str:
    """``improved`` when the whole interval is above 0, ``worse`` when below, else ``no clear change``."""
    if interval["low"] > 0:
        return "improved"
    if interval["high"] < 0:
        return "worse"
    return "no clear change"


def _side(score: float, trivial: float) -> str:
    return "above" if score > trivial else ("at" if score == trivial else "below")


def verdict_sentence(report: dict[str, Any]) -> str:
    """One sentence: the scores, the delta with its interval and word, the trivial baseline, the format share."""
    base, tuned = report["baseline"], report["self_guided"]
    interval = report["interval"]
    parts = [
        f"self-guided {tuned['score']:.1f} vs few-shot {base['score']:.1f}: {interval['delta']:+.1f}, "
        f"{round(100 * interval['level'])} % CI {interval['low']:+.1f} to {interval['high']:+.1f}, "
        f"{verdict_word(interval)}"
    ]
    trivial = report.get("trivial_baseline")
    if trivial:
        sides = {_side(base["score"], trivial["score"]), _side(tuned["score"], trivial["score"])}
        if len(sides) == 1:
            where = f"both {sides.pop()} the {trivial['name']} score {trivial['score']:.1f}"
        else:
            where = (
                f"few-shot {_side(base['score'], trivial['score'])} and self-guided "
                f"{_side(tuned['score'], trivial['score'])} the {trivial['name']} score {trivial['score']:.1f}"
            )
        parts.append(where)
    if tuned.get("label_share") is not None:
        parts.append(
            f"{tuned['label_share']:.1f} % of self-guided answers are labels, {base['label_share']:.1f} % of few-shot's"
        )
    elif tuned.get("copy_share") is not None:
        parts.append(
            f"self-guided copies the input in {tuned['copy_share']:.1f} % of answers, few-shot in {base['copy_share']:.1f} %"
        )
    pairs = report.get("training_pairs")
    if pairs is not None and pairs < FEW_PAIRS:
        parts.append(f"trained on {pairs} pair{'s' if pairs != 1 else ''}, too few to mean anything")
    return "; ".join(parts)
