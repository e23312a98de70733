"""The recipe's arguments: `SelfGuideArguments` beside TRL's `SFTConfig` and `ModelConfig`.

`parse_recipe_args` reads ``--config x.yaml`` plus flags through TRL's own
`TrlParser.parse_args_and_config` (flags win); what it adds is checking the
YAML first so that a mistake names the file and the key (with a suggestion)
instead of raising from argparse. `cli_recipe_args` builds the same three
objects from typed values for the `selfguide` command, so both fronts run
one configuration type through one pipeline.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.methods import METHODS, TrainingConfigError, get_method

__all__ = [
    "CPU_TRAINING_DEFAULTS",
    "SelfGuideArguments",
    "cli_recipe_args",
    "parse_recipe_args",
    "recipe_parser",
]

# Builder parameters that have their own recipe flag.
SYNTHESIS_KEYS_WITH_FLAGS: dict[str, str] = {
    "task": "--task",
    "model": "--model",
    "num_inputs": "--num_inputs",
    "seed": "--synthesis_seed",
    "cache_dir": "--synthesis_cache_dir",
}
DEFAULT_TARGET_MODULES = "all-linear"
# The settings of recipes/configs/smollm2-135m_lora_cpu.yaml (measured in docs/TRAINING.md): what the
# `selfguide` command trains with (a test keeps the two equal).
CPU_TRAINING_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "lora_target_modules": DEFAULT_TARGET_MODULES,
    "gradient_checkpointing": False,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "max_length": 1024,
    "learning_rate": 2.0e-4,
    "lr_scheduler_type": "linear",
    "num_train_epochs": 3,
    "logging_steps": 5,
    "seed": 42,
}


# ------------------------------------------------------------------ arguments
def _arg(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with the help text `HfArgumentParser` shows (and argparse choices, if any)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class SelfGuideArguments:
    """The self-guide part of the recipe's arguments (training ones are TRL's `SFTConfig`, `ModelConfig`).

    LoRA rank / alpha / dropout / target modules, quantization and dtype are
    `ModelConfig` fields (``--lora_r``, ``--lora_alpha``, ``--lora_dropout``,
    ``--lora_target_modules``, ``--dtype``); the seed, output directory and Hub
    repository are `SFTConfig` fields (``--seed``, ``--output_dir``,
    ``--push_to_hub``, ``--hub_model_id``, ``--hub_private_repo``).
    """

    task: str | None = _arg(
        None, "Bundled task name (e.g. task199), a spec file (JSON/YAML) or an NI v2 task file."
    )
    model: str | None = _arg(
        None,
        "Model to improve: 'default' (embedded SmolLM2-135M-Instruct), a Hub id or a local folder. Same as --model_name_or_path.",
    )
    method: str = _arg(
        "lora", "Finetuning method: lora, qlora (4-bit NF4 base) or full.", choices=["lora", "qlora", "full"]
    )
    num_inputs: int | None = _arg(
        None,
        "Task inputs to synthesize (as in load_dataset('selfguide', num_inputs=...)); builder default when unset.",
    )
    synthesis_seed: int | None = _arg(None, "Seed of the synthesis; the training --seed when unset.")
    synthesis: dict[str, Any] | str | None = _arg(
        None, "Synthesis overrides passed to the builder, a mapping in YAML or JSON on the command line."
    )
    synthesis_cache_dir: str | None = _arg(
        None, "Cache folder of synthetic datasets (the builder's default when unset)."
    )
    dataset_path: str | None = _arg(
        None,
        "Train on an existing synthetic dataset instead of synthesizing: a save_to_disk folder or a .jsonl/.json/.parquet file with input and output columns.",
    )
    max_train_rows: int | None = _arg(None, "Use at most this many synthetic rows.")
    corpus: str | None = _arg(
        None,
        "Unlabeled texts to take task inputs from (JSONL, CSV, Parquet, .txt, or a save_to_disk folder), "
        "retrieved for the task with BM25.",
    )
    corpus_field: str = _arg("text", "The corpus's text column.")
    corpus_mode: str = _arg(
        "inputs",
        "inputs: the retrieved texts are the task inputs; rewrite: the model rewrites each into one input.",
        choices=["inputs", "rewrite"],
    )
    corpus_retriever: str = _arg(
        "bm25",
        "How corpus rows are found: bm25 (shared words) or embeddings (shared meaning; "
        "needs sentence-transformers).",
        choices=["bm25", "embeddings"],
    )
    corpus_embedding_model: str = _arg(
        "sentence-transformers/all-MiniLM-L6-v2",
        "The sentence-transformers model of --corpus_retriever embeddings.",
    )
    engine: str = _arg(
        "auto",
        "Generation engine for synthesis and evaluation: auto (vLLM when installed, else transformers), "
        "transformers or vllm.",
        choices=["auto", "transformers", "vllm"],
    )
    vllm_kv_cache_gb: float | None = _arg(
        None, "vLLM's KV cache in GiB (default: 2 on a CPU, vLLM's share of GPU memory on a GPU)."
    )
    vllm_tensor_parallel_size: int = _arg(1, "GPUs one vLLM model is split over (synthesis and evaluation).")
    vllm_data_parallel_size: int = _arg(
        1, "vLLM engine replicas (data parallel) for synthesis and evaluation."
    )
    min_pairs: int = _arg(
        16,
        "Stop before training when fewer synthetic pairs survive (or a label has fewer than 2); "
        "1 trains on whatever survived.",
    )
    evaluate: bool = _arg(False, "Evaluate the base model and the adapter on the task's eval split.")
    eval_split: str = _arg("test", "Eval split of a bundled task.")
    eval_max_rows: int | None = _arg(
        None, "Evaluate on at most this many rows (evaluation's default when unset)."
    )
    eval_file: str | None = _arg(
        None, "JSONL/CSV eval file with input and output, for tasks that are not bundled."
    )
    eval_batch_size: int = _arg(8, "Sequences decoded together when evaluating.")
    run_dir: str | None = _arg(
        None,
        "Folder for the report, the evaluations and the synthetic data; --output_dir (the adapter's folder) when unset.",
    )
    push_dataset: bool = _arg(False, "Push the synthetic dataset and its card to --dataset_hub_id.")
    dataset_hub_id: str | None = _arg(
        None, "Hub dataset repository for --push_dataset (e.g. user/selfguide-task199)."
    )
    card_license: str | None = _arg(
        None, "License in the model card; the base model's (apache-2.0 for the embedded one) when unset."
    )
    overwrite_output_dir: bool = _arg(
        False, "Replace a different run found in --output_dir instead of refusing to start."
    )
    compact_lm_head: bool = _arg(
        True, "On CPU, run the LM head only on completion tokens (same loss; see docs/TRAINING.md)."
    )
    torch_threads: int | None = _arg(
        None,
        "CPU threads per process; unset: the usable cores divided by the local processes, or 1 when other jobs keep every core busy (accelerate launch otherwise pins one thread).",
    )

    def __post_init__(self) -> None:
        if isinstance(self.synthesis, str):
            text = self.synthesis.strip()
            if text.lower() in ("", "none", "null"):
                self.synthesis = None
            else:
                try:
                    self.synthesis = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TrainingConfigError(
                        f"--synthesis: expected a JSON object such as '{{\"rounds\": 4}}', got {text!r} ({exc.msg})"
                    ) from exc
        if self.synthesis is not None and not isinstance(self.synthesis, dict):
            raise TrainingConfigError(
                f"synthesis: expected a mapping of synthesis overrides, got {type(self.synthesis).__name__}"
            )
        for key, flag in SYNTHESIS_KEYS_WITH_FLAGS.items():
            if self.synthesis and key in self.synthesis:
                raise TrainingConfigError(
                    f"synthesis: give '{key}' as {flag}, not inside the synthesis mapping"
                )
        if self.method not in METHODS:
            raise TrainingConfigError(f"method: unknown method {self.method!r}; known: {sorted(METHODS)}")
        for name in (
            "num_inputs",
            "max_train_rows",
            "eval_max_rows",
            "torch_threads",
            "eval_batch_size",
            "min_pairs",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainingConfigError(f"{name}: expected a whole number >= 1, got {value!r}")
        if self.push_dataset and not self.dataset_hub_id:
            raise TrainingConfigError("--push_dataset needs --dataset_hub_id <user>/<name>")


# ---------------------------------------------------------- parsing the recipe
def recipe_parser() -> Any:
    """`TrlParser` over (SelfGuideArguments, SFTConfig, ModelConfig); abbreviations off so typos fail."""
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((SelfGuideArguments, SFTConfig, ModelConfig), allow_abbrev=False)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run at hardware speed instead of being emulated."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # another torch build: assume not
        return False


def recipe_defaults() -> dict[str, Any]:
    """Defaults that differ from TRL's, applied before the YAML file and the command line.

    Without CUDA: ``use_cpu`` (so two CPU processes get a gloo group) and bf16
    autocast only where the CPU computes bf16 natively (TRL turns it on
    everywhere; emulated bf16 is several times slower than fp32). No
    checkpoints unless asked, no reporting integrations.
    """
    import torch

    defaults: dict[str, Any] = {"report_to": "none", "save_strategy": "no"}
    if not torch.cuda.is_available():
        defaults.update({"use_cpu": True, "bf16": cpu_has_native_bf16()})
    return defaults


def _known_keys(parser: Any) -> dict[str, Any]:
    return {action.dest: action for action in parser._actions if action.dest not in ("help",)}


def _closest(key: str, known: Iterable[str]) -> str:
    known = list(known)
    head = key.split("_")[0] + "_"
    # Same first word first: "lora_rank" should suggest "lora_r", not "local_rank".
    match = difflib.get_close_matches(key, [k for k in known if k.startswith(head)], n=1, cutoff=0.4)
    match = match or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(action: Any, key: str, value: Any, source: str) -> Any:
    """Run YAML strings through the option's argparse type (YAML reads 5e-5 as a string)."""
    if value is None or action.type is None:
        return value
    try:
        if isinstance(value, list) and action.nargs in ("+", "*"):
            return [action.type(v) if isinstance(v, str) else v for v in value]
        if isinstance(value, str):
            return action.type(value)
    except (TypeError, ValueError) as exc:
        raise TrainingConfigError(f"{source}: key '{key}': cannot read {value!r}: {exc}") from exc
    return value


