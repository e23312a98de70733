"""Annotation of accepted inputs: n samples and a self-consistency vote, or the most likely label.

A mixin of the synthesis loop (`synthesis._Synthesis`): it reads the loop's
engine, tokenizer, config, filters and process state, and turns accepted
inputs into rows; kept apart so the loop file holds the rounds and this one
how an answer is chosen.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

from selfguide_hf.calibration import assign_balanced_labels, calibrate_label_scores, mean_columns, softmax
from selfguide_hf.distributed import generate_distributed, score_distributed
from selfguide_hf.filters import Verdict, apply_filters, self_consistency_vote
from selfguide_hf.funnel import ENGINE_FAILED, Funnel
from selfguide_hf.generation import FailedCompletion, SamplingParams
from selfguide_hf.prompts import (
    extract_final_answer,
    label_continuations,
    reasoning_target,
    render_completion,
    render_task_prompt,
    split_reasoning,
    stop_strings,
)

# Inputs carrying no content, to measure the label prior for calibration (Zhao et al. 2021).
CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "[MASK]", "")


def derive_seed(seed: int, round_index: int, purpose: str) -> int:
    """A seed for one purpose of one round, stable across runs and Python versions."""
    digest = hashlib.sha256(f"{seed}:{round_index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


DISAGREES = "annotation:disagrees_with_drawn_label"  # label_source "agree": the annotation named another


class AnnotationMixin:
    """`annotate` and `label_by_likelihood` for the synthesis loop."""

    # ----------------------------------------------------------- annotation
    def annotate(
        self, round_index: int, inputs: list[str], funnel: Funnel, drawn: list[str | None] | None = None
    ) -> dict[str, Any]:
        """Sampled answers voted into rows now; label log-likelihoods, labelled once all rounds are in.

        Returns ``{"rows": [...]}`` (vote) or ``{"scored": [{"input", "scores"}]}`` (likelihood);
        inputs without a trusted answer are counted in the funnel. ``drawn``: the label each input was
        written for, which ``label_source`` "condition" keeps as the row's label (nothing is annotated)
        and "agree" requires the annotation to match.
        """
        source = self.config.label_source
        drawn = list(drawn) if drawn is not None else [None] * len(inputs)
        if source == "condition":
            return {
                "rows": [self._row(t, d, round_index, 1.0, None) for t, d in zip(inputs, drawn)],
                "scored": [],
            }
        think = self.config.chain_of_thought and not self.by_likelihood
        prompts = [render_task_prompt(self.spec, text, self.tokenizer, think) for text in inputs]
        fits = [
            self.task_prompt_budget is None or self._count_tokens(p) <= self.task_prompt_budget
            for p in prompts
        ]
        for text, ok in zip(inputs, fits):
            if not ok:
                funnel.drop("annotation:too_long", example=text)
        inputs = [t for t, ok in zip(inputs, fits) if ok]
        prompts = [p for p, ok in zip(prompts, fits) if ok]
        drawn = [d for d, ok in zip(drawn, fits) if ok]
        if not inputs:
            return {"rows": [], "scored": []}
        if self.by_likelihood:
            scores = score_distributed(self.engine, prompts, self._choices(), self.state)
            scored = []
            for text, row, label in zip(inputs, scores, drawn):
                if all(math.isfinite(x) for x in row):
                    scored.append(
                        {"input": text, "scores": row, **({"drawn": label} if source == "agree" else {})}
                    )
                else:  # a step the engine could not run (--engine ray keeps failed rows)
                    funnel.drop(ENGINE_FAILED, example=text)
            return {"rows": [], "scored": scored}
        answers = self._annotate_by_vote(round_index, prompts, funnel)
        rows = []
        for text, answer, label in zip(inputs, answers, drawn):
            if answer is None:
                continue
            if source == "agree" and answer[0] != label:
                funnel.drop(DISAGREES, example=f"{text} -> {answer[0]} (written for {label})")
                continue
            rows.append(self._row(text, answer[0], round_index, answer[1], answer[2], answer[3]))
        return {"rows": rows, "scored": []}

    def _row(
        self,
        text: str,
        output: str,
        round_index: int,
        share: float,
        agreeing: int | None,
        reasoning: str = "",
    ) -> dict[str, Any]:
        """One synthetic row; with the "reasoning" target, prompt and completion are the reasoned ones."""
        if self.config.reasoning_target != "reasoning":
            reasoning = ""
        think = bool(reasoning)
        target = reasoning_target(reasoning, output) if think else output
        return {
            "prompt": render_task_prompt(self.spec, text, self.tokenizer, think),
            "completion": render_completion(self.spec, text, target, self.tokenizer, think),
            "input": text,
            "output": output,
            "round": round_index,
            "vote_share": round(float(share), 6),
            "num_agreeing": agreeing,
            "reasoning": reasoning,
        }

    def _annotate_by_vote(
        self, round_index: int, prompts: list[str], funnel: Funnel
    ) -> list[tuple[str, float, int | None, str] | None]:
        """(answer, vote share, agreeing samples, reasoning) per prompt, or None where no answer is trusted.

        With chain of thought every sample is a reasoned reply: its final answer
        is what the filters check and the vote counts, and the reasoning kept is
        that of the first sample giving the winning answer.
        """
        c = self.config
        think = c.chain_of_thought
        sampling = SamplingParams(
            max_new_tokens=c.reasoning_max_new_tokens if think else self.answer_budget,
            temperature=c.annotation_temperature,
            top_k=c.annotation_top_k,
            top_p=c.annotation_top_p,
            n=c.num_samples,
            stop=stop_strings(self.tokenizer),
            seed=derive_seed(c.seed, round_index, "annotation"),
        )
        samples = funnel.notes.setdefault("sample_drops", {})
        answers: list[tuple[str, float, int | None, str] | None] = []
        for outs in generate_distributed(self.engine, prompts, sampling, self.state):
            survivors, reasons = [], Counter()
            reasoning_of: dict[str, str] = {}
            for out in outs:
                answer = extract_final_answer(out) if think else out
                if isinstance(out, FailedCompletion):
                    verdict = Verdict(False, ENGINE_FAILED, out.reason)
                elif answer is None:
                    verdict = Verdict(False, "no_final_answer", out)
                elif (
                    not think
                    and self.answer_budget < c.annotation_max_new_tokens
                    and self._count_tokens(out) >= self.answer_budget - 1
                ):
                    verdict = Verdict(False, "truncated", out)  # cut at the length budget
                else:
                    verdict = apply_filters(answer, self.output_filters, self.output_ctx)
                if verdict.keep:
                    survivors.append(verdict.text)
                    if think:
                        reasoning_of.setdefault(verdict.text, split_reasoning(out))
                else:
                    reasons[verdict.reason] += 1
                    samples[verdict.reason] = samples.get(verdict.reason, 0) + 1
            if not survivors:
                # Name the input's drop after what happened to most of its samples.
                reason = reasons.most_common(1)[0][0]
                where = reason if reason == ENGINE_FAILED else f"annotation:{reason}"
                funnel.drop(where, example=getattr(outs[0], "reason", outs[0]))
                answers.append(None)
                continue
            winner, share, count = self_consistency_vote(survivors, c.min_frequency)
            if winner is None:
                funnel.drop("vote:min_frequency", example=" | ".join(survivors[:5]))
                answers.append(None)
            else:
                answers.append((winner, share, count, reasoning_of.get(winner, "")))
        return answers

    def _choices(self) -> list[str]:
        """Each label as the text that follows the task prompt (e.g. " E" in the plain format)."""
        if self._label_choices is None:
            self._label_choices = label_continuations(self.spec, self.tokenizer)
        return self._label_choices

    def _content_free_prior(self) -> list[float]:
        """Mean label probabilities on inputs with no content ("N/A", ...): Zhao et al. 2021."""
        if self._label_prior is None:
            prompts = [render_task_prompt(self.spec, text, self.tokenizer) for text in CONTENT_FREE_INPUTS]
            probs = [softmax(s) for s in score_distributed(self.engine, prompts, self._choices(), self.state)]
            self._label_prior = mean_columns(probs)
        return self._label_prior

    def label_by_likelihood(self, rounds: list[dict[str, Any]], funnel: Funnel) -> list[dict[str, Any]]:
        """The most likely label of every scored input, after calibration, as rows.

        ``batch`` calibration (Zhou et al. 2023) divides by the mean label
        probability over all generated inputs, so a label the model favours
        everywhere does not take every input; it needs all rounds, hence here.
        """
        scored = [(data["round"], item) for data in rounds for item in data.get("scored", [])]
        if not scored:
            return []
        method = self.config.label_calibration
        fixed_prior = self._content_free_prior() if method == "content_free" else None
        probs, prior = calibrate_label_scores([item["scores"] for _, item in scored], method, fixed_prior)
        if prior is not None:
            funnel.notes["label_prior"] = {label: round(q, 4) for label, q in zip(self.labels, prior)}
        if self.config.label_assignment == "balanced":
            choice = assign_balanced_labels(probs)
        else:
            choice = [max(range(len(row)), key=row.__getitem__) for row in probs]
        rows = []
        for (round_index, item), row, best in zip(scored, probs, choice):
            if row[best] < self.config.min_label_probability:
                funnel.drop("vote:low_confidence")
                continue
            if "drawn" in item and self.labels[best] != item["drawn"]:  # label_source "agree"
                funnel.drop(
                    DISAGREES, example=f"{item['input']} -> {self.labels[best]} (written for {item['drawn']})"
                )
                continue
            rows.append(self._row(item["input"], self.labels[best], round_index, row[best], None))
        return rows
