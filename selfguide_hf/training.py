"""Finetuning a model on the data it wrote for itself (TRL `SFTTrainer` + PEFT).

`recipes/sft.py` is a thin wire over the functions here, in this order:

    parse_recipe_args -> prepare_run -> build_synthetic_dataset -> train_adapter
        -> evaluate_run (optional) -> write_run_outputs -> hub pushes (optional)

Why the pieces look the way they do:

* SFT rows are re-rendered from the synthetic ``input``/``output`` columns with
  `prompts.render_task_prompt` / `prompts.render_completion` and the tokenizer
  being trained, so training sees exactly the bytes evaluation will prompt with
  (even for a dataset synthesized by another model).
* Methods (``lora``, ``qlora``, ``full``) live in a registry, so a new method is
  one decorated loader, not another branch in the recipe.
* Every run writes a manifest (task, base-model weights fingerprint, method)
  into its output directory; a second run with other settings is refused
  instead of silently mixing checkpoints, and an adapter is never loaded onto
  a base model it was not trained on.
* The Hub token is taken out of the training arguments before the trainer
  sees them: `Trainer` pickles its arguments into every checkpoint.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.models import (
    EMBEDDED_MODEL_ID,
    MARKER,
    ModelResolutionError,
    is_embedded,
    resolve_model,
    weights_fingerprint,
)
from selfguide_hf.prompts import render_completion, render_task_prompt
from selfguide_hf.task import TaskSpec, TaskSpecError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "selfguide_run.json"
FUNNEL_NAME = "selfguide_funnel.json"
EVAL_NAME = "selfguide_eval.json"
SYNTHETIC_DIR = "synthetic_dataset"
DEFAULT_TARGET_MODULES = "all-linear"
# Keys of the manifest that identify a run: another value means another run.
RUN_IDENTITY_KEYS: tuple[str, ...] = ("task", "task_fingerprint", "weights_fingerprint", "method")
# What a trainer leaves in an output directory; a folder holding any of these is a run.
RUN_ARTIFACTS: tuple[str, ...] = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "model.safetensors",
    "trainer_state.json",
    "training_args.bin",
    MANIFEST_NAME,
)
SYNTHETIC_COLUMNS: tuple[str, ...] = ("input", "output")
# Builder parameters that have their own recipe flag.
SYNTHESIS_KEYS_WITH_FLAGS: dict[str, str] = {
    "task": "--task",
    "model": "--model",
    "num_inputs": "--num_inputs",
    "seed": "--synthesis_seed",
    "cache_dir": "--synthesis_cache_dir",
}


class TrainingConfigError(ValueError):
    """Arguments or a config file that cannot train; the message names the key and the fix."""


class RunMismatchError(TrainingConfigError):
    """The output directory holds another run (other task, base model or method)."""


class AdapterMismatchError(TrainingConfigError):
    """An adapter was trained on another base model than the one it is being loaded onto."""


# ------------------------------------------------------------------ arguments
@dataclass
class SelfGuideArguments:
    """The self-guide part of the recipe's arguments (training ones are TRL's `SFTConfig`, `ModelConfig`).

    LoRA rank / alpha / dropout / target modules, quantization and dtype are
    `ModelConfig` fields (``--lora_r``, ``--lora_alpha``, ``--lora_dropout``,
    ``--lora_target_modules``, ``--dtype``); the seed, output directory and Hub
    repository are `SFTConfig` fields (``--seed``, ``--output_dir``,
    ``--push_to_hub``, ``--hub_model_id``, ``--hub_private_repo``).
    """

    task: str | None = field(
        default=None,
        metadata={"help": "Bundled task name (e.g. task199), a spec file (JSON/YAML) or an NI v2 task file."},
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model to improve: 'default' (embedded SmolLM2-135M-Instruct), a Hub id or a local folder. "
            "Same as --model_name_or_path."
        },
    )
    method: str = field(
        default="lora",
        metadata={
            "help": "Finetuning method: lora, qlora (4-bit NF4 base) or full.",
            "choices": ["lora", "qlora", "full"],
        },
    )
    num_inputs: int | None = field(
        default=None,
        metadata={
            "help": "Task inputs to synthesize (as in load_dataset('selfguide', num_inputs=...)); builder default when unset."
        },
    )
    synthesis_seed: int | None = field(
        default=None, metadata={"help": "Seed of the synthesis; the training --seed when unset."}
    )
    synthesis: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Synthesis overrides passed to the builder, a mapping in YAML or JSON on the command line."
        },
    )
    synthesis_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache folder of synthetic datasets (the builder's default when unset)."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Train on an existing synthetic dataset instead of synthesizing: a save_to_disk folder or a "
            ".jsonl/.json/.parquet file with input and output columns."
        },
    )
    max_train_rows: int | None = field(
        default=None, metadata={"help": "Use at most this many synthetic rows."}
    )
    evaluate: bool = field(
        default=False, metadata={"help": "Evaluate the base model and the adapter on the task's eval split."}
    )
    eval_split: str = field(default="test", metadata={"help": "Eval split of a bundled task."})
    eval_max_rows: int | None = field(
        default=None,
        metadata={"help": "Evaluate on at most this many rows (evaluation's default when unset)."},
    )
    eval_file: str | None = field(
        default=None,
        metadata={"help": "JSONL/CSV eval file with input and output, for tasks that are not bundled."},
    )
    push_dataset: bool = field(
        default=False, metadata={"help": "Push the synthetic dataset and its card to --dataset_hub_id."}
    )
    dataset_hub_id: str | None = field(
        default=None,
        metadata={"help": "Hub dataset repository for --push_dataset (e.g. user/selfguide-task199)."},
    )
    card_license: str | None = field(
        default=None,
        metadata={
            "help": "License in the model card; the base model's (apache-2.0 for the embedded one) when unset."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a different run found in --output_dir instead of refusing to start."},
    )
    compact_lm_head: bool = field(
        default=True,
        metadata={
            "help": "On CPU, run the LM head only on completion tokens (same loss; see docs/TRAINING.md)."
        },
    )
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads per process; unset: the usable cores divided by the local processes, or 1 "
            "when other jobs keep every core busy (accelerate launch otherwise pins one thread)."
        },
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
        for name in ("num_inputs", "max_train_rows", "eval_max_rows", "torch_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainingConfigError(f"{name}: expected a whole number >= 1, got {value!r}")
        if self.push_dataset and not self.dataset_hub_id:
            raise TrainingConfigError("--push_dataset needs --dataset_hub_id <user>/<name>")


# ------------------------------------------------------------- method registry
@dataclass(frozen=True)
class LoadedModel:
    """What a method hands to `SFTTrainer`: the model, the tokenizer and a PEFT config (None: full)."""

    model: Any
    tokenizer: Any
    peft_config: Any | None


MethodLoader = Callable[[str, Any, Any], LoadedModel]


@dataclass(frozen=True)
class TrainingMethod:
    name: str
    description: str
    uses_peft: bool
    quantized: bool
    loader: MethodLoader


METHODS: dict[str, TrainingMethod] = {}


def register_method(
    name: str, description: str, *, uses_peft: bool, quantized: bool = False
) -> Callable[[MethodLoader], MethodLoader]:
    """Register ``loader(model_path, model_args, training_args) -> LoadedModel`` under ``name``."""

    def decorate(loader: MethodLoader) -> MethodLoader:
        if name in METHODS:
            raise ValueError(f"training method {name!r} is already registered")
        METHODS[name] = TrainingMethod(name, description, uses_peft, quantized, loader)
        return loader

    return decorate


def get_method(name: str) -> TrainingMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise TrainingConfigError(f"method: unknown method {name!r}; known: {sorted(METHODS)}") from None


def lora_config(model_args: Any) -> Any:
    """LoRA on every linear layer unless told otherwise (r 16, alpha 32, dropout from `ModelConfig`)."""
    from peft import LoraConfig

    targets = model_args.lora_target_modules or DEFAULT_TARGET_MODULES
    if isinstance(targets, (list, tuple)) and len(targets) == 1:
        targets = targets[0]
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        bias="none",
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        modules_to_save=model_args.lora_modules_to_save,
    )


def _torch_dtype(name: str | None, *, default: str = "float32") -> Any:
    import torch

    name = name or default
    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise TrainingConfigError(
            f"dtype: expected auto, float32, bfloat16 or float16, got {name!r}"
        ) from None


def quantization_config(model_args: Any) -> Any:
    """4-bit NF4 with double quantization (QLoRA, Dettmers et al. 2023); compute in the model dtype."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = _torch_dtype(model_args.dtype)
    if compute == "auto":
        compute = (
            torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.bnb_4bit_quant_type or "nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage,
    )