def load_recipe_config(path: str | os.PathLike[str], parser: Any) -> dict[str, Any]:
    """Read a recipe YAML file; unknown keys fail here, naming the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TrainingConfigError(f"--config {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise TrainingConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise TrainingConfigError(f"{path}: malformed YAML: {exc}") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TrainingConfigError(f"{path}: expected a mapping of argument names to values")
    env = config.pop("env", None)
    if env is not None:
        if not isinstance(env, dict):
            raise TrainingConfigError(f"{path}: key 'env': expected a mapping of environment variables")
        for name, value in env.items():
            os.environ[str(name)] = str(value)
    known = _known_keys(parser)
    for key in config:
        if key not in known:
            raise TrainingConfigError(f"{path}: unknown key '{key}'{_closest(key, known)}")
    return {key: _coerce(known[key], key, value, str(path)) for key, value in config.items()}


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest: list[str] = []
    config: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise TrainingConfigError("--config needs a YAML file path")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def parse_recipe_args(argv: Sequence[str] | None = None) -> tuple[SelfGuideArguments, Any, Any]:
    """Parse ``--config x.yaml`` plus CLI flags (CLI wins) into (SelfGuideArguments, SFTConfig, ModelConfig).

    Unknown keys, in the YAML or on the command line, raise `TrainingConfigError` naming them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = recipe_parser()
    config_path, cli = _split_config_flag(argv)
    known = _known_keys(parser)
    for arg in cli:
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0]
            dest = key.replace("-", "_")
            if dest not in known and not (dest.startswith("no_") and dest[3:] in known):
                raise TrainingConfigError(f"unknown command-line flag '--{key}'{_closest(dest, known)}")
    defaults = recipe_defaults()
    if config_path is not None:
        defaults.update(load_recipe_config(config_path, parser))
    parser.set_defaults_with_config(**defaults)
    try:
        sg_args, training_args, model_args = parser.parse_args_into_dataclasses(args=cli)
    except TrainingConfigError:
        raise
    except ValueError as exc:  # argparse leftovers or a dataclass __post_init__ check
        raise TrainingConfigError(str(exc)) from exc
    sg_args, model_args = reconcile_model_args(sg_args, model_args)
    training_args = apply_method_defaults(sg_args, training_args, model_args)
    return sg_args, training_args, model_args


