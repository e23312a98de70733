"""The third arm: the base model prompted with synthetic pairs as demonstrations instead of finetuned on them.

The SELF-GUIDE paper compares the two uses of the self-generated data; without this arm a
report cannot say whether finetuning was worth it. For each eval row, the ``k`` synthetic
pairs whose inputs are nearest to the row's input by BM25 replace the spec's
demonstrations in the same task prompt (``k`` lowered until prompt and answer fit the
model's context); the answers are scored as the other arms are, on the same rows.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from selfguide_hf.evaluation import EvalResult, answer_budget, scored_result
from selfguide_hf.generation import SamplingParams
from selfguide_hf.prompts import render_task_prompt, stop_strings
from selfguide_hf.task import Demonstration, TaskSpec

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_IN_CONTEXT_PAIRS", "in_context_prompts", "nearest_pairs", "score_in_context"]

DEFAULT_IN_CONTEXT_PAIRS = 8


def nearest_pairs(pairs: list[dict[str, str]], queries: list[str], k: int) -> list[list[int]]:
    """For each query, the indices of the ``k`` pairs whose inputs share its rarest words (BM25), best first."""
    import bm25s

    if not pairs or k <= 0:
        return [[] for _ in queries]
    k = min(k, len(pairs))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([p["input"] for p in pairs], stopwords="en", show_progress=False), show_progress=False
    )
    found, _ = retriever.retrieve(
        bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k, show_progress=False
    )
    return [[int(i) for i in row] for row in found]


def in_context_prompts(
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    pairs: list[dict[str, str]],
    tokenizer: Any,
    context: int | None,
    k: int = DEFAULT_IN_CONTEXT_PAIRS,
) -> tuple[list[str], list[int]]:
    """Each row's task prompt with its nearest synthetic pairs as demonstrations, and how many fit."""
    budget = answer_budget(spec, tokenizer)
    nearest = nearest_pairs(pairs, [row["input"] for row in rows], k)
    prompts, used = [], []
    for row, picked in zip(rows, nearest, strict=True):
        for count in range(len(picked), -1, -1):  # fewer pairs until the prompt and the answer fit
            demos = tuple(Demonstration(pairs[i]["input"], pairs[i]["output"]) for i in picked[:count])
            prompt = render_task_prompt(
                dataclasses.replace(spec, demonstrations=demos or spec.demonstrations),
                row["input"],
                tokenizer,
            )
            if (
                context is None
                or len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + budget <= context
            ):
                break
        prompts.append(prompt)
        used.append(count)
    return prompts, used


def score_in_context(
    engine: Any,
    spec: TaskSpec,
    rows: list[dict[str, Any]],
    pairs: list[dict[str, str]],
    tokenizer: Any,
    context: int | None,
    k: int = DEFAULT_IN_CONTEXT_PAIRS,
) -> EvalResult:
    """Greedy answers of the base model with synthetic pairs in context, scored on ``rows``."""
    prompts, used = in_context_prompts(spec, rows, pairs, tokenizer, context, k)
    sampling = SamplingParams(
        max_new_tokens=answer_budget(spec, tokenizer), temperature=0.0, n=1, stop=stop_strings(tokenizer)
    )
    predictions = [samples[0] for samples in engine.generate(prompts, sampling)]
    result = scored_result(spec, rows, predictions)
    result.served = f"{sum(used) / max(len(used), 1):.1f} synthetic pairs in context on average (k={k})"
    logger.info("%s in context: %s = %.2f on %d rows", spec.name, spec.metric, result.score, len(rows))
    return result
