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
* ``novelty``: Self-Instruct's novelty filter (ROUGE-L <= 0.7) after the
  duplicate filter;
* ``cot``: chain-of-thought annotation, answer-only target.

The table has, per task, the few-shot score and each arm's delta with its 95 %
interval (paired bootstrap over the same rows, from each run's report) and
verdict; per group (classification, generation) the mean delta and how many
tasks improved or got worse. ``--report-only`` tabulates finished runs.
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
from quality import ROOT, bundled_tasks, read_report, row_of, run_task

SHARED = ROOT.parent / "shared" / "ni"
DEFAULT_INPUT_FILTERS = {
    "classification": ["unwrap", "empty", "length", "noise", "format", "duplicate"],
    "generation": ["unwrap", "empty", "noise", "format", "duplicate"],
}
ARMS = ("self-guided", "corpus-inputs", "corpus-rewrite", "novelty", "cot")


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
    if arm == "novelty":
        flags = []
        for kind, names in DEFAULT_INPUT_FILTERS.items():
            flags += ["--synthesis-option", f"input_filters_{kind}={json.dumps([*names, 'novelty'])}"]
        return flags
    if arm == "cot":
        return ["--synthesis-option", "chain_of_thought=true"]
    raise ValueError(f"unknown arm {arm!r}; known: {list(ARMS)}")


def arm_dir(arm: str, args: argparse.Namespace) -> Path:
    return args.base_dir if arm == "self-guided" and args.base_dir else args.out_dir / arm


def _cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    if "error" in row:
        return "not run" if str(row["error"]).startswith("no ") else "failed"  # read_report: "no <path>"
    low, high = row.get("low"), row.get("high")
    interval = f" ({low:+.1f} to {high:+.1f})" if low is not None else ""
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
    return "\n".join(lines)


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
    args, passthrough = parser.parse_known_args(argv)
    tasks = bundled_tasks() if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        if arm not in ARMS:
            parser.error(f"unknown arm {arm!r}; known: {list(ARMS)}")
    jobs = [(task, arm) for task in tasks for arm in arms]

    def one(job: tuple[str, str]) -> tuple[str, str, dict[str, Any]]:
        task, arm = job
        out = arm_dir(arm, args)
        if args.report_only or (arm == "self-guided" and args.base_dir):
            return task, arm, row_of(read_report(task, out))
        print(f"{task} / {arm}: selfguide run …", file=sys.stderr, flush=True)
        row = row_of(run_task(task, out, passthrough + arm_flags(arm, task, args.out_dir), args.threads))
        print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
        return task, arm, row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(one, jobs))
    by_task: dict[str, dict[str, Any]] = {task: {} for task in tasks}
    for task, arm, row in done:
        by_task[task][arm] = row
    results = {
        "command": "python benchmarks/quality_arms.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "arms": arms,
        "tasks": by_task,
    }
    out_json = args.json or args.out_dir / "arms.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
