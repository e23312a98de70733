"""Scoring a model on a task: greedy answers to the task prompt, then the task's metric.

The few-shot baseline and the self-guided model are scored the same way,
through `prompts.render_task_prompt`, the exact prompt training used; only the
weights differ. Classification scores come with the majority-class rate,
because learning the answer format alone lifts a small model to about there.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.errors import one_line
from selfguide_hf.eval_data import (  # noqa: F401  (public here too: the evaluation's rows)
    DEFAULT_MAX_EVAL,
    EVAL_SUBSET_SEED,
    EvalDataError,
    load_eval_rows,
    majority_class,
    read_eval_file,
)
from selfguide_hf.generation import FailedCompletion, SamplingParams, TransformersEngine
from selfguide_hf.merged_copies import MERGED_PREFIX, OWNER_FILE, remove_stale_merged_copies
from selfguide_hf.metrics import load_metric
from selfguide_hf.prompts import (
    REASONING_MAX_NEW_TOKENS,
    extract_final_answer,
    render_task_prompt,
    stop_strings,
)
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """One model's score on one task; `predictions` keeps the raw answers for inspection."""

    task: str
    metric: str
    score: float
    num_examples: int
    majority_rate: float | None = None
    majority_label: str | None = None
    predictions: list[str] = field(default_factory=list)
    prediction_counts: dict[str, int] = field(default_factory=dict)
    row_scores: list[float] = field(default_factory=list)  # per row, for the paired bootstrap
    # Format vs task: classification: % of answers naming a label, and exact match among those;
    # generation: % of answers that copy the input verbatim.
    label_share: float | None = None
    label_exact_match: float | None = None
    copy_share: float | None = None
    # The score of a rule with no model: always the majority class, or the input copied as the answer.
    trivial_baseline: dict[str, Any] | None = None
    # A model taught to reason: prompted for reasoning, scored on the answer after its "Answer:" line.
    answered_with_reasoning: bool = False
    raw_outputs: list[str] | None = None  # the reasoned replies the predictions were read from
    no_answer_share: float | None = None  # % of reasoned replies with no "Answer:" line (scored as empty)
    served: str | None = None  # how vLLM served an adapter: "lora" (on the base weights), or "merged: <why>"
    trivial_row_scores: list[float] = field(default_factory=list)  # the trivial rule's score on each row
    top_answer: dict[str, Any] | None = None  # the most frequent answer and on how many rows it was given
    failed_rows: int = 0  # rows the engine could not answer (--engine ray keeps them): scored as empty

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        data.pop("raw_outputs")
        return data


# ---------------------------------------------------------------- scoring
def answer_budget(spec: TaskSpec, tokenizer: Any, minimum: int = 16, maximum: int = 256) -> int:
    """Enough new tokens for an answer: twice the longest demonstration output."""
    longest = max(
        len(tokenizer(d.output, add_special_tokens=False)["input_ids"]) for d in spec.demonstrations
    )
    return max(minimum, min(maximum, 2 * longest + 8))


def model_context(model_or_config: Any) -> int | None:
    """The model's context length in tokens, when its config says."""
    config = getattr(model_or_config, "config", model_or_config)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_prompts_fit(
    spec: TaskSpec, rows: list[dict[str, Any]], tokenizer: Any, context: int | None, reasoning: bool = False
) -> None:
    """Refuse rows whose prompt plus answer budget overflows the model's context (never score them silently)."""
    if not context or not rows:
        return
    budget = REASONING_MAX_NEW_TOKENS if reasoning else answer_budget(spec, tokenizer)
    demos_only = len(
        tokenizer(render_task_prompt(spec, "", tokenizer, reasoning), add_special_tokens=False)["input_ids"]
    )
    if demos_only + budget > context:
        raise EvalDataError(
            f"task {spec.name}: the task prompt (instruction + demonstrations) is {demos_only} tokens; with "
            f"{budget} for the answer it overflows the model's context of {context}; use fewer or shorter "
            "demonstrations, or a model with a longer context"
        )
    over = []
    for i, row in enumerate(rows):
        used = len(
            tokenizer(render_task_prompt(spec, row["input"], tokenizer, reasoning), add_special_tokens=False)[
                "input_ids"
            ]
        )
        if used + budget > context:
            over.append((i, used))
    if over:
        first, used = over[0]
        raise EvalDataError(
            f"task {spec.name}: {len(over)} eval row(s) do not fit the model's context of {context} tokens "
            f"(row {first + 1}: a {used}-token prompt plus {budget} for the answer); shorten or remove them"
        )


