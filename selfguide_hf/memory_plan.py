"""How much memory each stage of a run needs, from the model's config.json alone, before any weight loads.

The parameters are counted on the meta device (accelerate's `init_empty_weights`),
split into the decoder's linear layers (what LoRA targets and QLoRA quantizes),
the embeddings and the LM head. Each stage is then sized with the usual byte
counts (docs/TRAINING.md, "Memory plan"): weights by precision (NF4: half a
byte plus one fp32 scale per 64 weights), LoRA parameters with their fp32
gradients and AdamW states, activations per token and layer with and without
gradient checkpointing, fp32 logits of one micro-batch, the KV cache of the
generation engine, and the CUDA context. The estimates are checked against the
measured CPU peaks of the embedded model (tests/test_memory_plan.py) and a
published 7B QLoRA figure (docs/TRAINING.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.errors import ConfigError

__all__ = ["Hardware", "MemoryPlan", "ModelShape", "RunShape", "model_shape", "plan_memory", "what_to_change"]

GIB = 1024**3
CUDA_CONTEXT_GB = 1.5  # the CUDA context and allocator reserve of a process (measured on 24-80 GB cards)
CPU_PROCESS_GB = 0.9  # Python, torch, transformers and TRL loaded: RSS before any weight (docs/TRAINING.md)
FIT_SHARE = 0.9  # a stage fits when it needs at most this share of the card (allocator slack, spikes)
LORA_SHARE = 0.75  # LoRA on 16-bit weights is chosen when it needs at most this share: the estimate's
# error is within +-30 % of measured peaks (tests/test_memory_plan.py), so 1/1.3 of the card
NF4_BYTES = 4.127 / 8  # 4 bits, an 8-bit scale per 64 weights, an fp32 scale per 256 blocks
COMPLETION_TOKENS = 64  # positions the fused LM head scores per row (the answer), chunk included
LORA_STATE_BYTES = 4 + 4 + 8  # a LoRA parameter: fp32 weight, fp32 gradient, two fp32 AdamW moments
FULL_STATE_BYTES = 2 + 4  # full finetuning in bf16: gradient, two bf16 AdamW moments (weights apart)


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory estimate needs, read from config.json."""

    linear: int  # weights of the decoder's linear layers (attention and MLP projections)
    embeddings: int  # input embeddings
    head: int  # the LM head (0 when tied to the embeddings)
    other: int  # norms and biases
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key (= value) width: KV heads x head size
    vocab: int
    context: int
    lora_per_rank: int  # LoRA parameters per unit of rank on every linear layer (r x (in + out) summed)

    @property
    def total(self) -> int:
        return self.linear + self.embeddings + self.head + self.other


def model_shape(model_path: str | Path) -> ModelShape:
    """Count the parameters of ``model_path`` (a folder with at least config.json) without allocating them."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(model_path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: no config.json to plan from")
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    head_module = model.get_output_embeddings()
    embed_module = model.get_input_embeddings()
    tied = head_module is not None and head_module.weight is embed_module.weight
    linear = lora = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head_module:
            linear += module.weight.numel()
            lora += module.in_features + module.out_features
    embeddings = embed_module.weight.numel()
    head = 0 if tied or head_module is None else head_module.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    text = getattr(config, "text_config", config)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        linear=linear,
        embeddings=embeddings,
        head=head,
        other=total - linear - embeddings - head,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        kv_dim=(getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        vocab=text.vocab_size,
        context=getattr(text, "max_position_embeddings", 2048) or 2048,
        lora_per_rank=lora,
    )


@dataclass
class Hardware:
    """Where the run goes: a CUDA card of ``memory_gb`` (bf16 or not), or the CPU's RAM."""

    device: str  # "cuda" or "cpu"
    memory_gb: float
    bf16: bool = True
    name: str = ""

    @classmethod
    def detect(cls, gpu_memory_gb: float | None = None) -> Hardware:
        """This machine's first GPU (or a card of ``gpu_memory_gb`` planned for), else its RAM."""
        import torch

        if gpu_memory_gb is not None:  # a card planned for: bf16, as every card since Ampere
            return cls("cuda", float(gpu_memory_gb), True, f"a {gpu_memory_gb:g} GB card (planned)")
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return cls("cuda", props.total_memory / GIB, bool(torch.cuda.is_bf16_supported()), props.name)
        return cls("cpu", _ram_gb(), False, "CPU")


