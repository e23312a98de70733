"""benchmarks/quality.py tabulates each report's verdict: interval, trivial baseline, label / copy share."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfguide_hf.report import build_report

ROOT = Path(__file__).resolve().parent.parent


def quality_module():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_row_table(quality, row) -> str:
    """The markdown table of one classification row."""
    averages = {"exact_match": quality.averages([row], "exact_match")}
    return quality.markdown(
        {
            "command": "c",
            "date": "d",
            "machine": "m",
            "report_only": True,
            "rows": [row],
            "averages": averages,
        }
    )


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


def arms_module():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "quality_arms_bench", ROOT / "benchmarks" / "quality_arms.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arms_flags_and_table(tmp_path: Path, ni_dir: Path, monkeypatch) -> None:
    """Each arm is the run's flags; the corpus is the validation inputs without outputs; deltas per arm."""
    import json

    arms = arms_module()
    monkeypatch.setattr(arms, "SHARED", ni_dir)
    flags = arms.arm_flags("corpus-rewrite", "task738", tmp_path)
    assert flags[0] == "--corpus" and flags[2:] == ["--corpus-mode", "rewrite"]
    corpus = [json.loads(line) for line in Path(flags[1]).read_text().splitlines()]
    validation = [
        json.loads(line) for line in (ni_dir / "task738" / "validation.jsonl").read_text().splitlines()
    ]
    assert corpus == [{"text": row["input"]} for row in validation]  # no outputs leak in
    novelty = arms.arm_flags("novelty", "task738", tmp_path)
    assert all("novelty" in value for value in novelty[1::2]) and len(novelty) == 4
    assert arms.arm_flags("self-guided", "task738", tmp_path) == []
    embeddings = arms.arm_flags("corpus-embeddings", "task738", tmp_path)
    assert embeddings[2:] == ["--corpus-mode", "inputs", "--corpus-retriever", "embeddings"]
    row = {"metric": "exact_match", "baseline": 26.0, "delta": 17.5, "low": 6.5, "high": 28.0}
    results = {
        "command": "c",
        "date": "d",
        "arms": ["self-guided", "novelty"],
        "tasks": {
            "task738": {
                "self-guided": {**row, "verdict": "improved", "kept": 44, "raw": 100},
                "novelty": {
                    **row,
                    "delta": -1.0,
                    "low": -5.0,
                    "high": 3.0,
                    "verdict": "no clear change",
                    "kept": 40,
                    "raw": 100,
                },
            }
        },
    }
    table = arms.markdown(results)
    assert "| task738 | exact_match | 26.0 | +17.5 (+6.5 to +28.0) improved; 44/100 pairs |" in table
    assert "mean +17.5 over 1; 1 improved, 0 worse | mean -1.0 over 1; 0 improved, 0 worse" in table
    # a second task where only self-guided finished: the group means differ in tasks, the paired row does not
    results["tasks"]["task199"] = {
        "self-guided": {**row, "delta": 30.0, "verdict": "improved", "kept": 1, "raw": 1}
    }
    table = arms.markdown(results)
    assert (
        "| **exact_match, arm − self-guided** | | | - | -18.5 over 1 tasks; above self-guided on 0 |" in table
    )


def test_arms_seeds_average_the_draws_and_agree_on_a_verdict(tmp_path: Path) -> None:
    """Several draws of one arm: the mean delta, each seed's delta, a verdict only if every seed gives it."""
    import argparse

    arms = arms_module()
    assert arms.seed_flags(0) == []
    assert arms.seed_flags(2) == ["--synthesis-seed", "2", "--seed", "44"]
    args = argparse.Namespace(out_dir=tmp_path, base_dir=None)
    assert arms.arm_dir("novelty", args, 0) == tmp_path / "novelty"
    assert arms.arm_dir("novelty", args, 1) == tmp_path / "novelty" / "seed-1"
    base = {"metric": "exact_match", "baseline": 26.0, "low": 1.0, "high": 9.0, "raw": 100}
    rows = [
        {**base, "delta": 12.0, "verdict": "improved", "kept": 40},
        {**base, "delta": 2.0, "verdict": "no clear change", "kept": 50},
        {"task": "task738", "error": "no outputs/x/report.json", "minutes": 0.0},
    ]
    cell = arms.combine_seeds(rows)
    assert cell["delta"] == 7.0 and cell["seed_deltas"] == [12.0, 2.0] and cell["verdict"] == "mixed"
    assert cell["kept"] == 45 and cell["seeds_missing"] == 1
    assert arms._cell(cell) == "+7.0 (seeds +12.0, +2.0, 1 not run) mixed; 45/100 pairs"
    agreed = arms.combine_seeds([rows[0], {**rows[0], "delta": 16.0}])
    assert agreed["verdict"] == "improved" and agreed["delta"] == 14.0
    assert arms.combine_seeds(rows[:1]) is rows[0]  # one seed: the run's own interval stays


