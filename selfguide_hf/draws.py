"""Several synthesis-and-training draws of one run, and the verdict over them.

Three draws of the same setting scored up to 35 points apart on the bundled tasks (task199;
docs/BENCHMARKS.md), more than most deltas called "improved". Draw k of a run is the run
with the synthesis and training seeds moved by k, its synthetic data and adapter in
``<run dir>/draws/<k>/``, scored on the same rows as draw 0; the few-shot baseline is
scored once. The combined interval resamples the rows and adds the draws' spread as a t
interval (`verdict.draws_bootstrap`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
from typing import Any

from selfguide_hf.run import SelfGuideRun
from selfguide_hf.verdict import draws_bootstrap, verdict_sentence, verdict_word

__all__ = ["DRAWS_DIR", "combine_draws", "draw_run"]

DRAWS_DIR = "draws"


def draw_run(run: SelfGuideRun, k: int) -> SelfGuideRun:
    """Draw ``k`` (k >= 1) of ``run``: seeds moved by k, its own synthetic data and adapter folder."""
    folder = run.run_dir / DRAWS_DIR / str(k)
    args = dataclasses.replace(
        run.args, synthesis_seed=run.args.synthesis_seed + k, run_dir=os.fspath(folder)
    )
    training_args = copy.copy(run.training_args)
    training_args.seed = run.training_args.seed + k
    training_args.output_dir = os.fspath(folder / "adapter")
    return dataclasses.replace(
        run, args=args, training_args=training_args, timings={}, push_adapter=False, hub_model_id=None
    )


def _summary(scores: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(scores), 2),
        "sd": round(statistics.stdev(scores), 2) if len(scores) > 1 else 0.0,
        "min": min(scores),
        "max": max(scores),
    }


def combine_draws(
    report: dict[str, Any],
    tuned: list[dict[str, Any]],
    seeds: list[tuple[int, int]],
    in_context: list[dict[str, Any]] | None = None,
) -> None:
    """Put every draw's score and delta in ``report["draws"]`` and judge the verdict on all of them.

    ``in_context``: per draw, the base model with that draw's synthetic pairs in the prompt. Its
    intervals (against few-shot, and self-guided against it, draw by draw: the same pairs in the
    prompt or in the weights) cover the draws and the rows too.
    """
    base = report["baseline"]
    rows = [(base["row_scores"], arm["row_scores"]) for arm in tuned]
    interval = draws_bootstrap(rows)
    report["draws"] = [
        {
            "synthesis_seed": synthesis_seed,
            "training_seed": training_seed,
            "score": arm["score"],
            "delta": round(arm["score"] - base["score"], 2),
        }
        for arm, (synthesis_seed, training_seed) in zip(tuned, seeds, strict=True)
    ]
    report["draws_summary"] = _summary([arm["score"] for arm in tuned])
    if in_context and report.get("in_context") and all(arm.get("row_scores") for arm in in_context):
        for draw, arm in zip(report["draws"], in_context, strict=True):
            draw["in_context_score"] = arm["score"]
        report["in_context_summary"] = _summary([arm["score"] for arm in in_context])
        report["in_context_interval"] = draws_bootstrap(
            [(base["row_scores"], a["row_scores"]) for a in in_context]
        )
        report["self_guided_vs_in_context"] = draws_bootstrap(
            [(a["row_scores"], t["row_scores"]) for a, t in zip(in_context, tuned, strict=True)]
        )
    report["interval"] = interval
    report["delta"] = interval["delta"]
    report["verdict"] = verdict_word(interval)
    report["verdict_sentence"] = verdict_sentence(report)