def _ram_gb() -> float:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 16.0


@dataclass
class StagePlan:
    name: str
    items: dict[str, float]  # GB by what holds them

    @property
    def peak_gb(self) -> float:
        return sum(self.items.values())


@dataclass
class MemoryPlan:
    """The settings chosen for the hardware and each stage's peak, in GB."""

    hardware: Hardware
    method: str
    dtype: str
    gradient_checkpointing: bool
    stages: list[StagePlan] = field(default_factory=list)
    chosen_because: str = ""

    @property
    def budget_gb(self) -> float:
        return self.hardware.memory_gb * FIT_SHARE

    @property
    def peak_gb(self) -> float:
        return max(stage.peak_gb for stage in self.stages)

    @property
    def fits(self) -> bool:
        return self.peak_gb <= self.budget_gb

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.hardware.device,
            "hardware": self.hardware.name,
            "memory_gb": round(self.hardware.memory_gb, 1),
            "budget_gb": round(self.budget_gb, 1),
            "method": self.method,
            "dtype": self.dtype,
            "gradient_checkpointing": self.gradient_checkpointing,
            "fits": self.fits,
            "peak_gb": round(self.peak_gb, 2),
            **{f"{stage.name}_peak_gb": round(stage.peak_gb, 2) for stage in self.stages},
            "stages": {s.name: {k: round(v, 3) for k, v in s.items.items()} for s in self.stages},
            "chosen_because": self.chosen_because,
        }

    def summary(self) -> str:
        worst = max(self.stages, key=lambda stage: stage.peak_gb)
        return (
            f"{self.method}, {self.dtype}, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}; "
            f"peak {worst.peak_gb:.1f} GB ({worst.name}) of {self.budget_gb:.1f} GB usable on {self.hardware.name}"
        )

    def format_table(self) -> str:
        lines = [
            f"memory plan for {self.hardware.name} ({self.hardware.memory_gb:.1f} GB, "
            f"budget {self.budget_gb:.1f} GB): method {self.method}, {self.dtype}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}",
        ]
        if self.chosen_because:
            lines.append(f"  chosen because: {self.chosen_because}")
        for stage in self.stages:
            lines.append(f"  {stage.name:<11} {stage.peak_gb:7.2f} GB")
            lines += [f"    {what:<38} {gb:7.2f}" for what, gb in stage.items.items()]
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"  peak {self.peak_gb:.2f} GB: {verdict}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunShape:
    """What a run processes: micro-batch and sequence length in training, batch and lengths in generation."""

    train_batch: int = 2
    train_tokens: int = 1024  # tokens of the longest training row (max_length when unknown)
    lora_rank: int = 16
    generation_batch: int = 8
    generation_tokens: int = 3500  # prompt plus new tokens of one generated sequence
    engine: str = "transformers"  # "vllm" sizes the KV cache by gpu_memory_utilization instead
    vllm_memory_share: float = 0.9
    compact_head: bool = True  # the LM head scores only the answer (CUDA, or compact_lm_head on CPU)


def _weights_gb(shape: ModelShape, method: str, bytes_per_weight: float) -> float:
    if method == "qlora":
        rest = shape.embeddings + shape.head + shape.other
        return (shape.linear * NF4_BYTES + rest * bytes_per_weight) / GIB
    return shape.total * bytes_per_weight / GIB


def _activation_bytes_per_token_layer(shape: ModelShape, width: float) -> float:
    # saved for backward in one decoder layer (docs/TRAINING.md): norms, q/k/v, rotary copies,
    # attention output, residuals, LoRA's copies of each linear input, the MLP's four tensors
    return width * (15 * shape.hidden + 3 * shape.kv_dim + 5 * shape.intermediate)


