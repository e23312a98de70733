"""The `selfguide` command end to end on the tiny model: run, rerun reuse, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf import cli

# Synthesis a random tiny model gets through (see tests/test_builder.py).
TINY_SYNTHESIS = [
    "prompts_per_round=2",
    "input_max_new_tokens=12",
    "drop_truncated=false",
    'input_filters_classification=["empty", "duplicate"]',
]


def _fail(*args, **kwargs):
    raise AssertionError("a stage ran that should not have")


def run_args(model: Path, out: Path, *extra: str) -> list[str]:
    args = ["run", "--task", "task738", "--model", str(model), "--output-dir", str(out)]
    args += ["--num-inputs", "4", "--max-eval", "4", "--epochs", "1", "--split", "validation"]
    for option in TINY_SYNTHESIS:
        args += ["--synthesis-option", option]
    return args + list(extra)


def test_run_writes_report_and_reuses_finished_work(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    out = tmp_path / "run"
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    printed = capsys.readouterr().out
    assert "few-shot baseline exact_match" in printed and "self-guided exact_match" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "task738" and report["baseline"]["num_examples"] == 4
    assert report["funnel"]["raw_inputs"] == 4
    assert (out / "report.md").is_file() and (out / "report.png").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "synthetic" / "train.jsonl").is_file()
    answers = [json.loads(line) for line in (out / "eval" / "self_guided.predictions.jsonl").open()]
    assert len(answers) == 4 and set(answers[0]) == {"input", "references", "prediction"}
    assert isinstance(answers[0]["references"], list) and isinstance(answers[0]["prediction"], str)

    # A rerun trains nothing and evaluates nothing: everything is reused.
    monkeypatch.setattr("selfguide_hf.training.train_adapter", _fail)
    monkeypatch.setattr("selfguide_hf.evaluation.evaluate_model", _fail)
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    assert "reusing the finished adapter" in capsys.readouterr().out


def test_run_on_an_unbundled_ni_file_with_eval_file(tiny_model_dir, tmp_path, ni_dir, monkeypatch):
    """A task the package does not bundle: an NI file plus a user eval file."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    ni = json.loads((ni_dir / "task738" / "task.json").read_text())
    task_file = tmp_path / "task5001_my_perspectives.json"
    task_file.write_text(json.dumps(ni))
    eval_file = tmp_path / "eval.jsonl"
    rows = [{"input": inst["input"], "output": inst["output"]} for inst in ni["Instances"][:3]]
    eval_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "run"
    args = run_args(tiny_model_dir, out, "--eval-file", str(eval_file))
    args[args.index("task738")] = str(task_file)
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "task5001" and report["self_guided"]["num_examples"] == 3

    # The same eval file path with other rows: synthesis and the adapter are reused, the scores are not.
    eval_file.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    monkeypatch.setattr("selfguide_hf.training.train_adapter", _fail)
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["num_examples"] == 2 and report["self_guided"]["num_examples"] == 2


def test_a_bad_eval_file_fails_before_synthesis(tiny_model_dir, tmp_path, monkeypatch, capsys):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"input": "claim: x", "answer": "support"}) + "\n")
    monkeypatch.setattr("selfguide_hf.cli.cmd_synthesize", _fail)
    assert cli.main(run_args(tiny_model_dir, tmp_path / "run", "--eval-file", str(eval_file))) == 2
    assert "eval.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--task", "task9"], "unknown bundled task 'task9'"),
        (["synthesize", "--task", "task199", "--synthesis-option", "bogus_key=1"], "bogus_key"),
    ],
)
def test_clear_errors(argv, message, capsys, tiny_model_dir):
    assert cli.main([*argv, "--model", str(tiny_model_dir)]) == 2
    assert message in capsys.readouterr().err


def test_threads_follow_the_flag_then_the_environment_then_the_load(monkeypatch) -> None:
    import torch

    from selfguide_hf import training

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        cli.set_threads(3)
        assert torch.get_num_threads() == 3
        monkeypatch.setattr(training, "auto_cpu_threads", lambda local: 1)  # a busy machine
        cli.set_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        cli.set_threads(None)  # the user's OMP_NUM_THREADS is left alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_threads_flag_reaches_the_training_arguments(tmp_path) -> None:
    args = cli.build_parser().parse_args(["train", "--task", "task199", "--threads", "1"])
    argv = cli.training_argv(args, tmp_path)
    assert argv[argv.index("--torch_threads") + 1] == "1"
    args = cli.build_parser().parse_args(["train", "--task", "task199"])
    assert "--torch_threads" not in cli.training_argv(args, tmp_path)


def test_evaluate_writes_every_answer(tiny_model_dir, tmp_path):
    answers = tmp_path / "answers.jsonl"
    argv = ["evaluate", "--task", "task738", "--model", str(tiny_model_dir), "--split", "validation"]
    assert cli.main([*argv, "--max-eval", "3", "--predictions", str(answers)]) == 0
    rows = [json.loads(line) for line in answers.open()]
    assert len(rows) == 3 and all(r["references"] and isinstance(r["prediction"], str) for r in rows)
