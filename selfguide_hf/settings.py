"""Every setting of a SELF-GUIDE run, declared once (the parser is `settings_parser`).

`SelfGuideArguments` is the declaration: each field has its default, type,
help, the stage whose result it changes (``stage``), and where its choices
come from (``choices``: a registry, read when the parser is built, so an entry
registered at run time is accepted). Training settings are TRL's own
`SFTConfig` / `ModelConfig`; which of their fields change no weight is
declared here too (`WEIGHT_NEUTRAL_FIELDS`), so every other one keys the
adapter. The fronts differ only where `CLI_ONLY_ALIASES` says.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.errors import ConfigError
from selfguide_hf.eval_data import DEFAULT_MAX_EVAL
from selfguide_hf.funnel import DEFAULT_MIN_PAIRS
from selfguide_hf.methods import METHODS
from selfguide_hf.synthesis_config import CORPUS_MODES, PRESETS, SynthesisConfig

__all__ = [
    "CPU_TRAINING_DEFAULTS",
    "STAGES",
    "SelfGuideArguments",
    "synthesis_config",
    "synthesis_overrides",
]

STAGES = ("task", "synthesis", "training", "evaluation", "publish", "none")
AUTO_METHOD = "auto"  # LoRA on a CPU; on a GPU the memory plan's choice (memory_plan.py)
DEFAULT_TARGET_MODULES = "all-linear"
# The settings of recipes/configs/smollm2-135m_lora_cpu.yaml (measured in docs/TRAINING.md): what a
# run trains with when no --config is given, on either front (a test keeps the two equal).
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
# The settings of recipes/configs/qwen2.5-7b_qlora_gpu24gb.yaml (docs/TRAINING.md, "Peak GPU memory"):
# what a run on a CUDA card trains with when no --config is given (a test keeps the two equal); the
# precision (bf16, else fp16) and the method (the memory plan's) are chosen for the card.
GPU_TRAINING_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": DEFAULT_TARGET_MODULES,
    "gradient_checkpointing": True,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_length": 1024,
    "learning_rate": 2.0e-4,
    "lr_scheduler_type": "linear",
    "warmup_steps": 10,
    "num_train_epochs": 3,
    "logging_steps": 10,
    "seed": 42,
}


def choices_of(name: str) -> Callable[[], list[str]]:
    """Choices read from a registry when the parser is built (entries registered later count)."""
    sources: dict[str, Callable[[], list[str]]] = {
        "methods": lambda: [AUTO_METHOD, *sorted(METHODS)],
        "presets": lambda: sorted(PRESETS),
        "corpus_modes": lambda: list(CORPUS_MODES),
        "retrievers": lambda: sorted(_retrievers()),
        "engines": lambda: list(_engines()),
        "ray_backends": lambda: list(_ray_backends()),
    }
    return sources[name]


def _retrievers() -> Any:
    from selfguide_hf.corpus import RETRIEVERS

    return RETRIEVERS


def _ray_backends() -> Any:
    from selfguide_hf.ray_cluster import RAY_BACKENDS

    return RAY_BACKENDS


def _engines() -> Any:
    from selfguide_hf.engines import ENGINES

    return ENGINES


def _setting(default: Any, stage: str, help: str, *, choices: str | None = None, **extra: Any) -> Any:
    """A declared setting: default, the stage it changes, help; ``extra``: argparse ``aliases``."""
    assert stage in STAGES, stage
    meta = {"help": help, "stage": stage, **extra}
    if choices:
        meta["choices_from"] = choices
    return field(default=default, metadata=meta)


def _synthesis_setting(name: str, help: str, *, choices: str | None = None) -> Any:
    """A synthesis parameter with a flag of its own: its default is `SynthesisConfig`'s, not repeated."""
    default = SynthesisConfig.__dataclass_fields__[name].default
    return _setting(default, "synthesis", help, choices=choices, synthesis_key=name)