def reconcile_model_args(sg_args: SelfGuideArguments, model_args: Any) -> tuple[SelfGuideArguments, Any]:
    """`--model` and `--model_name_or_path` name the same thing; the method decides the quantization."""
    if sg_args.model and model_args.model_name_or_path and sg_args.model != model_args.model_name_or_path:
        raise TrainingConfigError(
            f"--model {sg_args.model!r} and --model_name_or_path {model_args.model_name_or_path!r} disagree; "
            "give one of them"
        )
    name = sg_args.model or model_args.model_name_or_path or "default"
    sg_args.model = name
    model_args.model_name_or_path = name
    method = get_method(sg_args.method)
    if model_args.load_in_8bit:
        raise TrainingConfigError("--load_in_8bit is not a self-guide method; use --method qlora (4-bit NF4)")
    if model_args.load_in_4bit and not method.quantized:
        raise TrainingConfigError(f"--load_in_4bit conflicts with --method {method.name}; use --method qlora")
    model_args.load_in_4bit = method.quantized
    model_args.use_bnb_nested_quant = method.quantized or model_args.use_bnb_nested_quant
    model_args.use_peft = method.uses_peft
    return sg_args, model_args


def apply_method_defaults(sg_args: SelfGuideArguments, training_args: Any, model_args: Any) -> Any:
    """Settings a method cannot run without."""
    if training_args.output_dir in (None, "", "trainer_output"):
        task = Path(sg_args.task).stem if sg_args.task else "run"
        training_args.output_dir = str(Path("outputs") / f"selfguide-{task}-{sg_args.method}")
    targets = model_args.lora_target_modules
    if targets is None or (isinstance(targets, (list, tuple)) and list(targets) == [DEFAULT_TARGET_MODULES]):
        model_args.lora_target_modules = DEFAULT_TARGET_MODULES  # PEFT takes the keyword as a string only
    check_training_values(training_args, model_args)
    # Rows come tokenized by trainer.to_sft_dataset (prompt ids = evaluation's): the loss must still
    # cover the completion only, which TRL infers only for untokenized prompt/completion rows.
    training_args.completion_only_loss = True
    return training_args


