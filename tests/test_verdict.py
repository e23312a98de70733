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
    # --draws 2: every draw is synthesized (and cached) before one message names each short draw
    assert cli.main([*args, "--draws", "2"]) == 2
    line = next(line for line in capsys.readouterr().err.splitlines() if "error" in line)
    assert "draw 0 of 2 (synthesis seed " in line and "draw 1 of 2 (synthesis seed " in line
    assert line.count("only 4 synthetic pairs survived") == 2 and line.count("to train anyway") == 1
    assert (out / "draws" / "1" / "synthetic" / "train.jsonl").is_file()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error" in line)
    assert "only 4 synthetic pairs survived of 4 raw inputs (min pairs 16)" in line
    assert "largest drops:" in line and "--min-pairs 1 to train anyway" in line
    assert "--num-inputs 16 (at this run's yield, 4 pairs from 4 raw inputs, that many give about 16" in line
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
    assert "only 4 synthetic pairs survived" in err and "--num_inputs 16" in err and "--min_pairs 1" in err
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


# --------------------------------------------- issue 24: the trivial baseline, one answer, draws
def test_at_the_trivial_baseline_unless_the_row_interval_is_clear_of_it() -> None:
    """A self-guided 34.5 against a majority rate of 34.0 is "at" it; well clear of it is "above"."""
    from selfguide_hf.verdict import trivial_side

    rule = [100.0] * 68 + [0.0] * 132  # the majority rule: 34.0
    near = [100.0] * 69 + [0.0] * 131  # 34.5: one row more
    assert trivial_side(result(34.5, near, trivial_row_scores=rule), {"score": 34.0}) == "at"
    far = [100.0] * 200  # right on every row
    assert trivial_side(result(100.0, far, trivial_row_scores=rule), {"score": 34.0}) == "above"
    none = [0.0] * 200
    assert trivial_side(result(0.0, none, trivial_row_scores=rule), {"score": 34.0}) == "below"
    assert trivial_side(result(34.5, near), {"score": 34.0}) == "above"  # an older result: by the points
    trivial = {"name": "majority-class", "score": 34.0}
    report = build_report(
        "t", "m", "exact_match",
        result(30.0, [100.0] * 60 + [0.0] * 140, trivial_row_scores=rule, trivial_baseline=trivial),
        result(34.5, near, trivial_row_scores=rule, trivial_baseline=trivial),
    )  # fmt: skip
    assert "few-shot below and self-guided at the majority-class score 34.0" in report["verdict_sentence"]
    assert report["trivial_sides"] == {"baseline": "below", "self_guided": "at"}


def test_an_arm_that_gives_one_answer_is_named() -> None:
    from selfguide_hf.verdict import one_answer

    arm = result(35.0, [0.0] * 200, top_answer={"answer": "2", "rows": 200, "of": 200})
    assert one_answer(arm) == "answers `2` on 200 of 200 rows"
    assert one_answer(result(35.0, [0.0] * 200, top_answer={"answer": "2", "rows": 179, "of": 200})) is None
    base = result(35.0, [0.0] * 200, top_answer={"answer": "2", "rows": 200, "of": 200}, label_share=100.0)
    tuned = result(35.0, [0.0] * 200, top_answer={"answer": "2", "rows": 200, "of": 200}, label_share=100.0)
    report = build_report("t", "m", "exact_match", base, tuned)
    assert (
        "few-shot answers `2` on 200 of 200 rows; self-guided answers `2` on 200 of 200 rows"
        in report["verdict_sentence"]
    )
    assert "self-guided: one answer" in to_markdown(report)


