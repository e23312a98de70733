"""One declaration per setting: both fronts and `load_dataset` read the same fields, defaults and choices.

Resolution only: no model is loaded here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from selfguide_hf.builder import SelfGuideConfig
from selfguide_hf.errors import ConfigError
from selfguide_hf.settings import (
    CLI_ONLY_ALIASES,
    WEIGHT_NEUTRAL_FIELDS,
    SelfGuideArguments,
)
from selfguide_hf.settings_parser import parse_settings, settings_parser
from selfguide_hf.synthesis_config import SynthesisConfig

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "selfguide_hf"
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


def _values(obj: object) -> dict:
    from selfguide_hf.settings import plain_value as _plain

    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_selfguide_run_resolves_a_recipe_config_as_the_recipe_does(config: Path) -> None:
    """`selfguide run --config X` and `accelerate launch recipes/sft.py --config X` with the same flags."""
    flags = ["--config", str(config), "--task", "task738", "--num-inputs", "7", "--lora-r", "8"]
    flags += ["--synthesis-option", "num_samples=3", "--use-cpu", "true"]  # GPU configs: validated here
    cli = parse_settings(flags, front="cli", evaluate=True)
    recipe = parse_settings([*flags, "--evaluate", "true"], front="recipe")
    for ours, theirs in zip(cli, recipe, strict=True):
        assert _values(ours) == _values(theirs)
    assert cli[0].synthesis == {"num_samples": 3} and cli[2].lora_r == 8


def test_every_setting_is_reachable_with_one_default_from_every_front() -> None:
    cli_args, _, _ = parse_settings([], front="cli")
    recipe_args, _, _ = parse_settings([], front="recipe")
    options = {o for action in settings_parser()._actions for o in action.option_strings}
    builder_fields = SelfGuideConfig.__dataclass_fields__
    for f in dataclasses.fields(SelfGuideArguments):
        assert f"--{f.name}" in options and f"--{f.name.replace('_', '-')}" in options, f.name
        if f.name not in ("model", "method"):  # resolved on parsing: "default", and auto -> lora on a CPU
            assert getattr(cli_args, f.name) == getattr(recipe_args, f.name) == f.default, f.name
        assert f.metadata["stage"] and f.metadata["help"], f.name
        key = f.metadata.get("synthesis_key")
        if key is not None:  # a synthesis parameter: load_dataset's default is the same one
            assert (
                builder_fields[key].default == SynthesisConfig.__dataclass_fields__[key].default == f.default
            )


def test_a_default_literal_is_written_once_in_the_package() -> None:
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}

    def count(pattern: str) -> int:
        return sum(len(re.findall(pattern, text)) for text in sources.values())

    assert count(r"sentence-transformers/all-MiniLM-L6-v2") == 1
    assert count(r"DEFAULT_MIN_PAIRS = \d+") == 1 and count(r"min_pairs\w*: int = \d+") == 0
    assert count(r"DEFAULT_MAX_EVAL = \d+") == 1
    assert count(r"choices=\[") == 0  # choices come from the registries


def test_a_method_registered_at_run_time_is_accepted_by_both_fronts() -> None:
    from selfguide_hf.methods import METHODS, register_method

    @register_method("lora-test", "LoRA under another name", uses_peft=True)
    def _load(model_path, model_args, training_args):  # pragma: no cover - never loaded here
        raise AssertionError

    try:
        for front in ("cli", "recipe"):
            sg, _, margs = parse_settings(["--task", "task738", "--method", "lora-test"], front=front)
            assert sg.method == "lora-test" and margs.use_peft
    finally:
        METHODS.pop("lora-test")
    with pytest.raises(ConfigError, match="invalid choice: 'lora-test'"):
        parse_settings(["--task", "task738", "--method", "lora-test"], front="cli")


def test_flags_spelled_with_dashes_underscores_and_aliases_are_the_same_setting() -> None:
    a, ta, _ = parse_settings(["--max-eval", "5", "--threads", "2", "--epochs", "2"], front="cli")
    b, tb, _ = parse_settings(["--eval_max_rows", "5", "--torch_threads", "2", "--num_train_epochs", "2"])
    assert (a.eval_max_rows, a.torch_threads, ta.num_train_epochs) == (5, 2, 2.0)
    assert (b.eval_max_rows, b.torch_threads, tb.num_train_epochs) == (5, 2, 2.0)
    # the one flag the fronts read differently: selfguide's --output-dir is the run folder
    assert CLI_ONLY_ALIASES == {"--output-dir": "--run_dir"}
    c, _tc, _ = parse_settings(["--output-dir", "x"], front="cli")
    d, td, _ = parse_settings(["--output-dir", "x"], front="recipe")
    assert (c.run_dir, d.run_dir, td.output_dir) == ("x", None, "x")


def test_a_recipe_synthesis_mapping_and_options_merge_key_by_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("synthesis:\n  num_samples: 5\n  max_pool_examples: 3\n")
    sg, _, _ = parse_settings(
        ["--config", str(config), "--task", "task738", "--synthesis-option", "num_samples=2"], front="cli"
    )
    assert sg.synthesis == {"num_samples": 2, "max_pool_examples": 3}


def test_every_sft_and_model_field_is_in_the_adapter_identity_unless_declared_neutral() -> None:
    from trl import ModelConfig, SFTConfig

    from selfguide_hf.settings import weight_settings

    _, targs, margs = parse_settings([])
    identity = {**weight_settings(targs), **weight_settings(margs)}
    for f in (*dataclasses.fields(SFTConfig), *dataclasses.fields(ModelConfig)):
        assert (f.name in WEIGHT_NEUTRAL_FIELDS) != (f.name in identity), f.name
    for name in ("shuffle_dataset", "dataloader_drop_last", "seed", "learning_rate", "lora_r", "dtype"):
        assert name in identity
    assert {
        f.name for f in (*dataclasses.fields(SFTConfig), *dataclasses.fields(ModelConfig))
    } >= WEIGHT_NEUTRAL_FIELDS


def test_a_run_reads_its_spec_file_resolves_its_model_and_reads_its_corpus_once(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`selfguide synthesize` with a spec file and a corpus: one parse, one resolution, one read."""
    import json

    from selfguide_hf import cli, corpus, models, pipeline, task

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    spec = json.loads((ROOT / "selfguide_hf" / "data" / "tasks" / "task738" / "spec.json").read_text())
    spec_file = tmp_path / "my_task.json"
    spec_file.write_text(json.dumps({**spec, "task": "mytask"}))
    corpus_file = tmp_path / "c.jsonl"
    corpus_file.write_text(
        "".join(json.dumps({"text": f"claim: thing {i}.\nperspective: view {i}"}) + "\n" for i in range(6))
    )
    calls: dict[str, int] = {"spec": 0, "model": 0, "corpus": 0}
    real_load, real_resolve, real_read = task.TaskSpec.load.__func__, models.resolve_model, corpus._read_texts

    def load(cls, source, *args, **kwargs):
        calls["spec"] += not isinstance(source, task.TaskSpec)
        return real_load(cls, source, *args, **kwargs)

    def resolve(*args, **kwargs):
        calls["model"] += 1
        return real_resolve(*args, **kwargs)

    def read(*args, **kwargs):
        calls["corpus"] += 1
        return real_read(*args, **kwargs)

    monkeypatch.setattr(task.TaskSpec, "load", classmethod(load))
    monkeypatch.setattr(pipeline, "resolve_model", resolve)
    monkeypatch.setattr(models, "resolve_model", resolve)
    monkeypatch.setattr(corpus, "_read_texts", read)
    argv = [
        "synthesize",
        "--task",
        str(spec_file),
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path / "run"),
    ]
    argv += [
        "--corpus",
        str(corpus_file),
        "--num-inputs",
        "2",
        "--min-pairs",
        "1",
        "--engine",
        "transformers",
    ]
    assert cli.main(argv) == 0
    assert calls == {"spec": 1, "model": 1, "corpus": 1}


