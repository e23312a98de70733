"""Every parameter of the SELF-GUIDE loop, and the named presets (``default``, ``paper``).

Kept apart from the loop so the builder, the CLI and the recipe can validate a
configuration (and key caches on it) without importing the model code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from selfguide_hf.corpus import DEFAULT_EMBEDDING_MODEL, RETRIEVERS
from selfguide_hf.filters import FILTERS
from selfguide_hf.prompts import REASONING_MAX_NEW_TOKENS

__all__ = ["PRESETS", "SynthesisConfig"]

ANNOTATION_METHODS = ("sample", "likelihood")
LABEL_SOURCES = ("judge", "condition", "agree")
CORPUS_MODES = ("inputs", "rewrite")
# Keys that change nothing without a corpus (or with BM25): left out of the identity then, so that
# adding them did not invalidate every cached dataset made without one.
_CORPUS_ONLY = ("corpus_retriever", "corpus_embedding_model")
BALANCE_METHODS = ("downsample", "none")
CALIBRATION_METHODS = ("none", "batch", "balanced", "content_free")
ASSIGNMENT_METHODS = ("argmax", "balanced")
REASONING_TARGETS = ("answer", "reasoning")
FILTER_FIELDS = (
    "input_filters_classification",
    "input_filters_generation",
    "output_filters_classification",
    "output_filters_generation",
)


@dataclass
class SynthesisConfig:
    """Every parameter of the SELF-GUIDE loop. ``SynthesisConfig.preset("paper")`` is the paper's run.

    Field groups: run size, input generation, filters, annotation, balancing.
    Filter lists name functions registered in :mod:`selfguide_hf.filters` and
    run in the order given.
    """

    # --- run size and reproducibility
    num_inputs: int = 100  # raw inputs to generate; rounds = ceil(num_inputs / prompts_per_round)
    seed: int = 0
    prompts_per_round: int = 10
    # --- inputs from a corpus instead of the model's imagination (ReBase): see selfguide_hf/corpus.py
    corpus: str | None = None  # a file or saved folder of unlabeled texts; None: the model writes every input
    corpus_field: str = "text"
    corpus_mode: str = (
        "inputs"  # "inputs": retrieved texts are the inputs; "rewrite": the model rewrites each
    )
    corpus_retriever: str = "bm25"  # "bm25" (words) or "embeddings" (meaning; sentence-transformers)
    corpus_embedding_model: str = DEFAULT_EMBEDDING_MODEL  # for "embeddings"
    # --- input generation
    label_conditioned: bool = True  # classification prompts name a uniformly drawn label
    # whose label a classification row gets: "judge" (the model's annotation), "condition" (the label the
    # input was written for; no annotation), "agree" (kept only when the annotation agrees with it)
    label_source: str = "judge"
    max_pool_examples: int = 10  # each prompt shows 1..this many accepted inputs from earlier rounds
    input_temperature_classification: float = 0.7
    input_temperature_generation: float = 0.9
    input_top_k: int | None = 40
    input_top_p: float | None = None
    input_max_new_tokens: int = 500
    max_prompt_tokens: int = 3000
    max_prompt_retries: int = 10  # redraws of the pool sample before falling back to demonstrations only
    drop_truncated: bool = False  # drop inputs that used up input_max_new_tokens (cut mid-text)
    prime_inputs: bool = False  # start the reply with the marker all demonstration inputs start with
    stop_run_on: bool = False  # end an input where another "Example N:" starts, or a blank line none has
    shuffle_examples: bool = False  # show demonstrations and pool inputs in a random order
    length_budget: bool = False  # stop generating where a text could no longer pass the length filter
    # --- filters
    input_filters_classification: tuple[str, ...] = ("empty", "length", "noise", "duplicate")
    input_filters_generation: tuple[str, ...] = ("empty", "noise", "duplicate")
    output_filters_classification: tuple[str, ...] = ("empty", "noise", "label")
    output_filters_generation: tuple[str, ...] = ("empty", "noise", "length")
    length_sigmas: float = 2.0  # window mu ± k·sigma over the demonstrations' character lengths
    length_min_sigma_ratio: float = 0.0  # floor sigma at this fraction of mu (few demonstrations)
    chat_phrases: bool = True  # the noise filter also drops canned chat replies
    novelty_threshold: float = 0.7  # "novelty" filter: drop above this ROUGE-L F1 with an accepted input
    # --- annotation
    classification_annotation: str = "sample"  # "sample" + vote, or "likelihood" (most likely label)
    num_samples: int = 10
    annotation_temperature: float = 0.2
    annotation_top_k: int | None = 10
    annotation_top_p: float | None = None
    annotation_max_new_tokens: int = 500
    min_frequency: float = 0.3  # the vote's winner needs this share of the surviving samples
    label_calibration: str = "none"  # likelihood: "balanced", "batch" or "content_free" prior
    label_assignment: str = "argmax"  # likelihood: each input's top label, or "balanced" equal class sizes

    min_label_probability: float = 0.0  # likelihood: drop when the chosen label is less likely than this
    # chain of thought (ReBase): each sample reasons, then ends in an "Answer:" line; the vote is over those
    # answers (classification too: it then samples whatever classification_annotation says)
    chain_of_thought: bool = False
    reasoning_target: str = "answer"  # train on the "answer" alone, or on the "reasoning" and the answer
    reasoning_max_new_tokens: int = REASONING_MAX_NEW_TOKENS  # new tokens for a reasoned answer
    # --- balancing
    balance: str = "downsample"  # "downsample" every class to the smallest one, or "none"

    def __post_init__(self) -> None:
        for name in FILTER_FIELDS:  # lists from YAML or kwargs: tuples, so configs compare and hash alike
            setattr(self, name, tuple(getattr(self, name)))
        self.validate()

    # ------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        _check(
            _is_int(self.num_inputs) and self.num_inputs >= 1,
            "num_inputs",
            "an integer >= 1",
            self.num_inputs,
        )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        for name in (
            "prompts_per_round",
            "input_max_new_tokens",
            "max_prompt_tokens",
            "num_samples",
            "reasoning_max_new_tokens",
        ):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, "an integer >= 1", value)
        for name in ("max_pool_examples", "max_prompt_retries"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, name, "an integer >= 0", value)
        _check(
            _is_int(self.annotation_max_new_tokens) and self.annotation_max_new_tokens >= 1,
            "annotation_max_new_tokens",
            "an integer >= 1",
            self.annotation_max_new_tokens,
        )
        for name in (
            "input_temperature_classification",
            "input_temperature_generation",
            "annotation_temperature",
            "length_sigmas",
            "length_min_sigma_ratio",
        ):
            value = getattr(self, name)
            _check(_is_number(value) and value >= 0, name, "a number >= 0", value)
        for name in ("min_frequency", "min_label_probability", "novelty_threshold"):
            value = getattr(self, name)
            _check(_is_number(value) and 0 <= value <= 1, name, "a number in [0, 1]", value)
        for name in FILTER_FIELDS:
            for filter_name in getattr(self, name):
                _check(filter_name in FILTERS, name, f"filter names from {sorted(FILTERS)}", filter_name)
        _check(
            self.classification_annotation in ANNOTATION_METHODS,
            "classification_annotation",
            f"one of {list(ANNOTATION_METHODS)}",
            self.classification_annotation,
        )
        _check(
            self.label_assignment in ASSIGNMENT_METHODS,
            "label_assignment",
            f"one of {list(ASSIGNMENT_METHODS)}",
            self.label_assignment,
        )
        _check(
            self.label_calibration in CALIBRATION_METHODS,
            "label_calibration",
            f"one of {list(CALIBRATION_METHODS)}",
            self.label_calibration,
        )
        _check(self.balance in BALANCE_METHODS, "balance", f"one of {list(BALANCE_METHODS)}", self.balance)
        _check(
            self.label_source in LABEL_SOURCES,
            "label_source",
            f"one of {list(LABEL_SOURCES)}",
            self.label_source,
        )
        _check(
            self.label_source == "judge" or (self.label_conditioned is True and not self.corpus),
            "label_source",
            "judge unless each input is written for a drawn label (label_conditioned true, no corpus)",
            self.label_source,
        )
        _check(
            isinstance(self.chain_of_thought, bool),
            "chain_of_thought",
            "true or false",
            self.chain_of_thought,
        )
        _check(
            self.reasoning_target in REASONING_TARGETS,
            "reasoning_target",
            f"one of {list(REASONING_TARGETS)}",
            self.reasoning_target,
        )
        _check(
            self.reasoning_target == "answer" or self.chain_of_thought,
            "reasoning_target",
            "'answer' unless chain_of_thought is true (there is no reasoning to train on)",
            self.reasoning_target,
        )
        _check(
            self.corpus_mode in CORPUS_MODES, "corpus_mode", f"one of {list(CORPUS_MODES)}", self.corpus_mode
        )
        _check(
            self.corpus_retriever in RETRIEVERS,
            "corpus_retriever",
            f"one of {sorted(RETRIEVERS)}",
            self.corpus_retriever,
        )
        _check(
            isinstance(self.corpus_embedding_model, str) and bool(self.corpus_embedding_model.strip()),
            "corpus_embedding_model",
            "a sentence-transformers model id or folder",
            self.corpus_embedding_model,
        )
        _check(
            self.corpus is None or (isinstance(self.corpus, str) and bool(self.corpus)),
            "corpus",
            "a file or folder path, or None",
            self.corpus,
        )
        if self.classification_annotation == "sample" or self.chain_of_thought:
            _check(
                "label" in self.output_filters_classification,
                "output_filters_classification",
                "a list including 'label' when classification answers are sampled "
                "(classification_annotation='sample' or chain_of_thought)",
                self.output_filters_classification,
            )

    # ------------------------------------------------------------ presets
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> SynthesisConfig:
        """A named preset (``default`` or ``paper``) with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown synthesis preset {name!r}; known presets: {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown synthesis parameter(s) {unknown}; known parameters: {cls.field_names()}"
            )
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter that changes the rows (the corpus retriever's only with a corpus)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.label_source == "judge":
            out.pop("label_source")  # the behaviour before the setting existed: earlier caches stay valid
        if not self.corpus:
            for key in _CORPUS_ONLY:
                out.pop(key)
        elif self.corpus_retriever == "bm25":
            out.pop("corpus_embedding_model")
        return out

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PRESETS: dict[str, SynthesisConfig] = {}


def _register_presets() -> None:
    # The paper's parameters, unchanged (arXiv 2407.12874 and its code).
    PRESETS["paper"] = SynthesisConfig()
    # What works on small models (see docs/SYNTHESIS.md for the measurements):
    # - the ±2σ length window over 2-3 demonstrations is a few characters wide, so
    #   sigma is floored at half the mean length (window [0, 2·mu));
    # - classification inputs are annotated with the most likely label under the
    #   task prompt, calibrated by the label prior under which all generated
    #   inputs spread evenly over the labels ("balanced", iterated batch
    #   calibration), so every annotation is a valid label and the label the
    #   model favours everywhere does not take them all (balancing would then
    #   throw most of them away);
    # - the reply to an input-generation prompt is started with the field marker
    #   every demonstration input starts with ("claim: ", "Premise: "), and ends at
    #   a blank line when no demonstration has one: a 135M model otherwise answers
    #   with chat ("I'm ready to help!") or runs on into commentary;
    # - generated inputs lose a leading "Example 3:" / "Here is a new input:" line
    #   ("unwrap") and must carry the field markers every demonstration input has
    #   ("format": "claim:", "Premise:"), which rejects chat replies before they
    #   enter the pool and get copied by later rounds;
    # - inputs and answers are capped at 256 new tokens, and inputs that hit the cap
    #   are dropped rather than kept cut in the middle.
    PRESETS["default"] = SynthesisConfig(
        input_max_new_tokens=256,
        drop_truncated=True,
        prime_inputs=True,
        stop_run_on=True,
        shuffle_examples=True,
        length_budget=True,
        input_filters_classification=("unwrap", "empty", "length", "noise", "format", "duplicate"),
        input_filters_generation=("unwrap", "empty", "noise", "format", "duplicate"),
        length_min_sigma_ratio=0.5,
        classification_annotation="likelihood",
        label_calibration="balanced",
        label_assignment="balanced",
        annotation_max_new_tokens=256,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"synthesis parameter {name!r} must be {expected}, got {value!r}")


_register_presets()
