"""Which way of making inputs helps? Few-shot vs self-guided vs corpus inputs vs corpus rewrite vs novelty.

    python benchmarks/quality_arms.py --tasks all --arms corpus-inputs,corpus-rewrite,novelty \
        --base-dir outputs/quality-v3 --out-dir outputs/arms --jobs 2 --threads 1 \
        --num-inputs 100 --max-eval 200

Every arm is one `selfguide run` per task (through `benchmarks/quality.py`'s
runner, so a rerun resumes from finished syntheses, adapters and evaluations)
with the same seed and the same test rows; the flags after the known options
go to every run. The arms (issue 13):

* ``self-guided``: the default preset; read from ``--base-dir`` when given
  (the quality benchmark's runs), else run into ``<out-dir>/self-guided``;
* ``corpus-inputs``: the task's ``validation.jsonl`` inputs, outputs removed,
  as a corpus in ``inputs`` mode (ReBase's retrieval, no rewriting);
* ``corpus-rewrite``: the same corpus in ``rewrite`` mode (ReBase);
* ``corpus-embeddings``: ``corpus-inputs`` with the rows ranked by sentence
  embeddings (all-MiniLM-L6-v2) instead of BM25;
* ``novelty``: Self-Instruct's novelty filter (ROUGE-L <= 0.7) after the
  duplicate filter;
* ``cot``: chain-of-thought annotation, answer-only target.

The table has, per task, the few-shot score and each arm's delta with its 95 %
interval (paired bootstrap over the same rows, from each run's report) and
verdict; per group (classification, generation) the mean delta and how many
tasks improved or got worse. A second table puts each arm head to head with
self-guided: its score minus self-guided's on the same test rows, with a paired
interval. ``--report-only`` tabulates finished runs.

The row interval does not cover the draw: the same arm re-synthesised and
re-trained moved by up to 10 points on the embedded model. ``--seeds 0,1,2``
runs every arm once per seed (seed 0 is the defaults, in ``<arm>/<task>``;
seed s > 0 is ``--synthesis-seed s`` and training ``--seed`` 42 + s, in
``<arm>/seed-<s>/<task>``); a cell then shows the mean delta, each seed's
delta, and one verdict only when every seed agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, bundled_tasks, read_report, row_of

from selfguide_hf.sweep import run_task
from selfguide_hf.verdict import paired_bootstrap, verdict_word

SHARED = ROOT.parent / "shared" / "ni"
DEFAULT_INPUT_FILTERS = {
    "classification": ["unwrap", "empty", "length", "noise", "format", "duplicate"],
    "generation": ["unwrap", "empty", "noise", "format", "duplicate"],
}
ARMS = ("self-guided", "corpus-inputs", "corpus-rewrite", "corpus-embeddings", "novelty", "cot")


def corpus_file(task: str, out_dir: Path) -> Path:
    """The task's validation inputs (outputs dropped) as a JSONL corpus with a ``text`` field."""
    path = out_dir / "corpora" / f"{task}.jsonl"
    if not path.is_file():
        rows = [json.loads(line) for line in (SHARED / task / "validation.jsonl").open(encoding="utf-8")]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"text": r["input"]}) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
    return path


def arm_flags(arm: str, task: str, out_dir: Path) -> list[str]:
    if arm == "self-guided":
        return []
    if arm in ("corpus-inputs", "corpus-rewrite"):
        mode = arm.split("-", 1)[1]
        return ["--corpus", str(corpus_file(task, out_dir)), "--corpus-mode", mode]
    if arm == "corpus-embeddings":
        return [*arm_flags("corpus-inputs", task, out_dir), "--corpus-retriever", "embeddings"]
    if arm == "novelty":
        flags = []
        for kind, names in DEFAULT_INPUT_FILTERS.items():
            flags += ["--synthesis-option", f"input_filters_{kind}={json.dumps([*names, 'novelty'])}"]
        return flags
    if arm == "cot":
        return ["--synthesis-option", "chain_of_thought=true"]
    raise ValueError(f"unknown arm {arm!r}; known: {list(ARMS)}")


def seed_flags(seed: int) -> list[str]:
    """Seed 0 is the CLI's defaults; seed s > 0 re-draws synthesis (``--synthesis-seed s``) and training (42 + s)."""
    return [] if seed == 0 else ["--synthesis-seed", str(seed), "--seed", str(42 + seed)]