def predict(
    engine: Any,
    spec: TaskSpec,
    tokenizer: Any,
    inputs: list[str],
    max_new_tokens: int | None = None,
    reasoning: bool = False,
) -> list[str]:
    """Greedy answers to the task prompt for each input (reasoned replies with ``reasoning``)."""
    prompts = [render_task_prompt(spec, text, tokenizer, reasoning) for text in inputs]
    default = REASONING_MAX_NEW_TOKENS if reasoning else answer_budget(spec, tokenizer)
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens or default,
        temperature=0.0,
        n=1,
        stop=stop_strings(tokenizer),
    )
    return [samples[0] for samples in engine.generate(prompts, sampling)]


def score_predictions(spec: TaskSpec, predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    metric = load_metric(spec.metric)
    kwargs: dict[str, Any] = {"labels": list(spec.labels)} if spec.is_classification else {}
    return metric.compute(predictions=predictions, references=references, **kwargs)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    show_progress: bool = True,
    engine: Any = None,
    reasoning: bool = False,
) -> EvalResult:
    """Greedy-decode every row and score it with the task's metric.

    `engine` overrides the transformers engine (e.g. a vLLM one); `model` is
    then unused. With ``reasoning`` the model is asked to reason first and
    scored on the answer after its last ``Answer:`` line (none: an empty answer).
    """
    if not rows:
        raise EvalDataError(f"task {spec.name}: nothing to evaluate (0 rows)")
    check_prompts_fit(spec, rows, tokenizer, model_context(model) if model is not None else None, reasoning)
    if engine is None:
        engine = TransformersEngine(model, tokenizer, batch_size=batch_size, show_progress=show_progress)
    outputs = predict(engine, spec, tokenizer, [row["input"] for row in rows], max_new_tokens, reasoning)
    predictions = [extract_final_answer(o) or "" for o in outputs] if reasoning else outputs
    result = scored_result(
        spec,
        rows,
        predictions,
        answered_with_reasoning=reasoning,
        raw_outputs=outputs if reasoning else None,
        no_answer_share=round(100.0 * predictions.count("") / len(rows), 2) if reasoning else None,
        failed_rows=sum(isinstance(o, FailedCompletion) for o in outputs),
    )
    if result.failed_rows:
        logger.warning(
            "%s: %d rows failed in the engine and are scored as empty answers", spec.name, result.failed_rows
        )
    logger.info("%s: %s = %.2f on %d rows", spec.name, spec.metric, result.score, len(rows))
    return result


def scored_result(
    spec: TaskSpec, rows: list[dict[str, Any]], predictions: list[str], **extra: Any
) -> EvalResult:
    """Score ``predictions`` on ``rows`` with the task's metric: every arm's result is built here."""
    scored = score_predictions(spec, predictions, [row["output"] for row in rows])
    result = EvalResult(
        task=spec.name,
        metric=spec.metric,
        score=float(scored[spec.metric]),
        num_examples=len(rows),
        predictions=predictions,
        row_scores=[float(x) for x in scored["scores"]],
        **extra,
    )
    if spec.is_classification:
        result.majority_label, result.majority_rate = majority_class(rows)
        extracted = scored.get("extracted_predictions", predictions)
        result.prediction_counts = dict(Counter(str(p).strip().lower() for p in extracted).most_common(10))
    add_format_shares(result, spec, rows)
    return result


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def add_format_shares(result: EvalResult, spec: TaskSpec, rows: list[dict[str, Any]]) -> None:
    """The trivial baseline and the share of answers in the task's format (or copying the input)."""
    from selfguide_hf.labels import extract_label

    n = len(rows)
    if spec.is_classification:
        named = [
            i for i, p in enumerate(result.predictions) if extract_label(p, spec.labels or ()) is not None
        ]
        result.label_share = round(100.0 * len(named) / n, 2)
        if named:
            result.label_exact_match = round(sum(result.row_scores[i] for i in named) / len(named), 2)
        if result.majority_rate is not None:
            result.trivial_baseline = {"name": "majority-class", "score": round(result.majority_rate, 2)}
            rule = score_predictions(spec, [result.majority_label or ""] * n, [row["output"] for row in rows])
            result.trivial_row_scores = [float(x) for x in rule["scores"]]
        answers = [extract_label(p, spec.labels or ()) or p.strip().lower() for p in result.predictions]
    else:
        copies = sum(_same_text(p, row["input"]) for p, row in zip(result.predictions, rows, strict=True))
        result.copy_share = round(100.0 * copies / n, 2)
        copied = score_predictions(spec, [row["input"] for row in rows], [row["output"] for row in rows])
        result.trivial_baseline = {"name": "copy-the-input", "score": round(float(copied[spec.metric]), 2)}
        result.trivial_row_scores = [float(x) for x in copied["scores"]]
        answers = [" ".join(p.split()).lower() for p in result.predictions]
    top, count = Counter(answers).most_common(1)[0]
    result.top_answer = {"answer": top, "rows": count, "of": n}


