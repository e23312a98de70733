"""Does a self-guided model beat its few-shot base? A paired bootstrap, the trivial baseline, one sentence.

A delta on a few hundred rows is noisy (+2 on 200 rows is within it), a model
can gain by learning the answer format alone, and a classification model can
sit below the score of always answering the majority class. So every report
carries the 95 % interval of the delta from a paired bootstrap over the
evaluation rows (both models scored on the same rows, resampled together),
the trivial baseline beside both scores, and the share of answers that are a
label (or that copy the input), and opens with a sentence built from them.
With several synthesis-and-training draws (`--draws N`) the interval also
covers the draw-to-draw spread, as a t interval over the draws: a bootstrap
over 3 draws was too narrow to cover a second set of 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

__all__ = [
    "DEFAULT_RESAMPLES",
    "draws_bootstrap",
    "draws_halfwidth",
    "paired_bootstrap",
    "t_quantile",
    "verdict_sentence",
    "verdict_word",
    "widen",
]

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
    """Mean of ``tuned - base`` per row and its percentile interval over ``resamples`` row resamples.

    The one-draw case of `draws_bootstrap` (the same resamples, the same numbers).
    """
    if len(base) != len(tuned):
        raise ValueError(f"paired bootstrap needs the same rows: {len(base)} vs {len(tuned)} scores")
    if not base:
        raise ValueError("paired bootstrap needs at least one row")
    interval = draws_bootstrap([(base, tuned)], resamples=resamples, seed=seed, level=level)
    drop = ("draws", "draw_deltas", "draws_disagree", "rows_interval", "draws_halfwidth", "draws_df")
    return {k: v for k, v in interval.items() if k not in drop}


def verdict_word(interval: dict[str, Any]) -> str:
    """``improved`` when the whole interval is above 0, ``worse`` when below, else ``no clear change``."""
    if interval["low"] > 0:
        return "improved"
    if interval["high"] < 0:
        return "worse"
    return "no clear change"


# the widest range of three draws on the bundled tasks: task199 scored 30.5, 63.5 and 66.0 on one
# CPU (docs/BENCHMARKS.md, "The same settings on another machine"; 34.5 to 66.0 on the other)
DRAW_SPREAD_POINTS = 35
ONE_ANSWER_SHARE = 0.9  # an arm giving one answer on this share of the rows or more is named for it


def _side(score: float, trivial: float) -> str:
    return "above" if score > trivial else ("at" if score == trivial else "below")


def trivial_side(arm: dict[str, Any], trivial: dict[str, Any]) -> str:
    """``above`` / ``below`` the trivial rule only when the interval of (arm − rule) over the rows is clear
    of zero, else ``at``: a 34.5 against a majority rate of 34.0 is not above it. Results cached
    before the rule's row scores were kept are compared by their points."""
    rule, scores = arm.get("trivial_row_scores") or [], arm.get("row_scores") or []
    if not rule or len(rule) != len(scores):
        return _side(arm["score"], trivial["score"])
    interval = paired_bootstrap(rule, scores)
    return "above" if interval["low"] > 0 else ("below" if interval["high"] < 0 else "at")


def one_answer(arm: dict[str, Any]) -> str | None:
    """``answers `2` on 200 of 200 rows`` when one answer fills at least 90 % of the rows, else None."""
    top = arm.get("top_answer") or {}
    if not top or not top.get("of") or top["rows"] < ONE_ANSWER_SHARE * top["of"]:
        return None
    return f"answers `{top['answer']}` on {top['rows']} of {top['of']} rows"


