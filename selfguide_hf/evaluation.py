"""Scoring a model on a task: greedy answers to the task prompt, then the task's metric.

The few-shot baseline and the self-guided model are scored the same way,
through `prompts.render_task_prompt`, the exact prompt training used; only the
weights differ. Classification scores come with the majority-class rate,
because learning the answer format alone lifts a small model to about there.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.errors import UserError
from selfguide_hf.generation import SamplingParams, TransformersEngine
from selfguide_hf.metrics import load_metric
from selfguide_hf.prompts import (
    REASONING_MAX_NEW_TOKENS,
    extract_final_answer,
    render_task_prompt,
    stop_strings,
)
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)

DEFAULT_MAX_EVAL = 200  # rows a run scores (0 = all): the one declaration, read by settings
EVAL_SUBSET_SEED = 1234  # fixed, so the baseline and the tuned model see the same rows


class EvalDataError(UserError):
    """An eval file or split that cannot be scored; the message names file, row and field."""


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

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        data.pop("raw_outputs")
        return data


# ------------------------------------------------------------------- data
def load_eval_rows(
    spec: TaskSpec,
    eval_file: str | os.PathLike[str] | None = None,
    split: str = "test",
    max_eval: int | None = DEFAULT_MAX_EVAL,
) -> list[dict[str, Any]]:
    """Rows `{"input": str, "output": list[str]}` from a user file or a bundled split.

    With `max_eval`, a fixed random subset (the same every run) rather than the
    head of the file, which is often sorted by source or label.
    """
    if eval_file is not None:
        rows = read_eval_file(Path(eval_file), spec)
    else:
        from selfguide_hf.bundled import bundled_task_names, load_eval_split

        if spec.name not in bundled_task_names():
            raise EvalDataError(
                f"task {spec.name!r} is not bundled, so it has no built-in {split} split; "
                "pass an eval file (JSONL or CSV with 'input' and 'output')"
            )
        rows = [{"input": r["input"], "output": list(r["output"])} for r in load_eval_split(spec.name, split)]
    if max_eval is not None and 0 < max_eval < len(rows):
        import random

        picked = sorted(random.Random(EVAL_SUBSET_SEED).sample(range(len(rows)), max_eval))
        rows = [rows[i] for i in picked]
    return rows


def read_eval_file(path: Path, spec: TaskSpec) -> list[dict[str, Any]]:
    """Read and validate a JSONL or CSV eval file (`output` may be a list of references)."""
    if not path.is_file():
        raise EvalDataError(f"{path}: no such eval file")
    suffix = path.suffix.lower()
    try:
        raw_rows = _read_rows(path, suffix)
    except UnicodeDecodeError as exc:
        raise EvalDataError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8"
        ) from None
    rows = [_validate_row(path, lineno, row, spec) for lineno, row in raw_rows]
    if not rows:
        raise EvalDataError(f"{path}: no rows")
    return rows


def _read_rows(path: Path, suffix: str) -> list[tuple[int, Any]]:
    if suffix in (".jsonl", ".json"):
        raw_rows = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            missing = {"input", "output"} - set(reader.fieldnames or [])
            if missing:
                raise EvalDataError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
            raw_rows = [(i + 2, dict(row)) for i, row in enumerate(reader)]
    else:
        raise EvalDataError(f"{path}: unsupported eval file type {suffix!r}; use .jsonl or .csv")
    return raw_rows


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from exc
    return rows


def _validate_row(path: Path, lineno: int, row: Any, spec: TaskSpec) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    if not isinstance(row, dict):
        raise EvalDataError(f"{where}: expected an object with 'input' and 'output'")
    for column in ("input", "output"):
        if column not in row:
            raise EvalDataError(f"{where}: missing field '{column}'")
    text = row["input"]
    if not isinstance(text, str) or not text.strip():
        raise EvalDataError(f"{where}: field 'input' is empty or not a string")
    refs = row["output"]
    if isinstance(refs, str) and refs.startswith("[") and path.suffix.lower() in (".csv", ".tsv"):
        with contextlib.suppress(json.JSONDecodeError):  # a plain string starting with "["
            refs = json.loads(refs)
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
        raise EvalDataError(f"{where}: field 'output' must be a non-empty string or list of strings")
    if spec.is_classification:
        for ref in refs:
            if spec.canonical_label(ref) is None:
                raise EvalDataError(
                    f"{where}: field 'output': {ref!r} is not one of the task's labels {list(spec.labels or ())}"
                )
    return {"input": text, "output": [r.strip() for r in refs]}


def majority_class(rows: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    """The most common first reference and its share (%), the score of always answering it."""
    if not rows:
        return None, None
    counts = Counter(row["output"][0].strip().lower() for row in rows)
    label, count = counts.most_common(1)[0]
    return label, 100.0 * count / len(rows)


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
    scored = score_predictions(spec, predictions, [row["output"] for row in rows])
    result = EvalResult(
        task=spec.name,
        metric=spec.metric,
        score=float(scored[spec.metric]),
        num_examples=len(rows),
        predictions=predictions,
        row_scores=[float(x) for x in scored["scores"]],
        answered_with_reasoning=reasoning,
        raw_outputs=outputs if reasoning else None,
        no_answer_share=round(100.0 * predictions.count("") / len(rows), 2) if reasoning else None,
    )
    if spec.is_classification:
        result.majority_label, result.majority_rate = majority_class(rows)
        extracted = scored.get("extracted_predictions", predictions)
        result.prediction_counts = dict(Counter(str(p).strip().lower() for p in extracted).most_common(10))
    add_format_shares(result, spec, rows)
    logger.info("%s: %s = %.2f on %d rows", spec.name, spec.metric, result.score, len(rows))
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
        return
    copies = sum(_same_text(p, row["input"]) for p, row in zip(result.predictions, rows, strict=True))
    result.copy_share = round(100.0 * copies / n, 2)
    copied = score_predictions(spec, [row["input"] for row in rows], [row["output"] for row in rows])
    result.trivial_baseline = {"name": "copy-the-input", "score": round(float(copied[spec.metric]), 2)}


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
) -> EvalResult:
    """Load (base ± adapter) and score it on ``rows``: the one evaluation path of the package.

    ``engine`` "vllm" serves the same merged model through vLLM (an adapter is
    merged into the base and saved to a temporary folder first); ``reasoning``:
    see `evaluate_model`.
    """
    if engine == "vllm":
        return _evaluate_with_vllm(
            model_path, adapter, spec, rows, show_progress, vllm_options or {}, reasoning
        )
    model, tokenizer = load_for_evaluation(model_path, adapter)
    return evaluate_model(
        model, tokenizer, spec, rows, batch_size=batch_size, show_progress=show_progress, reasoning=reasoning
    )


def _evaluate_with_vllm(
    model_path: str,
    adapter: str | os.PathLike[str] | None,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    show_progress: bool,
    vllm_options: dict[str, Any],
    reasoning: bool = False,
) -> EvalResult:
    import tempfile

    from transformers import AutoConfig, AutoTokenizer

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
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        check_prompts_fit(spec, rows, tokenizer, model_context(AutoConfig.from_pretrained(path)), reasoning)
        engine = make_engine("vllm", path, tokenizer, show_progress=show_progress, **vllm_options)
        try:
            return evaluate_model(None, tokenizer, spec, rows, engine=engine, reasoning=reasoning)
        finally:
            engine.close()


MERGED_PREFIX = "selfguide-merged-"  # a merged base + adapter for vLLM, in the system temp folder
OWNER_FILE = "selfguide_owner.pid"  # the process that writes it: a copy whose process is gone is stale


def remove_stale_merged_copies(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove merged copies left by killed runs (~15 GB each for a 7B model); returns what was removed.

    A copy is stale when the process named in its owner file no longer runs, or when it has no
    owner file and is over an hour old (a copy being written right now always has one).
    """
    import shutil
    import tempfile
    import time

    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(MERGED_PREFIX + "*"):
        if not folder.is_dir():
            continue
        owner = folder / OWNER_FILE
        try:
            alive = owner.is_file() and _process_alive(int(owner.read_text().strip() or 0))
            stale = not alive and (owner.is_file() or time.time() - folder.stat().st_mtime > 3600)
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("removed %s, left by a run that was killed", folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


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
