"""Quality benchmark: few-shot baseline vs self-guided on the bundled tasks, one `selfguide run` per task.

    python benchmarks/quality.py --tasks task190,task199 --num-inputs 100 --max-eval 100 \
        --out-dir outputs/quality --update-docs

Each task runs `selfguide run` in its own process (so a crash or an OOM in one
task loses nothing else, and a rerun reuses every finished synthesis, adapter
and evaluation through the CLI's caches). The per-task table — baseline,
self-guided, delta with its 95 % interval (paired bootstrap over the rows) and
verdict, the trivial baseline (majority class or copy-the-input) and whether
each model beats it, the share of answers that are labels (or copy the input),
synthetic pairs kept, minutes — is printed as markdown, saved as JSON, and with
``--update-docs`` written into docs/BENCHMARKS.md between the ``quality`` markers.
Per group (classification, generation): the means and how many tasks improved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfguide_hf.verdict import one_answer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
START_MARK = "<!-- quality:start -->"
END_MARK = "<!-- quality:end -->"


def bundled_tasks() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from selfguide_hf.bundled import bundled_task_names

    return list(bundled_task_names())


def run_task(task: str, out_dir: Path, passthrough: list[str], threads: int) -> dict[str, Any]:
    """`selfguide run` for one task; returns its report.json plus wall minutes (or the error)."""
    task_dir = out_dir / task
    cmd = [sys.executable, "-m", "selfguide_hf.cli", "run", "--task", task, "--output-dir", str(task_dir)]
    cmd += passthrough
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    task_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(task_dir / "quality-run.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    minutes = (time.time() - start) / 60
    report_path = task_dir / "report.json"
    if done.returncode != 0 or not report_path.exists():
        tail = (task_dir / "quality-run.log").read_text(errors="replace").strip().splitlines()[-1:]
        return {"task": task, "error": tail[0] if tail else f"exit {done.returncode}", "minutes": minutes}
    report = json.loads(report_path.read_text())
    report["minutes"] = minutes
    return report


def read_report(task: str, out_dir: Path) -> dict[str, Any]:
    """A finished run's report.json, with its wall minutes (the sum of its stages)."""
    path = out_dir / task / "report.json"
    if not path.exists():
        return {"task": task, "error": f"no {path}", "minutes": 0.0}
    report = json.loads(path.read_text())
    report["minutes"] = sum(report.get("timings_min", {}).values())
    return report


