"""benchmarks/quality.py tabulates each report's verdict: interval, trivial baseline, label / copy share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from selfguide_hf.report import build_report

ROOT = Path(__file__).resolve().parent.parent


def quality_module():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(score, rows, **extra):
    return {"score": score, "num_examples": len(rows), "metric": "m", "row_scores": rows, **extra}


def test_the_table_carries_interval_trivial_baseline_and_shares() -> None:
    quality = quality_module()
    majority = {"name": "majority-class", "score": 55.0}
    cls = build_report(
        "task1", "m", "exact_match",
        result(40.0, [100.0] * 40 + [0.0] * 60, label_share=80.0, majority_rate=55.0, trivial_baseline=majority),
        result(60.0, [100.0] * 60 + [0.0] * 40, label_share=99.0, majority_rate=55.0, trivial_baseline=majority),
        funnel={"raw_inputs": 100, "kept": 50},
    )  # fmt: skip
    copy = {"name": "copy-the-input", "score": 77.8}
    gen = build_report(
        "task2", "m", "rouge_l",
        result(72.0, [72.0] * 100, copy_share=21.0, trivial_baseline=copy),
        result(74.1, [74.1] * 100, copy_share=39.0, trivial_baseline=copy),
        funnel={"raw_inputs": 300, "kept": 120},
    )  # fmt: skip
    rows = [quality.row_of({**cls, "minutes": 1.0}), quality.row_of({**gen, "minutes": 2.0})]
    table = quality.markdown(
        {
            "command": "c",
            "date": "d",
            "machine": "m",
            "report_only": True,
            "rows": rows,
            "averages": {m: quality.averages(rows, m) for m in ("exact_match", "rouge_l")},
        }
    )
    cls_line = next(line for line in table.splitlines() if line.startswith("| task1 "))
    assert "+20.0 (" in cls_line and "| improved |" in cls_line and "55.0 majority-class" in cls_line
    assert "below / above" in cls_line and "labels: 80.0 / 99.0" in cls_line
    gen_line = next(line for line in table.splitlines() if line.startswith("| task2 "))
    assert (
        "+2.1 (+2.1 to +2.1)" in gen_line
        and "77.8 copy-the-input" in gen_line
        and "below / below" in gen_line
    )
    assert "copies: 21.0 / 39.0" in gen_line
    assert "1 improved, 0 worse" in table and "self-guided above it on 0 of 1" in table
