"""TaskSpec: loading from every source, NI type inference, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf.bundled import bundled_spec, bundled_task_names, load_eval_split
from selfguide_hf.task import Demonstration, TaskSpec, TaskSpecError, infer_label_set

GOOD = {
    "task": "sentiment",
    "type": "classification",
    "instruction": "Is the review positive or negative?",
    "demonstrations": [
        {"input": "Great film.", "output": "positive"},
        {"input": "Dull and long.", "output": "negative"},
    ],
    "labels": ["positive", "negative"],
}


def write(tmp_path: Path, data, name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_spec_file_round_trip(tmp_path):
    spec = TaskSpec.load(write(tmp_path, GOOD))
    assert spec.is_classification and spec.metric == "exact_match"
    assert spec.labels == ("positive", "negative")
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert spec.fingerprint() == TaskSpec.from_dict(spec.to_dict()).fingerprint()


def test_yaml_spec_file(tmp_path):
    import yaml

    path = write(tmp_path, yaml.safe_dump(GOOD), "spec.yaml")
    assert TaskSpec.load(path).labels == ("positive", "negative")


def test_python_arguments_and_generation_defaults():
    spec = TaskSpec(
        name="shorten",
        type="generation",
        instruction="Shorten the sentence.",
        demonstrations=[Demonstration("A very long sentence.", "A sentence.")],
    )
    assert spec.metric == "rouge_l" and spec.labels is None
    assert "\n\n" in spec.noise_strings


def test_fingerprint_changes_with_content(tmp_path):
    other = dict(GOOD, instruction="Is the review positive or negative? Answer in one word.")
    assert TaskSpec.from_dict(GOOD).fingerprint() != TaskSpec.from_dict(other).fingerprint()


def test_bundled_names_and_splits():
    names = bundled_task_names()
    assert len(names) == 11 and "task190" in names and "task1195" in names
    split = load_eval_split("task190", "validation")
    assert split.column_names == ["input", "output"] and len(split) == 649
    assert isinstance(split[0]["output"], list)
    assert bundled_spec("task738").labels == ("support", "undermine")


@pytest.mark.parametrize(
    "task_json", sorted(Path(__file__).resolve().parents[2].glob("shared/ni/*/task.json"))
)
def test_ni_file_agrees_with_spec(task_json):
    """Type and label set inferred from the raw NI file match the curated spec."""
    from_ni = TaskSpec.load(task_json)
    reference = TaskSpec.load(task_json.with_name("spec.json"))
    assert from_ni.name == reference.name
    assert from_ni.type == reference.type
    if reference.labels is None:
        assert from_ni.labels is None
    else:
        assert sorted(x.lower() for x in from_ni.labels) == sorted(x.lower() for x in reference.labels)
    assert 1 <= len(from_ni.demonstrations) <= 3


def test_ni_demonstration_count_is_configurable(ni_dir):
    spec = TaskSpec.from_ni_file(ni_dir / "task036" / "task.json", num_demonstrations=5)
    assert len(spec.demonstrations) == 5


def test_unseen_ni_task_inference(tmp_path):
    """A made-up NI task: labels in mixed case, one label only in the examples."""
    ni = {
        "Definition": ["Say whether the statement is true."],
        "Positive Examples": [
            {"input": "Water is wet.", "output": "True", "explanation": "."},
            {"input": "Fire is cold.", "output": "False"},
            {"input": "Dogs meow.", "output": "Unknown"},
        ],
        "Instances": [
            {"id": str(i), "input": f"s{i}", "output": ["true" if i % 3 else "False"]} for i in range(30)
        ],
    }
    spec = TaskSpec.load(write(tmp_path, ni, "task9999_truth.json"))
    assert spec.name == "task9999" and spec.is_classification
    assert sorted(spec.labels) == ["False", "Unknown", "true"]
    assert [d.output for d in spec.demonstrations] == ["true", "False", "Unknown"]


def test_label_set_inference_rejects_free_text():
    assert infer_label_set([f"answer number {i}" for i in range(40)]) is None
    assert infer_label_set(["yes"] * 10) is None  # one label is not a classification
    assert infer_label_set(["a", "b"]) is None  # too little evidence
    assert infer_label_set(["Yes", "yes", "No", "no", "yes"]) == ["yes", "No"]


BAD_SPECS = {
    "missing_instruction": ({k: v for k, v in GOOD.items() if k != "instruction"}, "'instruction': missing"),
    "empty_instruction": (dict(GOOD, instruction="   "), "'instruction'"),
    "instruction_not_string": (dict(GOOD, instruction=["a"]), "'instruction': must be a string"),
    "no_demonstrations": (dict(GOOD, demonstrations=[]), "'demonstrations'"),
    "demonstrations_missing": (
        {k: v for k, v in GOOD.items() if k != "demonstrations"},
        "'demonstrations': missing",
    ),
    "demonstrations_not_list": (dict(GOOD, demonstrations="x"), "'demonstrations': must be a list"),
    "demo_without_output": (
        dict(GOOD, demonstrations=[{"input": "x"}]),
        "'demonstrations[0].output': missing",
    ),
    "demo_without_input": (
        dict(GOOD, demonstrations=[{"output": "positive"}]),
        "'demonstrations[0].input': missing",
    ),
    "demo_not_object": (dict(GOOD, demonstrations=["x"]), "'demonstrations[0]'"),
    "demo_empty_output": (
        dict(GOOD, demonstrations=[{"input": "x", "output": " "}]),
        "'demonstrations[0].output': is empty",
    ),
    "demo_output_wrong_type": (
        dict(GOOD, demonstrations=[{"input": "x", "output": 3}]),
        "must be a string, got int",
    ),
    "classification_without_labels": (dict(GOOD, labels=None), "'labels'"),
    "classification_empty_labels": (dict(GOOD, labels=[]), "'labels'"),
    "one_label": (
        dict(GOOD, labels=["positive"], demonstrations=GOOD["demonstrations"][:1]),
        "at least two labels",
    ),
    "duplicate_labels": (dict(GOOD, labels=["positive", "Positive", "negative"]), "duplicate label"),
    "demo_outside_labels": (
        dict(GOOD, demonstrations=[*GOOD["demonstrations"], {"input": "Meh.", "output": "neutral"}]),
        "'demonstrations[2].output': 'neutral' is not one of the labels",
    ),
    "labels_not_list": (dict(GOOD, labels="positive,negative"), "'labels': must be a list"),
    "bad_type": (dict(GOOD, type="regression"), "'type': must be one of"),
    "bad_metric": (dict(GOOD, metric="bleu"), "'metric': must be one of"),
    "generation_with_labels": (dict(GOOD, type="generation"), "only classification tasks have labels"),
    "unknown_field": (dict(GOOD, lables=["a"]), "unknown field(s) ['lables']"),
    "noise_not_list": (dict(GOOD, noise_strings="input"), "'noise_strings': must be a list"),
    "top_level_list": ([GOOD], "expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_names_file_and_field(tmp_path, case):
    data, expected = BAD_SPECS[case]
    path = write(tmp_path, data)
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.load(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert isinstance(info.value, ValueError)


def test_malformed_json_names_line(tmp_path):
    path = write(tmp_path, '{"task": "x",\n "instruction": }')
    with pytest.raises(TaskSpecError, match=r"spec\.json: malformed JSON at line 2"):
        TaskSpec.load(path)


def test_malformed_yaml(tmp_path):
    path = write(tmp_path, "task: [unclosed\n", "spec.yaml")
    with pytest.raises(TaskSpecError, match=r"spec\.yaml: malformed YAML"):
        TaskSpec.load(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TaskSpecError, match=r"binary\.json: cannot read file"):
        TaskSpec.load(path)


def test_missing_file_and_unknown_bundled_name(tmp_path):
    with pytest.raises(TaskSpecError, match=r"nope\.json: no such file"):
        TaskSpec.load(tmp_path / "nope.json")
    with pytest.raises(TaskSpecError, match=r"unknown bundled task 'task9'.*task190"):
        TaskSpec.load("task9")


BAD_NI = {
    "no_definition": ({"Positive Examples": [{"input": "a", "output": "b"}]}, "'Definition'"),
    "no_examples": ({"Definition": ["Do it."], "Positive Examples": []}, "'Positive Examples'"),
    "example_without_output": (
        {"Definition": ["Do it."], "Positive Examples": [{"input": "a"}]},
        "'Positive Examples[0].output': missing",
    ),
    "instance_output_not_list": (
        {
            "Definition": ["Do it."],
            "Positive Examples": [{"input": "a", "output": "b"}],
            "Instances": [{"input": "x", "output": 5}],
        },
        "'Instances[0].output'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NI))
def test_bad_ni_file(tmp_path, case):
    data, expected = BAD_NI[case]
    data = dict(data)
    path = write(tmp_path, data, "task5000_x.json")
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.from_ni_file(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_python_arguments_are_validated():
    with pytest.raises(TaskSpecError, match="'demonstrations'"):
        TaskSpec(name="x", type="generation", instruction="Do.", demonstrations=[])
