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
    """Mean of ``tuned - base`` per row and its percentile interval over ``resamples`` row resamples.

    The one-draw case of `draws_bootstrap` (the same resamples, the same numbers).
    """
    if len(base) != len(tuned):
        raise ValueError(f"paired bootstrap needs the same rows: {len(base)} vs {len(tuned)} scores")
    if not base:
        raise ValueError("paired bootstrap needs at least one row")
    interval = draws_bootstrap([(base, tuned)], resamples=resamples, seed=seed, level=level)
    return {k: v for k, v in interval.items() if k not in ("draws", "draw_deltas", "draws_disagree")}


def verdict_word(interval: dict[str, Any]) -> str:
    """``improved`` when the whole interval is above 0, ``worse`` when below, else ``no clear change``."""
    if interval["low"] > 0:
        return "improved"
    if interval["high"] < 0:
        return "worse"
    return "no clear change"


# the widest range of three draws on the bundled tasks: task199 scored 30.5, 63.5 and 66.0
# (docs/BENCHMARKS.md, "Quality over 3 draws")
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


def draws_bootstrap(
    draws: Sequence[tuple[Sequence[float], Sequence[float]]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """The mean delta over several synthesis-and-training draws and its interval over draws *and* rows.

    ``draws``: per draw, the (base, tuned) row scores on the same rows. Each resample draws the
    rows with replacement (once: every draw was scored on them), then the draws, and averages the
    deltas: the
    interval covers the draw-to-draw spread (up to 35 points on the bundled tasks) as well as
    the rows'. One draw reduces to `paired_bootstrap`'s row bootstrap.
    """
    import numpy as np

    if not draws:
        raise ValueError("a bootstrap over draws needs at least one draw")
    diffs = []
    for base, tuned in draws:
        if len(base) != len(tuned) or not base:
            raise ValueError(f"each draw needs the same non-empty rows: {len(base)} vs {len(tuned)} scores")
        diffs.append(np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float))
    rows = len(diffs[0])
    if any(len(d) != rows for d in diffs):
        raise ValueError("every draw must be scored on the same rows")
    table = np.stack(diffs)  # draws x rows
    rng = np.random.default_rng(seed)
    # the draws were scored on the same rows: one row resample serves every draw of a resample
    picked_rows = rng.integers(0, rows, size=(resamples, rows))
    picked_draws = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    per_draw_means = table[:, picked_rows].mean(axis=2).T  # resamples x draws
    means = np.take_along_axis(per_draw_means, picked_draws, axis=1).mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    per_draw = table.mean(axis=1)
    return {
        "delta": round(float(per_draw.mean()), 2),
        "low": round(float(low), 2),
        "high": round(float(high), 2),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "rows": rows,
        "draws": len(diffs),
        "draw_deltas": [round(float(d), 2) for d in per_draw],
        "draws_disagree": bool(per_draw.min() < 0 < per_draw.max()),
    }
