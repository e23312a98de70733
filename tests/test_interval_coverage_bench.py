"""benchmarks/interval_coverage.py: the simulation behind the interval's coverage figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/interval_coverage.py", "interval_coverage_bench")


def test_every_cell_is_written_with_both_intervals(bench, tmp_path: Path) -> None:
    out = tmp_path / "coverage.json"
    assert bench.main(["--runs", "5", "--resamples", "50", "--json", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert len(cells) == 8 and {c["rows"] for c in cells} == {"independent", "shared"}
    for cell in cells:
        assert 0 <= cell["t over draws: coverage"] <= 1 and 0 <= cell["resampled draws: coverage"] <= 1
    # no draw spread and every draw erring on the same rows: both intervals are the row bootstrap
    flat = next(c for c in cells if c["rows"] == "shared" and c["spread_points"] == 0)
    assert flat["t over draws: width"] == pytest.approx(flat["resampled draws: width"], abs=0.2)


def test_one_draw_or_no_resamples_is_refused(bench, capsys) -> None:
    for argv in (["--draws", "1"], ["--resamples", "0"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert "--draws needs at least 2, --runs and --resamples at least 1" in capsys.readouterr().err
