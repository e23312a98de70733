"""How often the interval over draws holds the true delta: simulated runs, known truth.

    python benchmarks/interval_coverage.py --runs 400 --draws 3 --json benchmarks/results/interval-coverage.json

A run here is a base model and N tuned draws scored right/wrong on 200 rows. Each row has a
difficulty (a logistic accuracy, so some rows are hard for every model); each draw shifts the
tuned accuracy by its own amount, drawn around +5 points with the given spread (the
draw-to-draw spread: sd 0.4 to 16 points on the bundled tasks, docs/BENCHMARKS.md). The truth
is the mean delta over all possible draws and rows. Two row models: each draw errs on its own
rows (`independent`), or all draws err on the same hard rows (`shared`, closer to finetunes
of one model). Compared: `verdict.draws_bootstrap` (rows resampled, a t interval over the
draws) and the interval it replaced (rows and draws both resampled; numbers of 6565c6b).
No model runs: seconds on a laptop.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfguide_hf.verdict import DEFAULT_SEED, draws_bootstrap  # noqa: E402

ROWS = 200
TRUE_SHIFT = 0.05  # +5 points of accuracy, the mean over draws


def resampled_draws(
    draws: list[tuple[Any, Any]], resamples: int, seed: int = DEFAULT_SEED
) -> tuple[float, float]:
    """The interval before 59bba03: resample the rows, then the draws, and take percentiles."""
    import numpy as np

    table = np.stack([np.asarray(t) - np.asarray(b) for b, t in draws])
    rng = np.random.default_rng(seed)
    picked_rows = rng.integers(0, table.shape[1], size=(resamples, table.shape[1]))
    picked_draws = rng.integers(0, len(draws), size=(resamples, len(draws)))
    per_draw = table[:, picked_rows].mean(axis=2).T
    means = np.take_along_axis(per_draw, picked_draws, axis=1).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def simulate(spread: float, shared: bool, draws: int, runs: int, resamples: int, seed: int) -> dict[str, Any]:
    """Coverage and mean width of both intervals over ``runs`` simulated runs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    held = {"t over draws": 0, "resampled draws": 0}
    width = {"t over draws": 0.0, "resampled draws": 0.0}
    for _ in range(runs):
        accuracy = 1 / (1 + np.exp(-rng.normal(0, 2.0, ROWS)))
        base = rng.binomial(1, accuracy) * 100.0
        shifts = rng.normal(TRUE_SHIFT, spread, draws)
        luck = rng.random(ROWS)  # shared: every draw errs on the same unlucky rows
        tuned = [
            ((luck if shared else rng.random(ROWS)) < np.clip(accuracy + s, 0, 1)) * 100.0 for s in shifts
        ]
        population = rng.normal(TRUE_SHIFT, spread, (2000, 1))
        truth = 100 * (np.clip(accuracy + population, 0, 1).mean() - accuracy.mean())
        pairs = [(base, t) for t in tuned]
        new = draws_bootstrap(pairs, resamples=resamples)
        for name, (low, high) in (
            ("t over draws", (new["low"], new["high"])),
            ("resampled draws", resampled_draws(pairs, resamples)),
        ):
            held[name] += low <= truth <= high
            width[name] += high - low
    return {
        "spread_points": round(100 * spread, 1),
        "rows": "shared" if shared else "independent",
        **{f"{name}: coverage": round(held[name] / runs, 3) for name in held},
        **{f"{name}: width": round(width[name] / runs, 1) for name in width},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="simulated runs per cell")
    parser.add_argument("--draws", type=int, default=3, help="draws per run (--draws N)")
    parser.add_argument("--resamples", type=int, default=400, help="bootstrap resamples per interval")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the cells here")
    args = parser.parse_args(argv)
    if args.draws < 2 or args.runs < 1 or args.resamples < 1:
        parser.error("--draws needs at least 2, --runs and --resamples at least 1")
    cells = [
        simulate(spread, shared, args.draws, args.runs, args.resamples, args.seed)
        for shared in (False, True)
        for spread in (0.15, 0.10, 0.05, 0.0)
    ]
    command = "python benchmarks/interval_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"`{command}` — {date}, {args.draws} draws, {ROWS} rows, true delta +5.0\n")
    print("| draw spread (sd, points) | rows | coverage: t over draws / resampled draws | mean width |")
    print("|---:|---|---|---|")
    for c in cells:
        print(
            f"| {c['spread_points']} | {c['rows']} | {c['t over draws: coverage']:.3f} / "
            f"{c['resampled draws: coverage']:.3f} | {c['t over draws: width']} / {c['resampled draws: width']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"command": command, "date": date, "cells": cells}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