def arm_dir(arm: str, args: argparse.Namespace, seed: int = 0) -> Path:
    base = args.base_dir if arm == "self-guided" and args.base_dir else args.out_dir / arm
    return base if seed == 0 else base / f"seed-{seed}"


def combine_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from one run per seed: the mean delta, every seed's delta, a verdict only if all agree."""
    done = [r for r in rows if r.get("delta") is not None]
    if len(rows) == 1 or not done:
        return rows[0]
    verdicts = {r.get("verdict") for r in done}
    return {
        **done[0],
        "delta": round(sum(r["delta"] for r in done) / len(done), 2),
        "low": None,
        "high": None,
        "seed_deltas": [r["delta"] for r in done],
        "seeds_missing": len(rows) - len(done),
        "verdict": verdicts.pop() if len(verdicts) == 1 else "mixed",
        "kept": round(sum(r.get("kept") or 0 for r in done) / len(done)),
    }


OTHER_ROWS = "not the same test rows"


def versus_self_guided(arm_run: Path, self_guided_run: Path) -> dict[str, Any]:
    """The arm's score minus self-guided's on the same test rows, with its paired-bootstrap interval.

    The table's deltas are each against few-shot; two arms' intervals overlapping
    says little about their difference, which this measures directly. The
    reports name no row ids, so "the same rows" is: the same task, model, split
    and row count, and the same few-shot score on every row (the few-shot
    answers are greedy, so the same rows give the same scores). Anything else
    is not compared.
    """
    reports = []
    for run in (arm_run, self_guided_run):
        path = run / "report.json"
        if not path.exists():
            return {"error": f"no {path}"}
        reports.append(json.loads(path.read_text()))
    arm = reports[0]
    rows = [(r.get("baseline") or {}).get("row_scores") for r in reports]
    tuned = [(r.get("self_guided") or {}).get("row_scores") for r in reports]
    same = [(r.get("task"), r.get("model"), r.get("eval_split")) for r in reports]
    if not all(rows) or not all(tuned) or rows[0] != rows[1] or same[0] != same[1]:
        return {"error": OTHER_ROWS}
    interval = paired_bootstrap(tuned[1], tuned[0])
    return {
        "delta": interval["delta"],
        "low": interval["low"],
        "high": interval["high"],
        "verdict": verdict_word(interval),
        "rows": interval["rows"],
        "metric": arm.get("metric"),
    }


def _cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    if "error" in row:
        if row["error"] == OTHER_ROWS:
            return "other rows"
        return "not run" if str(row["error"]).startswith("no ") else "failed"  # read_report: "no <path>"
    low, high = row.get("low"), row.get("high")
    interval = f" ({low:+.1f} to {high:+.1f})" if low is not None else ""
    if row.get("seed_deltas"):
        missing = f", {row['seeds_missing']} not run" if row.get("seeds_missing") else ""
        interval = " (seeds " + ", ".join(f"{d:+.1f}" for d in row["seed_deltas"]) + missing + ")"
    if "raw" not in row:  # a head-to-head cell: no pairs of its own
        return f"{row['delta']:+.1f}{interval} {row.get('verdict') or ''}".rstrip()
    return f"{row['delta']:+.1f}{interval} {row.get('verdict') or ''}; {row['kept']}/{row['raw']} pairs"


