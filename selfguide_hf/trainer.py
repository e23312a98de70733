"""The training core: synthetic rows -> token ids -> `SFTTrainer` -> an adapter saved atomically.

Rows are tokenized here with `prompts.encode_training_example`, so the prompt
ids the model is trained on are exactly the ids evaluation generates from
(tokenizers that add BOS included), and the completion mask covers the answer
and the end of turn only. The trained adapter (or full model) is saved into a
temporary folder beside the output folder and moved into place file by file;
the run manifest is marked complete only after that, so a kill mid-save never
leaves a folder a rerun takes as finished.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfguide_hf.errors import StageError
from selfguide_hf.methods import LoadedModel, TrainingConfigError, load_for_training
from selfguide_hf.prompts import encode_training_example
from selfguide_hf.run_dir import move_saved_files
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "auto_cpu_threads",
    "enable_compact_lm_head",
    "load_dataset_file",
    "make_trainer",
    "set_cpu_threads",
    "to_sft_dataset",
    "train_adapter",
]

SYNTHETIC_COLUMNS: tuple[str, ...] = ("input", "output")


@dataclass
class TrainResult:
    adapter_dir: Path
    metrics: dict[str, Any]
    train_rows: int
    train_tokens: int
    seconds: float


def to_sft_dataset(dataset: Any, spec: TaskSpec, tokenizer: Any, max_rows: int | None = None) -> Any:
    """Tokenized rows (``input_ids``, ``completion_mask``) for `SFTTrainer` from synthetic ``input``/``output`` rows.

    Rendered with the tokenizer being trained (even for data another model
    synthesized); rows with an empty answer are dropped.
    """
    from datasets import Dataset

    missing = [c for c in SYNTHETIC_COLUMNS if c not in dataset.column_names]
    if missing:
        raise TrainingConfigError(
            f"synthetic dataset lacks column(s) {missing}; it has {dataset.column_names} "
            "(expected the builder's input/output columns)"
        )
    rows: list[dict[str, list[int]]] = []
    for i, row in enumerate(dataset):
        text, output = row["input"], row["output"]
        if isinstance(output, (list, tuple)):  # an eval-style row with several references: train on the first
            output = output[0] if output else ""
        if not isinstance(text, str) or not isinstance(output, str):
            raise TrainingConfigError(f"synthetic row {i}: input and output must be strings")
        if not text.strip() or not output.strip():
            continue
        reasoning = row.get("reasoning") or None  # taught to reason: prompt and target are the reasoned ones
        rows.append(encode_training_example(spec, text, output, tokenizer, reasoning))
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        raise TrainingConfigError(
            "the synthetic dataset has no usable rows (every answer was empty or it has no rows); "
            "synthesize more inputs (--num_inputs) or relax the synthesis filters (--synthesis)"
        )
    return Dataset.from_list(rows)


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


def make_trainer(
    method: str,
    model_path: str,
    model_args: Any,
    training_args: Any,
    train_dataset: Any,
    *,
    compact_lm_head: bool = True,
    loaded: LoadedModel | None = None,
) -> Any:
    """The `SFTTrainer` the pipeline trains with (exposed so benchmarks time the same object)."""
    from trl import SFTTrainer

    if compact_lm_head:
        enable_compact_lm_head()
    if loaded is None:
        loaded = load_for_training(method, model_path, model_args, training_args)
    return SFTTrainer(
        model=loaded.model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
    )


def train_adapter(
    method: str,
    model_path: str,
    model_args: Any,
    training_args: Any,
    spec: TaskSpec,
    dataset: Any,
    *,
    max_train_rows: int | None = None,
    compact_lm_head: bool = True,
) -> TrainResult:
    """Train on the synthetic rows; save the adapter (or full model) and tokenizer atomically into output_dir."""
    loaded = load_for_training(method, model_path, model_args, training_args)
    sft = to_sft_dataset(dataset, spec, loaded.tokenizer, max_train_rows)
    trainer = make_trainer(
        method, model_path, model_args, training_args, sft, compact_lm_head=compact_lm_head, loaded=loaded
    )
    resume = training_args.resume_from_checkpoint
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    check_finite(trainer.model, output.metrics, training_args)  # before the save: nothing NaN is kept
    out = Path(training_args.output_dir)
    state = training_args.distributed_state
    saving = out.parent / f".{out.name}.saving"
    if state.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        saving = Path(tempfile.mkdtemp(prefix=f".{out.name}.saving-", dir=out.parent))
    trainer.save_model(str(saving))  # every process joins (a sharded save gathers); the main one writes
    if state.is_main_process:
        loaded.tokenizer.save_pretrained(str(saving))
        move_saved_files(saving, out)
    state.wait_for_everyone()
    tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]))
    return TrainResult(
        adapter_dir=out,
        metrics=dict(output.metrics),
        train_rows=len(sft),
        train_tokens=tokens,
        seconds=seconds,
    )


class TrainingDivergedError(StageError):
    """The loss or the trained weights are not finite: the adapter would answer nothing."""


def check_finite(model: Any, metrics: dict[str, Any], training_args: Any) -> None:
    """Stop with an error, not a verdict, when training left a non-finite loss or weight."""
    import torch

    loss = metrics.get("train_loss")
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    bad = [name for name, p in trained if not bool(torch.isfinite(p.detach()).all())]
    if bad or (isinstance(loss, float) and not math.isfinite(loss)):
        raise TrainingDivergedError(
            f"training diverged: loss {loss}, {len(bad)} of {len(trained)} trained tensors hold NaN or inf "
            f"(learning rate {training_args.learning_rate}); nothing was saved. Lower --learning-rate "
            "(or turn off fp16), then run again"
        )


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


def set_cpu_threads(requested: int | None, local_processes: int = 1) -> int | None:
    """Set torch's CPU threads: ``requested``, else `OMP_NUM_THREADS` as the user set it, else the rule above.

    `accelerate launch` sets OMP_NUM_THREADS=1 when it has no config, so under a
    launch (LOCAL_WORLD_SIZE set) the environment does not count as the user's.
    """
    import torch

    if torch.cuda.is_available():
        return None
    if requested is None and os.environ.get("OMP_NUM_THREADS") and "LOCAL_WORLD_SIZE" not in os.environ:
        return None
    threads = requested or auto_cpu_threads(local_processes)
    torch.set_num_threads(threads)
    logger.info("torch CPU threads per process: %d", threads)
    return threads
