"""The SELF-GUIDE loop: scripted engines pin the logic down, the tiny model runs the real path."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from selfguide_hf.bundled import bundled_spec
from selfguide_hf.calibration import assign_balanced_labels, balance_classes, calibrate_label_scores
from selfguide_hf.filters import length_window
from selfguide_hf.generation import GenerationEngine, SamplingParams, TransformersEngine
from selfguide_hf.prompts import render_completion, render_task_prompt
from selfguide_hf.synthesis import ROW_COLUMNS, SynthesisError, length_token_cap, synthesize
from selfguide_hf.synthesis_config import PRESETS, SynthesisConfig
from selfguide_hf.task import Demonstration, TaskSpec

INPUT_REQUEST = "Write one new input"  # how prompts.py asks for a new input


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from selfguide_hf.models import load_causal_lm

    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny: tuple[Any, Any]) -> Any:
    return tiny[1]


class ScriptedEngine:
    """Writes numbered task738-style inputs and answers from a script; records every call."""

    def __init__(self, answers: list[str] | None = None, scores: list[float] | None = None) -> None:
        self.answers = answers or ["support"]
        self.scores = scores
        self.generated_prompts: list[str] = []
        self.scored_prompts: list[str] = []
        self.samplings: list[SamplingParams] = []
        self.counter = 0

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        self.samplings.append(sampling)
        out = []
        for prompt in prompts:
            self.generated_prompts.append(prompt)
            if INPUT_REQUEST in prompt:
                self.counter += 1
                body = f"topic number {self.counter}.\nperspective: view {self.counter}"
                out.append([body if prompt.endswith("claim: ") else f"claim: {body}"] * sampling.n)
            else:
                out.append([self.answers[i % len(self.answers)] for i in range(sampling.n)])
        return out

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        self.scored_prompts.extend(prompts)
        out = []
        for i, _ in enumerate(prompts):
            if self.scores is not None:
                out.append(list(self.scores))
            else:  # alternate the favourite label so classes stay balanced
                out.append(
                    [
                        0.0 if j == (len(self.scored_prompts) + i) % len(choices) else -3.0
                        for j in range(len(choices))
                    ]
                )
        return out


def cfg(preset: str = "default", **overrides: Any) -> SynthesisConfig:
    base = {"num_inputs": 6, "prompts_per_round": 3}
    return SynthesisConfig.preset(preset, **{**base, **overrides})


# ------------------------------------------------------------------ config
def test_paper_preset_is_the_papers_parameters() -> None:
    paper = PRESETS["paper"]
    assert paper.prompts_per_round == 10
    assert (paper.input_temperature_classification, paper.input_temperature_generation) == (0.7, 0.9)
    assert (paper.input_top_k, paper.input_max_new_tokens, paper.max_prompt_tokens) == (40, 500, 3000)
    assert paper.max_pool_examples == 10 and paper.label_conditioned
    assert paper.input_filters_classification == ("empty", "length", "noise", "duplicate")
    assert paper.input_filters_generation == ("empty", "noise", "duplicate")
    assert paper.output_filters_generation == ("empty", "noise", "length")
    assert (paper.length_sigmas, paper.length_min_sigma_ratio) == (2.0, 0.0)
    assert (paper.num_samples, paper.annotation_temperature, paper.annotation_top_k) == (10, 0.2, 10)
    assert paper.min_frequency == 0.3
    assert paper.classification_annotation == "sample" and paper.balance == "downsample"
    assert not (paper.prime_inputs or paper.stop_run_on or paper.drop_truncated or paper.shuffle_examples)
    assert not paper.length_budget
    assert paper.label_calibration == "none"


def test_default_preset_differs_only_where_documented() -> None:
    changed = {k for k, v in PRESETS["default"].to_dict().items() if PRESETS["paper"].to_dict()[k] != v}
    assert changed == {
        "input_max_new_tokens",
        "drop_truncated",
        "prime_inputs",
        "stop_run_on",
        "shuffle_examples",
        "input_filters_classification",
        "input_filters_generation",
        "length_min_sigma_ratio",
        "classification_annotation",
        "label_calibration",
        "annotation_max_new_tokens",
        "length_budget",
        "label_assignment",
    }
    doc = (Path(__file__).resolve().parent.parent / "docs" / "SYNTHESIS.md").read_text()
    for name in changed:
        assert name in doc, f"docs/SYNTHESIS.md does not explain {name}"


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ValueError, match="num_input"):
        SynthesisConfig.preset("default", num_input=5)
    with pytest.raises(ValueError, match="unknown synthesis preset"):
        SynthesisConfig.preset("fast")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_inputs", 0),
        ("min_frequency", 1.5),
        ("classification_annotation", "guess"),
        ("input_filters_generation", ("empty", "nope")),
        ("balance", "upsample"),
        ("annotation_temperature", -1),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        SynthesisConfig.preset("default", **{field: value})


def test_sample_annotation_needs_the_label_filter() -> None:
    with pytest.raises(ValueError, match="output_filters_classification"):
        SynthesisConfig(output_filters_classification=("empty",))


# ------------------------------------------------------------------ scripted loop
def test_rounds_prompts_and_pool(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    engine = ScriptedEngine()
    result = synthesize(spec, engine, tokenizer, cfg(num_inputs=7), show_progress=False)
    input_prompts = [p for p in engine.generated_prompts if INPUT_REQUEST in p]
    assert len(input_prompts) == 7  # num_inputs raw inputs: rounds of 3, 3, 1
    assert result.funnel.raw == 7 and result.funnel.notes["rounds"] == 3
    # round 0 shows the demonstrations only; later rounds add 1..10 accepted inputs
    assert all("topic number" not in p for p in input_prompts[:3])
    assert all("topic number" in p for p in input_prompts[3:])
    # every classification prompt names one label; the reply is primed with "claim: "
    assert all(sum(f'"{label}"' in p for label in spec.labels) == 1 for p in input_prompts)
    assert all(p.endswith("claim: ") for p in input_prompts)
    sampling = engine.samplings[0]
    assert (sampling.temperature, sampling.top_k, sampling.n) == (0.7, 40, 1)
    assert sampling.max_new_tokens < 256  # the length budget of task738 inputs
    assert "\n\n" in sampling.stop and "\nExample " in sampling.stop


def test_examples_are_shuffled_in_the_default_preset(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    first_demo = spec.demonstrations[0].input
    orders = []
    for preset in ("default", "paper"):
        engine = ScriptedEngine()
        relaxed = cfg(preset, num_inputs=20, prompts_per_round=20, input_filters_classification=("empty",))
        config = dataclasses.replace(relaxed, classification_annotation="likelihood")
        synthesize(spec, engine, tokenizer, config, show_progress=False)
        prompts = [p for p in engine.generated_prompts if INPUT_REQUEST in p]
        orders.append({("Example 1:\n" + first_demo) in p for p in prompts})
    assert orders[0] == {True, False}  # default: the first demonstration is not always shown first
    assert orders[1] == {True}  # paper: demonstrations first, in order


def test_balanced_calibration_spreads_three_labels(tokenizer: Any) -> None:
    spec = bundled_spec("task190")

    class Skewed(ScriptedEngine):
        """Always prefers E, with per-input noise: argmax alone gives E to every input."""

        def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
            import random

            rng = random.Random(len(self.scored_prompts))
            self.scored_prompts.extend(prompts)
            return [[0.0, -1.5 + rng.random(), -3.0 + rng.random()] for _ in prompts]

    config = cfg(
        num_inputs=30,
        prompts_per_round=30,
        input_filters_classification=("empty",),
        balance="none",
        label_assignment="argmax",  # calibration alone
    )
    classes = {}
    for method in ("none", "batch", "balanced"):
        variant = dataclasses.replace(config, label_calibration=method)
        result = synthesize(spec, Skewed(), tokenizer, variant, show_progress=False)
        classes[method] = Counter(row["output"] for row in result.rows)
    assert set(classes["none"]) == {"E"}
    assert min(classes["balanced"][label] for label in spec.labels) >= 6, classes


def test_label_is_drawn_uniformly(tokenizer: Any) -> None:
    spec = bundled_spec("task190")
    engine = ScriptedEngine()
    config = cfg(num_inputs=300, prompts_per_round=100, input_filters_classification=("empty",))
    synthesize(spec, engine, tokenizer, config, show_progress=False)
    named = Counter(
        label
        for p in engine.generated_prompts
        if INPUT_REQUEST in p
        for label in spec.labels
        if f'"{label}"' in p
    )
    assert sum(named.values()) == 300
    assert all(70 <= named[label] <= 130 for label in spec.labels), named


def test_rows_are_sft_ready_with_provenance(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    result = synthesize(spec, ScriptedEngine(), tokenizer, cfg(), show_progress=False)
    assert result.rows
    for row in result.rows:
        assert set(row) == set(ROW_COLUMNS)  # the builder's features (test_builder)
        assert row["reasoning"] == ""  # no chain of thought
        assert row["prompt"] == render_task_prompt(spec, row["input"], tokenizer)
        assert row["completion"] == render_completion(spec, row["input"], row["output"], tokenizer)
        assert row["output"] in spec.labels
        assert row["input"].startswith("claim: ")
        assert 0.5 <= row["vote_share"] <= 1.0 and row["num_agreeing"] is None


def test_vote_annotation_maps_labels_and_counts_drops(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    # 10 samples: 4 name "support" in other words, 3 name nothing, 3 say undermine -> support wins 4/7
    answers = ["Supporting", "SUPPORT.", "It supports it", "support"] + ["hmm"] * 3 + ["undermine"] * 3
    engine = ScriptedEngine(answers=answers)
    config = cfg(classification_annotation="sample", balance="none")
    result = synthesize(spec, engine, tokenizer, config, show_progress=False)
    assert {row["output"] for row in result.rows} == {"support"}
    assert all(row["num_agreeing"] == 4 and row["vote_share"] == pytest.approx(4 / 7) for row in result.rows)
    assert result.funnel.notes["sample_drops"] == {"no_label": 3 * len(result.rows)}
    annotation = next(s for s in engine.samplings if s.n > 1)
    assert (annotation.n, annotation.temperature, annotation.top_k) == (10, 0.2, 10)


def test_vote_below_min_frequency_and_unusable_samples_are_dropped(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    split = cfg(classification_annotation="sample", min_frequency=0.6, balance="none")
    with pytest.raises(SynthesisError) as excinfo:
        synthesize(
            spec, ScriptedEngine(answers=["support", "undermine"]), tokenizer, split, show_progress=False
        )
    assert "vote:min_frequency" in str(excinfo.value)
    unusable = cfg(classification_annotation="sample")
    with pytest.raises(SynthesisError) as excinfo:
        synthesize(spec, ScriptedEngine(answers=["no idea"]), tokenizer, unusable, show_progress=False)
    message = str(excinfo.value)
    assert "annotation:no_label" in message and "raw inputs" in message and "kept" in message


def test_min_label_probability_drops_unsure_labels(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    unsure = ScriptedEngine(scores=[-1.0, -1.1])  # ~52 % vs 48 %
    config = cfg(label_calibration="none", min_label_probability=0.6)
    with pytest.raises(SynthesisError, match="vote:low_confidence"):
        synthesize(spec, unsure, tokenizer, config, show_progress=False)


@pytest.mark.parametrize("method", ["batch", "content_free"])
def test_calibration_removes_a_constant_label_bias(tokenizer: Any, method: str) -> None:
    spec = bundled_spec("task738")
    # the model always prefers "support" by the same margin: uncalibrated, every row is "support"
    biased = ScriptedEngine(scores=[0.0, -2.0])
    raw = synthesize(
        spec,
        biased,
        tokenizer,
        cfg(label_calibration="none", balance="none", label_assignment="argmax"),
        show_progress=False,
    )
    assert {row["output"] for row in raw.rows} == {"support"}
    assert all(row["vote_share"] == pytest.approx(1 / (1 + 2.718281828**-2)) for row in raw.rows)
    config = cfg(label_calibration=method, balance="none", label_assignment="argmax")
    calibrated = synthesize(spec, ScriptedEngine(scores=[0.0, -2.0]), tokenizer, config, show_progress=False)
    assert all(row["vote_share"] == pytest.approx(0.5) for row in calibrated.rows)
    assert calibrated.funnel.notes["label_prior"]["support"] == pytest.approx(0.8808, abs=1e-4)


def test_batch_calibration_spreads_a_favoured_label(tokenizer: Any) -> None:
    spec = bundled_spec("task738")

    class Favours(ScriptedEngine):
        """Prefers "support" for every input, a little less for every other one."""

        def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
            self.scored_prompts.extend(prompts)
            return [[0.0, -1.0 if len(self.scored_prompts) % 2 else -2.0] for _ in prompts]

    plain = synthesize(
        spec,
        Favours(),
        tokenizer,
        cfg(label_calibration="none", balance="none", label_assignment="argmax"),
        show_progress=False,
    )
    assert {row["output"] for row in plain.rows} == {"support"}
    batch = synthesize(
        spec, Favours(), tokenizer, cfg(balance="none", label_assignment="argmax"), show_progress=False
    )
    assert set(Counter(row["output"] for row in batch.rows)) == {"support", "undermine"}


def test_funnel_adds_up_and_names_each_filter(tokenizer: Any) -> None:
    spec = bundled_spec("task738")

    class Messy(ScriptedEngine):
        def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
            if INPUT_REQUEST not in prompts[0]:
                return super().generate(prompts, sampling)
            demo = spec.demonstrations[1].input.removeprefix("claim: ")
            script = [
                "",
                "Hello there",
                "x" * 2000,
                "a\nperspective: input here",
                "I'm ready to help!\nperspective: b",
                demo,
            ]
            return [[script[i % len(script)]] for i, _ in enumerate(prompts)]

    config = cfg(num_inputs=6, prompts_per_round=6, drop_truncated=False)
    with pytest.raises(SynthesisError) as excinfo:
        synthesize(spec, Messy(), tokenizer, config, show_progress=False)
    # no perspective -> format; 2000 x -> length; "input" -> noise; chat; a copy of a demonstration
    table = str(excinfo.value)
    for stage in (
        "input:empty",
        "input:length",
        "input:noise",
        "input:chat_phrase",
        "input:format",
        "input:duplicate",
    ):
        assert f"{stage} " in table


def test_generation_task_votes_on_free_text(tokenizer: Any) -> None:
    spec = bundled_spec("task1195")
    engine = ScriptedEngine(answers=["A short answer here.", "A short answer here.", "Another one entirely."])
    config = cfg(input_filters_generation=("empty", "duplicate"))
    result = synthesize(spec, engine, tokenizer, config, show_progress=False)
    assert {row["output"] for row in result.rows} == {"A short answer here."}
    assert all(row["num_agreeing"] == 7 for row in result.rows)  # 10 samples cycling over 3 answers
    sampling = next(s for s in engine.samplings if s.n > 1)
    assert sampling.temperature == 0.2
    assert sampling.max_new_tokens < 256  # the length budget: task1195's answers are ~50 characters


def test_length_budget_stops_where_the_length_filter_would_drop(tokenizer: Any) -> None:
    spec = bundled_spec("task1195")
    rambling = "and then it went on " * 60
    engine = ScriptedEngine(answers=["A short answer here."] * 9 + [rambling])
    result = synthesize(
        spec, engine, tokenizer, cfg(input_filters_generation=("empty",)), show_progress=False
    )
    budget = next(s for s in engine.samplings if s.n > 1).max_new_tokens
    assert result.funnel.notes["sample_drops"]["truncated"] == len(result.rows)  # one rambling sample each
    assert all(row["output"] == "A short answer here." for row in result.rows)
    unbudgeted = ScriptedEngine()
    config = cfg(input_filters_generation=("empty",), length_budget=False)
    synthesize(spec, unbudgeted, tokenizer, config, show_progress=False)
    assert next(s for s in unbudgeted.samplings if s.n > 1).max_new_tokens == 256 > budget


@pytest.mark.parametrize("task", ["task036", "task039", "task121", "task1195", "task190", "task738"])
def test_length_token_cap_never_cuts_a_text_the_filter_keeps(tokenizer: Any, task: str) -> None:
    spec = bundled_spec(task)
    for texts in ([d.input for d in spec.demonstrations], [d.output for d in spec.demonstrations]):
        high = length_window([len(t) for t in texts], 2.0, 0.5)[1]
        cap = length_token_cap(texts, high, tokenizer)
        longest_kept = (" ".join(texts) * 20)[: high - 1]  # as long as the window allows, in the task's words
        assert len(tokenizer(longest_kept, add_special_tokens=False)["input_ids"]) < cap


# ------------------------------------------------------------------ balancing
def test_balance_downsamples_to_the_smallest_class_seeded() -> None:
    rows = [{"output": label, "i": i} for i, label in enumerate("aaaaabbbc")]
    balanced = balance_classes(rows, "downsample", seed=1)
    assert Counter(r["output"] for r in balanced) == {"a": 1, "b": 1, "c": 1}
    assert balanced == balance_classes(rows, "downsample", seed=1)
    assert [r["i"] for r in balanced] == sorted(r["i"] for r in balanced)  # row order kept
    assert balance_classes(rows, "none", seed=1) == rows


# ------------------------------------------------------------------ resume
class CountingEngine:
    """Wraps an engine and counts generation calls."""

    def __init__(self, inner: GenerationEngine) -> None:
        self.inner = inner
        self.generate_calls = 0
        self.score_calls = 0

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        self.generate_calls += 1
        return self.inner.generate(prompts, sampling)

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        self.score_calls += 1
        return self.inner.score_choices(prompts, choices)


def tiny_cls_config(**overrides: Any) -> SynthesisConfig:
    """The default preset with filters a random model can pass (its inputs are gibberish)."""
    relaxed = {
        "num_inputs": 6,
        "prompts_per_round": 2,
        "input_max_new_tokens": 12,
        "drop_truncated": False,
        "input_filters_classification": ("empty", "duplicate"),
    }
    return SynthesisConfig.preset("default", **{**relaxed, **overrides})


def test_tiny_model_classification_end_to_end(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    spec = bundled_spec("task738")
    engine = TransformersEngine(model, tokenizer, show_progress=False)
    result = synthesize(spec, engine, tokenizer, tiny_cls_config(), show_progress=False)
    labels = Counter(row["output"] for row in result.rows)
    assert set(labels) <= set(spec.labels) and len(set(labels.values())) == 1  # valid labels, balanced
    assert result.funnel.raw == 6
    assert result.funnel.raw - result.funnel.total_dropped == result.funnel.kept == len(result.rows)
    assert all(row["prompt"] == render_task_prompt(spec, row["input"], tokenizer) for row in result.rows)


def test_resume_reuses_finished_rounds(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    spec = bundled_spec("task738")
    config = tiny_cls_config()
    first = CountingEngine(TransformersEngine(model, tokenizer, show_progress=False))
    full = synthesize(spec, first, tokenizer, config, work_dir=tmp_path, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"round_0000{i}.json" for i in range(3)]
    assert full.rounds_generated == 3

    # all rounds done: the engine factory is never called (the model is not even loaded)
    def no_engine() -> GenerationEngine:
        raise AssertionError("a fully checkpointed run must not build an engine")

    again = synthesize(spec, no_engine, tokenizer, config, work_dir=tmp_path, show_progress=False)
    assert again.rows == full.rows and again.rounds_reused == 3 and again.rounds_generated == 0

    # a run killed during round 2: rounds 0-1 reused, round 2 regenerated, same rows
    (tmp_path / "round_00002.json").unlink()
    second = CountingEngine(TransformersEngine(model, tokenizer, show_progress=False))
    resumed = synthesize(spec, second, tokenizer, config, work_dir=tmp_path, show_progress=False)
    assert resumed.rounds_reused == 2 and resumed.rounds_generated == 1
    assert second.generate_calls == 1  # one round of inputs; labels are scored, not generated
    assert resumed.rows == full.rows
    assert resumed.funnel.to_dict()["dropped"] == full.funnel.to_dict()["dropped"]


def test_checkpoints_of_another_config_are_not_reused(tokenizer: Any, tmp_path: Path) -> None:
    spec = bundled_spec("task738")
    synthesize(spec, ScriptedEngine(), tokenizer, cfg(seed=1), work_dir=tmp_path, show_progress=False)
    engine = ScriptedEngine()
    result = synthesize(spec, engine, tokenizer, cfg(seed=2), work_dir=tmp_path, show_progress=False)
    assert result.rounds_reused == 0 and engine.generated_prompts
    data = json.loads((tmp_path / "round_00000.json").read_text())
    assert {"fingerprint", "accepted_inputs", "rows", "funnel"} <= set(data)


# ------------------------------------------------------------------ bad input
def test_demonstrations_over_the_prompt_budget_is_a_clear_error(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    engine = ScriptedEngine()
    with pytest.raises(SynthesisError, match="demonstrations alone"):
        synthesize(spec, engine, tokenizer, cfg(max_prompt_tokens=50), show_progress=False)
    assert not engine.generated_prompts  # failed before generating anything


def test_task_prompt_over_the_context_is_a_clear_error(tokenizer: Any) -> None:
    long_demo = Demonstration("claim: " + "word " * 400, "support")
    spec = TaskSpec(
        name="long",
        type="classification",
        instruction="Decide.",
        demonstrations=(long_demo,),
        labels=("support", "undermine"),
    )
    with pytest.raises(SynthesisError, match="context"):
        synthesize(spec, ScriptedEngine(), tokenizer, cfg(), context_length=600, show_progress=False)


def test_pool_redraws_stay_under_the_budget(tokenizer: Any) -> None:
    spec = bundled_spec("task738")

    class Long(ScriptedEngine):
        def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
            if INPUT_REQUEST in prompts[0]:
                self.generated_prompts.extend(prompts)
                return [
                    [f"topic {i} {'long ' * 60}\nperspective: v{len(self.generated_prompts)}"]
                    for i, _ in enumerate(prompts)
                ]
            return super().generate(prompts, sampling)

    engine = Long()
    budget = 600
    config = cfg(num_inputs=12, max_prompt_tokens=budget, input_filters_classification=("empty", "duplicate"))
    synthesize(spec, engine, tokenizer, config, show_progress=False)
    sizes = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in engine.generated_prompts]
    assert max(sizes) <= budget


def test_plain_model_without_chat_template(tiny_plain_model_dir: Path) -> None:
    from selfguide_hf.models import load_causal_lm

    model, tokenizer = load_causal_lm(str(tiny_plain_model_dir))
    spec = bundled_spec("task738")
    engine = TransformersEngine(model, tokenizer, show_progress=False)
    result = synthesize(spec, engine, tokenizer, tiny_cls_config(num_inputs=4), show_progress=False)
    assert result.rows
    row = result.rows[0]
    assert "Input:" in row["prompt"] and row["prompt"].endswith("Output:")
    assert row["completion"] == f" {row['output']}{tokenizer.eos_token}"


# ------------------------------------------------------------ label calibration
SKEWED_SCORES = [[math.log(p) for p in row] for row in ([0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4])]


def test_uncalibrated_scores_are_the_softmax_and_favour_one_label() -> None:
    probs, prior = calibrate_label_scores(SKEWED_SCORES, "none")
    assert prior is None
    assert probs[0] == pytest.approx([0.9, 0.1])
    assert all(row[0] > row[1] for row in probs)


def test_balanced_calibration_spreads_the_inputs_evenly_over_the_labels() -> None:
    probs, prior = calibrate_label_scores(SKEWED_SCORES, "balanced")
    column_mass = [sum(col) / len(col) for col in zip(*probs)]
    assert column_mass == pytest.approx([0.5, 0.5], abs=1e-3)
    assert prior[0] > prior[1]  # the favoured label is the one divided down
    winners = [max(range(2), key=row.__getitem__) for row in probs]
    assert winners == [0, 0, 1, 1]  # order kept: the most label-0-like inputs stay label 0


def test_batch_calibration_divides_by_the_mean_probability_once() -> None:
    probs, prior = calibrate_label_scores(SKEWED_SCORES, "batch")
    assert prior == pytest.approx([0.75, 0.25])
    assert probs[0] == pytest.approx([0.75, 0.25])  # (0.9/0.75, 0.1/0.25) normalised


def test_content_free_calibration_needs_its_prior() -> None:
    with pytest.raises(ValueError, match="content_free"):
        calibrate_label_scores(SKEWED_SCORES, "content_free")
    probs, _ = calibrate_label_scores(SKEWED_SCORES, "content_free", [0.5, 0.5])
    assert probs[0] == pytest.approx([0.9, 0.1])


def test_balanced_assignment_gives_equal_classes_each_to_its_best_inputs() -> None:
    probs = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45], [0.52, 0.48]]
    assert [max(range(2), key=r.__getitem__) for r in probs] == [0] * 6  # argmax: one class, balance keeps 0
    assert assign_balanced_labels(probs) == [0, 0, 0, 1, 1, 1]  # the least label-0-like go to label 1
    three = [[0.5, 0.3, 0.2]] * 7
    assert sorted(Counter(assign_balanced_labels(three)).values()) == [1, 3, 3]  # quota ceil(7 / 3) = 3
    assert assign_balanced_labels([]) == []


def test_balanced_assignment_keeps_inputs_that_balancing_would_drop(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    classes = {}
    for assignment in ("argmax", "balanced"):
        skewed = ScriptedEngine(scores=[0.0, -1.0])  # every input favours "support" alike
        config = cfg(num_inputs=8, prompts_per_round=4, label_calibration="none", label_assignment=assignment)
        result = synthesize(spec, skewed, tokenizer, config, show_progress=False)
        classes[assignment] = dict(Counter(row["output"] for row in result.rows))
    assert classes == {"argmax": {"support": 8}, "balanced": {"support": 4, "undermine": 4}}


# ------------------------------------------------------------------ label_source (issue 24)
class WritesForTheLabel(ScriptedEngine):
    """Each input says which label its prompt named ("(for support)"); answers per the script."""

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        out = super().generate(prompts, sampling)
        spec = bundled_spec("task738")
        for i, prompt in enumerate(prompts):
            if INPUT_REQUEST in prompt:
                named = next(label for label in spec.labels if f'"{label}"' in prompt)
                out[i] = [f"{text} (for {named})" for text in out[i]]
        return out


def _written_for(text: str) -> str:
    return text.rsplit("(for ", 1)[1].rstrip(")")


def test_label_source_condition_keeps_the_drawn_label_and_annotates_nothing(tokenizer: Any) -> None:
    spec = bundled_spec("task738")
    engine = WritesForTheLabel(answers=["support"])
    config = cfg(num_inputs=12, prompts_per_round=6, label_source="condition", balance="none")
    result = synthesize(spec, engine, tokenizer, config, show_progress=False)
    assert len(result.rows) == 12
    assert all(row["output"] == _written_for(row["input"]) for row in result.rows)
    assert {row["output"] for row in result.rows} == set(spec.labels)  # not the judge's constant "support"
    assert not engine.scored_prompts and all(s.n == 1 for s in engine.samplings)  # no annotation ran


@pytest.mark.parametrize("annotation", ["sample", "likelihood"])
def test_label_source_agree_drops_inputs_the_judge_labels_otherwise(tokenizer: Any, annotation: str) -> None:
    from selfguide_hf.annotation import DISAGREES

    spec = bundled_spec("task738")
    support = spec.labels.index("support")
    scores = [0.0 if j == support else -5.0 for j in range(len(spec.labels))]
    engine = WritesForTheLabel(answers=["support"], scores=scores)  # the judge always says support
    config = cfg(num_inputs=12, prompts_per_round=6, label_source="agree", balance="none",
                 classification_annotation=annotation, label_calibration="none",
                 label_assignment="argmax")  # fmt: skip
    result = synthesize(spec, engine, tokenizer, config, show_progress=False)
    assert result.rows and all(
        row["output"] == "support" == _written_for(row["input"]) for row in result.rows
    )
    others = result.funnel.dropped.get(DISAGREES, 0)
    assert others > 0 and others + len(result.rows) == 12, (others, len(result.rows))
    assert all("(written for undermine)" in text for text in result.funnel.examples[DISAGREES])


def test_label_source_needs_inputs_written_for_a_label_and_keeps_old_cache_keys() -> None:
    with pytest.raises(ValueError, match="label_source"):
        SynthesisConfig(label_source="condition", label_conditioned=False)
    with pytest.raises(ValueError, match="label_source"):
        SynthesisConfig(label_source="vote")
    assert "label_source" not in SynthesisConfig().to_dict()  # judge: the key of caches made before it
    assert SynthesisConfig(label_source="agree").to_dict()["label_source"] == "agree"