# ------------------------------------------------------------- saved models
def load_for_evaluation(model_path: str, adapter: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) to score: the base model, with a LoRA adapter merged in, or a full finetune.

    The adapter is always merged into the full-precision base (also a QLoRA
    one: that is how it is served), so every front scores a tuned model the
    same way. Damaged or missing adapter files fail with the file named.
    """
    from selfguide_hf.models import load_causal_lm, load_error

    if adapter is None:
        return load_causal_lm(model_path)
    folder = Path(adapter)
    if not folder.is_dir():
        raise EvalDataError(f"{folder}: no such adapter folder")
    if not (folder / "adapter_config.json").is_file():
        if (folder / "config.json").is_file():
            return load_causal_lm(str(folder))  # full finetuning saved a whole model
        raise EvalDataError(f"{folder}: neither adapter_config.json (an adapter) nor config.json (a model)")
    model, tokenizer = load_causal_lm(model_path)
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except Exception as exc:  # e.g. SafetensorError on a truncated file (not an OSError): name the file
        raise load_error(str(folder), exc, what="the adapter") from exc
    model.eval()
    return model, tokenizer


def check_adapter_files(folder: str | os.PathLike[str]) -> None:
    """Read the adapter's weight file header (no model loaded): a damaged file is named, as on loading."""
    from safetensors import safe_open

    from selfguide_hf.models import load_error

    weights = Path(folder) / "adapter_model.safetensors"
    if not weights.is_file():
        return  # an older .bin adapter: vLLM or the merge reports what it cannot read
    try:
        with safe_open(str(weights), framework="pt") as handle:
            list(handle.keys())
    except Exception as exc:  # SafetensorError on a truncated file
        raise load_error(str(folder), exc, what="the adapter") from exc


def evaluate_saved_model(
    model_path: str,
    adapter: str | os.PathLike[str] | None,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    batch_size: int = 8,
    show_progress: bool = True,
    engine: str = "transformers",
    vllm_options: dict[str, Any] | None = None,
    reasoning: bool = False,
    shared: SharedVLLMEngine | None = None,
) -> EvalResult:
    """Load (base ± adapter) and score it on ``rows``: the one evaluation path of the package.

    ``engine`` "vllm" (or "ray", vLLM replicas on Ray) serves a LoRA adapter on the base weights
    (nothing written to disk), or, where vLLM cannot serve it, a merged copy in a temporary folder
    (the result's ``served`` says which, and why); ``reasoning``: see `evaluate_model`.
    """
    if engine in SERVING_ENGINES:
        options = {**(vllm_options or {}), "engine": engine}
        return _evaluate_with_vllm(model_path, adapter, spec, rows, show_progress, options, reasoning, shared)
    model, tokenizer = load_for_evaluation(model_path, adapter)
    return evaluate_model(
        model, tokenizer, spec, rows, batch_size=batch_size, show_progress=show_progress, reasoning=reasoning
    )


SERVING_ENGINES = ("vllm", "ray")  # engines that serve LoRA adapters on the base weights


