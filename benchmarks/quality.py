"""Quality benchmark: few-shot baseline vs self-guided on the bundled tasks, one `selfguide run` per task.

    python benchmarks/quality.py --tasks task190,task199 --num-inputs 100 --max-eval 100 \
        --out-dir outputs/quality --update-docs

Each task runs `selfguide run` in its own process, scheduled as a Ray task
(`selfguide_hf.sweep`, the engine of `selfguide sweep`; a local pool without
Ray), so a crash or an OOM in one task loses nothing else, and a rerun reuses
every finished synthesis, adapter and evaluation through the CLI's caches. The per-task table — baseline,
self-guided, delta with its 95 % interval (paired bootstrap over the rows) and
verdict, the trivial baseline (majority class or copy-the-input) and whether
each model beats it, the share of answers that are labels (or copy the input),
synthetic pairs kept, minutes — is printed as markdown, saved as JSON, and with
``--update-docs`` written into docs/BENCHMARKS.md between the ``quality`` markers.
``--merge a.json,b.json`` tabulates the rows of earlier runs' JSON files together
(runs made in several sittings, whose output folders are gone).
Per group (classification, generation): the means and how many tasks improved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfguide_hf.sweep import run_tasks
from selfguide_hf.sweep_table import averages, row_of
from selfguide_hf.sweep_table import sweep_table as markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
START_MARK = "<!-- quality:start -->"
END_MARK = "<!-- quality:end -->"


def bundled_tasks() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from selfguide_hf.bundled import bundled_task_names

    return list(bundled_task_names())


def read_report(task: str, out_dir: Path) -> dict[str, Any]:
    """A finished run's report.json, with its wall minutes (the sum of its stages)."""
    path = out_dir / task / "report.json"
    if not path.exists():
        return {"task": task, "error": f"no {path}", "minutes": 0.0}
    report = json.loads(path.read_text())
    report["minutes"] = sum(report.get("timings_min", {}).values())
    return report


def merged_rows(files: list[Path], tasks: list[str], flag: str = "--merge") -> list[dict[str, Any]]:
    """The rows of earlier runs' JSON files, one per task (a later file's row replaces an earlier one).

    Finished runs outlive their output folders only as these files, so a table over runs made in
    several sittings is put together from them; ``tasks`` picks and orders the rows.
    """
    by_task: dict[str, dict[str, Any]] = {}
    for path in files:
        if not path.exists():
            raise SystemExit(f"{flag}: no file {path}")
        try:
            rows = json.loads(path.read_text())["rows"]
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(
                f"{flag}: {path} is not a quality.py JSON file (its 'rows' list): {error}"
            ) from None
        for row in rows:
            by_task[row["task"]] = row
    missing = [t for t in tasks if t not in by_task]
    if missing:
        raise SystemExit(f"{flag}: no row for {', '.join(missing)} in {', '.join(map(str, files))}")
    return [by_task[t] for t in tasks]


def carry_minutes(rows: list[dict[str, Any]], files: list[Path]) -> None:
    """Give rebuilt rows the minutes of the same runs' first tabulation, refusing other runs.

    Rerunning a finished run rebuilds its report in seconds (every stage reused) and times only
    that; the run's real minutes are in the JSON of its first tabulation. A row whose scores or
    pair count differ there is another run, and is an error.
    """
    first = {row["task"]: row for row in merged_rows(files, [row["task"] for row in rows], "--minutes-from")}
    for row in rows:
        earlier = first[row["task"]]
        for key in ("baseline", "self_guided", "kept", "raw", "num_eval"):
            if row.get(key) != earlier.get(key):
                raise SystemExit(
                    f"--minutes-from: {row['task']} is another run there ({key} {earlier.get(key)} vs {row.get(key)})"
                )
        row["minutes"], row["stage_minutes"] = earlier["minutes"], earlier.get("stage_minutes", {})


def update_docs(text: str, path: Path = DOCS) -> None:
    """Replace the block between the quality markers (appending the markers the first time)."""
    doc = path.read_text()
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    if START_MARK in doc and END_MARK in doc:
        head, rest = doc.split(START_MARK, 1)
        doc = head + block + rest.split(END_MARK, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n## Quality: few-shot vs self-guided (issue 5)\n\n" + block + "\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="all", help="comma-separated bundled task names, or 'all'")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "quality")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per task run")
    parser.add_argument("--jobs", type=int, default=1, help="tasks run side by side (give each 1 thread)")
    parser.add_argument(
        "--ray-address", default=None, help="run the tasks on this Ray cluster (default: local)"
    )
    parser.add_argument("--json", type=Path, default=None, help="default: <out-dir>/quality.json")
    parser.add_argument(
        "--report-only", action="store_true", help="only tabulate the report.json files already in --out-dir"
    )
    parser.add_argument(
        "--merge",
        default=None,
        help="comma-separated JSON files of earlier runs: tabulate their rows together (later files win per task)",
    )
    parser.add_argument(
        "--minutes-from",
        default=None,
        help="with --report-only: comma-separated JSON files of the same runs' first tabulation, whose minutes "
        "replace the rebuilt reports' (a rerun that reuses every stage times only itself)",
    )
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args, passthrough = parser.parse_known_args(argv)  # the rest goes to `selfguide run`
    tasks = bundled_tasks() if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    if args.merge:
        flags = [f"--merge {args.merge}"]
    elif args.report_only:
        flags = ["--report-only", f"--out-dir {args.out_dir}"]
        flags += [f"--minutes-from {args.minutes_from}"] if args.minutes_from else []
    else:
        flags = [f"--threads {args.threads}", f"--jobs {args.jobs}", *passthrough]
    command = "python benchmarks/quality.py " + " ".join([f"--tasks {args.tasks}", *flags])
    load_at_start = round(os.getloadavg()[0], 1)

    if args.merge:
        rows = merged_rows([Path(f) for f in args.merge.split(",") if f], tasks)
    elif args.report_only:
        rows = [row_of(read_report(task, args.out_dir)) for task in tasks]
        if args.minutes_from:
            carry_minutes(rows, [Path(f) for f in args.minutes_from.split(",") if f])
    else:  # each task's `selfguide run` is a Ray task (or, without Ray, a process of a local pool)
        reports = run_tasks(
            tasks,
            args.out_dir,
            passthrough,
            jobs=args.jobs,
            address=args.ray_address,
            cpus_per_task=args.threads,
            on_done=lambda report: print(f"  {json.dumps(row_of(report))}", file=sys.stderr, flush=True),
        )
        rows = [row_of(report) for report in reports]
    results = {
        "command": command,
        "report_only": args.report_only or bool(args.merge),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (
            "tabulated from finished runs (their own commands, threads and load are in their logs)"
            if args.report_only or args.merge
            else f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s)"
        ),
        "load_average": load_at_start,
        "load_average_end": round(os.getloadavg()[0], 1),
        "rows": rows,
        "averages": {m: averages(rows, m) for m in ("exact_match", "rouge_l")},
    }
    out_json = args.json or args.out_dir / "quality.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print(table)
    if args.update_docs:
        update_docs(table)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