def training_stage(
    shape: ModelShape, hardware: Hardware, method: str, checkpointing: bool, run: RunShape
) -> StagePlan:
    width = 2 if hardware.device == "cuda" else 4
    tokens = run.train_batch * run.train_tokens
    per_layer = _activation_bytes_per_token_layer(shape, width) * tokens
    if checkpointing:  # each layer's input kept; one layer recomputed at a time
        activations = shape.layers * tokens * shape.hidden * width + 2 * per_layer
    else:
        activations = shape.layers * per_layer
    items = {
        f"weights ({'NF4 linear + ' if method == 'qlora' else ''}{'bf16' if width == 2 else 'fp32'})": _weights_gb(
            shape, method, width
        )
    }
    if method == "full":
        items["gradients and AdamW states"] = shape.total * (FULL_STATE_BYTES if width == 2 else 12) / GIB
    else:
        items[f"LoRA r={run.lora_rank}: weights, grads, AdamW"] = (
            run.lora_rank * shape.lora_per_rank * LORA_STATE_BYTES / GIB
        )
    items[f"activations ({'checkpointed' if checkpointing else 'all kept'}, {tokens} tokens)"] = (
        activations / GIB
    )
    # TRL's fused LM head scores only the answer positions (CUDA; on CPU with compact_lm_head)
    scored = run.train_batch * min(run.train_tokens, COMPLETION_TOKENS) if run.compact_head else tokens
    items[f"LM head (fp32 logits and grads, {scored} positions)"] = scored * shape.vocab * 8 / GIB
    items["CUDA context" if hardware.device == "cuda" else "process (Python, torch)"] = (
        CUDA_CONTEXT_GB if hardware.device == "cuda" else CPU_PROCESS_GB
    )
    return StagePlan("training", items)


def generation_stage(
    name: str, shape: ModelShape, hardware: Hardware, run: RunShape, lora: bool
) -> StagePlan:
    """Synthesis or evaluation: the base model (and a LoRA adapter) and the KV cache of a batch."""
    width = 2 if hardware.device == "cuda" else 4
    items = {f"weights ({'bf16' if width == 2 else 'fp32'})": shape.total * width / GIB}
    if lora:
        items["LoRA adapter"] = run.lora_rank * shape.lora_per_rank * width / GIB
    kv_per_token = 2 * shape.layers * shape.kv_dim * width
    if run.engine == "vllm" and hardware.device == "cuda":
        share = run.vllm_memory_share * hardware.memory_gb
        items["vLLM KV cache (rest of its share)"] = max(0.0, share - sum(items.values()) - CUDA_CONTEXT_GB)
    else:
        tokens = run.generation_batch * run.generation_tokens
        items[f"KV cache ({tokens} tokens)"] = tokens * kv_per_token / GIB
    items["CUDA context" if hardware.device == "cuda" else "process (Python, torch)"] = (
        CUDA_CONTEXT_GB if hardware.device == "cuda" else CPU_PROCESS_GB
    )
    return StagePlan(name, items)


def plan_memory(
    shape: ModelShape,
    hardware: Hardware,
    run: RunShape,
    *,
    method: str | None = None,
    checkpointing: bool | None = None,
) -> MemoryPlan:
    """Settings for the hardware and their memory: on CUDA, LoRA in bf16 when it fits with margin, else QLoRA."""
    if hardware.device == "cpu":
        chosen_method, because = method or "lora", "" if method else "the CPU default (docs/TRAINING.md)"
        ckpt = bool(checkpointing) if checkpointing is not None else False
        dtype = "float32"
    else:
        ckpt = True if checkpointing is None else checkpointing
        dtype = "bfloat16" if hardware.bf16 else "float16"
        chosen_method, because = method or "lora", ""
        if method is None:
            budget = hardware.memory_gb * LORA_SHARE
            lora = training_stage(shape, hardware, "lora", ckpt, run).peak_gb
            if lora > budget:
                chosen_method = "qlora"
                because = f"LoRA on {dtype} weights needs ~{lora:.1f} GB, over {LORA_SHARE:.0%} of the card ({budget:.1f} GB)"
            else:
                because = f"LoRA on {dtype} weights needs ~{lora:.1f} GB, within {LORA_SHARE:.0%} of the card ({budget:.1f} GB)"
    stages = [
        generation_stage("synthesis", shape, hardware, run, lora=False),
        training_stage(shape, hardware, chosen_method, ckpt, run),
        generation_stage("evaluation", shape, hardware, run, lora=chosen_method != "full"),
    ]
    return MemoryPlan(hardware, chosen_method, dtype, ckpt, stages, because)


