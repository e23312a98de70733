"""The verdict: paired bootstrap against known answers, the sentence, too little data stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfguide_hf import cli
from selfguide_hf.report import build_report, to_markdown
from selfguide_hf.verdict import paired_bootstrap, verdict_sentence, verdict_word
from tests.test_cli import run_args


def test_identical_scores_give_the_interval_zero_zero() -> None:
    scores = [100.0, 0.0, 100.0, 0.0, 100.0] * 40
    interval = paired_bootstrap(scores, scores)
    assert (interval["delta"], interval["low"], interval["high"]) == (0.0, 0.0, 0.0)
    assert verdict_word(interval) == "no clear change"


def test_the_interval_is_the_direct_computation() -> None:
    base = [0, 100, 0, 100, 0, 0, 100, 0, 0, 100] * 3
    tuned = [100, 100, 0, 100, 100, 0, 100, 100, 0, 100] * 3
    interval = paired_bootstrap(base, tuned, resamples=500, seed=7)
    diffs = np.asarray(tuned, float) - np.asarray(base, float)
    picks = np.random.default_rng(7).integers(0, len(diffs), size=(500, len(diffs)))
    low, high = np.percentile(diffs[picks].mean(axis=1), [2.5, 97.5])
    assert interval["delta"] == pytest.approx(diffs.mean(), abs=0.01) == 30.0
    assert interval["low"] == pytest.approx(low, abs=0.01) and interval["high"] == pytest.approx(
        high, abs=0.01
    )
    assert 0 < interval["low"] < 30 < interval["high"]
    assert verdict_word(interval) == "improved"
    assert verdict_word(paired_bootstrap(tuned, base)) == "worse"


def test_unpaired_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([1.0], [1.0, 2.0])


def result(score: float, rows: list[float], **extra) -> dict:
    return {"score": score, "num_examples": len(rows), "metric": "exact_match", "row_scores": rows, **extra}


def test_the_sentence_for_the_pos_tag_run_of_the_issue() -> None:
    """Few-shot 39, self-guided 48 on 200 rows, majority 55, trained on 1 pair: no clear change, too few pairs."""
    base = [100.0] * 78 + [0.0] * 122
    tuned = [0.0] * 42 + [100.0] * 36 + [100.0] * 60 + [0.0] * 62  # 42 hits lost, 60 won: +9 points net
    trivial = {"name": "majority-class", "score": 55.0}
    report = build_report(
        "pos",
        "m",
        "exact_match",
        result(39.0, base, label_share=86.5, trivial_baseline=trivial),
        result(48.0, tuned, label_share=87.5, trivial_baseline=trivial),
        funnel={"raw_inputs": 100, "kept": 1, "dropped": {"input:format": 93}},
        extra={"min_pairs": 16},
    )
    sentence = report["verdict_sentence"]
    assert sentence.startswith("self-guided 48.0 vs few-shot 39.0: +9.0, 95 % CI ")
    assert (
        report["interval"]["low"] < 0 < report["interval"]["high"] and report["verdict"] == "no clear change"
    )
    assert "both below the majority-class score 55.0" in sentence
    assert "87.5 % of self-guided answers are labels, 86.5 % of few-shot's" in sentence
    assert sentence.endswith("trained on 1 pair, too few to mean anything")
    assert to_markdown(report).splitlines()[2] == f"**{sentence}.**"  # the report opens with it


def test_generation_sentence_names_the_copy_baseline() -> None:
    trivial = {"name": "copy-the-input", "score": 77.8}
    report = build_report(
        "fluent",
        "m",
        "rouge_l",
        result(72.0, [72.0] * 50, copy_share=21.0, trivial_baseline=trivial),
        result(74.1, [74.1] * 50, copy_share=39.0, trivial_baseline=trivial),
    )
    assert "both below the copy-the-input score 77.8" in report["verdict_sentence"]
    assert "copies the input in 39.0 % of answers, few-shot in 21.0 %" in report["verdict_sentence"]
    assert verdict_sentence(report) == report["verdict_sentence"]


# ------------------------------------------------------------ too little data
def test_too_few_pairs_stop_the_run_before_training(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = run_args(tiny_model_dir, out)
    at = args.index("--min-pairs")
    del args[at : at + 2]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error" in line)
    assert "only 4 synthetic pairs survived of 4 raw inputs (min pairs 16)" in line
    assert "largest drops:" in line and "--num-inputs 8" in line and "--min-pairs 1 to train anyway" in line
    assert not (out / "adapter").exists() and (out / "synthetic" / "train.jsonl").is_file()
    # the same run with --min-pairs 1 trains, and synthesis is a cache hit
    assert cli.main([*args, "--min-pairs", "1"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["training_pairs"] == 4 and "interval" in report and report["verdict_sentence"]
    assert report["verdict_sentence"].endswith("trained on 4 pairs, too few to mean anything")
    assert (
        report["self_guided"]["label_share"] is not None
        and report["trivial_baseline"]["name"] == "majority-class"
    )
    card = (out / "adapter" / "README.md").read_text()
    assert report["verdict_sentence"] in card


def test_too_few_pairs_stop_the_recipe(tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util
    import sys

    from tests.test_cli import CPU_CONFIG, ROOT, TINY_SYNTHESIS

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    synthesis = {
        k: json.loads(v) if v[0] in '["' or v in ("true", "false") else int(v)
        for k, v in (o.split("=", 1) for o in TINY_SYNTHESIS)
    }
    out = tmp_path / "recipe"
    argv = ["sft.py", "--config", str(CPU_CONFIG), "--task", "task738", "--model", str(tiny_model_dir),
            "--output_dir", str(out), "--num_inputs", "4", "--synthesis", json.dumps(synthesis)]  # fmt: skip
    spec = importlib.util.spec_from_file_location("sft_recipe_verdict", ROOT / "recipes" / "sft.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.setattr(sys, "argv", argv)
    assert recipe.cli() == 2
    err = capsys.readouterr().err
    assert "only 4 synthetic pairs survived" in err and "--num_inputs 8" in err and "--min_pairs 1" in err
    assert not (out / "adapter_model.safetensors").exists() and not (out / "adapter_config.json").exists()


def test_load_dataset_warns_and_builds(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    from datasets import load_dataset

    import selfguide_hf  # noqa: F401

    overrides = {"prompts_per_round": 2, "input_max_new_tokens": 12, "drop_truncated": False}
    overrides["input_filters_classification"] = ["empty", "duplicate"]
    ds = load_dataset(
        "selfguide",
        task="task738",
        model=str(tiny_model_dir),
        num_inputs=4,
        cache_dir=str(tmp_path),
        **overrides,
    )["train"]
    assert len(ds) == 4
    assert "only 4 synthetic pairs survived of 4 raw inputs (min pairs 16)" in caplog.text
