"""`load_dataset("selfguide", ...)` twice per task, each call in a new process: generate, then a cache hit.

    python benchmarks/builder_cache.py ../shared/ni/task738/task.json ../shared/ni/task1195/spec.json \
        --num-inputs 20

A task is anything `--task` takes: a bundled name, a spec file or an NI task
file. Prints, per call, the rows returned, the class counts (classification),
kept / raw from the saved funnel and the seconds `load_dataset` took; the
second call of each task must take a fraction of a second and return the same
rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CALL = """
import json, sys, time
from collections import Counter
import selfguide_hf
from datasets import load_dataset
from selfguide_hf.builder import get_funnel
start = time.perf_counter()
rows = load_dataset("selfguide", task=sys.argv[1], num_inputs=int(sys.argv[2]), seed=int(sys.argv[3]))["train"]
seconds = time.perf_counter() - start
funnel = get_funnel(rows)
classes = dict(Counter(rows["output"])) if funnel.get("classes") else None
print(json.dumps({"task": sys.argv[1], "rows": len(rows), "classes": classes, "kept": funnel["kept"],
                  "raw": funnel["raw_inputs"], "seconds": round(seconds, 1), "first": rows[0]["input"]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--num-inputs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    failed = False
    for task in args.tasks:
        results = []
        for call in ("first", "second"):
            done = subprocess.run(
                [sys.executable, "-c", CALL, task, str(args.num_inputs), str(args.seed)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{task} ({call} call) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                failed = True
                break
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(call, json.dumps({k: v for k, v in results[-1].items() if k != "first"}), flush=True)
        if len(results) == 2 and results[0]["first"] != results[1]["first"]:
            print(f"{task}: the second call returned other rows", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