def test_the_code_that_keys_a_stage_is_what_the_stage_imports(tmp_path: Path) -> None:
    """Editing methods.py (which loads the model for training) retrains; a module imported anywhere counts."""
    import shutil

    from selfguide_hf.fingerprints import stage_sources, stage_sources_hash

    copy = tmp_path / "selfguide_hf"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    assert {"methods.py", "trainer.py", "prompts.py"} <= set(stage_sources("trainer", copy))
    assert {"builder.py", "synthesis.py", "corpus.py", "vllm_engine.py"} <= set(
        stage_sources("builder", copy)
    )
    assert "metrics/core.py" in stage_sources("evaluation", copy)
    before = {stage: stage_sources_hash(stage, copy) for stage in ("trainer", "evaluation", "builder")}
    (copy / "methods.py").write_text((copy / "methods.py").read_text() + "\n# edited\n")
    after = {stage: stage_sources_hash(stage, copy) for stage in ("trainer", "evaluation", "builder")}
    assert after["trainer"] != before["trainer"]
    assert after["evaluation"] == before["evaluation"] and after["builder"] == before["builder"]
    # a module a stage starts importing joins its key at once, inside a function too
    (copy / "prompts.py").write_text(
        (copy / "prompts.py").read_text() + "\n\ndef late():\n    from selfguide_hf import verdict\n"
    )
    assert "verdict.py" in stage_sources("trainer", copy)