def markdown(results: dict[str, Any]) -> str:
    arms = results["arms"]
    lines = [
        f"`{results['command']}` — {results['date']}.",
        "",
        "| task | metric | few-shot | " + " | ".join(arms) + " |",
        "|---|---|---:|" + "---|" * len(arms),
    ]
    for task, by_arm in results["tasks"].items():
        base = next((r.get("baseline") for r in by_arm.values() if r and r.get("baseline") is not None), None)
        metric = next((r.get("metric") for r in by_arm.values() if r and r.get("metric")), "-")
        cells = [_cell(by_arm.get(arm)) for arm in arms]
        lines.append(
            f"| {task} | {metric} | {'-' if base is None else f'{base:.1f}'} | " + " | ".join(cells) + " |"
        )
    for metric in ("exact_match", "rouge_l"):
        cells = []
        for arm in arms:
            done = [
                by_arm[arm]
                for by_arm in results["tasks"].values()
                if by_arm.get(arm)
                and by_arm[arm].get("metric") == metric
                and by_arm[arm].get("delta") is not None
            ]
            if not done:
                cells.append("-")
                continue
            mean = sum(r["delta"] for r in done) / len(done)
            up = sum(r.get("verdict") == "improved" for r in done)
            down = sum(r.get("verdict") == "worse" for r in done)
            cells.append(f"mean {mean:+.1f} over {len(done)}; {up} improved, {down} worse")
        lines.append(f"| **{metric}** | | | " + " | ".join(cells) + " |")
        if "self-guided" in arms and any(c != "-" for c in cells):
            lines.append(
                f"| **{metric}, arm − self-guided** | | | "
                + " | ".join(_paired(results["tasks"], arm, metric) for arm in arms)
                + " |"
            )
    versus = results.get("versus_self_guided") or {}
    others = [arm for arm in arms if arm != "self-guided"]
    if versus and others:
        lines += [
            "",
            "Each arm against self-guided on the same test rows (paired bootstrap over the rows):",
            "",
            "| task | " + " | ".join(f"{arm} − self-guided" for arm in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for task, by_arm in versus.items():
            lines.append(f"| {task} | " + " | ".join(_cell(by_arm.get(arm)) for arm in others) + " |")
        tally = []
        for arm in others:
            done = [by_arm[arm] for by_arm in versus.values() if by_arm.get(arm, {}).get("delta") is not None]
            up = sum(r.get("verdict") == "improved" for r in done)
            down = sum(r.get("verdict") == "worse" for r in done)
            tally.append(f"above on {up}, below on {down} of {len(done)}" if done else "-")
        lines.append("| **outside noise** | " + " | ".join(tally) + " |")
    return "\n".join(lines)


def _paired(tasks: dict[str, dict[str, Any]], arm: str, metric: str) -> str:
    """The arm's delta minus self-guided's, over only the tasks where both finished.

    The group means above are over whichever tasks each arm finished; with
    arms finished on different tasks only this row compares them.
    """
    if arm == "self-guided":
        return "-"
    pairs = [
        (by_arm[arm]["delta"], by_arm["self-guided"]["delta"])
        for by_arm in tasks.values()
        if all(
            by_arm.get(a) and by_arm[a].get("metric") == metric and by_arm[a].get("delta") is not None
            for a in (arm, "self-guided")
        )
    ]
    if not pairs:
        return "-"
    diff = sum(a - b for a, b in pairs) / len(pairs)
    above = sum(a > b for a, b in pairs)
    return f"{diff:+.1f} over {len(pairs)} tasks; above self-guided on {above}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--arms", default="self-guided,corpus-inputs,corpus-rewrite,novelty")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "arms")
    parser.add_argument("--base-dir", type=Path, default=None, help="finished self-guided runs to reuse")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--seeds", default="0", help="comma-separated draws per arm; 0 is the defaults")
    args, passthrough = parser.parse_known_args(argv)
    tasks = bundled_tasks() if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        if arm not in ARMS:
            parser.error(f"unknown arm {arm!r}; known: {list(ARMS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 0,1,2")
    jobs = [(task, arm, seed) for seed in seeds for task in tasks for arm in arms]

    def one(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, Any]]:
        task, arm, seed = job
        out = arm_dir(arm, args, seed)
        if args.report_only or (arm == "self-guided" and args.base_dir):
            return task, arm, seed, row_of(read_report(task, out))
        print(f"{task} / {arm} / seed {seed}: selfguide run …", file=sys.stderr, flush=True)
        flags = passthrough + arm_flags(arm, task, args.out_dir) + seed_flags(seed)
        row = row_of(run_task(task, out, flags, args.threads))
        print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
        return task, arm, seed, row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(one, jobs))
    per_seed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task, arm, _seed, row in done:
        per_seed.setdefault((task, arm), []).append(row)
    by_task: dict[str, dict[str, Any]] = {task: {} for task in tasks}
    for (task, arm), rows in per_seed.items():
        by_task[task][arm] = combine_seeds(rows)
    versus: dict[str, dict[str, Any]] = {}
    if "self-guided" in arms:
        for task in tasks:
            versus[task] = {
                arm: combine_seeds(
                    [
                        versus_self_guided(
                            arm_dir(arm, args, seed) / task, arm_dir("self-guided", args, seed) / task
                        )
                        for seed in seeds
                    ]
                )
                for arm in arms
                if arm != "self-guided"
            }
    results = {
        "command": "python benchmarks/quality_arms.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "arms": arms,
        "seeds": seeds,
        "tasks": by_task,
        "versus_self_guided": versus,
    }
    out_json = args.json or args.out_dir / "arms.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
