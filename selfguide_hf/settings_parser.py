"""The one parser of both fronts: ``--config x.yaml`` plus flags into the declared settings, checked.

`parse_settings` reads a recipe config and flags through `TrlParser` (flags
win) into (`SelfGuideArguments`, `SFTConfig`, `ModelConfig`) for `selfguide`
and `recipes/sft.py` alike; the fronts differ only in the aliases
`settings.CLI_ONLY_ALIASES` names. Every value is checked here, before any
model loads, and a mistake is one line naming the flag or key and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import types
from collections.abc import Sequence
from typing import Any

from selfguide_hf.config_file import closest, known_keys, load_config
from selfguide_hf.errors import ConfigError
from selfguide_hf.methods import get_method
from selfguide_hf.settings import (
    AUTO_METHOD,
    CLI_ONLY_ALIASES,
    CPU_TRAINING_DEFAULTS,
    DECLARATION_KEYS,
    DEFAULT_TARGET_MODULES,
    FLAG_ALIASES,
    GPU_TRAINING_DEFAULTS,
    SelfGuideArguments,
    choices_of,
    flag_name,
    refuse_flagged_key,
    synthesis_config,
)

__all__ = ["parse_settings", "recipe_defaults", "settings_parser"]


# ------------------------------------------------------------------ the parser
def _trl_parser_class() -> type:
    from trl import TrlParser

    class SettingsParser(TrlParser):
        """`TrlParser` that reads our metadata and turns argparse's exits into one-line errors."""

        @staticmethod
        def _parse_dataclass_field(parser: Any, dataclass_field: dataclasses.Field) -> None:
            if any(key in dataclass_field.metadata for key in DECLARATION_KEYS):
                dataclass_field = copy.copy(dataclass_field)
                dataclass_field.metadata = types.MappingProxyType(
                    {k: v for k, v in dataclass_field.metadata.items() if k not in DECLARATION_KEYS}
                )
            TrlParser._parse_dataclass_field(parser, dataclass_field)

        def error(self, message: str) -> Any:  # argparse would print the whole usage, then exit 2
            raise ConfigError(message)

    return SettingsParser


def settings_parser(prog: str | None = None) -> Any:
    """`TrlParser` over (SelfGuideArguments, SFTConfig, ModelConfig); choices from the registries."""
    from trl import ModelConfig, SFTConfig

    parser = _trl_parser_class()((SelfGuideArguments, SFTConfig, ModelConfig), allow_abbrev=False, prog=prog)
    declared = SelfGuideArguments.declared()
    for action in parser._actions:
        source = declared.get(action.dest)
        if source is not None and "choices_from" in source.metadata:
            action.choices = choices_of(source.metadata["choices_from"])()
    return parser


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def on_cuda(gpu_memory_gb: float | None = None) -> bool:
    """Whether the run's settings are for a CUDA card: this machine's, or one planned for."""
    import torch

    return gpu_memory_gb is not None or torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run at hardware speed instead of being emulated."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # another torch build: assume not
        return False


def recipe_defaults(cuda: bool | None = None, bf16: bool | None = None) -> dict[str, Any]:
    """Defaults that differ from TRL's, chosen for the hardware, under the YAML file and the flags.

    On CUDA (or a card planned for): bf16 weights and compute (fp16 where the card
    has no bf16) and gradient checkpointing, instead of TRL's fp32 weights and no
    checkpointing (a 7B model would take ~30 GB before its first step). Without
    CUDA: ``use_cpu`` (so two CPU processes get a gloo group) and bf16 autocast only
    where the CPU computes bf16 natively. No checkpoints unless asked, no trackers.
    """
    import torch

    defaults: dict[str, Any] = {"report_to": "none", "save_strategy": "no"}
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
        defaults.update(bf16=bf16, fp16=not bf16, dtype="bfloat16" if bf16 else "float16")
        defaults["gradient_checkpointing"] = True
    else:
        defaults.update({"use_cpu": True, "bf16": cpu_has_native_bf16()})
    return defaults


