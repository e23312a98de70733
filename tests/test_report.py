"""Run report: figures, markdown, PNG."""

from __future__ import annotations

import json

from selfguide_hf.report import build_report, format_table, write_report

BASE = {
    "score": 40.0,
    "num_examples": 10,
    "majority_rate": 60.0,
    "majority_label": "yes",
    "prediction_counts": {"no": 10},
}
TUNED = {
    "score": 70.0,
    "num_examples": 10,
    "majority_rate": 60.0,
    "majority_label": "yes",
    "prediction_counts": {"yes": 7, "no": 3},
}
FUNNEL = {"raw_inputs": 100, "kept": 40, "dropped": {"input:length": 50, "balance": 10}}


def test_report_files_and_table(tmp_path):
    report = build_report("task199", "tiny", "exact_match", BASE, TUNED, FUNNEL, {"train": 120.0})
    assert report["delta"] == 30.0 and report["timings_min"] == {"train": 2.0}
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["delta"] == 30.0
    md = paths["md"].read_text()
    assert (
        "| delta | +30.00 |" in md
        and "| input:length | 50 | 50 |" in md
        and "| balance | 10 | 40 |" in md
        and "majority-class rate" in md
    )
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(report)
    assert "self-guided exact_match" in table and "40 / 100" in table


def test_report_without_baseline(tmp_path):
    report = build_report("task1195", "tiny", "rouge_l", None, TUNED)
    assert "delta" not in report
    write_report(report, tmp_path)
    assert "few-shot" not in format_table(report)
