"""The `selfguide` command end to end on the tiny model: run, what a rerun redoes, errors, and the recipe.

A finished run is made once per module; each rerun test copies it and changes
one setting, then checks exactly which stages ran again (synthesis rounds,
training, each evaluation), by counting calls of the real functions.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from selfguide_hf import cli

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m_lora_cpu.yaml"
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
    args += [
        "--num-inputs",
        "4",
        "--max-eval",
        "4",
        "--epochs",
        "1",
        "--split",
        "validation",
        "--min-pairs",
        "1",
    ]
    for option in TINY_SYNTHESIS:
        args += ["--synthesis-option", option]
    return args + list(extra)


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch, datasets_cache: Path) -> Counter:
    """Counts of the stages that actually ran: synthesis rounds, trainings, baseline / tuned evaluations."""
    from selfguide_hf import evaluation, pipeline, synthesis

    monkeypatch.setenv("HF_DATASETS_CACHE", str(datasets_cache))
    counts: Counter = Counter()
    real_round, real_train, real_eval = (
        synthesis._Synthesis.run_round,
        pipeline.train_adapter,
        evaluation.evaluate_saved_model,
    )

    def run_round(self, index):
        counts["synthesis"] += 1
        return real_round(self, index)

    def train_adapter(*args, **kwargs):
        counts["training"] += 1
        return real_train(*args, **kwargs)

    def evaluate_saved_model(model_path, adapter, *args, **kwargs):
        counts["tuned evaluation" if adapter is not None else "baseline evaluation"] += 1
        return real_eval(model_path, adapter, *args, **kwargs)

    monkeypatch.setattr(synthesis._Synthesis, "run_round", run_round)
    monkeypatch.setattr(pipeline, "train_adapter", train_adapter)
    monkeypatch.setattr(evaluation, "evaluate_saved_model", evaluate_saved_model)
    return counts


@pytest.fixture(scope="module")
def finished_run(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, datasets_cache: Path
) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(datasets_cache))
        assert cli.main(run_args(tiny_model_dir, out)) == 0
    return out


def copy_run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_run_writes_report_card_and_predictions(finished_run: Path) -> None:
    out = finished_run
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "task738" and report["baseline"]["num_examples"] == 4
    assert report["funnel"]["raw_inputs"] == 4
    assert (out / "report.md").is_file() and (out / "report.png").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert "2407.12874" in (out / "adapter" / "README.md").read_text()  # the model card
    assert (out / "synthetic" / "train.jsonl").is_file() and (out / "synthetic" / "funnel.json").is_file()
    manifest = json.loads((out / "adapter" / "selfguide_run.json").read_text())
    assert manifest["complete"] and manifest["identity"]["training"]["num_train_epochs"] == 1
    answers = [json.loads(line) for line in (out / "eval" / "self_guided.predictions.jsonl").open()]
    assert len(answers) == 4 and set(answers[0]) == {"input", "references", "prediction"}


def test_rerun_with_nothing_changed_reuses_everything(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter, capsys
) -> None:
    out = copy_run(finished_run, tmp_path)
    before = json.loads((out / "report.json").read_text())
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    assert stages == Counter()
    printed = capsys.readouterr().out
    assert "reusing the finished adapter" in printed and "reusing the finished evaluation" in printed
    after = json.loads((out / "report.json").read_text())
    assert after["self_guided"] == before["self_guided"] and after["baseline"] == before["baseline"]


# (extra flags, what must run again, the field the user is told changed; None: no training)
RERUNS = {
    "seed": (["--seed", "7"], {"training", "tuned evaluation"}, "training.seed: 42 -> 7"),
    "synthesis-seed": (
        ["--synthesis-seed", "7"],
        {"synthesis", "training", "tuned evaluation"},
        "synthesis.seed: 0 -> 7",
    ),
    "num-inputs": (
        ["--num-inputs", "6"],
        {"synthesis", "training", "tuned evaluation"},
        "synthesis.num_inputs: 4 -> 6",
    ),
    "epochs": (["--epochs", "2"], {"training", "tuned evaluation"}, "training.num_train_epochs: 1.0 -> 2.0"),
    "learning-rate": (
        ["--learning-rate", "1e-3"],
        {"training", "tuned evaluation"},
        "training.learning_rate: 0.0002 -> 0.001",
    ),
    "synthesis-option": (
        ["--synthesis-option", "max_pool_examples=2"],
        {"synthesis", "training", "tuned evaluation"},
        "synthesis.max_pool_examples: 10 -> 2",
    ),
    "lora": (["--training-option", "lora_r=8"], {"training", "tuned evaluation"}, "model.lora_r: 16 -> 8"),
    # SFTConfig fields no hand-kept list named: every field not declared weight-neutral keys the adapter
    "shuffle": (
        ["--training-option", "shuffle_dataset=true"],
        {"training", "tuned evaluation"},
        "training.shuffle_dataset: False -> True",
    ),
    "drop-last": (
        ["--dataloader-drop-last", "true"],
        {"training", "tuned evaluation"},
        "training.dataloader_drop_last: False -> True",
    ),
}


@pytest.mark.parametrize("change", sorted(RERUNS))
def test_a_changed_setting_redoes_exactly_the_stages_that_depend_on_it(
    change: str, finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter, capsys
) -> None:
    flags, expected, told = RERUNS[change]
    out = copy_run(finished_run, tmp_path)
    old_rows = (out / "synthetic" / "train.jsonl").read_text()
    assert cli.main(run_args(tiny_model_dir, out, *flags)) == 0
    ran = set(stages)
    if "synthesis" in expected and (out / "synthetic" / "train.jsonl").read_text() == old_rows:
        expected = {"synthesis"}  # new settings that happened to write the same rows: the adapter stands
    assert ran == expected, f"{change}: ran {sorted(ran)}, expected {sorted(expected)}"
    if "training" in expected:
        assert f"training the adapter in {out / 'adapter'} again" in (printed := capsys.readouterr().out)
        assert told in printed
        manifest = json.loads((out / "adapter" / "selfguide_run.json").read_text())
        assert manifest["complete"]


def test_a_damaged_adapter_is_detected_and_retrained(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter, capsys
) -> None:
    out = copy_run(finished_run, tmp_path)
    weights = out / "adapter" / "adapter_model.safetensors"
    saved = json.loads((out / "adapter" / "selfguide_run.json").read_text())["files"]
    with weights.open("r+b") as handle:  # a kill during the save, or a full disk
        handle.truncate(weights.stat().st_size // 3)
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    assert stages["training"] == 1
    assert "adapter_model.safetensors is damaged" in capsys.readouterr().out
    # Training is deterministic: the same files again, so the evaluation of those files stands.
    assert json.loads((out / "adapter" / "selfguide_run.json").read_text())["files"] == saved
    assert "tuned evaluation" not in stages
    assert json.loads((out / "report.json").read_text())["self_guided"]["num_examples"] == 4


def test_an_unfinished_training_is_not_taken_as_finished(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter
) -> None:
    out = copy_run(finished_run, tmp_path)
    manifest_file = out / "adapter" / "selfguide_run.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["complete"] = False  # what a kill between the start of training and the end of the save leaves
    manifest_file.write_text(json.dumps(manifest))
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    assert stages["training"] == 1


def test_cli_and_recipe_give_the_same_numbers(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, datasets_cache: Path, monkeypatch
) -> None:
    """`selfguide run` and the recipe with the same settings: one identity, one report."""
    import importlib.util

    monkeypatch.setenv("HF_DATASETS_CACHE", str(datasets_cache))
    spec = importlib.util.spec_from_file_location("sft_recipe", ROOT / "recipes" / "sft.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    synthesis = {}
    for option in TINY_SYNTHESIS:
        key, value = option.split("=", 1)
        synthesis[key] = json.loads(value) if value[0] in '["' or value in ("false", "true") else int(value)
    out = tmp_path / "recipe"
    argv = [
        "--config", str(CPU_CONFIG), "--task", "task738", "--model", str(tiny_model_dir),
        "--output_dir", str(out), "--num_inputs", "4", "--synthesis_seed", "0", "--synthesis", json.dumps(synthesis),
        "--num_train_epochs", "1", "--evaluate", "true", "--eval_split", "validation", "--eval_max_rows", "4",
        "--min_pairs", "1",
    ]  # fmt: skip
    assert recipe.main(argv) == 0
    cli_manifest = json.loads((finished_run / "adapter" / "selfguide_run.json").read_text())
    recipe_manifest = json.loads((out / "selfguide_run.json").read_text())
    assert recipe_manifest["identity"] == cli_manifest["identity"]
    cli_report = json.loads((finished_run / "report.json").read_text())
    recipe_report = json.loads((out / "report.json").read_text())
    for key in ("baseline", "self_guided", "delta", "funnel"):
        assert recipe_report[key] == cli_report[key], key
    for name in ("baseline", "self_guided"):
        predictions = f"eval/{name}.predictions.jsonl"
        assert (out / predictions).read_text() == (finished_run / predictions).read_text()


def test_the_cli_trains_with_the_recipe_cpu_config() -> None:
    from selfguide_hf.settings import CPU_TRAINING_DEFAULTS

    config = yaml.safe_load(CPU_CONFIG.read_text())
    assert {key: config[key] for key in CPU_TRAINING_DEFAULTS} == CPU_TRAINING_DEFAULTS


def test_run_on_an_unbundled_ni_file_with_eval_file(tiny_model_dir, tmp_path, ni_dir, monkeypatch, stages):
    """A task the package does not bundle: an NI file plus a user eval file."""
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
    stages.clear()
    eval_file.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    assert cli.main(args) == 0
    assert set(stages) == {"baseline evaluation", "tuned evaluation"}
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["num_examples"] == 2 and report["self_guided"]["num_examples"] == 2


def test_a_bad_eval_file_fails_before_synthesis(tiny_model_dir, tmp_path, monkeypatch, capsys):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"input": "claim: x", "answer": "support"}) + "\n")
    monkeypatch.setattr("selfguide_hf.pipeline.build_synthetic_dataset", _fail)
    assert cli.main(run_args(tiny_model_dir, tmp_path / "run", "--eval-file", str(eval_file))) == 2
    assert "eval.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--task", "task9"], "unknown bundled task 'task9'"),
        (["synthesize", "--task", "task199", "--synthesis-option", "bogus_key=1"], "bogus_key"),
        (["synthesize", "--task", "task199", "--synthesis-option", "novalue"], "expects KEY=VALUE"),
    ],
)
def test_clear_errors(argv, message, capsys, tiny_model_dir, tmp_path):
    assert cli.main([*argv, "--model", str(tiny_model_dir), "--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_threads_follow_the_flag_then_the_environment_then_the_load(monkeypatch) -> None:
    import torch

    from selfguide_hf import trainer

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        trainer.set_cpu_threads(3)
        assert torch.get_num_threads() == 3
        monkeypatch.setattr(trainer, "auto_cpu_threads", lambda local: 1)  # a busy machine
        trainer.set_cpu_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        trainer.set_cpu_threads(None)  # the user's OMP_NUM_THREADS is left alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_evaluate_writes_every_answer(tiny_model_dir, tmp_path):
    answers = tmp_path / "answers.jsonl"
    argv = ["evaluate", "--task", "task738", "--model", str(tiny_model_dir), "--split", "validation"]
    assert cli.main([*argv, "--max-eval", "3", "--predictions", str(answers)]) == 0
    rows = [json.loads(line) for line in answers.open()]
    assert len(rows) == 3 and all(r["references"] and isinstance(r["prediction"], str) for r in rows)


def test_a_chat_template_edit_redoes_the_few_shot_evaluation(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter, capsys
) -> None:
    """Same weights, another chat template: every prompt changes, so nothing keyed on the weights alone stands."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = copy_run(finished_run, tmp_path)
    assert cli.main(run_args(model, out)) == 0  # the copy alone (same files) reuses everything
    assert stages == Counter()
    template = model / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    assert cli.main(run_args(model, out)) == 0
    assert {"baseline evaluation", "tuned evaluation", "training"} <= set(stages)
    assert "tokenizer:" in capsys.readouterr().out  # the rerun names what changed