@dataclass
class SelfGuideArguments:
    """The self-guide part of a run's settings (training ones are TRL's `SFTConfig`, `ModelConfig`).

    LoRA rank / alpha / dropout / target modules, quantization and dtype are
    `ModelConfig` fields (``--lora_r``, ``--dtype``, ...); the training seed,
    the adapter's folder and Hub repository are `SFTConfig` fields (``--seed``,
    ``--output_dir``, ``--push_to_hub``, ``--hub_model_id``, ``--hub_private_repo``).
    Every flag takes dashes or underscores (``--num-inputs`` = ``--num_inputs``).
    """

    # --- what to improve
    task: str | None = _setting(
        None, "task", "Bundled task name (e.g. task199), a spec file (JSON/YAML) or an NI v2 task file."
    )
    model: str | None = _setting(
        None,
        "task",
        "Model to improve: 'default' (embedded SmolLM2-135M-Instruct), a Hub id or a local folder. "
        "Same as --model_name_or_path.",
    )
    # --- synthesis
    preset: str = _setting("default", "synthesis", "Synthesis preset.", choices="presets")
    num_inputs: int = _synthesis_setting("num_inputs", "Raw task inputs to synthesize.")
    synthesis_seed: int = _synthesis_setting("seed", "Seed of the synthesis (the training seed is --seed).")
    synthesis: dict[str, Any] | str | None = _setting(  # noqa: RUF009
        None,
        "synthesis",
        "Synthesis parameters (selfguide_hf/synthesis_config.py): a mapping in YAML, JSON on the command "
        "line; or one at a time with --synthesis-option KEY=VALUE.",
    )
    synthesis_cache_dir: str | None = _setting(
        None, "none", "Cache folder of synthetic datasets (the datasets cache when unset)."
    )
    corpus: str | None = _synthesis_setting(
        "corpus",
        "Unlabeled texts to take task inputs from (JSONL, CSV, Parquet, .txt, or a save_to_disk folder).",
    )
    corpus_field: str = _synthesis_setting("corpus_field", "The corpus's text column.")
    corpus_mode: str = _synthesis_setting(
        "corpus_mode",
        "inputs: the retrieved texts are the task inputs; rewrite: the model rewrites each (ReBase).",
        choices="corpus_modes",
    )
    corpus_retriever: str = _synthesis_setting(
        "corpus_retriever",
        "How corpus rows are found: bm25 (shared words) or embeddings (shared meaning).",
        choices="retrievers",
    )
    corpus_embedding_model: str = _synthesis_setting(
        "corpus_embedding_model", "The sentence-transformers model of --corpus-retriever embeddings."
    )
    min_pairs: int = _setting(
        DEFAULT_MIN_PAIRS,
        "none",
        "Stop before training when fewer synthetic pairs survive (or a label has fewer than 2); "
        "1 trains on whatever survived.",
    )
    # --- engine
    engine: str = _setting(
        "auto",
        "synthesis",
        "Generation engine for synthesis and evaluation: auto (vLLM when installed, else transformers), "
        "transformers, vllm, or ray (vLLM replicas on a Ray cluster through Ray Data LLM; --ray-replicas, "
        "--ray-address).",
        choices="engines",
    )
    vllm_kv_cache_gb: float | None = _setting(
        None,
        "none",
        "vLLM's KV cache in GiB (default: 2 on a CPU, vLLM's share of GPU memory on a GPU).",
        aliases=["--kv-cache-gb"],
    )
    vllm_tensor_parallel_size: int = _setting(
        1, "none", "GPUs one vLLM model is split over.", aliases=["--tensor-parallel-size"]
    )
    ray_address: str | None = _setting(
        None,
        "none",
        "--engine ray: the Ray cluster to run on (ray://host:10001, or auto for the one this machine "
        "belongs to); default: a local cluster on this machine.",
    )
    ray_backend: str = _setting(
        "replicas",
        "none",
        "--engine ray: replicas (vLLM engines as Ray actors that stay up for a stage; each call split "
        "among them) or data (each call a Ray Dataset through Ray Data LLM, which starts its replicas "
        "per call).",
        choices="ray_backends",
    )
    ray_replicas: int = _setting(
        1,
        "none",
        "--engine ray: vLLM engine replicas (data parallel), each --tensor-parallel-size devices wide "
        "(on a CPU: this machine's cores divided among them).",
    )
    # --- training
    method: str = _setting(
        AUTO_METHOD,
        "training",
        "Finetuning method: lora, qlora (4-bit NF4 base) or full; auto: lora on a CPU, on a GPU LoRA on "
        "16-bit weights when the memory plan says it fits with margin, else qlora.",
        choices="methods",
    )
    dataset_path: str | None = _setting(
        None,
        "training",
        "Train on an existing synthetic dataset instead of synthesizing: a save_to_disk folder or a "
        ".jsonl/.json/.parquet file with input and output columns.",
    )
    max_train_rows: int | None = _setting(None, "training", "Use at most this many synthetic rows.")
    compact_lm_head: bool = _setting(
        True, "none", "On CPU, run the LM head only on completion tokens (same loss; docs/TRAINING.md)."
    )
    torch_threads: int | None = _setting(
        None,
        "none",
        "CPU threads per process; unset: the usable cores divided by the local processes, or 1 when "
        "other jobs keep every core busy.",
        aliases=["--threads"],
    )
    # --- evaluation
    evaluate: bool = _setting(
        False, "none", "Evaluate the base model and the adapter (selfguide run always does)."
    )
    eval_split: str = _setting("test", "evaluation", "Eval split of a bundled task.", aliases=["--split"])
    eval_max_rows: int = _setting(
        DEFAULT_MAX_EVAL, "evaluation", "Rows to score (0 = all).", aliases=["--max-eval"]
    )
    eval_file: str | None = _setting(
        None, "evaluation", "JSONL/CSV eval file with input and output, for tasks that are not bundled."
    )
    in_context_pairs: int = _setting(
        8,
        "evaluation",
        "The third arm: the base model with this many synthetic pairs (the nearest to each row by BM25, fewer "
        "where the context is short) as its demonstrations; 0 leaves the arm out.",
    )
    draws: int = _setting(
        1,
        "evaluation",
        "Independent synthesis-and-training draws (seeds moved by 1, 2, ...), each scored on the same rows; "
        "the verdict's interval then covers the draws as well as the rows (their spread as a t interval: "
        "with 3 draws that spread far apart it is wide, 5 nearly halve it).",
    )
    eval_batch_size: int = _setting(
        8, "evaluation", "Sequences decoded together when evaluating.", aliases=["--batch-size"]
    )
    # --- folders and publishing
    run_dir: str | None = _setting(
        None,
        "none",
        "Folder of the report, evaluations and synthetic data (selfguide: --output-dir). Unset: "
        "--output_dir when that is given, else outputs/<task>; the adapter then goes in <run_dir>/adapter.",
    )
    overwrite_output_dir: bool = _setting(
        False, "none", "Replace a different run found in --output_dir instead of refusing to start."
    )
    push_dataset: bool = _setting(
        False, "publish", "Push the synthetic dataset and its card to --dataset_hub_id."
    )
    dataset_hub_id: str | None = _setting(
        None, "publish", "Hub dataset repository for --push_dataset (e.g. user/selfguide-task199)."
    )
    card_license: str | None = _setting(
        None,
        "publish",
        "License in the model card; the base model's (apache-2.0 for the embedded one) when unset.",
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
                    raise ConfigError(
                        f"--synthesis: expected a JSON object such as '{{\"rounds\": 4}}', got {text!r} ({exc.msg})"
                    ) from None
        if self.synthesis is not None and not isinstance(self.synthesis, dict):
            raise ConfigError(
                f"synthesis: expected a mapping of synthesis overrides, got {type(self.synthesis).__name__}"
            )

    @classmethod
    def declared(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def of_stage(cls, stage: str) -> list[str]:
        """The settings whose value changes ``stage``'s result."""
        return [name for name, f in cls.declared().items() if f.metadata["stage"] == stage]


# Synthesis parameters that have a flag of their own: a --synthesis mapping must not hold them.
SYNTHESIS_KEYS_WITH_FLAGS: dict[str, str] = {
    **{
        f.metadata["synthesis_key"]: f.name
        for f in dataclasses.fields(SelfGuideArguments)
        if "synthesis_key" in f.metadata
    },
    "preset": "preset",
    "task": "task",
    "model": "model",
    "cache_dir": "synthesis_cache_dir",
}
# `SFTConfig` / `ModelConfig` fields that change no trained weight (folders, logging, Hub, checkpoints,
# evaluation during training): every other field of theirs is in the adapter's identity.
WEIGHT_NEUTRAL_FIELDS = frozenset(
    """output_dir logging_strategy logging_steps logging_first_step log_on_each_node
    logging_nan_inf_filter include_num_input_tokens_seen log_level log_level_replica disable_tqdm
    report_to run_name project trackio_space_id trackio_bucket_id trackio_static_space_id eval_strategy
    eval_steps eval_delay per_device_eval_batch_size prediction_loss_only eval_on_start
    eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics
    batch_eval_metrics bf16_full_eval fp16_full_eval eval_packing save_only_model save_strategy
    save_steps save_on_each_node save_total_limit enable_jit_checkpoint push_to_hub hub_token
    hub_private_repo hub_model_id hub_strategy hub_always_push hub_revision load_best_model_at_end
    metric_for_best_model greater_is_better resume_from_checkpoint local_rank skip_memory_metrics
    do_train do_eval do_predict debug dataloader_num_workers dataloader_pin_memory
    dataloader_persistent_workers dataloader_prefetch_factor dataloader_multiprocessing_context
    ddp_timeout ddp_backend ddp_bucket_cap_mb torch_empty_cache_steps dataset_num_proc
    trust_remote_code model_name_or_path use_cache restore_callback_states_from_checkpoint
    ignore_data_skip""".split()  # noqa: SIM905
)
# How the two fronts differ: shorthands both accept, aliases only `selfguide` has (the recipe's
# --output-dir is TRL's --output_dir, the adapter's folder; selfguide's is the run folder).
FLAG_ALIASES = {"--epochs": "--num_train_epochs"}
CLI_ONLY_ALIASES = {"--output-dir": "--run_dir"}
DECLARATION_KEYS = ("stage", "choices_from", "synthesis_key")


def flag_name(name: str, front: str) -> str:
    """A setting as the front spells its flag: ``num_inputs`` -> --num-inputs (selfguide) or --num_inputs."""
    if front == "cli":
        inverse = {v.lstrip("-"): k for k, v in CLI_ONLY_ALIASES.items()}
        if name in inverse:
            return inverse[name]
        return "--" + name.replace("_", "-")
    return "--" + name


def refuse_flagged_key(key: str, front: str, where: str) -> None:
    if key in SYNTHESIS_KEYS_WITH_FLAGS:
        if key == "cache_dir" and front == "cli":
            raise ConfigError(f"{where}: give it with the HF_DATASETS_CACHE environment variable")
        flag = flag_name(SYNTHESIS_KEYS_WITH_FLAGS[key], front)
        raise ConfigError(f"{where}: give '{key}' as {flag}, not as a synthesis option")


def default_folders(sg_args: SelfGuideArguments, training_args: Any, task_name: str) -> None:
    """run_dir and the adapter's folder: outputs/<task> and <run_dir>/adapter unless given."""
    if training_args.output_dir in (None, "", "trainer_output"):
        run_dir = Path(sg_args.run_dir) if sg_args.run_dir else Path("outputs") / task_name
        sg_args.run_dir = os.fspath(run_dir)
        training_args.output_dir = os.fspath(run_dir / "adapter")
    elif not sg_args.run_dir:
        sg_args.run_dir = os.fspath(training_args.output_dir)


CORPUS_KEYS = ("corpus", "corpus_field", "corpus_mode", "corpus_retriever", "corpus_embedding_model")


def synthesis_overrides(sg_args: SelfGuideArguments, front: str = "recipe") -> dict[str, Any]:
    """The synthesis parameters of the run: the mapping, the flags that have their own field."""
    overrides = dict(sg_args.synthesis or {})
    for key in overrides:
        refuse_flagged_key(key, front, "synthesis")
    for f in dataclasses.fields(SelfGuideArguments):
        key = f.metadata.get("synthesis_key")
        if key is not None:
            overrides[key] = getattr(sg_args, f.name)
    return overrides


def synthesis_config(sg_args: SelfGuideArguments, front: str = "recipe") -> SynthesisConfig:
    """The run's `SynthesisConfig` (preset plus overrides), every parameter checked."""
    try:
        return SynthesisConfig.preset(sg_args.preset, **synthesis_overrides(sg_args, front))
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"synthesis: {exc}") from None


def plain_value(value: Any) -> Any:
    """A setting's value as JSON: enums by value, tuples as lists, other objects by their fields."""
    value = getattr(value, "value", value)  # enums
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_value(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def weight_settings(args: Any) -> dict[str, Any]:
    """Every field of TRL's `SFTConfig` or `ModelConfig` that is not declared weight-neutral."""
    return {
        f.name: plain_value(getattr(args, f.name, None))
        for f in dataclasses.fields(args)
        if f.name not in WEIGHT_NEUTRAL_FIELDS
    }
