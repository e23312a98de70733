"""Training: argument parsing and bad input, SFT rows, methods (LoRA / QLoRA / full), run checks.

Everything trains the tiny random model for a couple of steps on one thread,
so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfguide_hf import methods, pipeline, publish, trainer
from selfguide_hf.bundled import bundled_spec, load_eval_split
from selfguide_hf.methods import TrainingConfigError
from selfguide_hf.prompts import encode_prompt, render_completion, render_task_prompt
from selfguide_hf.run_dir import (
    MANIFEST_NAME,
    AdapterMismatchError,
    RunMismatchError,
    check_adapter_base,
    last_complete_checkpoint,
    sanitized_command,
)
from selfguide_hf.settings_parser import cpu_has_native_bf16
from selfguide_hf.settings_parser import parse_settings as parse_recipe_args

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
TASK = "task199"


def synthetic_rows(n: int = 8, task: str = TASK):
    """Hand-made rows with the builder's columns, rendered with the prompt module."""
    from datasets import Dataset

    split = load_eval_split(task, "validation").select(range(n))
    rows = [
        {"input": r["input"], "output": r["output"][0], "round": 0, "vote_share": 1.0, "num_agreeing": 3}
        for r in split
    ]
    return Dataset.from_list(rows)


def write_rows(path: Path, n: int = 8) -> Path:
    dataset = synthetic_rows(n)
    dataset.to_json(str(path))
    return path


def tiny_argv(model_dir: Path, out: Path, rows: Path, *extra: str) -> list[str]:
    return [
        "--task", TASK, "--model", str(model_dir), "--dataset_path", str(rows), "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--torch_threads", "1",
        "--disable_tqdm", "true", "--logging_steps", "1", "--max_length", "512", *extra,
    ]  # fmt: skip


def run_recipe(argv: list[str]) -> tuple[pipeline.SelfGuideRun, trainer.TrainResult]:
    sg, targs, margs = parse_recipe_args(argv)
    run = pipeline.prepare_run(sg, targs, margs, argv)
    data = pipeline.build_synthetic_dataset(run)
    result = pipeline.train(run, data)
    publish.write_model_card(run, data, result)
    return run, result


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with other weights (same architecture and tokenizer): another base model."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("other-model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("rows") / "rows.jsonl")


# ------------------------------------------------------------------- parsing
def test_yaml_and_cli_mix_cli_wins(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("task: task190\nlearning_rate: 5e-5\nlora_r: 8\nmethod: lora\nnum_inputs: 12\n")
    sg, targs, margs = parse_recipe_args(["--config", str(config), "--task", TASK, "--lora_r", "4"])
    assert sg.task == TASK  # CLI over YAML
    assert sg.num_inputs == 12
    assert margs.lora_r == 4
    assert targs.learning_rate == pytest.approx(5e-5)  # YAML "5e-5" is a string to PyYAML: coerced
    assert margs.use_peft and not margs.load_in_4bit


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("task: task199\nlora_rank: 8\n")
    with pytest.raises(TrainingConfigError, match=r"bad\.yaml: unknown key 'lora_rank'.*lora_r"):
        parse_recipe_args(["--config", str(config)])


def test_unknown_cli_flag_is_named() -> None:
    with pytest.raises(TrainingConfigError, match=r"unknown command-line flag '--num_input'.*num_inputs"):
        parse_recipe_args(["--task", TASK, "--num_input", "5"])


def test_bad_yaml_value_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: fast\n")
    with pytest.raises(TrainingConfigError, match=r"key 'learning_rate'"):
        parse_recipe_args(["--config", str(config)])


def test_missing_config_file() -> None:
    with pytest.raises(TrainingConfigError, match="no such file"):
        parse_recipe_args(["--config", "nope.yaml"])


def test_missing_task_is_a_clear_error() -> None:
    sg, targs, margs = parse_recipe_args(["--output_dir", "unused"])
    with pytest.raises(TrainingConfigError, match="no task given"):
        pipeline.prepare_run(sg, targs, margs)


def test_unknown_task_is_a_clear_error(tmp_path: Path) -> None:
    sg, targs, margs = parse_recipe_args(["--task", "task0", "--output_dir", str(tmp_path)])
    with pytest.raises(TrainingConfigError, match="unknown bundled task 'task0'"):
        pipeline.prepare_run(sg, targs, margs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--push_dataset", "true"], "needs --dataset_hub_id"),
        (["--num_inputs", "0"], "num_inputs"),
        (["--model", "a", "--model_name_or_path", "b"], "disagree"),
        (["--load_in_4bit", "true"], "use --method qlora"),
        (["--synthesis", "[1, 2]"], "mapping"),
        (["--synthesis", '{"seed": 1}'], "give 'seed' as --synthesis_seed"),
    ],
)
def test_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(TrainingConfigError, match=re.escape(message)):
        parse_recipe_args(["--task", TASK, *argv])