def what_to_change(plan: MemoryPlan) -> str:
    """The one-line advice of a plan that does not fit."""
    worst = max(plan.stages, key=lambda s: s.peak_gb)
    advice = []
    if worst.name == "training":
        if plan.method != "qlora":
            advice.append("--method qlora")
        if not plan.gradient_checkpointing:
            advice.append("--gradient-checkpointing true")
        advice.append("a smaller --per-device-train-batch-size or --max-length")
    advice.append("a smaller model, or a card with more memory")
    return (
        f"the {worst.name} stage needs {worst.peak_gb:.1f} GB, more than the {plan.budget_gb:.1f} GB planned "
        f"for {plan.hardware.name} ({plan.hardware.memory_gb:.1f} GB); try {', '.join(advice)}"
    )


# ------------------------------------------------------------------- a run's plan
def config_folder(model: str | None, model_path: str | None = None) -> str:
    """A folder holding the model's config.json: the resolved folder, or only config.json from the Hub."""
    if model_path and Path(model_path, "config.json").is_file():
        return model_path
    if model and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from selfguide_hf.models import in_hf_cache, is_embedded, resolve_model

    if is_embedded(model) or (model and in_hf_cache(model)):
        return resolve_model(model)  # the embedded copy, or the cached snapshot: no download
    from huggingface_hub import hf_hub_download

    for local_only in (True, False):
        try:
            return str(Path(hf_hub_download(model, "config.json", local_files_only=local_only)).parent)
        except Exception:  # not cached / offline: try the Hub, then give up with one line
            continue
    raise ConfigError(f"--model {model}: no config.json here or on the Hub to plan from")


def training_tokens(spec: Any, folder: str, max_length: int | None) -> int:
    """Tokens of a training row, estimated from the demonstrations (the longest, +25 % for generated
    inputs), capped at ``max_length``; ``max_length`` when the folder has no tokenizer."""
    cap = int(max_length or 1024)
    if not any(Path(folder, name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return cap  # a folder with config.json only: plan for the longest row allowed
    try:
        from transformers import AutoTokenizer

        from selfguide_hf.prompts import render_completion, render_task_prompt

        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception:  # a folder with config.json only: plan for the longest row allowed
        return cap
    lengths = [
        len(
            tokenizer(
                render_task_prompt(spec, d.input, tokenizer)
                + render_completion(spec, d.input, d.output, tokenizer),
                add_special_tokens=False,
            )["input_ids"]
        )
        for d in spec.demonstrations
    ]
    return max(16, min(cap, int(max(lengths, default=cap) * 1.25)))


def plan_for_run(
    spec: Any,
    model: str | None,
    model_path: str | None,
    sg_args: Any,
    training_args: Any,
    model_args: Any,
    synthesis: Any,
    *,
    gpu_memory_gb: float | None = None,
    engine: str = "transformers",
) -> MemoryPlan:
    """The plan of a run's settings on this machine (or on a card of ``gpu_memory_gb``)."""
    folder = config_folder(model, model_path)
    shape = model_shape(folder)
    hardware = Hardware.detect(gpu_memory_gb)
    if hardware.device == "cuda" and engine == "auto":
        import importlib.util

        engine = "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
    run = RunShape(
        train_batch=training_args.per_device_train_batch_size,
        train_tokens=training_tokens(spec, folder, training_args.max_length),
        lora_rank=model_args.lora_r,
        generation_batch=8,
        generation_tokens=synthesis.max_prompt_tokens
        + max(synthesis.input_max_new_tokens, synthesis.annotation_max_new_tokens),
        engine=engine,
        compact_head=hardware.device == "cuda" or bool(sg_args.compact_lm_head),
    )
    method = None if sg_args.method == "auto" else sg_args.method
    checkpointing = training_args.gradient_checkpointing
    return plan_memory(shape, hardware, run, method=method, checkpointing=checkpointing)