def test_corpus_label_quality_scores_the_self_made_targets_against_the_true_outputs(
    tmp_path: Path, ni_dir: Path, monkeypatch
) -> None:
    import json

    spec = importlib.util.spec_from_file_location(
        "label_quality", ROOT / "benchmarks" / "corpus_label_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SHARED", ni_dir)
    truth = [
        json.loads(line) for line in (ni_dir / "task738" / "validation.jsonl").read_text().splitlines()[:4]
    ]
    run = tmp_path / "corpus-inputs" / "task738"
    (run / "synthetic").mkdir(parents=True)
    wrong = {"support": "undermine", "undermine": "support"}
    pairs = [  # two right, one wrong, one input that is not in the corpus
        {"input": truth[0]["input"], "output": truth[0]["output"]},
        {"input": truth[1]["input"], "output": truth[1]["output"]},
        {"input": truth[2]["input"], "output": wrong[truth[2]["output"]]},
        {"input": "claim: made up. perspective: not in the corpus.", "output": "support"},
    ]
    (run / "synthetic" / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (run / "report.json").write_text(
        json.dumps({"baseline": {"score": 26.0}, "self_guided": {"score": 42.0}})
    )
    row = module.label_quality(run, "task738")
    assert (row["pairs"], row["matched"], row["self_label_score"]) == (4, 3, 66.7)
    assert (row["few_shot_test"], row["self_guided_test"]) == (26.0, 42.0)


def test_arms_head_to_head_on_the_same_rows(tmp_path: Path) -> None:
    """Arm minus self-guided row by row, with its own interval; runs on other rows are not compared."""
    import json

    arms = arms_module()
    few_shot = [0.0] * 10 + [100.0] * 10

    def report(name: str, tuned: list[float], base: list[float] = few_shot, task: str = "task738") -> Path:
        run = tmp_path / name
        run.mkdir()
        (run / "report.json").write_text(
            json.dumps(
                {
                    "task": task,
                    "model": "m",
                    "eval_split": "test",
                    "metric": "exact_match",
                    "baseline": {"row_scores": base},
                    "self_guided": {"row_scores": tuned},
                }
            )
        )
        return run

    guided = report("guided", [100.0] * 20)
    worse = report("worse", [0.0] * 10 + [100.0] * 10)  # 10 rows lost, none gained
    row = arms.versus_self_guided(worse, guided)
    assert row["delta"] == -50.0 and row["high"] < 0 and row["verdict"] == "worse" and row["rows"] == 20
    assert arms._cell(row).startswith("-50.0 (") and arms._cell(row).endswith(") worse")
    same = arms.versus_self_guided(report("same", [100.0] * 20), guided)
    assert (same["delta"], same["verdict"]) == (0.0, "no clear change")
    other_rows = report("other", [100.0] * 20, base=[100.0] * 20)
    assert arms.versus_self_guided(other_rows, guided) == {"error": arms.OTHER_ROWS}
    other_task = report("other-task", [100.0] * 20, task="task199")  # same scores, another task's rows
    assert arms.versus_self_guided(other_task, guided) == {"error": arms.OTHER_ROWS}
    assert arms._cell(arms.versus_self_guided(other_task, guided)) == "other rows"
    assert "error" in arms.versus_self_guided(tmp_path / "missing", guided)
    results = {
        "command": "c",
        "date": "d",
        "arms": ["self-guided", "novelty"],
        "tasks": {"task738": {}},
        "versus_self_guided": {"task738": {"novelty": row}},
    }
    table = arms.markdown(results)
    assert "| task | novelty − self-guided |" in table
    assert "| **outside noise** | above on 0, below on 1 of 1 |" in table


def test_the_table_judges_the_trivial_baseline_by_rows_and_names_one_answer_arms() -> None:
    """34.5 against a majority rate of 34.0 is "at", not "above"; an arm giving one answer is named."""
    quality = quality_module()
    majority = {"name": "majority-class", "score": 34.0}
    rule = [100.0] * 68 + [0.0] * 132
    top = {"answer": "2", "rows": 200, "of": 200}
    report = build_report(
        "task9", "m", "exact_match",
        result(34.0, rule, trivial_row_scores=rule, trivial_baseline=majority, label_share=100.0, top_answer=top),
        result(34.5, [100.0] * 69 + [0.0] * 131, trivial_row_scores=rule, trivial_baseline=majority, label_share=100.0),
    )  # fmt: skip
    row = quality.row_of({**report, "minutes": 1.0})
    table = one_row_table(quality, row)
    line = next(x for x in table.splitlines() if x.startswith("| task9 "))
    assert "at / at (few-shot answers `2` on 200 of 200 rows)" in line
    assert "self-guided above it on 0 of 1" in table


def test_the_table_shows_the_mean_over_draws_and_their_spread() -> None:
    from selfguide_hf.draws import combine_draws

    quality = quality_module()
    base = result(40.0, [100.0] * 40 + [0.0] * 60)
    tuned = [result(s, [100.0] * int(s) + [0.0] * (100 - int(s))) for s in (60.0, 50.0, 40.0)]
    report = build_report("task7", "m", "exact_match", base, tuned[0])
    combine_draws(report, tuned, [(0, 42), (1, 43), (2, 44)])
    assert report["draws_summary"] == {"mean": 50.0, "sd": 10.0, "min": 40.0, "max": 60.0}
    assert report["delta"] == 10.0 and report["verdict_sentence"].startswith(
        "self-guided 50.0 ± 10.0 over 3 draws"
    )
    row = quality.row_of({**report, "minutes": 1.0})
    table = one_row_table(quality, row)
    line = next(x for x in table.splitlines() if x.startswith("| task7 "))
    assert "| 40.0 | 50.0 | +10.0 (" in line and "3 draws, sd 10.0 (40.0–60.0)" in line


def test_the_table_and_the_plot_carry_the_in_context_arm(tmp_path: Path) -> None:
    from selfguide_hf.report import write_report

    quality = quality_module()
    base = result(40.0, [100.0] * 40 + [0.0] * 60)
    tuned = result(60.0, [100.0] * 60 + [0.0] * 40)
    arm = result(50.0, [100.0] * 50 + [0.0] * 50, served="8.0 synthetic pairs in context on average (k=8)")
    report = build_report("task6", "m", "exact_match", base, tuned, in_context=arm)
    assert report["self_guided_vs_in_context"]["delta"] == 10.0
    row = quality.row_of({**report, "minutes": 1.0})
    table = one_row_table(quality, row)
    versus = report["self_guided_vs_in_context"]
    assert (
        f"; pairs in context 50.0 (self-guided +10.0, {versus['low']:+.1f} to {versus['high']:+.1f}) |"
        in next(x for x in table.splitlines() if x.startswith("| task6 "))
    )
    written = write_report(report, tmp_path)
    assert (
        all(p.is_file() for p in written.values())
        and "synthetic pairs in context" in (tmp_path / "report.md").read_text()
    )


def test_the_in_context_arm_over_draws_pairs_each_draw_with_its_own_pairs(tmp_path: Path) -> None:
    """Each draw's pairs in the prompt vs the same pairs in the weights: known means and deltas."""
    from selfguide_hf.draws import combine_draws
    from selfguide_hf.report import write_report

    quality = quality_module()
    rows = lambda s: [100.0] * int(s) + [0.0] * (100 - int(s))  # noqa: E731
    base = result(40.0, rows(40))
    tuned = [result(s, rows(s)) for s in (60.0, 50.0)]
    in_context = [result(s, rows(s)) for s in (50.0, 70.0)]
    report = build_report("task5", "m", "exact_match", base, tuned[0], in_context=in_context[0])
    combine_draws(report, tuned, [(0, 42), (1, 43)], in_context)
    assert [d["in_context_score"] for d in report["draws"]] == [50.0, 70.0]
    assert report["in_context_summary"]["mean"] == 60.0
    assert report["in_context_interval"]["delta"] == 20.0  # (10 + 30) / 2 over few-shot
    versus = report["self_guided_vs_in_context"]
    assert versus["delta"] == -5.0 and versus["draw_deltas"] == [10.0, -20.0] and versus["draws"] == 2
    assert "synthetic pairs in context 60.0 ± 14.1 (self-guided -5.0, " in report["verdict_sentence"]
    row = quality.row_of({**report, "minutes": 1.0})
    table = one_row_table(quality, row)
    low, high = versus["low"], versus["high"]
    assert f"; pairs in context 60.0 (self-guided -5.0, {low:+.1f} to {high:+.1f}) |" in table
    above, below = int(low > 0), int(high < 0)
    assert (
        f"| *pairs in context, mean of 1* | exact_match | | 60.0 | | self-guided above it on {above}, below on {below} "
        in table
    )
    write_report(report, tmp_path)
    assert "synthetic pairs in context exact_match | 60.00" in (tmp_path / "report.md").read_text()


def test_merge_tabulates_rows_of_earlier_runs_in_the_order_asked(tmp_path: Path) -> None:
    quality = quality_module()
    majority = {"name": "majority-class", "score": 55.0}

    def row(task: str, tuned: int) -> dict:
        report = build_report(
            task, "m", "exact_match",
            result(40.0, [100.0] * 40 + [0.0] * 60, label_share=100.0, majority_rate=55.0, trivial_baseline=majority),
            result(tuned, [100.0] * tuned + [0.0] * (100 - tuned), label_share=100.0, majority_rate=55.0,
                   trivial_baseline=majority),
            funnel={"raw_inputs": 100, "kept": 50},
        )  # fmt: skip
        return quality.row_of({**report, "minutes": 1.0})

    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    first.write_text(json.dumps({"rows": [row("task1", 50), row("task2", 30)]}))
    second.write_text(json.dumps({"rows": [row("task2", 45)]}))
    out = tmp_path / "merged.json"

    assert quality.main(["--tasks", "task2,task1", "--merge", f"{first},{second}", "--json", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert [r["task"] for r in merged["rows"]] == ["task2", "task1"]
    assert merged["rows"][0]["self_guided"] == 45.0  # the later file's row wins
    assert merged["averages"]["exact_match"]["self_guided"] == 47.5
    assert merged["report_only"] is True

    with pytest.raises(SystemExit, match="no row for task3"):
        quality.main(["--tasks", "task1,task3", "--merge", str(first), "--json", str(out)])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"bad\.json is not a quality\.py JSON file"):
        quality.main(["--tasks", "task1", "--merge", str(tmp_path / "bad.json"), "--json", str(out)])


def test_minutes_from_gives_rebuilt_reports_their_first_minutes(tmp_path: Path) -> None:
    quality = quality_module()
    majority = {"name": "majority-class", "score": 55.0}

    def report(tuned: int, minutes: float) -> dict:
        built = build_report(
            "task1", "m", "exact_match",
            result(40.0, [100.0] * 40 + [0.0] * 60, label_share=100.0, majority_rate=55.0, trivial_baseline=majority),
            result(tuned, [100.0] * tuned + [0.0] * (100 - tuned), label_share=100.0, majority_rate=55.0,
                   trivial_baseline=majority),
            funnel={"raw_inputs": 100, "kept": 50},
        )  # fmt: skip
        return {**built, "timings_min": {"training": minutes}}

    (tmp_path / "runs" / "task1").mkdir(parents=True)
    (tmp_path / "runs" / "task1" / "report.json").write_text(json.dumps(report(50, 0.0)))  # rebuilt
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"rows": [quality.row_of({**report(50, 12.5), "minutes": 12.5})]}))
    out = tmp_path / "out.json"
    argv = ["--tasks", "task1", "--report-only", "--out-dir", str(tmp_path / "runs"), "--json", str(out)]
    assert quality.main([*argv, "--minutes-from", str(first)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["minutes"] == 12.5 and row["stage_minutes"] == {"training": 12.5}
    assert "--minutes-from" in json.loads(out.read_text())["command"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": [quality.row_of({**report(45, 3.0), "minutes": 3.0})]}))
    with pytest.raises(SystemExit, match="task1 is another run there"):
        quality.main([*argv, "--minutes-from", str(other)])
    with pytest.raises(SystemExit, match=r"--minutes-from: no file .*missing\.json"):
        quality.main([*argv, "--minutes-from", str(tmp_path / "missing.json")])