def cli_recipe_args(
    *,
    task: str,
    model: str | None,
    method: str,
    output_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    synthesis: dict[str, Any] | None,
    num_inputs: int | None,
    synthesis_seed: int,
    training: dict[str, Any] | None = None,
    threads: int | None = None,
    eval_file: str | os.PathLike[str] | None = None,
    eval_split: str = "test",
    eval_max_rows: int | None = None,
    eval_batch_size: int = 8,
    min_pairs: int = 16,
    engine: str = "auto",
    corpus: str | os.PathLike[str] | None = None,
    corpus_field: str = "text",
    corpus_mode: str = "inputs",
    corpus_retriever: str = "bm25",
    corpus_embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    vllm_kv_cache_gb: float | None = None,
    vllm_tensor_parallel_size: int = 1,
    push_to_hub: str | None = None,
    push_dataset: str | None = None,
    private: bool | None = None,
) -> tuple[SelfGuideArguments, Any, Any]:
    """The recipe's three argument objects for the `selfguide` command, built from typed values.

    Training settings start from `CPU_TRAINING_DEFAULTS` (the recipe's CPU
    config) and `recipe_defaults()`, then ``training`` overrides them.
    """
    values: dict[str, Any] = {**recipe_defaults(), **CPU_TRAINING_DEFAULTS, **(training or {})}
    values.update(task=task, model=model or "default", method=method, num_inputs=num_inputs)
    values.update(synthesis_seed=synthesis_seed, synthesis=synthesis, torch_threads=threads, evaluate=True)
    values.update(eval_split=eval_split, eval_max_rows=eval_max_rows, eval_batch_size=eval_batch_size)
    values.update(min_pairs=min_pairs, engine=engine, vllm_kv_cache_gb=vllm_kv_cache_gb)
    values.update(vllm_tensor_parallel_size=vllm_tensor_parallel_size)
    values.update(
        corpus=os.fspath(corpus) if corpus else None, corpus_field=corpus_field, corpus_mode=corpus_mode
    )
    values.update(corpus_retriever=corpus_retriever, corpus_embedding_model=corpus_embedding_model)
    values.update(eval_file=os.fspath(eval_file) if eval_file is not None else None)
    values.update(run_dir=os.fspath(run_dir), output_dir=os.fspath(output_dir))
    if push_to_hub:
        values.update(push_to_hub=True, hub_model_id=push_to_hub, hub_private_repo=private)
    if push_dataset:
        values.update(push_dataset=True, dataset_hub_id=push_dataset, hub_private_repo=private)
    try:  # the recipe's own parser: same fields, same checks, unknown keys refused
        sg_args, training_args, model_args = recipe_parser().parse_dict(values)
    except ValueError as exc:
        raise TrainingConfigError(str(exc)) from exc
    sg_args, model_args = reconcile_model_args(sg_args, model_args)
    return sg_args, apply_method_defaults(sg_args, training_args, model_args), model_args