def expand_shorthands(argv: Sequence[str], front: str) -> list[str]:
    """The flags as the parser reads them: ``--synthesis-option K=V`` into the --synthesis mapping,
    ``--training-option K=V`` into ``--K V``, ``--push-to-hub REPO`` into ``--push_to_hub true
    --hub_model_id REPO``, aliases into their fields."""
    out: list[str] = []
    synthesis: dict[str, Any] = {}
    given_mapping: str | None = None
    aliases = {**FLAG_ALIASES, **(CLI_ONLY_ALIASES if front == "cli" else {})}
    args = list(argv)
    i = 0

    def value_after(flag: str) -> str:
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            raise ConfigError(f"{flag} needs a value")
        return args[i + 1]

    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=")
        if flag in ("--synthesis-option", "--training-option"):
            pair = inline if eq else value_after(flag)
            key, value = _key_value(pair, flag)
            if flag == "--synthesis-option":
                refuse_flagged_key(key, front, f"{flag} {key}=...")
                synthesis[key] = value
            else:
                out += [f"--{key}", *_as_flag_values(value)]
            i += 1 if eq else 2
            continue
        if flag == "--synthesis":
            given_mapping = inline if eq else value_after(flag)
            i += 1 if eq else 2
            continue
        if flag in ("--push-to-hub", "--push-dataset") and not eq and i + 1 < len(args):
            nxt = args[i + 1]
            if not nxt.startswith("--") and nxt.lower() not in ("true", "false", "yes", "no", "1", "0"):
                repo_key = "--hub_model_id" if flag == "--push-to-hub" else "--dataset_hub_id"
                out += [f"--{flag[2:].replace('-', '_')}", "true", repo_key, nxt]
                i += 2
                continue
        if flag == "--private" and not eq and (i + 1 >= len(args) or args[i + 1].startswith("--")):
            out += ["--hub_private_repo", "true"]
            i += 1
            continue
        if flag in aliases:
            out.append(aliases[flag] + (f"={inline}" if eq else ""))
            i += 1
            continue
        out.append(arg)
        i += 1
    if synthesis:  # merged over a --synthesis mapping given beside them
        mapping = SelfGuideArguments(synthesis=given_mapping).synthesis or {}
        out += ["--synthesis", json.dumps({**mapping, **synthesis})]
    elif given_mapping is not None:
        out += ["--synthesis", given_mapping]
    return out


