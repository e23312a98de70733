"""Finetuning methods (``lora``, ``qlora``, ``full``) in a registry, like PEFT's.

A new method is one decorated loader returning the model, its tokenizer and a
PEFT config (None for full finetuning); nothing else in the pipeline branches
on the method's name. The LoRA and 4-bit configs come from TRL's own helpers
(`trl.get_peft_config`, `trl.get_quantization_config`) over `ModelConfig`, so
every ``--lora_*`` / ``--bnb_*`` flag means what it means in TRL's scripts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfguide_hf.errors import ConfigError
from selfguide_hf.registry import Registry

__all__ = [
    "METHODS",
    "LoadedModel",
    "TrainingConfigError",
    "TrainingMethod",
    "get_method",
    "load_for_training",
    "register_method",
    "torch_dtype",
]


TrainingConfigError = ConfigError  # the name the recipe's users and tests know


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


METHODS: Registry[TrainingMethod] = Registry("method", TrainingConfigError)


def register_method(
    name: str, description: str, *, uses_peft: bool, quantized: bool = False
) -> Callable[[MethodLoader], MethodLoader]:
    """Register ``loader(model_path, model_args, training_args) -> LoadedModel`` under ``name``."""

    def decorate(loader: MethodLoader) -> MethodLoader:
        METHODS.add(name, TrainingMethod(name, description, uses_peft, quantized, loader))
        return loader

    return decorate


def get_method(name: str) -> TrainingMethod:
    return METHODS.lookup(name)


def load_for_training(method: str, model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    """Load `model_path` the way `method` trains it."""
    return get_method(method).loader(model_path, model_args, training_args)


def torch_dtype(name: str | None, *, default: str = "float32") -> Any:
    """A `ModelConfig.dtype` name as a torch dtype (``auto`` stays a string for transformers)."""
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


def _peft_config(model_args: Any) -> Any:
    from trl import get_peft_config

    return get_peft_config(model_args)


def _quantization_config(model_args: Any) -> Any:
    """TRL's 4-bit config, computing in the model's dtype (fp32 on a CPU, bf16 where CUDA has it)."""
    import copy

    import torch
    from trl import get_quantization_config

    compute = torch_dtype(model_args.dtype)
    if compute == "auto":
        compute = (
            torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        )
    args = copy.copy(model_args)
    args.dtype = compute
    args.bnb_4bit_quant_type = model_args.bnb_4bit_quant_type or "nf4"
    return get_quantization_config(args)


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
    except Exception as exc:  # SafetensorError on a damaged file is not an OSError
        from selfguide_hf.models import load_error

        raise TrainingConfigError(str(load_error(model_path, exc))) from exc


def _device_map(training_args: Any) -> Any:
    """Each process keeps its whole quantized copy on its own device (`device_map="auto"` breaks DDP)."""
    import torch

    if training_args.use_cpu or not torch.cuda.is_available():
        return {"": "cpu"}
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


@register_method("lora", "LoRA adapters on a full-precision base model", uses_peft=True)
def _load_lora(model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    model = _from_pretrained(model_path, model_args, dtype=torch_dtype(model_args.dtype))
    return LoadedModel(model, _load_tokenizer(model_path, model_args), _peft_config(model_args))


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
        quantization_config=_quantization_config(model_args),
        dtype=torch_dtype(model_args.dtype),
        device_map=_device_map(training_args),
    )
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=bool(training_args.gradient_checkpointing),
        gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs,
    )
    return LoadedModel(model, _load_tokenizer(model_path, model_args), _peft_config(model_args))


@register_method("full", "every weight trained (the paper's setting)", uses_peft=False)
def _load_full(model_path: str, model_args: Any, training_args: Any) -> LoadedModel:
    model = _from_pretrained(model_path, model_args, dtype=torch_dtype(model_args.dtype))
    return LoadedModel(model, _load_tokenizer(model_path, model_args), None)
