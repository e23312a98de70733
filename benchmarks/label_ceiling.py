"""How good are the base model's own label judgments on real test inputs? A ceiling for self-labelling.

    python benchmarks/label_ceiling.py --tasks task190,task199 --max-eval 100

SELF-GUIDE labels its synthetic classification inputs with the base model
itself (the default preset: the most likely label under the task prompt,
after calibration). The finetuned model can at best learn those judgments, so
their accuracy on the real test inputs bounds what self-labelling can teach.
This script scores every label of the task on the test split (the same prompt
and label continuations synthesis uses) and reports, per calibration method,
the accuracy of the most likely label, next to the majority-class rate.

Results go to ``--out`` as JSON and are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

METHODS = ("none", "batch", "balanced")
CLASSIFICATION = ["task190", "task199", "task200", "task738", "task937", "task1385", "task1386"]


def measure(task: str, engine: Any, tokenizer: Any, max_eval: int) -> dict[str, Any]:
    from selfguide_hf.calibration import calibrate_label_scores
    from selfguide_hf.evaluation import load_eval_rows, majority_class
    from selfguide_hf.prompts import label_continuations, render_task_prompt
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(task)
    rows = load_eval_rows(spec, max_eval=max_eval)
    labels = [label.lower() for label in spec.labels]
    start = time.perf_counter()
    prompts = [render_task_prompt(spec, row["input"], tokenizer) for row in rows]
    scores = engine.score_choices(prompts, label_continuations(spec, tokenizer))
    gold = [row["output"][0].strip().lower() for row in rows]
    result: dict[str, Any] = {"task": task, "n": len(rows)}
    result["majority_label"], result["majority_rate"] = majority_class(rows)
    for method in METHODS:
        probs, _ = calibrate_label_scores(scores, method)
        predicted = [labels[max(range(len(p)), key=p.__getitem__)] for p in probs]
        result[method] = round(100 * sum(p == g for p, g in zip(predicted, gold)) / len(gold), 1)
        result[f"{method}_predictions"] = dict(Counter(predicted))
    result["gold"] = dict(Counter(gold))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"`{results['command']}` — {results['date']}, {results['machine']}.",
        "",
        "| task | n | majority rate | none | batch | balanced | test labels |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["rows"]:
        gold = ", ".join(f"{k}={v}" for k, v in r["gold"].items())
        lines.append(
            f"| {r['task']} | {r['n']} | {r['majority_rate']:.1f} | {r['none']:.1f} | {r['batch']:.1f} | "
            f"{r['balanced']:.1f} | {gold} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(CLASSIFICATION))
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-eval", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/label_ceiling.json"))
    args = parser.parse_args(argv)

    import torch

    from selfguide_hf.generation import TransformersEngine
    from selfguide_hf.models import load_causal_lm

    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model)
    engine = TransformersEngine(model, tokenizer, show_progress=False)
    results: dict[str, Any] = {
        "command": f"python benchmarks/label_ceiling.py --tasks {args.tasks} --max-eval {args.max_eval}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s)",
        "model": args.model,
        "rows": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for task in filter(None, args.tasks.split(",")):
        results["rows"].append(measure(task, engine, tokenizer, args.max_eval))
        print(json.dumps(results["rows"][-1]), flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
