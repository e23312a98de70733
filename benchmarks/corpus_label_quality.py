"""How right are the model's own answers on real corpus inputs? Scored against the inputs' true outputs.

    python benchmarks/corpus_label_quality.py --arms-dir outputs/arms-gen300 outputs/arms

The quality arms' corpus is a task's validation inputs with the outputs
removed, so every synthetic pair a `corpus-inputs` run kept has a true output
in `validation.jsonl`. This scores the model's annotation of those inputs
(the training targets) with the task's metric against the true outputs, and
prints it beside the run's few-shot and self-guided test scores: a model
trained on targets of that quality cannot be expected to score much above it.
No model runs; it reads the runs' `synthetic/train.jsonl` and `report.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "ni"


def label_quality(run: Path, task: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from selfguide_hf.metrics.core import exact_match_score, rouge_l_score
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(task)
    truth: dict[str, list[str]] = {}
    for line in (SHARED / task / "validation.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        refs = row["output"] if isinstance(row["output"], list) else [row["output"]]
        truth.setdefault(row["input"].strip(), []).extend(refs)
    pairs = [json.loads(line) for line in (run / "synthetic" / "train.jsonl").open(encoding="utf-8")]
    matched = [(p["output"], truth[p["input"].strip()]) for p in pairs if p["input"].strip() in truth]
    if spec.is_classification:
        scores = [exact_match_score(out, refs, spec.labels) for out, refs in matched]
        metric = "exact_match"
    else:
        scores = [rouge_l_score(out, refs) for out, refs in matched]
        metric = "rouge_l"
    report = json.loads((run / "report.json").read_text())
    top = Counter(out for out, _ in matched).most_common(1)
    return {
        "task": task,
        "metric": metric,
        "pairs": len(pairs),
        "matched": len(matched),
        "self_label_score": round(sum(scores) / len(scores), 1) if scores else None,
        "most_common_target": f"{top[0][0]!r} x{top[0][1]}" if top else None,
        "few_shot_test": round(report["baseline"]["score"], 1),
        "self_guided_test": round(report["self_guided"]["score"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arms-dir", type=Path, nargs="+", default=[ROOT / "outputs" / "arms"])
    parser.add_argument("--arm", default="corpus-inputs")
    args = parser.parse_args(argv)
    rows = [
        label_quality(run, run.name)
        for arms_dir in args.arms_dir
        for run in sorted((arms_dir / args.arm).glob("task*"))
        if (run / "report.json").is_file() and (run / "synthetic" / "train.jsonl").is_file()
    ]
    print(
        "| task | metric | pairs (with a true output) | self-labels vs true outputs | most common target | few-shot (test) | trained on them (test) |"
    )
    print("|---|---|---:|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['task']} | {r['metric']} | {r['pairs']} ({r['matched']}) | {r['self_label_score']} "
            f"| {r['most_common_target']} | {r['few_shot_test']} | {r['self_guided_test']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
