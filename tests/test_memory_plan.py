"""The memory plan: settings chosen for the hardware, each stage's peak, from config.json alone.

CUDA is mocked (no GPU here): `torch.cuda.is_available`, the device's properties and
bf16 support. The model folders hold only the config.json of three public 7-8B models
(tests/data/configs), so nothing here could load a weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfguide_hf import cli
from selfguide_hf.memory_plan import (
    GIB,
    Hardware,
    ModelShape,
    RunShape,
    model_shape,
    plan_memory,
    training_stage,
)

CONFIGS = Path(__file__).resolve().parent / "data" / "configs"


@pytest.fixture
def cuda_card(monkeypatch: pytest.MonkeyPatch):
    """A CUDA card of the asked size, as torch reports one (bf16 capable)."""
    import torch
    from trl import ModelConfig, SFTConfig  # noqa: F401  (imported before CUDA is mocked)

    def install(gb: float) -> None:
        props = SimpleNamespace(total_memory=int(gb * GIB), name=f"mocked {gb:g} GB card")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # TrainingArguments picks cuda:0
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    return install


def plan_json(capsys, *argv: str) -> tuple[int, dict]:
    code = cli.main(["plan", "--task", "task199", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{") :])


@pytest.mark.parametrize(
    ("model", "on_24gb"),
    [("qwen2.5-7b-instruct", "qlora"), ("llama-3.1-8b-instruct", "qlora"), ("vicuna-7b-v1.5", "lora")],
)
def test_a_24gb_card_gets_bf16_checkpointing_and_the_method_that_fits(
    model, on_24gb, cuda_card, capsys
) -> None:
    folder = CONFIGS / model
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]  # nothing but the config
    cuda_card(24)
    code, plan = plan_json(capsys, "--model", str(folder))
    assert code == 0 and plan["fits"]
    assert (plan["method"], plan["dtype"], plan["gradient_checkpointing"]) == (on_24gb, "bfloat16", True)
    assert plan["settings"]["bf16"] is True and plan["settings"]["fp16"] is False
    assert 5 < plan["training_peak_gb"] < 24 and plan["synthesis_peak_gb"] <= 24 * 0.9
    if on_24gb == "lora":  # Vicuna: 32k vocabulary, 6.7B parameters: LoRA on bf16 weights fits with margin
        assert plan["training_peak_gb"] <= 24 * 0.75
    cuda_card(80)
    code, plan = plan_json(capsys, "--model", str(folder))
    assert code == 0 and (plan["method"], plan["dtype"]) == ("lora", "bfloat16")


def test_a_card_too_small_exits_2_naming_the_memory_needed(capsys) -> None:
    folder = CONFIGS / "qwen2.5-7b-instruct"
    code = cli.main(["plan", "--task", "task199", "--model", str(folder), "--gpu-memory-gb", "4"])
    captured = capsys.readouterr()
    assert code == 2
    line = next(x for x in captured.err.splitlines() if "error" in x)
    assert "needs" in line and "GB, more than the 3.6 GB planned for a 4 GB card" in line
    assert "does NOT fit" in captured.out


def test_the_user_s_method_and_checkpointing_are_kept(capsys) -> None:
    folder = CONFIGS / "qwen2.5-7b-instruct"
    code, plan = plan_json(capsys, "--model", str(folder), "--gpu-memory-gb", "80", "--method", "qlora")
    assert code == 0 and plan["method"] == "qlora" and plan["chosen_because"] == ""
    code, plan = plan_json(
        capsys, "--model", str(folder), "--gpu-memory-gb", "24", "--gradient-checkpointing", "false"
    )
    assert plan["gradient_checkpointing"] is False
    assert "all kept" in next(k for k in plan["stages"]["training"] if k.startswith("activations"))


def test_a_recipe_config_is_planned_as_given(capsys) -> None:
    config = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "qwen2.5-7b_qlora_gpu24gb.yaml"
    folder = CONFIGS / "qwen2.5-7b-instruct"
    code, plan = plan_json(capsys, "--config", str(config), "--model", str(folder), "--gpu-memory-gb", "24")
    assert code == 0 and plan["method"] == "qlora" and plan["settings"]["per_device_train_batch_size"] == 4
    # docs/TRAINING.md derived ~10 GB by hand for this config
    assert 9 < plan["training_peak_gb"] < 12


def test_the_cpu_plan_of_the_embedded_model_is_within_30_percent_of_its_measured_peaks() -> None:
    """docs/TRAINING.md, "Measured": peak RSS of 32 rows of task199 (~254 tokens a row), batch 2, on CPU."""
    from selfguide_hf.models import resolve_model

    shape = model_shape(resolve_model("default"))
    cpu = Hardware("cpu", 24.0, False, "CPU")
    run = RunShape(train_batch=2, train_tokens=254, lora_rank=16)
    for method, measured_mb in (("lora", 2757), ("qlora", 2983), ("full", 4309)):
        planned = training_stage(shape, cpu, method, False, run).peak_gb * 1024
        assert abs(planned - measured_mb) / measured_mb <= 0.30, (method, planned, measured_mb)


def test_a_7b_qlora_plan_is_within_30_percent_of_a_published_peak() -> None:
    """Qwen's own profile (QwenLM/Qwen README): Q-LoRA of Qwen-7B, batch 1, 1024 tokens, 12.3 GB.

    Qwen-7B (the first Qwen): 32 layers, hidden 4096, MLP 11008, 32 KV heads, vocabulary 151936,
    untied embeddings; its finetune script trains LoRA r 64 on every linear layer and a loss on
    every position (so the full LM head).
    """
    layers, hidden, mlp, vocab = 32, 4096, 11008, 151936
    linear = layers * (hidden * 3 * hidden + hidden * hidden + 3 * hidden * mlp)
    per_rank = layers * ((hidden + 3 * hidden) + 2 * hidden + 3 * (hidden + mlp))
    shape = ModelShape(
        linear=linear, embeddings=vocab * hidden, head=vocab * hidden, other=layers * 2 * hidden,
        layers=layers, hidden=hidden, intermediate=mlp, kv_dim=hidden, vocab=vocab, context=8192,
        lora_per_rank=per_rank,
    )  # fmt: skip
    card = Hardware("cuda", 80.0, True, "A100")
    run = RunShape(train_batch=1, train_tokens=1024, lora_rank=64, compact_head=False)
    planned = training_stage(shape, card, "qlora", True, run).peak_gb
    assert abs(planned - 12.3) / 12.3 <= 0.30, planned


def test_the_plan_chooses_before_any_weight_loads_and_stops_a_run_that_cannot_fit(
    cuda_card, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`selfguide run` plans first: on a too-small card it stops with the plan's line, nothing loaded."""
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("a weight was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / "qwen2.5-7b-instruct" / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"not read: the plan stops the run first")
    cuda_card(8)
    code = cli.main(
        ["run", "--task", "task199", "--model", str(folder), "--output-dir", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "memory plan: the " in err and "8.0 GB" in err
    assert not (tmp_path / "out").exists()


def test_auto_method_is_lora_on_a_cpu(capsys) -> None:
    from selfguide_hf.settings_parser import parse_settings

    sg, targs, margs = parse_settings(["--task", "task199"], front="cli")
    assert sg.method == "lora" and not targs.gradient_checkpointing and margs.use_peft


def test_gpu_defaults_equal_the_24gb_config() -> None:
    import yaml

    from selfguide_hf.settings import GPU_TRAINING_DEFAULTS

    config = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "qwen2.5-7b_qlora_gpu24gb.yaml"
    values = yaml.safe_load(config.read_text())
    assert {key: values[key] for key in GPU_TRAINING_DEFAULTS} == GPU_TRAINING_DEFAULTS


def test_plan_memory_is_monotone_in_the_card() -> None:
    shape = model_shape(CONFIGS / "llama-3.1-8b-instruct")
    run = RunShape(train_batch=4, train_tokens=1024)
    methods = [
        plan_memory(shape, Hardware("cuda", gb, True, "card"), run).method for gb in (8, 16, 24, 40, 80)
    ]
    assert methods == ["qlora", "qlora", "qlora", "lora", "lora"]


def test_the_gpu_smoke_script_runs_its_plumbing_on_a_cpu(tmp_path: Path, monkeypatch) -> None:
    """`benchmarks/gpu_smoke.py --dry-run`: plan, synthesis, training, evaluation, the table (tiny model)."""
    import importlib.util

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", script)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    assert smoke.main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    lora = results["methods"]["lora"]
    assert lora["exit"] == 0 and set(lora["stages"]) == {"synthesis", "training", "evaluation"}
    assert results["plans"]["lora"]["fits"] and results["plans"]["lora"]["training_peak_gb"] > 0
    assert "| lora | training |" in (tmp_path / "out" / "gpu_smoke.md").read_text()
    assert smoke.main(["--out", str(tmp_path / "gpu")]) == 2  # no CUDA here: says so, runs nothing
