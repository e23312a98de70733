"""Many tasks at once: each task's whole `selfguide run` as a Ray task, then one table of verdicts.

    selfguide sweep --tasks task199,task738 [--jobs N] [--ray-address ADDR] [run flags]

Each task runs `selfguide run` in its own process (a crash or an out-of-memory
in one task loses nothing of another; a rerun reuses every finished stage
through the run's caches), scheduled by Ray with the resources it asks for
(``--cpus-per-task``, ``--gpus-per-task``), on a local cluster or the one at
``--ray-address`` (whose workers must see the same files: the run folders and
this package). Without Ray installed the same runs go through a local pool of
``--jobs`` processes. A task that fails is a row of the table with its last
log line; the others go on.

The table (verdict, interval, trivial baseline, share of answers that are
labels or copies, pairs kept, minutes per task; per group the means and how
many tasks improved) is the one `benchmarks/quality.py` writes into
docs/BENCHMARKS.md: `sweep_table`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfguide_hf.ray_cluster import local_cores, ray_available, start_ray
from selfguide_hf.sweep_table import averages, row_of

__all__ = ["run_task", "run_tasks", "sweep", "task_folder"]

SWEEP_JSON = "sweep.json"


def task_folder(task: str) -> str:
    """A task's run folder name: the bundled name, or a spec file's stem."""
    return Path(task).stem if ("/" in task or task.endswith((".json", ".yaml", ".yml"))) else task


def run_task(task: str, out_dir: str, passthrough: Sequence[str], threads: int) -> dict[str, Any]:
    """`selfguide run` for one task in its own process; its report.json plus wall minutes, or the error."""
    task_dir = Path(out_dir) / task_folder(task)
    cmd = [sys.executable, "-m", "selfguide_hf.cli", "run", "--task", task, "--output-dir", str(task_dir)]
    cmd += [*passthrough, "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    task_dir.mkdir(parents=True, exist_ok=True)
    log_path = task_dir / "sweep-run.log"
    start = time.time()
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    minutes = (time.time() - start) / 60
    report_path = task_dir / "report.json"
    if done.returncode != 0 or not report_path.exists():
        lines = log_path.read_text(errors="replace").strip().splitlines()
        return {"task": task, "error": lines[-1] if lines else f"exit {done.returncode}", "minutes": minutes}
    report = json.loads(report_path.read_text())
    report["minutes"] = minutes
    return report


def run_tasks(
    tasks: Sequence[str],
    out_dir: Path,
    passthrough: Sequence[str],
    *,
    jobs: int = 1,
    address: str | None = None,
    cpus_per_task: int | None = None,
    gpus_per_task: float | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every task's report (or error), in the order given; Ray schedules them when it is installed."""
    out = str(Path(out_dir).resolve())
    if not ray_available():
        return _run_in_pool(tasks, out, passthrough, jobs, cpus_per_task, on_done)
    ray = start_ray(address, num_cpus=None if address else local_cores())
    resources = ray.cluster_resources()
    cpus = cpus_per_task or max(1, int(resources.get("CPU", 1)) // max(1, jobs))
    gpus = gpus_per_task if gpus_per_task is not None else (1 if resources.get("GPU") else 0)
    remote = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    pending = {remote.remote(task, out, list(passthrough), cpus): i for i, task in enumerate(tasks)}
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready)
        try:
            results[i] = ray.get(ready)
        except Exception as exc:  # the Ray task itself died (its node went away, say)
            results[i] = {
                "task": tasks[i],
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                "minutes": 0.0,
            }
        if on_done is not None:
            on_done(results[i])
    return [r for r in results if r is not None]


def _run_in_pool(
    tasks: Sequence[str],
    out: str,
    passthrough: Sequence[str],
    jobs: int,
    cpus_per_task: int | None,
    on_done: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    threads = cpus_per_task or max(1, local_cores() // max(1, jobs))

    def one(task: str) -> dict[str, Any]:
        result = run_task(task, out, passthrough, threads)
        if on_done is not None:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # each task is its own process
        return list(pool.map(one, tasks))


def sweep(
    tasks: Sequence[str],
    out_dir: Path,
    passthrough: Sequence[str],
    *,
    command: str,
    jobs: int = 1,
    address: str | None = None,
    cpus_per_task: int | None = None,
    gpus_per_task: float | None = None,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Run the tasks, write ``<out_dir>/sweep.json`` and return it (rows, averages, how it ran)."""
    import platform
    from datetime import datetime, timezone

    load_at_start = round(os.getloadavg()[0], 1)
    say(f"sweep: {len(tasks)} task(s) -> {out_dir}")

    def done(report: dict[str, Any]) -> None:
        state = f"failed: {report['error']}" if "error" in report else f"{report.get('verdict', 'done')}"
        say(f"  {report['task']}: {state} ({report['minutes']:.1f} min)")

    reports = run_tasks(
        tasks,
        out_dir,
        passthrough,
        jobs=jobs,
        address=address,
        cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task,
        on_done=done,
    )
    rows = [row_of(report) for report in reports]
    results = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (
            f"Ray cluster {address}"
            if address
            else "local" + (" Ray cluster" if ray_available() else " pool")
        ),
        "load_average": load_at_start,
        "load_average_end": round(os.getloadavg()[0], 1),
        "rows": rows,
        "averages": {m: averages(rows, m) for m in ("exact_match", "rouge_l")},
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(out_dir) / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(Path(out_dir) / SWEEP_JSON)
    return results