def test_a_training_that_diverges_stops_with_an_error_not_a_verdict(
    tiny_model_dir: Path, tmp_path: Path, stages: Counter, monkeypatch, capsys
) -> None:
    from trl import SFTTrainer

    real = SFTTrainer.compute_loss

    def nan_loss(self, *args, **kwargs):  # a forced non-finite loss, as a too-high learning rate gives
        loss = real(self, *args, **kwargs)
        return (loss[0] * float("nan"), *loss[1:]) if isinstance(loss, tuple) else loss * float("nan")

    monkeypatch.setattr(SFTTrainer, "compute_loss", nan_loss)
    out = tmp_path / "run"
    assert cli.main(run_args(tiny_model_dir, out)) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "nothing was saved" in err and "Traceback" not in err
    assert not (out / "adapter" / "adapter_model.safetensors").exists() and not (out / "report.json").exists()
    assert json.loads((out / "adapter" / "selfguide_run.json").read_text())["complete"] is False
    monkeypatch.setattr(SFTTrainer, "compute_loss", real)
    assert cli.main(run_args(tiny_model_dir, out)) == 0  # the rerun trains again
    assert stages["training"] == 2


def test_a_partial_save_left_by_a_killed_training_is_removed(
    finished_run: Path, tiny_model_dir: Path, tmp_path: Path, stages: Counter
) -> None:
    out = copy_run(finished_run, tmp_path)
    partial = out / ".adapter.saving-k1ll3d"  # what a kill during trainer.save_model leaves
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half")
    manifest_file = out / "adapter" / "selfguide_run.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["complete"] = False
    manifest_file.write_text(json.dumps(manifest))
    assert cli.main(run_args(tiny_model_dir, out)) == 0
    assert stages["training"] == 1 and not partial.exists()
    assert not list(out.glob(".adapter.saving*"))