def test_push_without_repo_id(tmp_path: Path, tiny_model_dir: Path) -> None:
    argv = [
        "--task",
        TASK,
        "--model",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--push_to_hub",
        "true",
    ]
    with pytest.raises(TrainingConfigError, match="--hub_model_id"):  # refused on parsing, before any model
        parse_recipe_args(argv)


def test_method_sets_quantization() -> None:
    _, _, margs = parse_recipe_args(["--task", TASK, "--method", "qlora"])
    assert margs.load_in_4bit and margs.use_bnb_nested_quant and margs.use_peft
    _, _, margs = parse_recipe_args(["--task", TASK, "--method", "full"])
    assert not margs.use_peft and not margs.load_in_4bit


def test_cpu_defaults_and_output_dir() -> None:
    _sg, targs, _ = parse_recipe_args(["--task", TASK])
    assert targs.use_cpu and targs.bf16 == cpu_has_native_bf16()
    sg, targs, margs = parse_recipe_args(["--task", TASK, "--bf16", "false"])
    assert not targs.bf16
    run = pipeline.prepare_run(sg, targs, margs)  # the folders follow the task's name: outputs/<task>/adapter
    assert (
        Path(run.run_dir) == Path("outputs") / TASK and run.output_dir == Path("outputs") / TASK / "adapter"
    )


# -------------------------------------------------------------------- configs
def test_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "smollm2-135m_lora_cpu.yaml",
        "smollm2-135m_qlora_cpu.yaml",
        "qwen2.5-7b_qlora_gpu24gb.yaml",
        "llama3.1-8b_qlora_gpu24gb.yaml",
        "vicuna-7b_full_paper.yaml",
    } <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_validates(config: Path) -> None:
    _model, method, device = config.stem.split("_")
    first = config.read_text().splitlines()[0]
    assert (
        first == f"# accelerate launch recipes/sft.py --config recipes/configs/{config.name} --task task199"
    )
    extra = (
        [] if device == "cpu" else ["--use_cpu", "true"]
    )  # GPU configs: validate values here, run elsewhere
    sg, targs, margs = parse_recipe_args(["--config", str(config), "--task", TASK, *extra])
    assert sg.method == method
    assert margs.load_in_4bit == (method == "qlora")
    assert margs.use_peft == (method in ("lora", "qlora"))
    if device == "cpu":
        assert sg.model == "default" and targs.use_cpu
        assert targs.bf16 == cpu_has_native_bf16()  # autocast only on native-bf16 CPUs
        assert not targs.gradient_checkpointing and sg.compact_lm_head
    else:
        assert targs.bf16 and margs.dtype == "bfloat16"
    if device == "paper":
        assert (targs.num_train_epochs, targs.learning_rate, targs.per_device_train_batch_size) == (
            3,
            5e-5,
            1,
        )
        assert targs.gradient_accumulation_steps == 1
        assert str(targs.lr_scheduler_type.value) == "linear"


