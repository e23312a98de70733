"""Whose label is better, head to head: each `label_source` against another on the same test rows.

    python benchmarks/label_source.py --tasks task190,task200,task1385,task1386 \
        --arm judge=/work/meas-out/label-source-judge,/work/meas-out/quality-draws \
        --arm condition=/work/meas-out/label-source-condition \
        --arm agree=/work/meas-out/label-source-agree --json benchmarks/results/label-source-versus.json

Every arm is a folder of finished `selfguide run --draws N` runs, one per task
(`<folder>/<task>/`; the first folder of an arm holding the task is used). The
quality table gives each source's delta against few-shot; two such intervals
overlapping says little about the sources' difference, and the few-shot score
itself may differ by a row between machines. This script compares the
self-guided row scores of two arms directly: the mean over arm B's draws minus
the mean over arm A's, with an interval that resamples the test rows once
(both arms were scored on them) and adds each arm's draw-to-draw spread on its
own (draw k of one source has nothing to do with draw k of another). Runs whose test inputs
differ are not compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfguide_hf.verdict import (  # noqa: E402
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    draws_halfwidth,
    verdict_word,
    widen,
)


def arms_bootstrap(
    first: Sequence[Sequence[float]],
    second: Sequence[Sequence[float]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean row score over ``second``'s draws minus ``first``'s, with its interval over rows and draws.

    Each arm is a list of draws, each a list of row scores (0-100) on the same rows. The rows
    are resampled with the draws held fixed, and each arm's draw-to-draw spread is added as a
    Welch t half-width, as in `verdict.draws_bootstrap`. One draw per arm reduces to
    `paired_bootstrap` (the same resamples, the same numbers).
    """
    import numpy as np

    shapes = [list(map(len, arm)) for arm in (first, second)]
    if not all(shapes) or len({n for arm in shapes for n in arm}) != 1 or 0 in shapes[0]:
        raise ValueError(f"both arms need draws scored on the same rows: row counts {shapes}")
    arms = [np.asarray(arm, dtype=float) for arm in (first, second)]
    rows = arms[0].shape[1]
    rng = np.random.default_rng(seed)
    picked_rows = rng.integers(0, rows, size=(resamples, rows))  # shared: the same test rows
    by_row = arms[1].mean(axis=0) - arms[0].mean(axis=0)  # each arm's draws held fixed
    tail = 100 * (1 - level) / 2
    row_low, row_high = np.percentile(by_row[picked_rows].mean(axis=1), [tail, 100 - tail])
    delta = float(by_row.mean())
    # each arm's draw-to-draw spread, independent of the other's: Welch's t over draws
    halfwidth, df = draws_halfwidth(arms, level)
    low, high = widen(delta, float(row_low), float(row_high), halfwidth)
    return {
        "delta": round(delta, 2),
        "low": round(float(low), 2),
        "high": round(float(high), 2),
        "level": level,
        "rows": rows,
        "draws": [len(arm) for arm in arms],
        "draws_halfwidth": round(halfwidth, 2),
        "draws_df": df,
    }


def run_dir(task: str, folders: list[Path]) -> Path | None:
    """The first folder's finished run of the task (it has a report.json)."""
    return next((folder / task for folder in folders if (folder / task / "report.json").is_file()), None)


def draw_scores(run: Path) -> tuple[list[list[float]], list[str]]:
    """Each draw's self-guided row scores (draw 0 in ``eval/``, draw k in ``draws/<k>/eval/``) and the test inputs."""
    folders = [
        run,
        *sorted((p for p in (run / "draws").glob("*") if p.name.isdigit()), key=lambda p: int(p.name)),
    ]
    scores, inputs = [], None
    for folder in folders:
        result = json.loads((folder / "eval" / "self_guided.json").read_text())["result"]
        scores.append([float(x) for x in result["row_scores"]])
        lines = (folder / "eval" / "self_guided.predictions.jsonl").read_text(encoding="utf-8").splitlines()
        these = [json.loads(line)["input"] for line in lines if line.strip()]
        if inputs is not None and these != inputs:
            raise ValueError(f"{folder}: its draws were scored on other test rows than draw 0's")
        inputs = these
    return scores, inputs or []


def compare(task: str, arms: dict[str, list[Path]]) -> dict[str, Any]:
    """Every pair of arms that finished the task on the same rows: B minus A, its interval and verdict."""
    found = {name: run_dir(task, folders) for name, folders in arms.items()}
    loaded = {name: draw_scores(run) for name, run in found.items() if run}
    result: dict[str, Any] = {"task": task, "runs": {n: str(r) for n, r in found.items() if r}, "pairs": {}}
    result["scores"] = {n: round(sum(map(sum, s)) / sum(map(len, s)), 1) for n, (s, _) in loaded.items()}
    for a, b in combinations([n for n in arms if n in loaded], 2):
        if loaded[a][1] != loaded[b][1]:
            result["pairs"][f"{b} - {a}"] = {"error": "not the same test rows"}
            continue
        interval = arms_bootstrap(loaded[a][0], loaded[b][0])
        result["pairs"][f"{b} - {a}"] = {**interval, "verdict": verdict_word(interval)}
    return result


def markdown(results: dict[str, Any]) -> str:
    pairs = [f"{b} - {a}" for a, b in combinations(results["arms"], 2)]
    lines = [
        f"`{results['command']}` — {results['date']}.",
        "",
        "| task | " + " | ".join(f"`{n}`" for n in results["arms"]) + " | " + " | ".join(pairs) + " |",
        "|---|" + "---:|" * len(results["arms"]) + "---|" * len(pairs),
    ]
    for row in results["tasks"]:
        scores = [f"{row['scores'][n]:.1f}" if n in row["scores"] else "-" for n in results["arms"]]
        cells = []
        for pair in pairs:
            cell = row["pairs"].get(pair)
            if not cell:
                cells.append("-")
            elif "error" in cell:
                cells.append(cell["error"])
            else:
                cells.append(
                    f"{cell['delta']:+.1f} ({cell['low']:+.1f} to {cell['high']:+.1f}), {cell['verdict']}"
                )
        lines.append(f"| {row['task']} | " + " | ".join(scores + cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument(
        "--arm",
        action="append",
        required=True,
        metavar="NAME=DIR[,DIR]",
        help="an arm and the folders of its finished runs (the first holding a task is used); repeat per arm",
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    arms: dict[str, list[Path]] = {}
    for spec in args.arm:
        name, sep, folders = spec.partition("=")
        if not sep or not name or not folders:
            parser.error(f"--arm {spec!r}: expected NAME=DIR[,DIR]")
        arms[name] = [Path(f) for f in folders.split(",")]
        if missing := [str(f) for f in arms[name] if not f.is_dir()]:
            parser.error(f"--arm {name}: no such folder: {', '.join(missing)}")
    results = {
        "command": "python benchmarks/label_source.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "arms": list(arms),
        "tasks": [compare(task, arms) for task in args.tasks.split(",")],
    }
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