def test_the_interval_over_draws_reduces_to_its_known_answers() -> None:
    from selfguide_hf.verdict import draws_bootstrap, paired_bootstrap

    rng = __import__("numpy").random.default_rng(1)
    base = list(rng.integers(0, 2, 120) * 100.0)
    tuned = list(rng.integers(0, 2, 120) * 100.0)
    one = draws_bootstrap([(base, tuned)])
    rows = paired_bootstrap(base, tuned)
    assert (one["delta"], one["low"], one["high"]) == (rows["delta"], rows["low"], rows["high"])
    assert one["draws_halfwidth"] == 0.0
    same = draws_bootstrap([(base, tuned)] * 3)  # identical draws: the row bootstrap, exactly
    assert (same["delta"], same["low"], same["high"]) == (rows["delta"], rows["low"], rows["high"])
    assert not same["draws_disagree"]
    # no variance within a draw: only the draws vary, so the interval is the t interval over draws,
    # 5 ± 4.303 * 15 / sqrt(3) — wider than the -10 to 20 that resampling 3 draws gives
    flat = [([0.0] * 50, [d] * 50) for d in (-10.0, 5.0, 20.0)]
    over_draws = draws_bootstrap(flat)
    assert over_draws["delta"] == 5.0 and over_draws["draw_deltas"] == [-10.0, 5.0, 20.0]
    assert over_draws["draws_df"] == 2 and over_draws["draws_disagree"]
    assert over_draws["low"] == pytest.approx(5 - 37.26, abs=0.01)
    assert over_draws["high"] == pytest.approx(5 + 37.26, abs=0.01)
    assert draws_bootstrap([([0.0] * 50, [7.0] * 50)] * 4)["low"] == 7.0  # nothing varies: a point
    # two draws of 0 and 100 on every row: t(1) = 12.7 would reach far past what a score can move
    assert draws_bootstrap([([0.0] * 9, [0.0] * 9), ([0.0] * 9, [100.0] * 9)])["high"] == 100.0


def test_t_quantiles_match_the_table() -> None:
    from selfguide_hf.verdict import t_quantile

    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 29: 2.045, 1000: 1.962}
    for df, value in table.items():
        assert t_quantile(0.975, df) == pytest.approx(value, rel=0.002), df
    assert t_quantile(0.95, 2) == pytest.approx(2.920, abs=0.001)
    with pytest.raises(ValueError, match="degree of freedom"):
        t_quantile(0.975, 0)


def test_the_interval_over_three_draws_covers_the_mean_of_all_draws() -> None:
    """Simulated runs whose draws move the score by about ±15 points (task199 and task190 moved
    more): the interval from 3 draws must hold the mean over all possible draws about 95 % of
    the time. Here it holds it 188 times in 200; resampling the 3 draws, as this did before,
    held it 172 times and fails this test."""
    import numpy as np

    from selfguide_hf.verdict import draws_bootstrap

    rng = np.random.default_rng(7)
    held, runs = 0, 200
    for _ in range(runs):
        base = rng.binomial(1, 0.5, 200) * 100.0
        effects = rng.normal(0.05, 0.15, 3)  # each draw's own accuracy shift; the true delta is +5
        draws = [(base, rng.binomial(1, np.clip(0.5 + e, 0, 1), 200) * 100.0) for e in effects]
        interval = draws_bootstrap(draws, resamples=400)
        held += interval["low"] <= 5.0 <= interval["high"]
    assert 0.92 * runs <= held <= 0.99 * runs, held


def test_the_model_card_says_what_the_interval_covers() -> None:
    """A card's interval line names the draws' t interval when the run had several draws."""
    from selfguide_hf.cards import evaluation_text
    from selfguide_hf.verdict import draws_bootstrap

    scores = [([0.0, 100.0] * 20, [100.0, 0.0, 100.0, 100.0] * 10)]
    one = evaluation_text({"before": 50.0, "after": 75.0, "interval": draws_bootstrap(scores)})
    assert "paired bootstrap over the 40 rows, 2000 resamples)" in one and "draws" not in one
    several = draws_bootstrap([*scores, ([0.0, 100.0] * 20, [100.0] * 40)])
    text = evaluation_text({"before": 50.0, "after": 87.5, "interval": several})
    assert "and the spread of 2 synthesis-and-training draws as a t interval (1 degree of freedom)" in text