def check_training_values(training_args: Any, model_args: Any) -> None:
    """Refuse settings that would train nothing or fail after synthesis, naming the key."""
    max_steps = training_args.max_steps or 0
    problems = []
    if max_steps <= 0 and not training_args.num_train_epochs > 0:
        problems.append(
            f"num_train_epochs must be > 0 (or max_steps > 0), got {training_args.num_train_epochs}"
        )
    if not training_args.learning_rate > 0:
        problems.append(f"learning_rate must be > 0, got {training_args.learning_rate}")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(training_args, name)}")
    if training_args.max_length is not None and training_args.max_length < 16:
        problems.append(f"max_length must be >= 16 tokens, got {training_args.max_length}")
    if model_args.use_peft:
        if model_args.lora_r < 1:
            problems.append(f"lora_r must be >= 1, got {model_args.lora_r}")
        if not model_args.lora_alpha > 0:
            problems.append(f"lora_alpha must be > 0, got {model_args.lora_alpha}")
        if not 0 <= model_args.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {model_args.lora_dropout}")
    if problems:
        raise TrainingConfigError("; ".join(problems))


CORPUS_KEYS = ("corpus", "corpus_field", "corpus_mode", "corpus_retriever", "corpus_embedding_model")


def synthesis_overrides(sg_args: SelfGuideArguments) -> dict[str, Any]:
    """The synthesis mapping plus the corpus flags (``--corpus`` and friends are synthesis parameters)."""
    overrides = dict(sg_args.synthesis or {})
    if sg_args.corpus:
        flags = {key: getattr(sg_args, key) for key in CORPUS_KEYS}
        clash = {k: v for k, v in overrides.items() if k in flags and v != flags[k]}
        if clash:  # the flag's default would otherwise silently replace the mapping's value
            key = next(iter(clash))
            raise TrainingConfigError(
                f"synthesis.{key}={clash[key]!r} contradicts --{key} {flags[key]!r}; "
                f"with --corpus give the corpus settings as flags (--{key})"
            )
        overrides.update(flags)
    return overrides
