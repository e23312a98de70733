"""Evaluation: eval data validation, subsets, majority rate, and scoring a real (tiny) model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf.evaluation import (
    EvalDataError,
    answer_budget,
    evaluate_model,
    load_eval_rows,
    majority_class,
    score_predictions,
)
from selfguide_hf.models import load_causal_lm
from selfguide_hf.task import TaskSpec


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_bundled_subset_is_fixed_and_spread():
    spec = TaskSpec.load("task738")
    first = load_eval_rows(spec, max_eval=50)
    again = load_eval_rows(spec, max_eval=50)
    assert first == again and len(first) == 50
    full = load_eval_rows(spec, max_eval=None)
    assert len(full) == 5761
    assert first != full[:50]  # a spread sample, not the head of the split


def test_jsonl_and_csv_eval_files(tmp_path):
    spec = TaskSpec.load("task738")
    jsonl = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"input": "claim: a", "output": "Support"}, {"input": "claim: b", "output": ["undermine"]}],
    )
    rows = load_eval_rows(spec, eval_file=jsonl)
    assert rows == [
        {"input": "claim: a", "output": ["Support"]},
        {"input": "claim: b", "output": ["undermine"]},
    ]
    csv_file = tmp_path / "eval.csv"
    csv_file.write_text('input,output\n"claim: a, with comma",support\nclaim: c,"[""undermine""]"\n')
    rows = load_eval_rows(spec, eval_file=csv_file)
    assert rows[0]["input"] == "claim: a, with comma" and rows[1]["output"] == ["undermine"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"input": "x"}], r"eval\.jsonl:1: missing field 'output'"),
        ([{"output": "support"}], r"eval\.jsonl:1: missing field 'input'"),
        ([{"input": "  ", "output": "support"}], r"eval\.jsonl:1: field 'input' is empty"),
        (
            [{"input": "x", "output": "support"}, {"input": "y", "output": ""}],
            r"eval\.jsonl:2: field 'output'",
        ),
        ([{"input": "x", "output": "maybe"}], r"'maybe' is not one of the task's labels"),
        ([{"input": "x", "output": []}], r"field 'output' must be"),
        (["just a string"], r"expected an object"),
    ],
)
def test_bad_eval_rows_name_file_line_and_field(tmp_path, content, message):
    path = write_jsonl(tmp_path / "eval.jsonl", content)
    with pytest.raises(EvalDataError, match=message):
        load_eval_rows(TaskSpec.load("task738"), eval_file=path)


def test_bad_eval_files(tmp_path):
    spec = TaskSpec.load("task738")
    with pytest.raises(EvalDataError, match="no such eval file"):
        load_eval_rows(spec, eval_file=tmp_path / "absent.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"input": "x",\n')
    with pytest.raises(EvalDataError, match=r"bad\.jsonl:1: malformed JSON"):
        load_eval_rows(spec, eval_file=tmp_path / "bad.jsonl")
    (tmp_path / "cols.csv").write_text("text,label\na,support\n")
    with pytest.raises(EvalDataError, match=r"missing column\(s\) \['input', 'output'\]"):
        load_eval_rows(spec, eval_file=tmp_path / "cols.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalDataError, match="no rows"):
        load_eval_rows(spec, eval_file=tmp_path / "empty.jsonl")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(EvalDataError, match="unsupported eval file type"):
        load_eval_rows(spec, eval_file=tmp_path / "x.parquet")


def test_unbundled_task_needs_an_eval_file(tmp_path):
    spec = TaskSpec.from_dict(
        {
            "task": "mine",
            "type": "generation",
            "instruction": "Echo.",
            "demonstrations": [{"input": "a", "output": "a"}],
        }
    )
    with pytest.raises(EvalDataError, match="not bundled"):
        load_eval_rows(spec)


def test_majority_class():
    rows = [{"input": "", "output": [o]} for o in ["yes", "Yes", "no", "yes"]]
    assert majority_class(rows) == ("yes", 75.0)


def test_scores_use_label_extraction_and_rouge():
    spec = TaskSpec.load("task190")
    scored = score_predictions(spec, ["The answer is E.", "N", "C or maybe N"], [["E"], ["C"], ["N"]])
    assert scored["exact_match"] == pytest.approx(200 / 3)  # last label named wins in the third
    gen = TaskSpec.load("task1195")
    scored = score_predictions(gen, ["what is the cat", ""], [["What is the cat?"], ["Anything"]])
    assert scored["rouge_l"] == pytest.approx(50.0)


def test_evaluate_tiny_model_end_to_end(tiny_model_dir):
    spec = TaskSpec.load("task199")
    model, tokenizer = load_causal_lm(str(tiny_model_dir))
    rows = load_eval_rows(spec, split="validation", max_eval=6)
    result = evaluate_model(model, tokenizer, spec, rows, batch_size=4, max_new_tokens=4, show_progress=False)
    assert result.num_examples == 6 and len(result.predictions) == 6
    assert 0.0 <= result.score <= 100.0
    assert result.majority_label in ("yes", "no") and result.majority_rate >= 50.0
    assert answer_budget(spec, tokenizer) >= 16
    assert "predictions" not in result.summary()


def test_a_merged_copy_left_by_a_killed_evaluation_is_removed_by_the_next_run(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 while the vLLM path's merged model is on disk: the next run removes it, a live one's stays."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import textwrap

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selfguide_hf import evaluation

    adapter = tmp_path / "adapter"
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules="all-linear")
    ).save_pretrained(adapter)
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = textwrap.dedent(f"""
        import time
        from selfguide_hf import engines, evaluation
        from selfguide_hf.task import TaskSpec
        def hang(*args, **kwargs):  # the merged copy is written: wait here to be killed
            print("merged", flush=True)
            time.sleep(600)
        engines.make_engine = hang
        evaluation._evaluate_merged_with_vllm({str(tiny_model_dir)!r}, {str(adapter)!r}, TaskSpec.load("task738"),
                                       [{{"input": "claim: x", "output": "support"}}], False, {{}})
    """)
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "merged"
        left = list(temp.glob(evaluation.MERGED_PREFIX + "*"))
        assert len(left) == 1 and (left[0] / "config.json").is_file()
        assert evaluation.remove_stale_merged_copies(temp) == []  # its process still runs: kept
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert left[0].is_dir()  # a kill -9 runs no cleanup
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    from selfguide_hf import cli

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    argv = [
        "evaluate",
        "--task",
        "task738",
        "--model",
        str(tiny_model_dir),
        "--split",
        "validation",
        "--max-eval",
        "1",
    ]
    assert cli.main(argv) == 0  # the next run, whatever it does, removes the stale copy first
    assert not left[0].exists()