def test_two_draws_give_two_adapters_one_baseline_and_an_interval_over_both(
    tiny_model_dir: Path, tmp_path: Path, stages: Counter, capsys
) -> None:
    """`selfguide run --draws 2`: draw 1 has its own seeds, data and adapter; the baseline is scored once."""
    out = tmp_path / "run"
    assert cli.main(run_args(tiny_model_dir, out, "--draws", "2")) == 0
    assert stages["training"] == 2 and stages["baseline evaluation"] == 1 and stages["tuned evaluation"] == 2
    first = json.loads((out / "adapter" / "selfguide_run.json").read_text())
    second = json.loads((out / "draws" / "1" / "adapter" / "selfguide_run.json").read_text())
    assert first["files"] != second["files"]  # two adapters
    assert (second["synthesis_seed"], second["identity"]["training"]["seed"]) == (1, 43)
    report = json.loads((out / "report.json").read_text())
    assert [d["synthesis_seed"] for d in report["draws"]] == [0, 1]
    assert report["interval"]["draws"] == 2 and "(draws and rows)" in report["verdict_sentence"]
    assert " over 2 draws vs few-shot " in report["verdict_sentence"]
    # the in-context arm over the draws too: each draw's own pairs in the prompt, on the same rows
    assert (out / "draws" / "1" / "eval" / "in_context.json").is_file()
    in_context = [d["in_context_score"] for d in report["draws"]]
    assert report["in_context_summary"]["mean"] == pytest.approx(sum(in_context) / 2, abs=0.01)
    assert report["self_guided_vs_in_context"]["draws"] == 2 and report["in_context_interval"]["draws"] == 2
    assert (
        f"synthetic pairs in context {report['in_context_summary']['mean']:.1f} ± "
        in report["verdict_sentence"]
    )
    stages.clear()
    assert cli.main(run_args(tiny_model_dir, out, "--draws", "2")) == 0  # a rerun reuses every draw
    assert stages == Counter()


def test_one_draw_says_so_in_the_verdict(finished_run: Path) -> None:
    report = json.loads((finished_run / "report.json").read_text())
    assert (
        "(one draw; draws of the same settings scored up to 35 points apart on the bundled tasks: --draws 3)"
        in report["verdict_sentence"]
    )