def _key_value(pair: str, flag: str) -> tuple[str, Any]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _as_flag_values(value: Any) -> list[str]:
    """A JSON value as command-line words: lists as several, booleans as true/false."""
    if isinstance(value, list):
        return [_as_flag_values(v)[0] for v in value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [value if isinstance(value, str) else json.dumps(value)]


def split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest: list[str] = []
    config: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a YAML file path")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def parse_settings(
    argv: Sequence[str] | None = None,
    *,
    front: str = "recipe",
    evaluate: bool | None = None,
    prog: str | None = None,
    gpu_memory_gb: float | None = None,
) -> tuple[SelfGuideArguments, Any, Any]:
    """``--config x.yaml`` plus flags (flags win) into (SelfGuideArguments, SFTConfig, ModelConfig), checked.

    Without --config, training starts from the profile of the hardware (`CPU_TRAINING_DEFAULTS`,
    the embedded model's CPU config, or `GPU_TRAINING_DEFAULTS`, the 24 GB QLoRA configs');
    ``gpu_memory_gb`` plans for a card this machine may not have. ``evaluate`` is the command's
    choice (`selfguide run` evaluates, `train` does not). ``method`` auto becomes lora on a CPU and
    stays auto on a GPU, for `pipeline.prepare_run` to take from the memory plan.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = settings_parser(prog)
    config_path, cli = split_config_flag(expand_shorthands(argv, front))
    known = known_keys(parser)
    spelled = {o.lstrip("-").replace("-", "_") for a in parser._actions for o in a.option_strings}
    for arg in cli:
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0]
            if key.replace("-", "_") not in spelled:
                raise ConfigError(
                    f"unknown command-line flag '--{key}'{closest(key.replace('-', '_'), known)}"
                )
    cuda = on_cuda(gpu_memory_gb)
    defaults = recipe_defaults(cuda, True if gpu_memory_gb is not None else None)
    if gpu_memory_gb is not None and not torch_has_cuda():
        defaults["use_cpu"] = True  # planning a card this machine lacks: TRL refuses bf16 without one
    from_file = load_config(config_path, parser) if config_path is not None else {}
    if config_path is None:
        defaults.update(GPU_TRAINING_DEFAULTS if cuda else CPU_TRAINING_DEFAULTS)
    defaults.update(from_file)
    parser.set_defaults_with_config(**defaults)
    try:
        sg_args, training_args, model_args = parser.parse_args_into_dataclasses(args=cli)
    except ConfigError:
        raise
    except ValueError as exc:  # a dataclass __post_init__ check (TRL's or ours)
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    if isinstance(from_file.get("synthesis"), dict) and sg_args.synthesis is not from_file["synthesis"]:
        sg_args.synthesis = {**from_file["synthesis"], **(sg_args.synthesis or {})}  # flags win key by key
    if evaluate is not None:
        sg_args.evaluate = evaluate
    if sg_args.method == AUTO_METHOD and not cuda:
        sg_args.method = "lora"  # the measured CPU default (docs/TRAINING.md); a GPU asks the memory plan
    reconcile_model_args(sg_args, model_args)
    apply_method_defaults(training_args, model_args)
    check_settings(sg_args, training_args, model_args, front)
    return sg_args, training_args, model_args


def reconcile_model_args(sg_args: SelfGuideArguments, model_args: Any) -> None:
    """`--model` and `--model_name_or_path` name the same thing; the method decides the quantization."""
    if sg_args.model and model_args.model_name_or_path and sg_args.model != model_args.model_name_or_path:
        raise ConfigError(
            f"--model {sg_args.model!r} and --model_name_or_path {model_args.model_name_or_path!r} disagree; "
            "give one of them"
        )
    name = sg_args.model or model_args.model_name_or_path or "default"
    sg_args.model = name
    model_args.model_name_or_path = name
    if sg_args.method == AUTO_METHOD:
        return  # decided by the memory plan, then reconciled again
    method = get_method(sg_args.method)
    if model_args.load_in_8bit:
        raise ConfigError("--load_in_8bit is not a self-guide method; use --method qlora (4-bit NF4)")
    if model_args.load_in_4bit and not method.quantized:
        raise ConfigError(f"--load_in_4bit conflicts with --method {method.name}; use --method qlora")
    model_args.load_in_4bit = method.quantized
    model_args.use_bnb_nested_quant = method.quantized or model_args.use_bnb_nested_quant
    model_args.use_peft = method.uses_peft


def apply_method_defaults(training_args: Any, model_args: Any) -> None:
    """Settings a method cannot run without."""
    targets = model_args.lora_target_modules
    if targets is None or (isinstance(targets, (list, tuple)) and list(targets) == [DEFAULT_TARGET_MODULES]):
        model_args.lora_target_modules = DEFAULT_TARGET_MODULES  # PEFT takes the keyword as a string only
    # Rows come tokenized by trainer.to_sft_dataset (prompt ids = evaluation's): the loss must still
    # cover the completion only, which TRL infers only for untokenized prompt/completion rows.
    training_args.completion_only_loss = True


# --------------------------------------------------------------------- checks
def check_settings(
    sg_args: SelfGuideArguments, training_args: Any, model_args: Any, front: str = "recipe"
) -> None:
    """Refuse, before any model loads, every value that would fail or train nothing later."""
    problems: list[str] = []

    def flag(name: str) -> str:
        return flag_name(name, front)

    for obj in (sg_args, training_args, model_args):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{flag(f.name)} must be a finite number, got {value}")
    for name in ("num_inputs", "max_train_rows", "torch_threads", "eval_batch_size", "min_pairs", "draws",
                 "vllm_tensor_parallel_size", "ray_replicas"):  # fmt: skip
        value = getattr(sg_args, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{flag(name)} must be a whole number >= 1, got {value!r}")
    for name in ("eval_max_rows", "synthesis_seed", "in_context_pairs"):
        value = getattr(sg_args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{flag(name)} must be a whole number >= 0, got {value!r}")
    if sg_args.vllm_kv_cache_gb is not None and not sg_args.vllm_kv_cache_gb > 0:
        problems.append(f"{flag('vllm_kv_cache_gb')} must be > 0, got {sg_args.vllm_kv_cache_gb}")
    if not (training_args.max_steps or 0) > 0 and not training_args.num_train_epochs > 0:
        problems.append(
            f"{flag('num_train_epochs')} must be > 0 (or {flag('max_steps')} > 0), "
            f"got {training_args.num_train_epochs}"
        )
    if not training_args.learning_rate > 0:
        problems.append(f"{flag('learning_rate')} must be > 0, got {training_args.learning_rate}")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            problems.append(f"{flag(name)} must be >= 1, got {getattr(training_args, name)}")
    if training_args.max_length is not None and training_args.max_length < 16:
        problems.append(f"{flag('max_length')} must be >= 16 tokens, got {training_args.max_length}")
    if model_args.use_peft:
        if model_args.lora_r < 1:
            problems.append(f"{flag('lora_r')} must be >= 1, got {model_args.lora_r}")
        if not model_args.lora_alpha > 0:
            problems.append(f"{flag('lora_alpha')} must be > 0, got {model_args.lora_alpha}")
        if not 0 <= model_args.lora_dropout < 1:
            problems.append(f"{flag('lora_dropout')} must be in [0, 1), got {model_args.lora_dropout}")
    if sg_args.push_dataset and not sg_args.dataset_hub_id:
        problems.append(f"{flag('push_dataset')} needs {flag('dataset_hub_id')} <user>/<name>")
    if training_args.push_to_hub and not training_args.hub_model_id:
        problems.append(f"{flag('push_to_hub')} needs {flag('hub_model_id')} <user>/<name>")
    for name, repo in (
        ("hub_model_id", training_args.hub_model_id),
        ("dataset_hub_id", sg_args.dataset_hub_id),
    ):
        if repo is not None and (why := _bad_repo_id(repo)):
            problems.append(f"{flag(name)} {repo!r}: {why}")
    if problems:
        raise ConfigError("; ".join(problems))
    if not sg_args.dataset_path:
        synthesis_config(sg_args, front)


def _bad_repo_id(repo: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        return str(exc).strip().splitlines()[0]
    if repo.count("/") != 1:
        return "expected <user or organisation>/<name>"
    return None
