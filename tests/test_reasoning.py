"""Chain-of-thought annotation (ReBase): reasoned samples, a vote over their final answers, and training on
the reasoning; evaluation reads the answer back the same way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from selfguide_hf.bundled import bundled_spec
from selfguide_hf.evaluation import evaluate_model
from selfguide_hf.generation import SamplingParams
from selfguide_hf.prompts import (
    REASONING_REQUEST,
    encode_prompt,
    encode_training_example,
    extract_final_answer,
    reasoning_target,
    render_task_prompt,
    split_reasoning,
)
from selfguide_hf.synthesis import synthesize
from selfguide_hf.synthesis_config import SynthesisConfig

INPUT_REQUEST = "Write one new input"


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("The claim is weak.\nAnswer: undermine", "undermine"),
        ("step one\n**Answer:** support", "support"),
        ("Reasoning.\nFinal answer: yes", "yes"),
        ("a\nAnswer: first\nthen more thought\nThe answer is: second", "second"),  # the last one counts
        ("The answer is: Paris is large.", "Paris is large."),
        ("no marker at all", None),
        ("thinking\nAnswer:", None),  # a marker with nothing after it
        ("The sentence I was given is:\nAnswer: Answer: Answer:", None),  # seen from the 135M model
        ("Answer: Answer: yes", "yes"),
        ("my Answer: yes", None),  # a marker must open a line
    ],
)
def test_final_answer_extraction(reply: str, answer: str | None) -> None:
    assert extract_final_answer(reply) == answer


def test_reasoning_is_what_precedes_the_answer() -> None:
    reply = "The perspective argues against it.\nAnswer: undermine"
    assert split_reasoning(reply) == "The perspective argues against it."
    assert extract_final_answer(reasoning_target(split_reasoning(reply), "undermine")) == "undermine"


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="reasoning_target"):
        SynthesisConfig.preset("default", reasoning_target="reasoning")  # no reasoning to train on
    with pytest.raises(ValueError, match="reasoning_target"):
        SynthesisConfig.preset("default", chain_of_thought=True, reasoning_target="both")
    with pytest.raises(ValueError, match="chain_of_thought"):
        SynthesisConfig.preset("default", chain_of_thought="yes")
    with pytest.raises(ValueError, match="output_filters_classification"):
        SynthesisConfig.preset("default", chain_of_thought=True, output_filters_classification=("empty",))


class ReasoningEngine:
    """Writes task738 inputs; answers reasoned task prompts with a fixed mix of final answers."""

    REPLIES = (
        *["It argues against the claim.\nAnswer: undermine"] * 5,
        *["It backs the claim up.\nAnswer: support"] * 3,
        "I am not sure what to say.",  # no final answer
        "Answer: maybe",  # not a label
    )

    def __init__(self) -> None:
        self.counter = 0
        self.task_prompts: list[str] = []
        self.samplings: list[SamplingParams] = []

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        out = []
        for prompt in prompts:
            if INPUT_REQUEST in prompt:
                self.counter += 1
                text = f"claim: topic number {self.counter}.\nperspective: view {self.counter}"
                out.append(
                    [text.removeprefix("claim: ") if prompt.endswith("claim: ") else text] * sampling.n
                )
            else:
                self.task_prompts.append(prompt)
                self.samplings.append(sampling)
                out.append([self.REPLIES[i % len(self.REPLIES)] for i in range(sampling.n)])
        return out

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        raise AssertionError("chain of thought annotates by sampling, never by label likelihood")


def _synthesize(tokenizer: Any, **overrides: Any) -> tuple[Any, ReasoningEngine]:
    engine = ReasoningEngine()
    config = SynthesisConfig.preset(
        "default", num_inputs=4, prompts_per_round=2, chain_of_thought=True, balance="none", **overrides
    )
    result = synthesize(bundled_spec("task738"), engine, tokenizer, config, show_progress=False)
    return result, engine


def test_vote_is_over_final_answers(tokenizer: Any) -> None:
    """The default preset scores labels; with chain of thought the samples reason and the vote reads answers."""
    result, engine = _synthesize(tokenizer)
    assert engine.task_prompts and all(REASONING_REQUEST in p for p in engine.task_prompts)
    assert {s.max_new_tokens for s in engine.samplings} == {256}
    assert result.rows and {row["output"] for row in result.rows} == {"undermine"}
    row = result.rows[0]
    assert row["vote_share"] == pytest.approx(5 / 8)  # 5 of the 8 samples that named a label
    assert row["num_agreeing"] == 5
    assert row["reasoning"] == ""  # the answer alone is the training target by default
    assert REASONING_REQUEST not in row["prompt"]
    drops = result.funnel.notes["sample_drops"]
    assert drops["no_final_answer"] == len(result.rows)  # one reply in ten per input gives no answer
    assert sum(drops.values()) == 2 * len(result.rows)  # and one names no label ("maybe")
    assert "chain of thought" in result.funnel.notes["annotation"]


def test_training_on_reasoning_keeps_the_winning_reasoning(tokenizer: Any) -> None:
    result, _ = _synthesize(tokenizer, reasoning_target="reasoning")
    row = result.rows[0]
    assert row["reasoning"] == "It argues against the claim."
    assert REASONING_REQUEST in row["prompt"]
    assert "It argues against the claim." in row["completion"] and "Answer: undermine" in row["completion"]
    spec = bundled_spec("task738")
    encoded = encode_training_example(spec, row["input"], row["output"], tokenizer, row["reasoning"])
    prompt_ids = encode_prompt(tokenizer, render_task_prompt(spec, row["input"], tokenizer, True))
    assert encoded["input_ids"][: len(prompt_ids)] == prompt_ids  # the ids evaluation will generate from
    target = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["completion_mask"]) if m])
    assert extract_final_answer(target.split("<|im_end|>")[0]) == "undermine"


class AnswerEngine:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        self.prompts.extend(prompts)
        return [[self.replies[i % len(self.replies)]] for i in range(len(prompts))]


def test_evaluation_reads_the_answer_line(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    rows = [{"input": "claim: a.\nperspective: b", "output": ["undermine"]}] * 3
    engine = AnswerEngine(["Because.\nAnswer: undermine", "Hmm.\nAnswer: support", "no answer"])
    result = evaluate_model(None, tokenizer, spec, rows, engine=engine, reasoning=True)
    assert all(REASONING_REQUEST in p for p in engine.prompts)
    assert result.predictions == ["undermine", "support", ""]
    assert result.row_scores == [100.0, 0.0, 0.0] and result.answered_with_reasoning
    assert result.raw_outputs[2] == "no answer" and "raw_outputs" not in result.summary()
    assert result.no_answer_share == pytest.approx(100 / 3, abs=0.01)  # shown in the report's table
    plain = evaluate_model(None, tokenizer, spec, rows, engine=AnswerEngine(["undermine"]))
    assert plain.predictions == ["undermine"] * 3 and not plain.answered_with_reasoning


@pytest.mark.slow
def test_a_run_trained_on_reasoning_is_evaluated_with_reasoning(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: Any
) -> None:
    """Synthetic rows with reasoning (from a file) -> adapter manifest says so -> the tuned model reasons."""
    from selfguide_hf.pipeline import prepare_run, run_all
    from selfguide_hf.settings_parser import parse_settings

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = [
        {"input": f"claim: topic {i}.\nperspective: view {i}", "output": label, "reasoning": f"Thought {i}."}
        for i, label in enumerate(["support", "undermine"] * 2)
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    sg_args, training_args, model_args = parse_settings(
        ["--task", "task738", "--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--num-inputs", "4",
         "--epochs", "1", "--split", "validation", "--max-eval", "3", "--min-pairs", "1",
         "--engine", "transformers"],
        front="cli",
        evaluate=True,
    )  # fmt: skip
    sg_args = dataclasses.replace(sg_args, dataset_path=str(data))
    run = prepare_run(sg_args, training_args, model_args, front="cli", owns_output_dir=True)
    run_all(run)
    manifest = json.loads((run_dir / "adapter" / "selfguide_run.json").read_text())
    assert manifest["identity"]["answers_with_reasoning"] is True
    tuned = [json.loads(line) for line in (run_dir / "eval" / "self_guided.predictions.jsonl").open()]
    base = [json.loads(line) for line in (run_dir / "eval" / "baseline.predictions.jsonl").open()]
    assert len(tuned) == 3 and all("reasoned_reply" in r for r in tuned)
    assert all("reasoned_reply" not in r for r in base)  # few-shot is the paper's baseline, unchanged
    report = json.loads((run_dir / "report.json").read_text())
    assert (
        report["self_guided"]["answered_with_reasoning"] and not report["baseline"]["answered_with_reasoning"]
    )
    assert "self-guided replies with no Answer: line" in (run_dir / "report.md").read_text()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