class SharedVLLMEngine:
    """One vLLM engine (or Ray's replicas of it: ``vllm_options["engine"]``) for every arm of an
    evaluation: the base model with the run's LoRA adapters.

    Started on first use (an arm whose score is cached starts nothing); the few-shot arm is
    served without an adapter, each tuned arm (one per draw) with its own. Where vLLM cannot
    serve the adapters, `failed` says why and each arm runs its own way (merged copies).
    """

    def __init__(
        self, model_path: str, adapters: list[str | os.PathLike[str]], vllm_options: dict[str, Any]
    ) -> None:
        self.model_path, self.vllm_options = model_path, vllm_options
        self.adapters = [str(a) for a in adapters]
        self.tokenizer: Any = None
        self.failed: str | None = None
        self._engine: Any = None

    def get(self) -> Any | None:
        if self._engine is None and self.failed is None:
            from selfguide_hf.engines import make_engine

            for adapter in self.adapters:
                check_adapter_files(adapter)
            try:
                self.tokenizer = _vllm_tokenizer(self.model_path)
                options = dict(self.vllm_options)
                kind = options.pop("engine", "vllm")
                self._engine = make_engine(
                    kind, self.model_path, self.tokenizer, lora_paths=self.adapters, **options
                )
            except Exception as exc:
                self.failed = one_line(exc)
                logger.warning(
                    "vLLM cannot serve the adapter as a LoRA (%s); a merged copy instead", self.failed
                )
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _evaluate_with_vllm(
    model_path: str,
    adapter: str | os.PathLike[str] | None,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    show_progress: bool,
    vllm_options: dict[str, Any],
    reasoning: bool = False,
    shared: SharedVLLMEngine | None = None,
) -> EvalResult:
    """An arm through vLLM: on the shared engine (the base, or the run's adapter as a LoRA), on an engine
    of its own serving its adapter as a LoRA, or, where vLLM cannot serve it, on a merged copy."""
    from transformers import AutoConfig

    lora = adapter is not None and (Path(adapter) / "adapter_config.json").is_file()
    if (adapter is None and shared is None) or (adapter is not None and not lora):
        return _evaluate_merged_with_vllm(
            model_path, adapter, spec, rows, show_progress, vllm_options, reasoning
        )
    own = shared is None or (lora and str(adapter) not in shared.adapters)
    holder = SharedVLLMEngine(model_path, [adapter], vllm_options) if own else shared
    try:
        engine = holder.get()
        if engine is not None:
            engine.use_adapter(str(adapter) if lora else False)
            context = model_context(AutoConfig.from_pretrained(model_path))
            check_prompts_fit(spec, rows, holder.tokenizer, context, reasoning)
            result = evaluate_model(None, holder.tokenizer, spec, rows, engine=engine, reasoning=reasoning)
            result.served = "lora" if lora else None
            return result
    finally:
        if own:
            holder.close()
    result = _evaluate_merged_with_vllm(
        model_path, adapter, spec, rows, show_progress, vllm_options, reasoning
    )
    result.served = f"merged: {holder.failed}" if lora else None
    return result


def _vllm_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _evaluate_merged_with_vllm(
    model_path: str,
    adapter: str | os.PathLike[str] | None,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    show_progress: bool,
    vllm_options: dict[str, Any],
    reasoning: bool = False,
) -> EvalResult:
    """The base model, a full finetune, or base + adapter merged into a temporary copy, served by vLLM."""
    import tempfile

    from transformers import AutoConfig

    from selfguide_hf.engines import make_engine

    remove_stale_merged_copies()
    with tempfile.TemporaryDirectory(prefix=MERGED_PREFIX) as merged:
        Path(merged, OWNER_FILE).write_text(str(os.getpid()))
        path = model_path
        if adapter is not None:
            if (Path(adapter) / "adapter_config.json").is_file():
                model, tokenizer = load_for_evaluation(model_path, adapter)
                model.save_pretrained(merged)
                tokenizer.save_pretrained(merged)
                del model
                path = merged
            else:
                load_for_evaluation(
                    model_path, adapter
                )  # the same checks and errors as the transformers path
                path = str(adapter)
        tokenizer = _vllm_tokenizer(path)
        check_prompts_fit(spec, rows, tokenizer, model_context(AutoConfig.from_pretrained(path)), reasoning)
        options = dict(vllm_options)
        kind = options.pop("engine", "vllm")
        engine = make_engine(kind, path, tokenizer, show_progress=show_progress, **options)
        try:
            return evaluate_model(None, tokenizer, spec, rows, engine=engine, reasoning=reasoning)
        finally:
            engine.close()


def write_predictions(
    path: Path, rows: list[dict[str, Any]], predictions: list[str], raw_outputs: list[str] | None = None
) -> None:
    """Every eval row with the model's raw answer (and reasoned reply), so a score can be checked by eye."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
            record = {"input": row["input"], "references": row["output"], "prediction": prediction}
            if raw_outputs is not None:
                record["reasoned_reply"] = raw_outputs[i]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
