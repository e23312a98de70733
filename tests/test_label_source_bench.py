"""benchmarks/label_source.py: two label sources head to head, over rows and each arm's draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf.verdict import paired_bootstrap
from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/label_source.py", "label_source_bench")


def test_one_draw_each_is_the_paired_row_bootstrap(bench) -> None:
    a = [0.0, 100.0, 0.0, 0.0, 100.0, 100.0, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0]
    b = [100.0, 100.0, 0.0, 100.0, 100.0, 0.0, 0.0, 100.0, 0.0, 100.0, 100.0, 0.0]
    mine, paired = bench.arms_bootstrap([a], [b]), paired_bootstrap(a, b)
    assert (mine["delta"], mine["low"], mine["high"]) == (paired["delta"], paired["low"], paired["high"])
    assert mine["delta"] == pytest.approx(100 * 3 / 12, abs=0.01)


def test_draws_that_score_every_row_alike_leave_only_the_draws_to_vary(bench) -> None:
    # arm B's three draws score 40, 50 and 60 on every row: 20 ± t(2) * 10 / sqrt(3)
    result = bench.arms_bootstrap([[30.0] * 20], [[40.0] * 20, [50.0] * 20, [60.0] * 20])
    assert result["delta"] == 20.0 and result["draws"] == [1, 3] and result["rows"] == 20
    assert (result["low"], result["high"]) == pytest.approx((20 - 24.84, 20 + 24.84), abs=0.01)
    # both arms vary: Welch's degrees of freedom, 4 here, and both spreads
    both = bench.arms_bootstrap(
        [[d] * 20 for d in (10.0, 20.0, 30.0)], [[d] * 20 for d in (40.0, 50.0, 60.0)]
    )
    assert both["draws_df"] == 4 and both["high"] - both["delta"] == pytest.approx(
        2.776 * (200 / 3) ** 0.5, abs=0.05
    )
    same = bench.arms_bootstrap([[30.0] * 5] * 3, [[40.0] * 5] * 2)
    assert (same["delta"], same["low"], same["high"]) == (10.0, 10.0, 10.0)


def test_arms_on_other_rows_are_refused(bench) -> None:
    with pytest.raises(ValueError, match="same rows"):
        bench.arms_bootstrap([[0.0, 100.0]], [[0.0, 100.0, 0.0]])
    with pytest.raises(ValueError, match=r"row counts \[\[2, 1\], \[2\]\]"):  # one draw of an arm is short
        bench.arms_bootstrap([[0.0, 100.0], [0.0]], [[0.0, 100.0]])


def write_run(folder: Path, inputs: list[str], draws: list[list[float]]) -> None:
    """A finished run's files as `selfguide run --draws N` leaves them (only what the script reads)."""
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    for k, scores in enumerate(draws):
        evals = (folder if k == 0 else folder / "draws" / str(k)) / "eval"
        evals.mkdir(parents=True)
        (evals / "self_guided.json").write_text(json.dumps({"key": {}, "result": {"row_scores": scores}}))
        rows = "".join(json.dumps({"input": i, "prediction": "x"}) + "\n" for i in inputs)
        (evals / "self_guided.predictions.jsonl").write_text(rows)


def test_compare_reads_every_draw_and_skips_runs_on_other_rows(bench, tmp_path: Path) -> None:
    rows = ["a", "b", "c", "d"]
    write_run(tmp_path / "judge" / "t", rows, [[0.0, 0.0, 100.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    write_run(tmp_path / "condition" / "t", rows, [[100.0, 0.0, 100.0, 0.0]] * 3)
    write_run(tmp_path / "agree" / "t", ["a", "b", "c", "e"], [[0.0] * 4])
    arms = {name: [tmp_path / "missing", tmp_path / name] for name in ("judge", "condition", "agree")}
    result = bench.compare("t", arms)
    assert result["scores"] == {"judge": 12.5, "condition": 50.0, "agree": 0.0}
    assert result["pairs"]["condition - judge"]["delta"] == 37.5
    assert result["pairs"]["condition - judge"]["draws"] == [2, 3]
    assert result["pairs"]["agree - judge"] == {"error": "not the same test rows"}
    assert "not the same test rows" in bench.markdown(
        {"command": "c", "date": "d", "arms": list(arms), "tasks": [result]}
    )


def test_a_mistyped_arm_folder_is_named(bench, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--tasks", "t", "--arm", f"judge={tmp_path / 'nope'}"])
    assert "--arm judge: no such folder" in capsys.readouterr().err