def row_of(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one task for the table."""
    if "error" in report:
        return {"task": report["task"], "error": report["error"], "minutes": round(report["minutes"], 1)}
    base, tuned = report.get("baseline") or {}, report.get("self_guided") or {}
    funnel = report.get("funnel") or {}
    interval = report.get("interval") or {}
    trivial = report.get("trivial_baseline") or {}
    share = "label_share" if base.get("label_share") is not None else "copy_share"
    return {
        "task": report["task"],
        "metric": report["metric"],
        "baseline": base.get("score"),
        "self_guided": (report.get("draws_summary") or {}).get("mean", tuned.get("score")),  # over the draws
        "delta": report.get("delta"),
        "low": interval.get("low"),
        "high": interval.get("high"),
        "verdict": report.get("verdict"),
        "trivial": trivial.get("score", base.get("majority_rate")),
        "trivial_name": trivial.get(
            "name", "majority-class" if base.get("majority_rate") is not None else None
        ),
        "share_kind": "labels" if share == "label_share" else "copies",
        "baseline_share": base.get(share),
        "self_guided_share": tuned.get(share),
        "majority_rate": base.get("majority_rate"),
        "num_eval": base.get("num_examples"),
        "kept": funnel.get("kept"),
        "raw": funnel.get("raw_inputs"),
        "minutes": round(report["minutes"], 1),
        "stage_minutes": report.get("timings_min", {}),
        # judged by the row interval of (arm - trivial rule) when the report has it (issue 24)
        "sides": report.get("trivial_sides"),
        "in_context": (report.get("in_context") or {}).get("score"),
        "draws": report.get("draws_summary")
        and {**report["draws_summary"], "n": len(report.get("draws") or [])},
        "one_answer": {k: one_answer(report.get(k) or {}) for k in ("baseline", "self_guided")},
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def averages(rows: list[dict[str, Any]], metric: str) -> dict[str, float] | None:
    done = [r for r in rows if r.get("metric") == metric and r.get("self_guided") is not None]
    if not done:
        return None
    mean = lambda key: sum(r[key] for r in done) / len(done)  # noqa: E731
    out = {"tasks": len(done), "baseline": mean("baseline"), "self_guided": mean("self_guided")}
    out["delta"] = out["self_guided"] - out["baseline"]
    if all(r.get("trivial") is not None for r in done):
        out["trivial"] = mean("trivial")
    out["improved"] = sum(r.get("verdict") == "improved" for r in done)
    out["worse"] = sum(r.get("verdict") == "worse" for r in done)
    out["above_trivial"] = sum(
        (r["sides"] or {}).get("self_guided") == "above"
        if r.get("sides")
        else r.get("trivial") is not None and r["self_guided"] > r["trivial"]
        for r in done
    )
    return out


def _versus(score: float | None, trivial: float | None) -> str:
    if score is None or trivial is None:
        return "-"
    return "above" if score > trivial else ("at" if score == trivial else "below")


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    lines = [
        f"`{results['command']}` — {results['date']}, {results['machine']}"
        + ("." if results.get("report_only") else f", load average at start {results['load_average']}."),
        "",
        "| task | metric | few-shot | self-guided | delta (95 % CI) | verdict | trivial baseline | "
        "few-shot / self-guided vs trivial | labels or copies, % (few-shot / self-guided) | pairs kept / raw | "
        "eval n | minutes |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | failed: {r['error']} | | | | | | | | | | {r['minutes']} |")
            continue
        interval = (
            f" ({_signed(r.get('low'))} to {_signed(r.get('high'))})" if r.get("low") is not None else ""
        )
        trivial = f"{_fmt(r.get('trivial'))} {r.get('trivial_name') or ''}".strip()
        sides = r.get("sides") or {}
        versus = (
            f"{sides['baseline']} / {sides['self_guided']}"
            if sides
            else f"{_versus(r['baseline'], r.get('trivial'))} / {_versus(r['self_guided'], r.get('trivial'))}"
        )
        flagged = [
            f"{name} {text}"
            for name, text in zip(("few-shot", "self-guided"), (r.get("one_answer") or {}).values())
            if text
        ]
        if flagged:
            versus += " (" + "; ".join(flagged) + ")"
        shares = (
            f"{r.get('share_kind', '')}: {_fmt(r.get('baseline_share'))} / {_fmt(r.get('self_guided_share'))}"
        )
        draws = r.get("draws")
        if draws:  # --draws N: the mean over the draws, their spread, and the interval over draws and rows
            interval += (
                f", {draws['n']} draws, sd {draws['sd']:.1f} ({_fmt(draws['min'])}–{_fmt(draws['max'])})"
            )
        verdict = r.get("verdict") or "-"
        if r.get("in_context") is not None:  # the third arm, for the reader to set beside self-guided
            verdict += f"; pairs in context {_fmt(r['in_context'])}"
        lines.append(
            f"| {r['task']} | {r['metric']} | {_fmt(r['baseline'])} | {_fmt(r['self_guided'])} | "
            f"{_signed(r['delta'])}{interval} | {verdict} | {trivial} | {versus} | {shares} | "
            f"{r['kept']} / {r['raw']} | {r['num_eval']} | {r['minutes']} |"
        )
    for metric, avg in results["averages"].items():
        if avg:
            lines.append(
                f"| **mean of {avg['tasks']} ({metric})** | {metric} | {avg['baseline']:.1f} | "
                f"{avg['self_guided']:.1f} | {avg['delta']:+.1f} | {avg['improved']} improved, {avg['worse']} worse | "
                f"{_fmt(avg.get('trivial'))} | self-guided above it on {avg['above_trivial']} of {avg['tasks']} | | | | |"
            )
    return "\n".join(lines)


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
    parser.add_argument("--json", type=Path, default=None, help="default: <out-dir>/quality.json")
    parser.add_argument(
        "--report-only", action="store_true", help="only tabulate the report.json files already in --out-dir"
    )
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args, passthrough = parser.parse_known_args(argv)  # the rest goes to `selfguide run`
    tasks = bundled_tasks() if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    flags = (
        ["--report-only", f"--out-dir {args.out_dir}"]
        if args.report_only
        else [f"--threads {args.threads}", f"--jobs {args.jobs}", *passthrough]
    )
    command = "python benchmarks/quality.py " + " ".join([f"--tasks {args.tasks}", *flags])
    load_at_start = round(os.getloadavg()[0], 1)

    def one(task: str) -> dict[str, Any]:
        if args.report_only:
            return row_of(read_report(task, args.out_dir))
        print(f"{task}: selfguide run …", file=sys.stderr, flush=True)
        row = row_of(run_task(task, args.out_dir, passthrough, args.threads))
        print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each task is its own process
        rows = list(pool.map(one, tasks))
    results = {
        "command": command,
        "report_only": args.report_only,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (
            "tabulated from finished runs (their own commands, threads and load are in their logs)"
            if args.report_only
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
