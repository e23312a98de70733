"""The third arm: synthetic pairs in the prompt instead of in the weights, on the same rows."""

from __future__ import annotations

import json
from pathlib import Path

from selfguide_hf.in_context import in_context_prompts, nearest_pairs
from selfguide_hf.task import TaskSpec

PAIRS = [
    {"input": "claim: Trains are faster than buses. perspective: Rail saves time.", "output": "support"},
    {"input": "claim: Cats should stay indoors. perspective: Indoor cats live longer.", "output": "support"},
    {"input": "claim: Homework helps pupils. perspective: It takes away play.", "output": "undermine"},
]


def test_the_nearest_pairs_share_the_row_s_rarest_words() -> None:
    found = nearest_pairs(PAIRS, ["claim: Should cats live indoors?", "claim: more homework for pupils"], k=2)
    assert found[0][0] == 1 and found[1][0] == 2 and all(len(row) == 2 for row in found)
    assert nearest_pairs([], ["x"], 3) == [[]]


def test_the_pairs_replace_the_demonstrations_and_are_fitted_to_the_context(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = TaskSpec.load("task738")
    rows = [{"input": "claim: Cats should stay indoors.", "output": ["support"]}]
    prompts, used = in_context_prompts(spec, rows, PAIRS, tokenizer, context=None, k=3)
    assert used == [3] and "Indoor cats live longer." in prompts[0]
    assert spec.demonstrations[0].input not in prompts[0]  # the spec's own demonstrations are replaced
    full = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    _, fewer = in_context_prompts(spec, rows, PAIRS, tokenizer, context=full - 1, k=3)
    assert fewer[0] < 3  # a shorter context: fewer pairs


def test_a_run_scores_the_in_context_arm_on_the_same_rows(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from selfguide_hf import cli
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    report = json.loads((out / "report.json").read_text())
    arm = report["in_context"]
    assert arm["num_examples"] == report["baseline"]["num_examples"] == report["self_guided"]["num_examples"]
    assert report["self_guided_vs_in_context"]["rows"] == arm["num_examples"]
    assert "synthetic pairs in context" in report["verdict_sentence"]
    answers = (out / "eval" / "in_context.predictions.jsonl").read_text().splitlines()
    base = (out / "eval" / "baseline.predictions.jsonl").read_text().splitlines()
    assert [json.loads(a)["input"] for a in answers] == [json.loads(b)["input"] for b in base]
    assert "synthetic pairs in context" in (out / "report.md").read_text()
    assert cli.main(run_args(tiny_model_dir, out, "--in-context-pairs", "0")) == 0  # the arm left out
    assert "in_context" not in json.loads((out / "report.json").read_text())