# ------------------------------------------------------------------ SFT rows
def test_sft_rows_use_the_evaluation_prompt(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = synthetic_rows(4)
    spec = bundled_spec(TASK)
    sft = trainer.to_sft_dataset(dataset, spec, tokenizer)
    assert sft.column_names == ["input_ids", "completion_mask"]
    for row, source in zip(sft, dataset):
        prompt = encode_prompt(tokenizer, render_task_prompt(spec, source["input"], tokenizer))
        completion = render_completion(spec, source["input"], source["output"], tokenizer)
        assert completion.endswith("<|im_end|>\n")
        assert row["input_ids"][: len(prompt)] == prompt
        assert row["completion_mask"] == [0] * len(prompt) + [1] * (len(row["input_ids"]) - len(prompt))
        assert tokenizer.decode(row["input_ids"][len(prompt) :]) == completion


def test_sft_rows_drop_empty_and_cap(tiny_model_dir: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = bundled_spec(TASK)
    rows = Dataset.from_list(
        [{"input": "a", "output": " "}, {"input": "b", "output": "x"}, {"input": "c", "output": "y"}]
    )
    assert len(trainer.to_sft_dataset(rows, spec, tokenizer)) == 2
    assert len(trainer.to_sft_dataset(rows, spec, tokenizer, max_rows=1)) == 1
    with pytest.raises(TrainingConfigError, match="no usable rows"):
        trainer.to_sft_dataset(rows.select([0]), spec, tokenizer)
    with pytest.raises(TrainingConfigError, match=r"lacks column\(s\) \['output'\]"):
        trainer.to_sft_dataset(rows.remove_columns("output"), spec, tokenizer)


# ------------------------------------------------------------------ registry
def test_method_registry() -> None:
    assert set(methods.METHODS) >= {"lora", "qlora", "full"}
    assert methods.get_method("qlora").quantized
    assert not methods.get_method("full").uses_peft
    with pytest.raises(TrainingConfigError, match="unknown method 'dora'"):
        methods.get_method("dora")
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("lora", "again", uses_peft=True)(lambda *a: None)


def test_lora_and_quantization_defaults() -> None:
    _, _, margs = parse_recipe_args(["--task", TASK, "--method", "qlora"])
    lora = methods._peft_config(margs)
    assert lora.target_modules == "all-linear" and lora.r == 16 and lora.lora_alpha == 32
    quant = methods._quantization_config(margs)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant


def test_compact_lm_head_gives_the_same_loss_and_gradients(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (2, 40), generator=generator)
    labels = ids.clone()
    labels[:, :30] = -100  # the prompt
    labels[1, 36:] = -100  # padding

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    trainer.disable_compact_lm_head()
    loss_full, grads_full = loss_and_grads()
    assert trainer.enable_compact_lm_head()
    try:
        loss_compact, grads_compact = loss_and_grads()
    finally:
        trainer.disable_compact_lm_head()
    torch.testing.assert_close(loss_compact, loss_full)
    for compact, full in zip(grads_compact, grads_full, strict=True):
        torch.testing.assert_close(compact, full, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- training
def test_lora_run_writes_adapter_manifest_and_card(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path
) -> None:
    out = tmp_path / "run"
    _run, result = run_recipe(tiny_argv(tiny_model_dir, out, rows_file))
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["base_model_name_or_path"] == str(tiny_model_dir)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["task"] == TASK and manifest["method"] == "lora" and manifest["complete"]
    assert set(manifest["files"]) >= {"adapter_model.safetensors", "adapter_config.json"}
    assert manifest["task_fingerprint"] == bundled_spec(TASK).fingerprint()
    card = (out / "README.md").read_text()
    assert "2407.12874" in card and TASK in card and "--dataset_path" in card
    assert result.train_rows == 8 and result.metrics["train_loss"] > 0
    assert not (out / "training_args.bin").exists() or b"hf_" not in (out / "training_args.bin").read_bytes()


def test_full_finetuning_saves_a_model(tmp_path: Path, tiny_model_dir: Path, rows_file: Path) -> None:
    out = tmp_path / "full"
    run_recipe(tiny_argv(tiny_model_dir, out, rows_file, "--method", "full"))
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()


def test_qlora_trains_on_cpu(tmp_path: Path, tiny_model_dir: Path, rows_file: Path) -> None:
    import bitsandbytes as bnb

    out = tmp_path / "qlora"
    _sg, targs, margs = parse_recipe_args(tiny_argv(tiny_model_dir, out, rows_file, "--method", "qlora"))
    loaded = methods.load_for_training("qlora", str(tiny_model_dir), margs, targs)
    linear4 = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and linear4[0].weight.quant_type == "nf4"
    assert loaded.model.is_loaded_in_4bit
    _, result = run_recipe(tiny_argv(tiny_model_dir, out, rows_file, "--method", "qlora"))
    assert (out / "adapter_model.safetensors").is_file()
    identity = json.loads((out / MANIFEST_NAME).read_text())["identity"]["model"]
    assert identity["load_in_4bit"] and identity["bnb_4bit_quant_type"] == "nf4"
    assert result.metrics["train_loss"] > 0


def test_evaluate_before_and_after_goes_into_the_card(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path
) -> None:
    out = tmp_path / "run"
    argv = tiny_argv(tiny_model_dir, out, rows_file, "--evaluate", "true", "--eval_max_rows", "3")
    sg, targs, margs = parse_recipe_args(argv)
    report = pipeline.run_all(pipeline.prepare_run(sg, targs, margs, argv))
    assert report["baseline"]["num_examples"] == report["self_guided"]["num_examples"] == 3
    assert report["baseline"]["metric"] == "exact_match"
    saved = json.loads((out / pipeline.EVAL_NAME).read_text())
    assert saved["after"]["score"] == report["self_guided"]["score"]
    assert "| exact_match |" in (out / "README.md").read_text()
    assert json.loads((out / "report.json").read_text())["delta"] == report["delta"]


# ---------------------------------------------------------------- run checks
def test_output_dir_with_a_different_run_is_refused(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path
) -> None:
    out = tmp_path / "run"
    run_recipe(tiny_argv(tiny_model_dir, out, rows_file))
    sg, targs, margs = parse_recipe_args(tiny_argv(tiny_model_dir, out, rows_file, "--method", "full"))
    with pytest.raises(RunMismatchError, match=r"holds a different run \(method: 'lora' there, 'full' now\)"):
        pipeline.prepare_run(sg, targs, margs)
    sg, targs, margs = parse_recipe_args(tiny_argv(tiny_model_dir, out, rows_file, "--task", "task190"))
    with pytest.raises(RunMismatchError, match="task: 'task199' there, 'task190' now"):
        pipeline.prepare_run(sg, targs, margs)
    # The same run again is fine; another run with --overwrite_output_dir replaces it.
    sg, targs, margs = parse_recipe_args(tiny_argv(tiny_model_dir, out, rows_file))
    pipeline.prepare_run(sg, targs, margs)
    argv = tiny_argv(tiny_model_dir, out, rows_file, "--method", "full", "--overwrite_output_dir", "true")
    sg, targs, margs = parse_recipe_args(argv)
    pipeline.prepare_run(sg, targs, margs)


def test_foreign_output_dir_is_refused(tmp_path: Path, tiny_model_dir: Path, rows_file: Path) -> None:
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "config.json").write_text("{}")
    sg, targs, margs = parse_recipe_args(tiny_argv(tiny_model_dir, out, rows_file))
    with pytest.raises(RunMismatchError, match="not a self-guide run"):
        pipeline.prepare_run(sg, targs, margs)


def test_adapter_on_another_base_model_is_refused(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path, other_model_dir: Path
) -> None:
    out = tmp_path / "run"
    run_recipe(tiny_argv(tiny_model_dir, out, rows_file))
    from selfguide_hf.models import weights_fingerprint

    check_adapter_base(out, weights_fingerprint(tiny_model_dir), str(tiny_model_dir))  # same base: fine
    with pytest.raises(AdapterMismatchError, match="adapter trained on base model"):
        check_adapter_base(out, weights_fingerprint(other_model_dir), str(other_model_dir))


def test_resume_refuses_another_base_model(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path, other_model_dir: Path
) -> None:
    out = tmp_path / "run"
    run_recipe(tiny_argv(tiny_model_dir, out, rows_file, "--save_strategy", "steps", "--save_steps", "1"))
    assert last_complete_checkpoint(out).endswith("checkpoint-2")
    argv = tiny_argv(other_model_dir, out, rows_file, "--resume_from_checkpoint", str(out / "checkpoint-1"))
    sg, targs, margs = parse_recipe_args(argv)
    with pytest.raises((AdapterMismatchError, RunMismatchError), match="weights"):
        pipeline.prepare_run(sg, targs, margs)


def test_resume_needs_a_complete_checkpoint(tmp_path: Path, tiny_model_dir: Path, rows_file: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoint-7").mkdir(parents=True)  # killed while saving: no trainer_state.json
    assert last_complete_checkpoint(out) is None
    sg, targs, margs = parse_recipe_args(
        tiny_argv(tiny_model_dir, out, rows_file, "--resume_from_checkpoint", "last")
    )
    with pytest.raises(TrainingConfigError, match="no checkpoint"):
        pipeline.prepare_run(sg, targs, margs)
    sg, targs, margs = parse_recipe_args(
        tiny_argv(tiny_model_dir, out, rows_file, "--resume_from_checkpoint", str(out / "checkpoint-7"))
    )
    with pytest.raises(TrainingConfigError, match="incomplete checkpoint"):
        pipeline.prepare_run(sg, targs, margs)


def test_auto_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert trainer.auto_cpu_threads(1) == 4 and trainer.auto_cpu_threads(2) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 6.0, 6.0))  # other jobs saturate the cores
    assert trainer.auto_cpu_threads(1) == 1


def test_sanitized_command_drops_tokens() -> None:
    argv = ["--task", TASK, "--hub_token", "hf_secret", "--hub_token=hf_other", "--push_to_hub", "true"]
    command = sanitized_command(argv)
    assert "hf_secret" not in command and "hf_other" not in command
    assert command == "--task task199 --push_to_hub true"


def test_hub_token_is_kept_out_of_training_args(
    tmp_path: Path, tiny_model_dir: Path, rows_file: Path
) -> None:
    token = "hf_TESTTOKENshouldneverleak123"
    argv = tiny_argv(tiny_model_dir, tmp_path / "run", rows_file, "--push_to_hub", "true")
    argv += ["--hub_model_id", "me/tiny", "--hub_token", token]
    sg, targs, margs = parse_recipe_args(argv)
    run = pipeline.prepare_run(sg, targs, margs, argv)
    assert run.hub_token == token and run.push_adapter
    assert targs.hub_token is None and not targs.push_to_hub
    assert token not in run.command and token not in repr(run)
    assert run.command.startswith("accelerate launch recipes/sft.py --task task199")


# ------------------------------------------------------------ token identity
@pytest.mark.parametrize("bos", ["llama3", "plain"])
def test_training_tokens_are_the_evaluation_tokens(bos: str, tmp_path: Path) -> None:
    """On tokenizers that add BOS, SFTTrainer trains on exactly the prompt ids evaluation generates from.

    llama3: the chat template writes BOS and the tokenizer adds one by default (TRL given the
    rendered string would train on two); plain: no chat template, the tokenizer adds BOS (evaluation
    used to see none).
    """
    from transformers import AutoTokenizer

    from selfguide_hf.generation import TransformersEngine
    from tests.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / bos, bos=bos)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bos_id = tokenizer.bos_token_id
    assert tokenizer("x")["input_ids"][0] == bos_id  # the tokenizer adds BOS by default
    spec = bundled_spec(TASK)
    dataset = synthetic_rows(3)
    argv = tiny_argv(model_dir, tmp_path / "out", tmp_path / "unused.jsonl", "--max_length", "4096")
    _sg, targs, margs = parse_recipe_args(argv)
    sft = trainer.to_sft_dataset(dataset, spec, tokenizer)
    sft_trainer = trainer.make_trainer("lora", str(model_dir), margs, targs, sft, compact_lm_head=False)
    engine = TransformersEngine(sft_trainer.model, tokenizer)
    for row, source in zip(sft_trainer.train_dataset, dataset, strict=True):
        prompt = render_task_prompt(spec, source["input"], tokenizer)
        eval_ids = engine._encode([prompt])[0]  # what evaluation (and synthesis) decode from
        ids, labels = row["input_ids"], row["labels"]
        assert ids[: len(eval_ids)] == eval_ids
        assert eval_ids[0] == bos_id and eval_ids.count(bos_id) == 1  # exactly one BOS, first
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert trained == list(range(len(eval_ids), len(ids)))  # the loss covers the completion only
        answer = tokenizer.decode(ids[len(eval_ids) :])
        assert answer.lstrip().startswith(source["output"]) and answer.endswith(tokenizer.eos_token)
        if bos == "llama3":  # what TRL would have trained on from the rendered string
            assert tokenizer(prompt)["input_ids"][:2] == [bos_id, bos_id]