def _load_tokenizer(model_path: str, model_args: Any) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(model_path: str, model_args: Any, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            model_path,
            revision=model_args.model_revision,
            attn_implementation=model_args.attn_implementation,
            **kwargs,
        )
    except OSError as exc:
        raise TrainingConfigError(
            f"cannot load model {model_path!r}: {exc}. Offline, pass a local folder or --model default."
        ) from exc


def _device_map(training_args: Any) -> Any:
    """Each process keeps its whole quantized copy on its own device (`device_map="auto"` breaks DDP)."""
    import torch

    if training_args.use_cpu or not torch.cuda.is_available():
        return {"": "cpu"}
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


@register_method("lora", "LoRA adapters on a full-precision base model", uses_peft=True)
def _load_lora(model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    model = _from_pretrained(model_path, model_args, dtype=_torch_dtype(model_args.dtype))
    return LoadedModel(model, _load_tokenizer(model_path, model_args), lora_config(model_args))


@register_method(
    "qlora", "LoRA adapters on a 4-bit NF4 (double-quantized) base model", uses_peft=True, quantized=True
)
def _load_qlora(model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise TrainingConfigError("--method qlora needs bitsandbytes: pip install bitsandbytes") from exc
    from peft import prepare_model_for_kbit_training

    model = _from_pretrained(
        model_path,
        model_args,
        quantization_config=quantization_config(model_args),
        dtype=_torch_dtype(model_args.dtype),
        device_map=_device_map(training_args),
    )
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=bool(training_args.gradient_checkpointing),
        gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs,
    )
    return LoadedModel(model, _load_tokenizer(model_path, model_args), lora_config(model_args))


@register_method("full", "every weight trained (the paper's setting)", uses_peft=False)
def _load_full(model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    model = _from_pretrained(model_path, model_args, dtype=_torch_dtype(model_args.dtype))
    return LoadedModel(model, _load_tokenizer(model_path, model_args), None)


def load_for_training(method: str, model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    """Load `model_path` the way `method` trains it."""
    return get_method(method).loader(model_path, model_args, training_args)


# ----------------------------------------------------------------- SFT rows
def to_sft_dataset(dataset: Any, spec: TaskSpec, tokenizer: Any, max_rows: int | None = None) -> Any:
    """Prompt/completion rows for `SFTTrainer` (completion-only loss) from synthetic ``input``/``output`` rows.

    The prompt is re-rendered with the tokenizer being trained, so it is the
    exact string evaluation prompts with; rows with an empty answer are dropped.
    """
    from datasets import Dataset

    missing = [c for c in SYNTHETIC_COLUMNS if c not in dataset.column_names]
    if missing:
        raise TrainingConfigError(
            f"synthetic dataset lacks column(s) {missing}; it has {dataset.column_names} "
            "(expected the builder's input/output columns)"
        )
    rows: list[dict[str, str]] = []
    for i, row in enumerate(dataset):
        text, output = row["input"], row["output"]
        if isinstance(output, (list, tuple)):  # an eval-style row with several references: train on the first
            output = output[0] if output else ""
        if not isinstance(text, str) or not isinstance(output, str):
            raise TrainingConfigError(f"synthetic row {i}: input and output must be strings")
        if not text.strip() or not output.strip():
            continue
        rows.append(
            {
                "prompt": render_task_prompt(spec, text, tokenizer),
                "completion": render_completion(spec, text, output, tokenizer),
            }
        )
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        raise TrainingConfigError(
            "the synthetic dataset has no usable rows (every answer was empty or it has no rows); "
            "synthesize more inputs (--num_inputs) or relax the synthesis filters (--synthesis)"
        )
    return Dataset.from_list(rows)


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
    return training_args


# ------------------------------------------------------------------ the run
@dataclass
class SelfGuideRun:
    """Everything resolved before training: the spec, the model folder, the manifest, the Hub token."""

    args: SelfGuideArguments
    training_args: Any
    model_args: Any
    spec: TaskSpec
    model_path: str
    base_model_id: str
    manifest: dict[str, Any]
    command: str
    hub_token: str | None = field(default=None, repr=False)
    push_adapter: bool = False
    hub_model_id: str | None = None
    hub_private: bool | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.training_args.output_dir)

    @property
    def is_main_process(self) -> bool:
        return bool(self.training_args.distributed_state.is_main_process)


def base_model_id(model_path: str, given: str | None) -> str:
    """The name others can load the base model by: the Hub id of the embedded model, else what was given."""
    marker = Path(model_path) / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("model_id") or EMBEDDED_MODEL_ID
        except (OSError, json.JSONDecodeError):
            return EMBEDDED_MODEL_ID
    if given and not is_embedded(given):
        return given
    return model_path


def run_manifest(
    sg_args: SelfGuideArguments, spec: TaskSpec, model_path: str, model_args: Any, training_args: Any
) -> dict[str, Any]:
    """What identifies a run (RUN_IDENTITY_KEYS) plus what reproduces it."""
    from selfguide_hf import __version__

    method = get_method(sg_args.method)
    manifest: dict[str, Any] = {
        "task": spec.name,
        "task_fingerprint": spec.fingerprint(),
        "base_model": base_model_id(model_path, sg_args.model),
        "weights_fingerprint": weights_fingerprint(model_path),
        "method": method.name,
        "num_inputs": sg_args.num_inputs,
        "synthesis_seed": sg_args.synthesis_seed
        if sg_args.synthesis_seed is not None
        else training_args.seed,
        "synthesis": sg_args.synthesis,
        "dataset_path": sg_args.dataset_path,
        "selfguide_hf_version": __version__,
    }
    if method.uses_peft:
        targets = model_args.lora_target_modules or DEFAULT_TARGET_MODULES
        manifest["lora"] = {
            "r": model_args.lora_r,
            "alpha": model_args.lora_alpha,
            "dropout": model_args.lora_dropout,
            "target_modules": targets,
        }
    if method.quantized:
        manifest["quantization"] = {
            "bits": 4,
            "quant_type": model_args.bnb_4bit_quant_type,
            "double_quant": True,
        }
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunMismatchError(
            f"{path}: unreadable run manifest ({exc}); remove it or pass --overwrite_output_dir"
        ) from exc
    return data if isinstance(data, dict) else None


def write_manifest(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def manifest_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
        for key in RUN_IDENTITY_KEYS
        if saved.get(key) != wanted.get(key)
    ]


def _holds_run(folder: Path) -> bool:
    return folder.is_dir() and (
        any((folder / name).exists() for name in RUN_ARTIFACTS) or any(folder.glob("checkpoint-*"))
    )


def check_output_dir(output_dir: str | os.PathLike[str], manifest: dict[str, Any], overwrite: bool) -> bool:
    """Refuse an output directory that holds another run; True when a run there must be cleared first.

    Read-only, so every process of a launch can call it and fail the same way.
    """
    folder = Path(output_dir)
    if not _holds_run(folder):
        return False
    if overwrite:
        return True
    saved = read_manifest(folder)
    if saved is None:
        raise RunMismatchError(
            f"{folder}: holds training output that is not a self-guide run (no {MANIFEST_NAME}); "
            "choose another --output_dir or pass --overwrite_output_dir true to replace it"
        )
    diffs = manifest_differences(saved, manifest)
    if diffs:
        raise RunMismatchError(
            f"{folder}: holds a different run ({'; '.join(diffs)}); choose another --output_dir, "
            "or pass --overwrite_output_dir true to replace it"
        )
    return False


def clear_run(folder: Path) -> None:
    """Remove what a previous run left (checkpoints, weights, manifest); other files stay."""
    for child in folder.glob("checkpoint-*"):
        if child.is_dir():
            shutil.rmtree(child)
    for name in (
        *RUN_ARTIFACTS,
        FUNNEL_NAME,
        EVAL_NAME,
        "README.md",
        "adapter_model.bin",
        "pytorch_model.bin",
    ):
        target = folder / name
        if target.is_file():
            target.unlink()
    synthetic = folder / SYNTHETIC_DIR
    if synthetic.is_dir():
        shutil.rmtree(synthetic)


def check_adapter_base(
    adapter_dir: str | os.PathLike[str], model_path: str, given: str | None = None
) -> None:
    """Raise `AdapterMismatchError` when the adapter in `adapter_dir` was trained on another base model.

    Compares the weights fingerprint recorded in the run manifest when there is
    one (checkpoints look one folder up), else the ``base_model_name_or_path``
    of ``adapter_config.json``.
    """
    folder = Path(adapter_dir)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return  # a full-finetuning checkpoint: no separate base model
    try:
        adapter_base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterMismatchError(f"{config_file}: unreadable adapter config ({exc})") from exc
    manifest = read_manifest(folder) or read_manifest(folder.parent)
    if manifest and manifest.get("weights_fingerprint"):
        here = weights_fingerprint(model_path)
        if manifest["weights_fingerprint"] != here:
            raise AdapterMismatchError(
                f"{folder}: adapter trained on base model {manifest.get('base_model')!r} "
                f"(weights {manifest['weights_fingerprint']}), but the base model now is {given or model_path!r} "
                f"(weights {here}); pass the same --model, or train a new adapter in another --output_dir"
            )
        return
    names = {model_path, base_model_id(model_path, given)}
    if given:
        names.add(given)
    if (
        adapter_base
        and adapter_base not in names
        and Path(adapter_base).resolve() != Path(model_path).resolve()
    ):
        raise AdapterMismatchError(
            f"{folder}: adapter trained on base model {adapter_base!r}, but the base model now is "
            f"{given or model_path!r}; pass --model {adapter_base}"
        )


def checkpoint_step(folder: str | os.PathLike[str]) -> int | None:
    """The global step a checkpoint holds, or None when it is incomplete (killed while saving).

    `Trainer` writes ``trainer_state.json`` last, so a readable one means the
    weights, optimizer and RNG states before it are complete.
    """
    state = Path(folder) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_complete_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete ``checkpoint-N`` folder (transformers' own pick ignores half-written ones)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.glob("checkpoint-*"):
        suffix = child.name.split("-", 1)[1]
        if child.is_dir() and suffix.isdigit() and checkpoint_step(child) is not None:
            found.append((int(suffix), child))
    return str(max(found)[1]) if found else None


def _resume_checkpoint(training_args: Any) -> str | bool | None:
    """--resume_from_checkpoint: a folder, or true/last for the newest checkpoint in --output_dir."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", False) or str(value).lower() in ("false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "latest", "yes", "1") or value is True:
        last = last_complete_checkpoint(training_args.output_dir)
        if last is None:
            raise TrainingConfigError(
                f"--resume_from_checkpoint {value}: no checkpoint-* folder in {training_args.output_dir}; "
                "checkpoints are written with --save_strategy steps --save_steps N"
            )
        return last
    if not Path(str(value)).is_dir():
        raise TrainingConfigError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if checkpoint_step(value) is None:
        raise TrainingConfigError(
            f"--resume_from_checkpoint {value}: incomplete checkpoint (no readable trainer_state.json); "
            "pass an earlier one or 'last'"
        )
    return str(value)


def sanitized_command(argv: Sequence[str]) -> str:
    """The command line to reproduce a run, without any token value."""
    parts: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        key = arg.split("=", 1)[0].lower()
        if key.startswith("--") and "token" in key:
            skip = "=" not in arg
            continue
        parts.append(arg)
    return shlex.join(parts)


def reproduce_command(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    return "accelerate launch recipes/sft.py " + sanitized_command(argv)


def auto_cpu_threads(local_processes: int) -> int:
    """Threads per process: the usable cores shared among the local processes, or 1 on a busy machine.

    When other jobs already keep every core busy (1-minute load average >= cores),
    each parallel op waits at its barrier for a thread the scheduler parked, and a
    single thread is several times faster (docs/TRAINING.md, measured).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, local_processes))
    try:
        busy = os.getloadavg()[0] >= cores
    except OSError:
        busy = False
    return 1 if busy else threads


def set_cpu_threads(sg_args: SelfGuideArguments, training_args: Any) -> int | None:
    """Set torch's CPU threads (accelerate launch sets OMP_NUM_THREADS=1 when it has no config)."""
    import torch

    if not (training_args.use_cpu or not torch.cuda.is_available()):
        return None
    threads = sg_args.torch_threads
    if threads is None:
        local = (
            int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or training_args.distributed_state.num_processes
        )
        threads = auto_cpu_threads(local)
    torch.set_num_threads(threads)
    logger.info("torch CPU threads per process: %d", threads)
    return threads


def prepare_run(
    sg_args: SelfGuideArguments, training_args: Any, model_args: Any, argv: Sequence[str] | None = None
) -> SelfGuideRun:
    """Resolve the task and model, check the output directory, and keep the Hub token out of the arguments."""
    if not sg_args.task:
        raise TrainingConfigError(
            "no task given: pass --task with a bundled task name (e.g. task199), a spec file or an NI task file"
        )
    try:
        spec = TaskSpec.load(sg_args.task)
    except TaskSpecError as exc:
        raise TrainingConfigError(f"--task {sg_args.task}: {exc}") from exc
    try:
        model_path = resolve_model(sg_args.model)
    except ModelResolutionError as exc:
        raise TrainingConfigError(f"--model {sg_args.model}: {exc}") from exc
    manifest = run_manifest(sg_args, spec, model_path, model_args, training_args)
    # Push settings are handled after training with our own card; the trainer must not push,
    # and must not pickle the token into checkpoints (training_args.bin).
    hub_token = training_args.hub_token
    push_adapter = bool(training_args.push_to_hub)
    hub_model_id = training_args.hub_model_id
    if push_adapter and not hub_model_id:
        raise TrainingConfigError("--push_to_hub needs --hub_model_id <user>/<name>")
    training_args.hub_token = None
    training_args.push_to_hub = False
    resume = _resume_checkpoint(training_args)
    state = training_args.distributed_state
    must_clear = False
    if resume is None:
        must_clear = check_output_dir(training_args.output_dir, manifest, sg_args.overwrite_output_dir)
    else:
        saved = read_manifest(training_args.output_dir)
        if saved is not None:
            diffs = manifest_differences(saved, manifest)
            if diffs:
                raise RunMismatchError(
                    f"{training_args.output_dir}: cannot resume a different run ({'; '.join(diffs)})"
                )
        check_adapter_base(resume, model_path, sg_args.model)
        training_args.resume_from_checkpoint = resume
    state.wait_for_everyone()  # everyone has read the folder before the main process changes it
    if state.is_main_process:
        if must_clear:
            clear_run(Path(training_args.output_dir))
        write_manifest(training_args.output_dir, manifest)
    state.wait_for_everyone()
    set_cpu_threads(sg_args, training_args)
    return SelfGuideRun(
        args=sg_args,
        training_args=training_args,
        model_args=model_args,
        spec=spec,
        model_path=model_path,
        base_model_id=manifest["base_model"],
        manifest=manifest,
        command=reproduce_command(argv),
        hub_token=hub_token,
        push_adapter=push_adapter,
        hub_model_id=hub_model_id,
        hub_private=training_args.hub_private_repo,
    )


# ---------------------------------------------------------------- synthesis
@dataclass
class SyntheticData:
    dataset: Any
    funnel: dict[str, Any] | None
    source: str


def load_dataset_file(path: str | os.PathLike[str]) -> Any:
    """A synthetic dataset saved with `save_to_disk`, or a JSON lines / JSON / parquet file."""
    from datasets import Dataset, load_from_disk

    path = Path(path)
    if path.is_dir():
        return load_from_disk(str(path))
    if not path.is_file():
        raise TrainingConfigError(f"--dataset_path {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(str(path))
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    raise TrainingConfigError(f"--dataset_path {path}: expected a folder, .jsonl, .json or .parquet")


def build_synthetic_dataset(run: SelfGuideRun) -> SyntheticData:
    """The synthetic set through the builder (a cache hit when it exists), on every process.

    Every process calls the builder: its generation is split across the
    processes of the launch, so the synthesis is done once, not once each.
    """
    args = run.args
    if args.dataset_path:
        dataset = load_dataset_file(args.dataset_path)
        funnel = _funnel_of(dataset)
        return SyntheticData(dataset, funnel, f"file:{args.dataset_path}")
    from selfguide_hf.builder import build_selfguide_dataset

    kwargs: dict[str, Any] = dict(args.synthesis or {})
    if args.num_inputs is not None:
        kwargs["num_inputs"] = args.num_inputs
    kwargs["seed"] = run.manifest["synthesis_seed"]
    if args.synthesis_cache_dir:
        kwargs["cache_dir"] = args.synthesis_cache_dir
    started = time.perf_counter()
    dataset = build_selfguide_dataset(args.task, model=args.model, **kwargs)
    logger.info("synthetic dataset: %d rows in %.1f s", len(dataset), time.perf_counter() - started)
    return SyntheticData(dataset, _funnel_of(dataset), "builder")


def _funnel_of(dataset: Any) -> dict[str, Any] | None:
    try:
        from selfguide_hf.builder import get_funnel
    except ImportError:
        return None
    try:
        return get_funnel(dataset)
    except Exception as exc:  # a plain file without builder metadata
        logger.debug("no funnel for this dataset: %s", exc)
        return None


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    adapter_dir: Path
    metrics: dict[str, Any]
    train_rows: int
    train_tokens: int
    seconds: float
    evaluation: dict[str, Any] | None = None


def enable_compact_lm_head() -> bool:
    """Score only the completion positions in TRL's fused LM head on CPU too.

    TRL computes the loss without materializing logits, but off CUDA/XPU it
    still projects *every* position through the LM head (a recompilation
    concern for Neuron) and masks afterwards. With completion-only loss on
    task prompts of ~300 tokens and answers of a few, that projection is a
    third of a CPU training step for SmolLM2-135M (49k vocabulary); compact
    scoring gives the same loss and gradients (tests/test_training.py).
    Patches one private TRL function; when TRL changes it, this is a no-op.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not callable(original):
        logger.info("TRL has no _use_triton hook; the LM head scores every position")
        return False
    if getattr(original, "_selfguide_compact", False):
        return True

    def compact_on_cpu(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu._selfguide_compact = True  # type: ignore[attr-defined]
    compact_on_cpu._selfguide_original = original  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu
    return True


def disable_compact_lm_head() -> None:
    """Undo `enable_compact_lm_head` (for benchmarks and tests)."""
    from trl.trainer import utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    original = getattr(current, "_selfguide_original", None)
    if original is not None:
        trl_utils._use_triton = original


def make_trainer(run: SelfGuideRun, train_dataset: Any, loaded: LoadedModel | None = None) -> Any:
    """The `SFTTrainer` the recipe trains with (exposed so benchmarks time the same object)."""
    from trl import SFTTrainer

    if run.args.compact_lm_head:
        enable_compact_lm_head()
    if loaded is None:
        loaded = load_for_training(run.args.method, run.model_path, run.model_args, run.training_args)
    return SFTTrainer(
        model=loaded.model,
        args=run.training_args,
        train_dataset=train_dataset,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
    )


def train_adapter(run: SelfGuideRun, data: SyntheticData) -> TrainResult:
    """Train on the synthetic rows and save the adapter (or full model) with the tokenizer."""
    loaded = load_for_training(run.args.method, run.model_path, run.model_args, run.training_args)
    sft = to_sft_dataset(data.dataset, run.spec, loaded.tokenizer, run.args.max_train_rows)
    trainer = make_trainer(run, sft, loaded)
    resume = run.training_args.resume_from_checkpoint
    if resume:
        logger.info("resuming from %s (step %s)", resume, checkpoint_step(resume))
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    trainer.save_model(run.training_args.output_dir)
    if run.is_main_process:
        loaded.tokenizer.save_pretrained(run.training_args.output_dir)
    tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]))
    return TrainResult(
        adapter_dir=run.output_dir,
        metrics=dict(output.metrics),
        train_rows=len(sft),
        train_tokens=tokens,
        seconds=seconds,
    )


# ---------------------------------------------------------------- evaluation
def evaluation_available() -> bool:
    try:
        from selfguide_hf.evaluation import evaluate_model  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_run(run: SelfGuideRun, result: TrainResult) -> dict[str, Any] | None:
    """Score the base model and the trained model on the task's eval split (main process; others wait).

    Greedy decoding with the training prompt (evaluation.py). The adapter is
    applied to the full-precision base model, also for QLoRA: that is how it
    is usually served.
    """
    if not evaluation_available():
        logger.warning(
            "evaluation is unavailable (selfguide_hf.evaluation not importable); skipping --evaluate"
        )
        return None
    state = run.training_args.distributed_state
    evaluation: dict[str, Any] | None = None
    if state.is_main_process:
        from selfguide_hf import evaluation as ev
        from selfguide_hf.models import load_causal_lm

        max_eval = run.args.eval_max_rows or ev.DEFAULT_MAX_EVAL
        rows = ev.load_eval_rows(run.spec, run.args.eval_file, split=run.args.eval_split, max_eval=max_eval)
        model, tokenizer = load_causal_lm(run.model_path)
        before = ev.evaluate_model(model, tokenizer, run.spec, rows, show_progress=False)
        if get_method(run.args.method).uses_peft:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
        else:
            model, tokenizer = load_causal_lm(str(result.adapter_dir))
        after = ev.evaluate_model(model, tokenizer, run.spec, rows, show_progress=False)
        evaluation = {
            "split": run.args.eval_file or run.args.eval_split,
            "before": before.summary(),
            "after": after.summary(),
        }
        logger.info("%s: %s %.2f -> %.2f", run.spec.name, run.spec.metric, before.score, after.score)
    state.wait_for_everyone()
    result.evaluation = evaluation
    return evaluation


# ------------------------------------------------------------------ outputs
def write_run_outputs(run: SelfGuideRun, data: SyntheticData, result: TrainResult) -> Path:
    """Funnel, evaluation and the model card beside the adapter (main process only)."""
    from selfguide_hf.cards import model_card

    out = run.output_dir
    if not run.is_main_process:
        return out / "README.md"
    if data.funnel is not None:
        (out / FUNNEL_NAME).write_text(
            json.dumps(data.funnel, indent=2, default=str) + "\n", encoding="utf-8"
        )
    if result.evaluation is not None:
        (out / EVAL_NAME).write_text(
            json.dumps(result.evaluation, indent=2, default=str) + "\n", encoding="utf-8"
        )
    card = model_card(card_info(run, data, result))
    path = out / "README.md"
    path.write_text(card, encoding="utf-8")
    # The rows trained on, so a run can be retrained (--dataset_path) or audited without the builder.
    data.dataset.save_to_disk(str(out / SYNTHETIC_DIR))
    return path


def card_info(run: SelfGuideRun, data: SyntheticData, result: TrainResult | None) -> Any:
    from selfguide_hf.cards import CardInfo

    targs = run.training_args
    training = {
        "method": run.args.method,
        "epochs": targs.num_train_epochs,
        "max_steps": targs.max_steps if targs.max_steps and targs.max_steps > 0 else None,
        "learning_rate": targs.learning_rate,
        "lr_scheduler": str(getattr(targs.lr_scheduler_type, "value", targs.lr_scheduler_type)),
        "per_device_batch_size": targs.per_device_train_batch_size,
        "gradient_accumulation_steps": targs.gradient_accumulation_steps,
        "max_length": targs.max_length,
        "seed": targs.seed,
    }
    if result is not None:
        training.update({"train_rows": result.train_rows, "train_tokens": result.train_tokens})
        loss = result.metrics.get("train_loss")
        if loss is not None:
            training["train_loss"] = round(float(loss), 4)
    return CardInfo(
        spec=run.spec,
        base_model=run.base_model_id,
        method=run.args.method,
        manifest=run.manifest,
        training=training,
        synthesis=_synthesis_config(run, data),
        funnel=data.funnel,
        evaluation=result.evaluation if result is not None else None,
        command=run.command,
        license=run.args.card_license or default_license(run.model_path, run.args.model),
        dataset_hub_id=run.args.dataset_hub_id if run.args.push_dataset else None,
        num_rows=len(data.dataset),
    )


def _synthesis_config(run: SelfGuideRun, data: SyntheticData) -> dict[str, Any]:
    config: dict[str, Any] = {
        "generator_model": run.base_model_id,
        "num_inputs": run.args.num_inputs,
        "seed": run.manifest["synthesis_seed"],
        "source": data.source,
    }
    if run.args.synthesis:
        config["overrides"] = run.args.synthesis
    recorded = builder_description(data.dataset)
    if recorded:  # what the builder actually used, all parameters included
        config["preset"] = recorded.get("preset")
        config["model_fingerprint"] = recorded.get("model_fingerprint")
        config["parameters"] = recorded.get("synthesis")
    return config


def builder_description(dataset: Any) -> dict[str, Any] | None:
    """The synthesis record the selfguide builder stores in the dataset info, if it made this dataset."""
    try:
        data = json.loads(dataset.info.description)["selfguide"]
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    return data if isinstance(data, dict) else None


def default_license(model_path: str, given: str | None) -> str:
    """The base model's license when it is known locally; apache-2.0 for the embedded SmolLM2."""
    if is_embedded(given) or (Path(model_path) / MARKER).is_file():
        return "apache-2.0"
    readme = Path(model_path) / "README.md"
    if readme.is_file():
        try:
            from huggingface_hub import ModelCard

            found = ModelCard.load(readme).data.to_dict().get("license")
            if isinstance(found, str) and found:
                return found
        except Exception as exc:  # a README without a metadata header
            logger.debug("no license in %s: %s", readme, exc)
    return "other"


# ---------------------------------------------------------------------- Hub
def push_run_adapter(run: SelfGuideRun, data: SyntheticData, result: TrainResult) -> str | None:
    """Push the adapter and its model card to --hub_model_id (main process; the token stays in memory)."""
    if not run.push_adapter or not run.is_main_process:
        return None
    from selfguide_hf.cards import model_card
    from selfguide_hf.hub import push_adapter

    info = card_info(run, data, result)
    info.repo_id = run.hub_model_id
    return push_adapter(
        run.output_dir,
        run.hub_model_id,
        model_card(info),
        token=run.hub_token,
        private=run.hub_private,
        base_model_id=run.base_model_id,
        local_base_paths=[run.model_path],
    )


def push_run_dataset(run: SelfGuideRun, data: SyntheticData) -> str | None:
    """Push the synthetic rows and the dataset card to --dataset_hub_id (main process)."""
    if not run.args.push_dataset or not run.is_main_process:
        return None
    from selfguide_hf.cards import dataset_card
    from selfguide_hf.hub import push_dataset

    info = card_info(run, data, None)
    info.repo_id = run.args.dataset_hub_id
    return push_dataset(
        data.dataset,
        run.args.dataset_hub_id,
        dataset_card(info),
        token=run.hub_token,
        private=run.hub_private,
    )
