"""The evaluation stage of a run: which rows, do they fit, and each score cached under what it depends on.

A score is reused only when the base weights, the adapter (its identity and
files), the rows, the evaluation code, the batch size and the engine are all
unchanged; every answer is written beside it for inspection.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfguide_hf.fingerprints import hash_value, stage_sources_hash
from selfguide_hf.run_dir import check_adapter_base, file_digests, read_manifest, write_json_atomic

if TYPE_CHECKING:  # only the type; importing it would load the recipe arguments (TRL)
    from selfguide_hf.run import SelfGuideRun

EVAL_DIR = "eval"


def _say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------- evaluation
def eval_rows(run: SelfGuideRun) -> list[dict[str, Any]]:
    """The rows both models are scored on; read (and checked) before any stage runs."""
    from selfguide_hf.evaluation import load_eval_rows

    return load_eval_rows(
        run.spec, run.args.eval_file, split=run.args.eval_split, max_eval=run.args.eval_max_rows or None
    )


def check_rows_fit(run: SelfGuideRun, rows: list[dict[str, Any]]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from selfguide_hf.evaluation import check_prompts_fit, model_context

    tokenizer = AutoTokenizer.from_pretrained(run.model_path)
    check_prompts_fit(run.spec, rows, tokenizer, model_context(AutoConfig.from_pretrained(run.model_path)))


def evaluation_key(run: SelfGuideRun, rows: list[dict[str, Any]], adapter: Path | None) -> dict[str, Any]:
    """What a score depends on: base weights and tokenizer, adapter (identity and files), rows, code, batch."""
    key: dict[str, Any] = {
        "model": run.weights,
        "tokenizer": run.tokenizer,
        "task": run.spec.fingerprint(),
        "rows": hash_value(rows),
        "code": stage_sources_hash("evaluation"),
        "batch_size": run.args.eval_batch_size,
        "engine": run.engine,
        "adapter": None,
    }
    if adapter is not None:
        manifest = read_manifest(adapter) or {}
        key["adapter"] = {"identity": hash_value(manifest.get("identity")), "files": file_digests(adapter)}
    return key


def answers_with_reasoning(adapter: Path | None) -> bool:
    """Whether the adapter was trained to reason before its answer (then it is prompted and read so)."""
    if adapter is None:
        return False
    identity = (read_manifest(adapter) or {}).get("identity") or {}
    return bool(identity.get("answers_with_reasoning"))


def score(run: SelfGuideRun, rows: list[dict[str, Any]], adapter: Path | None, shared: Any = None) -> Any:
    """The base model (``adapter`` None) or the tuned one scored on ``rows`` with the run's engine."""
    from selfguide_hf.evaluation import evaluate_saved_model

    return evaluate_saved_model(
        run.model_path,
        adapter,
        run.spec,
        rows,
        batch_size=run.args.eval_batch_size,
        engine=run.engine,
        vllm_options=run.vllm_options or None,
        reasoning=answers_with_reasoning(adapter),
        shared=shared,
    )


def evaluate(
    run: SelfGuideRun, rows: list[dict[str, Any]], adapter: Path | None, name: str, shared: Any = None
) -> dict[str, Any]:
    """Score the base model (``adapter=None``) or the tuned one, reusing a finished score with the same key."""
    from selfguide_hf.evaluation import write_predictions

    started = time.perf_counter()
    path = run.run_dir / EVAL_DIR / f"{name}.json"
    key = evaluation_key(run, rows, adapter)
    result: dict[str, Any] | None = None
    saved = _saved(path)
    if saved.get("key") == key:
        _say(f"reusing the finished evaluation {path}")
        result = saved["result"]
    if result is None:
        scored = score(run, rows, adapter, shared)
        write_predictions(
            run.run_dir / EVAL_DIR / f"{name}.predictions.jsonl", rows, scored.predictions, scored.raw_outputs
        )
        result = scored.summary()
        write_json_atomic(path, {"key": key, "result": result})
    run.timings[f"{name.replace('_', '-')} evaluation"] = time.perf_counter() - started
    return result


def evaluate_in_context(
    run: SelfGuideRun, rows: list[dict[str, Any]], data: Any, shared: Any = None
) -> dict[str, Any]:
    """The base model with the k nearest synthetic pairs as its demonstrations, scored on ``rows`` (cached)."""
    from transformers import AutoConfig, AutoTokenizer

    from selfguide_hf.evaluation import model_context, write_predictions
    from selfguide_hf.in_context import score_in_context

    started = time.perf_counter()
    k = run.args.in_context_pairs
    path = run.run_dir / EVAL_DIR / "in_context.json"
    key = {
        **evaluation_key(run, rows, None),
        "arm": "in_context",
        "pairs": k,
        "synthetic_rows": data.fingerprint,
    }
    saved = _saved(path)
    if saved.get("key") == key:
        _say(f"reusing the finished evaluation {path}")
        return saved["result"]
    pairs = [{"input": r["input"], "output": r["output"]} for r in data.dataset]
    tokenizer = AutoTokenizer.from_pretrained(run.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = model_context(AutoConfig.from_pretrained(run.model_path))
    engine, own = (shared.get(), False) if shared is not None and shared.get() is not None else (None, True)
    if engine is not None:
        engine.use_adapter(False)
    else:
        from selfguide_hf.engines import make_engine

        engine = make_engine(
            run.engine, run.model_path, tokenizer, batch_size=run.args.eval_batch_size, **run.vllm_options
        )
    try:
        scored = score_in_context(engine, run.spec, rows, pairs, tokenizer, context, k)
    finally:
        if own and hasattr(engine, "close"):
            engine.close()
    write_predictions(run.run_dir / EVAL_DIR / "in_context.predictions.jsonl", rows, scored.predictions)
    result = scored.summary()
    write_json_atomic(path, {"key": key, "result": result})
    run.timings["in-context evaluation"] = time.perf_counter() - started
    return result


def _saved(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def shared_vllm(run: SelfGuideRun, draws: Sequence[SelfGuideRun] = ()) -> Iterator[Any]:
    """One vLLM engine for every arm when the run evaluates on vLLM and trained LoRA adapters (every
    draw's), else None."""
    from selfguide_hf.evaluation import SERVING_ENGINES, SharedVLLMEngine

    adapters = [r.output_dir for r in (run, *draws) if (r.output_dir / "adapter_config.json").is_file()]
    if run.engine not in SERVING_ENGINES or not adapters:
        yield None
        return
    shared = SharedVLLMEngine(run.model_path, adapters, {**run.vllm_options, "engine": run.engine})
    try:
        yield shared
    finally:
        shared.close()


# --------------------------------------------------------------------- all


# ----------------------------------------------------------------- evaluate
def evaluate_only(run: SelfGuideRun, adapter: Path | None, predictions: Path | None = None) -> Any:
    """`selfguide evaluate`: score the model, or the model with ``adapter``, on the run's rows (no cache)."""
    from selfguide_hf.evaluation import write_predictions

    rows = eval_rows(run)
    if adapter is not None:
        check_adapter_base(adapter, run.weights, run.args.model)
    result = score(run, rows, adapter)
    if predictions is not None:
        write_predictions(Path(predictions), rows, result.predictions)
    return result