def verdict_sentence(report: dict[str, Any]) -> str:
    """One sentence: the scores, the delta with its interval and word, the trivial baseline, the format share."""
    base, tuned = report["baseline"], report["self_guided"]
    interval = report["interval"]
    draws = report.get("draws") or []
    if len(draws) > 1:  # several synthesis-and-training draws: the interval covers them and the rows
        summary = report["draws_summary"]
        parts = [
            f"self-guided {summary['mean']:.1f} ± {summary['sd']:.1f} over {len(draws)} draws vs few-shot "
            f"{base['score']:.1f}: {interval['delta']:+.1f}, {round(100 * interval['level'])} % CI "
            f"{interval['low']:+.1f} to {interval['high']:+.1f} (draws and rows), {verdict_word(interval)}"
        ]
        if interval.get("draws_disagree"):
            deltas = ", ".join(f"{d['delta']:+.1f}" for d in draws)
            parts.append(f"the draws disagree in sign ({deltas})")
    else:
        parts = [
            f"self-guided {tuned['score']:.1f} vs few-shot {base['score']:.1f}: {interval['delta']:+.1f}, "
            f"{round(100 * interval['level'])} % CI {interval['low']:+.1f} to {interval['high']:+.1f}, "
            f"{verdict_word(interval)} (one draw; draws of the same settings scored up to {DRAW_SPREAD_POINTS} "
            "points apart on the bundled tasks: --draws 3)"
        ]
    trivial = report.get("trivial_baseline")
    if trivial:
        base_side, tuned_side = trivial_side(base, trivial), trivial_side(tuned, trivial)
        report["trivial_sides"] = {"baseline": base_side, "self_guided": tuned_side}
        if base_side == tuned_side:
            where = f"both {base_side} the {trivial['name']} score {trivial['score']:.1f}"
        else:
            where = f"few-shot {base_side} and self-guided {tuned_side} the {trivial['name']} score {trivial['score']:.1f}"
        parts.append(where)
    in_context, versus = report.get("in_context"), report.get("self_guided_vs_in_context")
    if in_context and versus:
        over = report.get("in_context_summary")  # with draws: each draw's own pairs, and their mean
        score = f"{over['mean']:.1f} ± {over['sd']:.1f}" if over else f"{in_context['score']:.1f}"
        parts.append(
            f"synthetic pairs in context {score} (self-guided {versus['delta']:+.1f}, "
            f"{verdict_word(versus)} against it)"
        )
    for name, arm in (("few-shot", base), ("self-guided", tuned)):
        flagged = one_answer(arm)
        if flagged:
            parts.append(f"{name} {flagged}")
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


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile without scipy: exact for 1 and 2 degrees of freedom, the
    Cornish-Fisher series (Abramowitz & Stegun 26.7.5) above, within 0.2 % of the table at 95 %."""
    if df < 1:
        raise ValueError(f"t quantile needs at least one degree of freedom, got {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    x = NormalDist().inv_cdf(p)
    terms = (
        (x**3 + x) / 4,
        (5 * x**5 + 16 * x**3 + 3 * x) / 96,
        (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / 384,
        (79 * x**9 + 776 * x**7 + 1482 * x**5 - 1920 * x**3 - 945 * x) / 92160,
    )
    return x + sum(term / df ** (i + 1) for i, term in enumerate(terms))


def draws_halfwidth(tables: Sequence[Any], level: float = 0.95) -> tuple[float, int]:
    """Half-width of a t interval for the draw-to-draw part of a sum of means over draws.

    ``tables``: per independent set of draws, its draws x rows scores (or deltas); the sign of
    a set in the sum does not matter. A draw's mean moves with the draw (its synthesis, its
    training) and with its own errors on the rows; the row bootstrap already counts the second,
    so the row-by-draw residual mean square (two-way ANOVA) is taken out of the spread. A set
    of one draw says nothing about the spread and adds nothing. Degrees of freedom are Welch's,
    rounded down: with 3 draws t = 4.30, not the 1.96 that a bootstrap over 3 draws acts as if
    it had (with only 10 distinct resamples and 2/3 of their variance).
    """
    import numpy as np

    spread = []
    for table in map(np.asarray, tables):
        draws, rows = table.shape
        if draws < 2:
            continue
        residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0) + table.mean()
        row_noise = float((residual**2).sum()) / ((draws - 1) * (rows - 1) * rows) if rows > 1 else 0.0
        between = float(table.mean(axis=1).var(ddof=1))
        spread.append((max(0.0, between - row_noise) / draws, draws - 1))
    variance = sum(v for v, _ in spread)
    if variance == 0:
        return 0.0, sum(df for _, df in spread)
    df = max(1, math.floor(variance**2 / sum(v**2 / df for v, df in spread)))
    return t_quantile(1 - (1 - level) / 2, df) * math.sqrt(variance), df


def widen(delta: float, row_low: float, row_high: float, halfwidth: float) -> tuple[float, float]:
    """The row interval with the draw half-width added in quadrature on each side, kept in ±100
    (the most a 0-100 score can move)."""
    low = delta - math.hypot(delta - row_low, halfwidth)
    high = delta + math.hypot(row_high - delta, halfwidth)
    return max(low, -100.0), min(high, 100.0)


def draws_bootstrap(
    draws: Sequence[tuple[Sequence[float], Sequence[float]]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """The mean delta over several synthesis-and-training draws and its interval over draws *and* rows.

    ``draws``: per draw, the (base, tuned) row scores on the same rows. The rows are resampled
    (once: every draw was scored on them) with the draws held fixed, and the draw-to-draw spread
    is a t interval over the draws (`draws_halfwidth`), added in quadrature on each side: resampling only 3
    draws, as this did before, gave an interval that a second set of 3 draws fell outside
    (task190, docs/BENCHMARKS.md). One draw, or draws that agree on every row, reduce to
    `paired_bootstrap`'s row bootstrap.
    """
    import numpy as np

    if not draws:
        raise ValueError("a bootstrap over draws needs at least one draw")
    diffs = []
    for base, tuned in draws:
        if len(base) != len(tuned) or len(base) == 0:
            raise ValueError(f"each draw needs the same non-empty rows: {len(base)} vs {len(tuned)} scores")
        diffs.append(np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float))
    rows = len(diffs[0])
    if any(len(d) != rows for d in diffs):
        raise ValueError("every draw must be scored on the same rows")
    table = np.stack(diffs)  # draws x rows
    rng = np.random.default_rng(seed)
    picked_rows = rng.integers(0, rows, size=(resamples, rows))
    means = table.mean(axis=0)[picked_rows].mean(axis=1)  # the mean over draws, rows resampled
    tail = 100 * (1 - level) / 2
    row_low, row_high = np.percentile(means, [tail, 100 - tail])
    per_draw = table.mean(axis=1)
    delta = float(per_draw.mean())
    halfwidth, df = draws_halfwidth([table], level)
    low, high = widen(delta, float(row_low), float(row_high), halfwidth)
    return {
        "delta": round(delta, 2),
        "low": round(low, 2),
        "high": round(high, 2),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "rows": rows,
        "draws": len(diffs),
        "draw_deltas": [round(float(d), 2) for d in per_draw],
        "draws_disagree": bool(per_draw.min() < 0 < per_draw.max()),
        "rows_interval": [round(float(row_low), 2), round(float(row_high), 2)],
        "draws_halfwidth": round(halfwidth, 2),
        "draws_df": df,
    }
