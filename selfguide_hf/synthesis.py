"""The SELF-GUIDE loop: the model writes task inputs, answers them, and rules keep the good pairs.

One round = ``prompts_per_round`` input-generation prompts (demonstration
inputs plus 1..10 inputs accepted in earlier rounds; for classification each
prompt names a uniformly drawn label), the input filters, annotation of the
accepted inputs (``num_samples`` samples and a self-consistency vote, or for
classification the most likely label), and the output filters. Each round is
checkpointed as a whole, so a killed run restarts after its last finished
round. After the last round, classes are balanced and every drop is counted
in a :class:`~selfguide_hf.funnel.Funnel`.

All randomness of round ``r`` derives from ``(seed, r)``, and every process of
an ``accelerate`` launch receives all generations, so a resumed run, an
uninterrupted run and each process of a multi-process run make the same rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from selfguide_hf.filters import (
    CHAT_PHRASES,
    FILTERS,
    FilterContext,
    Verdict,
    apply_filters,
    format_markers,
    leading_marker,
    length_window,
    normalize_text,
    self_consistency_vote,
)
from selfguide_hf.funnel import Funnel
from selfguide_hf.generation import GenerationEngine, SamplingParams, generate_distributed
from selfguide_hf.prompts import (
    input_generation_stop_strings,
    label_continuations,
    render_completion,
    render_input_generation_prompt,
    render_task_prompt,
    stop_strings,
)
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "SynthesisConfig",
    "SynthesisError",
    "SynthesisResult",
    "balance_classes",
    "synthesize",
]

ANNOTATION_METHODS = ("sample", "likelihood")
BALANCE_METHODS = ("downsample", "none")
CALIBRATION_METHODS = ("none", "batch", "balanced", "content_free")
ASSIGNMENT_METHODS = ("argmax", "balanced")
BALANCED_ITERATIONS = 100
# Inputs carrying no content, to measure the label prior for calibration (Zhao et al. 2021).
CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "[MASK]", "")
CHECKPOINT_VERSION = 3
# The input-generation prompt numbers its examples "Example N:"; writing one more means a run-on.
RUN_ON_EXAMPLE = "\nExample "
FILTER_FIELDS = (
    "input_filters_classification",
    "input_filters_generation",
    "output_filters_classification",
    "output_filters_generation",
)


class SynthesisError(RuntimeError):
    """Synthesis cannot produce data (everything filtered, prompts over budget); the message says why.

    ``funnel`` is the funnel when the error is that everything was filtered out.
    """

    def __init__(self, message: str, funnel: Funnel | None = None) -> None:
        super().__init__(message)
        self.funnel = funnel


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
    # --- input generation
    label_conditioned: bool = True  # classification prompts name a uniformly drawn label
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
        for name in ("prompts_per_round", "input_max_new_tokens", "max_prompt_tokens", "num_samples"):
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
        for name in ("min_frequency", "min_label_probability"):
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
        if self.classification_annotation == "sample":
            _check(
                "label" in self.output_filters_classification,
                "output_filters_classification",
                "a list including 'label' when classification_annotation='sample'",
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
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

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


# ====================================================================== results
@dataclass
class SynthesisResult:
    """The kept rows (SFT-ready, with provenance) and the funnel of everything dropped."""

    rows: list[dict[str, Any]]
    funnel: Funnel
    rounds_generated: int = 0
    rounds_reused: int = 0


ROW_COLUMNS = ("prompt", "completion", "input", "output", "round", "vote_share", "num_agreeing")


# ================================================================ multi-process
class _SingleProcess:
    """Stands in for ``accelerate.PartialState`` when there is one process."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        return None


def process_state() -> Any:
    """The accelerate state under a multi-process launch, else a single-process stand-in."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState()
    return _SingleProcess()


def score_distributed(
    engine: GenerationEngine, prompts: list[str], choices: list[str], state: Any
) -> list[list[float]]:
    """``engine.score_choices`` with the prompts split over processes; every process gets all scores."""
    if state.num_processes <= 1 or not prompts:
        return engine.score_choices(list(prompts), list(choices))
    from accelerate.utils import gather_object

    with state.split_between_processes(list(enumerate(prompts))) as shard:
        shard = list(shard)
        local = engine.score_choices([p for _, p in shard], list(choices)) if shard else []
        pairs = [(i, s) for (i, _), s in zip(shard, local)]
    ordered = sorted(gather_object(pairs), key=lambda pair: pair[0])
    if [i for i, _ in ordered] != list(range(len(prompts))):
        raise RuntimeError("gathered label scores do not cover the prompts exactly once")
    return [s for _, s in ordered]


# ================================================================== checkpoints
class RoundCheckpoints:
    """One JSON file per finished round in ``directory``, each written atomically.

    A file exists only once its round is complete (write to a temporary file,
    fsync, rename), so a run killed at any moment leaves only whole rounds.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, fingerprint: str, is_writer: bool = True):
        self.directory = Path(directory) if directory is not None else None
        self.fingerprint = fingerprint
        self.is_writer = is_writer

    def path(self, round_index: int) -> Path:
        assert self.directory is not None
        return self.directory / f"round_{round_index:05d}.json"

    def load(self, num_rounds: int) -> list[dict[str, Any]]:
        """The finished rounds 0..k-1 (stops at the first missing or unreadable one)."""
        if self.directory is None:
            return []
        rounds = []
        for r in range(num_rounds):
            path = self.path(r)
            if not path.is_file():
                break
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                logger.warning(
                    "ignoring unreadable checkpoint %s (%s); regenerating from round %d", path, exc, r
                )
                break
            if data.get("fingerprint") != self.fingerprint or data.get("version") != CHECKPOINT_VERSION:
                logger.warning(
                    "checkpoint %s belongs to another configuration; regenerating from round %d", path, r
                )
                break
            rounds.append(data)
        return rounds

    def save(self, round_index: int, data: dict[str, Any]) -> None:
        if self.directory is None or not self.is_writer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint, **data}
        fd, tmp = tempfile.mkstemp(prefix=".round-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(round_index))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ==================================================================== the loop
def derive_seed(seed: int, round_index: int, purpose: str) -> int:
    """A seed for one purpose of one round, stable across runs and Python versions."""
    digest = hashlib.sha256(f"{seed}:{round_index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _Synthesis:
    """State of one synthesis run; `run()` drives the rounds."""

    def __init__(
        self,
        spec: TaskSpec,
        engine: GenerationEngine | Callable[[], GenerationEngine],
        tokenizer: Any,
        config: SynthesisConfig,
        checkpoints: RoundCheckpoints,
        state: Any,
        context_length: int | None,
        show_progress: bool,
    ) -> None:
        self.spec = spec
        self._engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self.checkpoints = checkpoints
        self.state = state
        self.show_progress = show_progress
        self.is_cls = spec.is_classification
        self.labels = tuple(spec.labels or ())
        self.num_rounds = math.ceil(config.num_inputs / config.prompts_per_round)
        budget = config.max_prompt_tokens
        if context_length:
            budget = min(budget, context_length - config.input_max_new_tokens)
        self.input_prompt_budget = budget
        self.task_prompt_budget = (
            (context_length - config.annotation_max_new_tokens) if context_length else None
        )
        self.pool: list[str] = []
        self.seen: set[str] = {normalize_text(d.input) for d in spec.demonstrations}
        chat = CHAT_PHRASES if config.chat_phrases else ()
        noise = tuple(spec.noise_strings)
        demo_in = [len(d.input) for d in spec.demonstrations]
        demo_out = [len(d.output) for d in spec.demonstrations]
        window = (config.length_sigmas, config.length_min_sigma_ratio)
        markers = format_markers(d.input for d in spec.demonstrations)
        self.input_ctx = FilterContext(
            length_window(demo_in, *window), noise, chat, self.seen, self.labels, markers
        )
        self.output_ctx = FilterContext(
            length_window(demo_out, *window), noise, chat, frozenset(), self.labels
        )
        demo_inputs = [d.input for d in spec.demonstrations]
        self.input_budget = config.input_max_new_tokens
        self.answer_budget = config.annotation_max_new_tokens
        if config.length_budget:
            if "length" in self.input_filters and self.input_ctx.length_window:
                cap = length_token_cap(demo_inputs, self.input_ctx.length_window[1], tokenizer)
                self.input_budget = min(self.input_budget, cap)
            if "length" in self.output_filters and self.output_ctx.length_window:
                demo_outputs = [d.output for d in spec.demonstrations]
                cap = length_token_cap(demo_outputs, self.output_ctx.length_window[1], tokenizer)
                self.answer_budget = min(self.answer_budget, cap)
        self.input_prefix = leading_marker(demo_inputs) if config.prime_inputs else ""
        self.input_stops = list(input_generation_stop_strings(tokenizer))
        if config.stop_run_on:
            self.input_stops.append(RUN_ON_EXAMPLE)
            if not any("\n\n" in text for text in demo_inputs):
                self.input_stops.append("\n\n")
        self._label_choices: list[str] | None = None
        self._label_prior: list[float] | None = None

    # ------------------------------------------------------------ plumbing
    @property
    def engine(self) -> GenerationEngine:
        if not isinstance(self._engine, GenerationEngine):
            self._engine = self._engine()  # built on first use: a fully resumed run never loads the model
        return self._engine

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def input_filters(self) -> tuple[str, ...]:
        c = self.config
        return c.input_filters_classification if self.is_cls else c.input_filters_generation

    @property
    def output_filters(self) -> tuple[str, ...]:
        c = self.config
        return c.output_filters_classification if self.is_cls else c.output_filters_generation

    @property
    def by_likelihood(self) -> bool:
        return self.is_cls and self.config.classification_annotation == "likelihood"

    # ------------------------------------------------------------- checks
    def check_demonstrations_fit(self) -> None:
        """Fail before any generation when the demonstrations alone overflow a prompt budget."""
        demos = [d.input for d in self.spec.demonstrations]
        label = max(self.labels, key=len) if self.is_cls and self.config.label_conditioned else None
        prompt = render_input_generation_prompt(self.spec, demos, self.tokenizer, label) + self.input_prefix
        used = self._count_tokens(prompt)
        if used > self.input_prompt_budget:
            raise SynthesisError(
                f"task {self.spec.name}: the input-generation prompt with the demonstrations alone is "
                f"{used} tokens, over the budget of {self.input_prompt_budget} (max_prompt_tokens="
                f"{self.config.max_prompt_tokens}, minus input_max_new_tokens for the model's context); "
                "use fewer or shorter demonstrations, or a model with a longer context"
            )
        if self.task_prompt_budget is not None:
            used = self._count_tokens(render_task_prompt(self.spec, demos[0], self.tokenizer))
            if used > self.task_prompt_budget:
                raise SynthesisError(
                    f"task {self.spec.name}: the task prompt (instruction + demonstrations) is {used} tokens, "
                    f"over the model's context minus annotation_max_new_tokens ({self.task_prompt_budget}); "
                    "use fewer or shorter demonstrations, or a model with a longer context"
                )

    # ----------------------------------------------------- input generation
    def input_prompts(self, round_index: int, count: int) -> list[str]:
        rng = random.Random(f"{self.config.seed}:{round_index}:prompts")
        return [self._one_input_prompt(rng) for _ in range(count)]

    def _one_input_prompt(self, rng: random.Random) -> str:
        label = rng.choice(self.labels) if self.is_cls and self.config.label_conditioned else None
        limit = min(self.config.max_pool_examples, len(self.pool))
        for _ in range(self.config.max_prompt_retries + 1 if limit else 0):
            examples = self._examples(rng, rng.randint(1, limit))
            prompt = render_input_generation_prompt(self.spec, examples, self.tokenizer, label)
            if self._count_tokens(prompt) <= self.input_prompt_budget:
                return prompt + self.input_prefix
        # Every draw overflowed (or the pool is empty): the demonstrations alone, checked to fit up front.
        examples = self._examples(rng, 0)
        return render_input_generation_prompt(self.spec, examples, self.tokenizer, label) + self.input_prefix

    def _examples(self, rng: random.Random, pool_count: int) -> list[str]:
        """The demonstration inputs and ``pool_count`` accepted inputs, shuffled if configured."""
        examples = [d.input for d in self.spec.demonstrations] + rng.sample(self.pool, pool_count)
        if self.config.shuffle_examples:
            rng.shuffle(examples)
        return examples

    def generate_inputs(self, round_index: int, prompts: list[str]) -> list[str]:
        c = self.config
        temperature = c.input_temperature_classification if self.is_cls else c.input_temperature_generation
        sampling = SamplingParams(
            max_new_tokens=self.input_budget,
            temperature=temperature,
            top_k=c.input_top_k,
            top_p=c.input_top_p,
            n=1,
            stop=self.input_stops,
            seed=derive_seed(c.seed, round_index, "inputs"),
        )
        outputs = generate_distributed(self.engine, prompts, sampling, self.state)
        return [self.input_prefix + outs[0] if outs and outs[0] else "" for outs in outputs]

    def filter_inputs(self, texts: list[str], funnel: Funnel) -> list[str]:
        accepted = []
        for text in texts:
            if self.config.drop_truncated and self._count_tokens(text) >= self.input_budget - 1:
                funnel.drop("input:truncated", example=text)
                continue
            verdict = apply_filters(text, self.input_filters, self.input_ctx)
            if not verdict.keep:
                funnel.drop(f"input:{verdict.reason}", example=verdict.text)
                continue
            self.seen.add(normalize_text(verdict.text))
            accepted.append(verdict.text)
        return accepted

    # ----------------------------------------------------------- annotation
    def annotate(self, round_index: int, inputs: list[str], funnel: Funnel) -> dict[str, Any]:
        """Sampled answers voted into rows now; label log-likelihoods, labelled once all rounds are in.

        Returns ``{"rows": [...]}`` (vote) or ``{"scored": [{"input", "scores"}]}`` (likelihood);
        inputs without a trusted answer are counted in the funnel.
        """
        prompts = [render_task_prompt(self.spec, text, self.tokenizer) for text in inputs]
        fits = [
            self.task_prompt_budget is None or self._count_tokens(p) <= self.task_prompt_budget
            for p in prompts
        ]
        for text, ok in zip(inputs, fits):
            if not ok:
                funnel.drop("annotation:too_long", example=text)
        inputs = [t for t, ok in zip(inputs, fits) if ok]
        prompts = [p for p, ok in zip(prompts, fits) if ok]
        if not inputs:
            return {"rows": [], "scored": []}
        if self.by_likelihood:
            scores = score_distributed(self.engine, prompts, self._choices(), self.state)
            return {"rows": [], "scored": [{"input": t, "scores": s} for t, s in zip(inputs, scores)]}
        answers = self._annotate_by_vote(round_index, prompts, funnel)
        rows = [
            self._row(text, answer[0], round_index, answer[1], answer[2])
            for text, answer in zip(inputs, answers)
            if answer is not None
        ]
        return {"rows": rows, "scored": []}

    def _row(
        self, text: str, output: str, round_index: int, share: float, agreeing: int | None
    ) -> dict[str, Any]:
        return {
            "prompt": render_task_prompt(self.spec, text, self.tokenizer),
            "completion": render_completion(self.spec, text, output, self.tokenizer),
            "input": text,
            "output": output,
            "round": round_index,
            "vote_share": round(float(share), 6),
            "num_agreeing": agreeing,
        }

    def _annotate_by_vote(
        self, round_index: int, prompts: list[str], funnel: Funnel
    ) -> list[tuple[str, float, int | None] | None]:
        c = self.config
        sampling = SamplingParams(
            max_new_tokens=self.answer_budget,
            temperature=c.annotation_temperature,
            top_k=c.annotation_top_k,
            top_p=c.annotation_top_p,
            n=c.num_samples,
            stop=stop_strings(self.tokenizer),
            seed=derive_seed(c.seed, round_index, "annotation"),
        )
        samples = funnel.notes.setdefault("sample_drops", {})
        answers: list[tuple[str, float, int | None] | None] = []
        for outs in generate_distributed(self.engine, prompts, sampling, self.state):
            survivors, reasons = [], Counter()
            for out in outs:
                if (
                    self.answer_budget < c.annotation_max_new_tokens
                    and self._count_tokens(out) >= self.answer_budget - 1
                ):
                    verdict = Verdict(False, "truncated", out)  # cut at the length budget
                else:
                    verdict = apply_filters(out, self.output_filters, self.output_ctx)
                if verdict.keep:
                    survivors.append(verdict.text)
                else:
                    reasons[verdict.reason] += 1
                    samples[verdict.reason] = samples.get(verdict.reason, 0) + 1
            if not survivors:
                # Name the input's drop after what happened to most of its samples.
                funnel.drop(f"annotation:{reasons.most_common(1)[0][0]}", example=outs[0])
                answers.append(None)
                continue
            winner, share, count = self_consistency_vote(survivors, c.min_frequency)
            if winner is None:
                funnel.drop("vote:min_frequency", example=" | ".join(survivors[:5]))
                answers.append(None)
            else:
                answers.append((winner, share, count))
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
            probs = [
                _softmax(s) for s in score_distributed(self.engine, prompts, self._choices(), self.state)
            ]
            self._label_prior = _mean_columns(probs)
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
            rows.append(self._row(item["input"], self.labels[best], round_index, row[best], None))
        return rows

    # ---------------------------------------------------------------- rounds
    def run_round(self, round_index: int) -> dict[str, Any]:
        c = self.config
        count = min(c.prompts_per_round, c.num_inputs - round_index * c.prompts_per_round)
        funnel = Funnel(raw=count)
        prompts = self.input_prompts(round_index, count)
        generated = self.generate_inputs(round_index, prompts)
        accepted = self.filter_inputs(generated, funnel)
        self.pool.extend(accepted)
        annotated = self.annotate(round_index, accepted, funnel)
        return {
            "round": round_index,
            "accepted_inputs": accepted,
            **annotated,
            "funnel": funnel.to_dict(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        for text in data["accepted_inputs"]:
            self.pool.append(text)
            self.seen.add(normalize_text(text))

    def run(self) -> SynthesisResult:
        self.check_demonstrations_fit()
        done = self.checkpoints.load(self.num_rounds)
        if done:
            logger.info(
                "resuming %s: rounds 0-%d of %d loaded from %s",
                self.spec.name,
                len(done) - 1,
                self.num_rounds,
                self.checkpoints.directory,
            )
        for data in done:
            self.restore(data)
        rounds = list(done)
        bar = tqdm(
            total=self.num_rounds,
            initial=len(done),
            desc=f"self-guide {self.spec.name}",
            unit="round",
            disable=not self.show_progress,
        )
        with bar:
            for r in range(len(done), self.num_rounds):
                logger.info("generating round %d of %d", r, self.num_rounds)
                data = self.run_round(r)
                self.checkpoints.save(r, data)
                rounds.append(data)
                bar.set_postfix(
                    pool=len(self.pool), annotated=sum(len(d["rows"]) + len(d["scored"]) for d in rounds)
                )
                bar.update(1)
        return self.finish(rounds, reused=len(done))

    def finish(self, rounds: list[dict[str, Any]], reused: int) -> SynthesisResult:
        funnel = Funnel(task=self.spec.name)
        samples: Counter[str] = Counter()
        for data in rounds:
            part = data["funnel"]
            funnel.merge(Funnel.from_dict(part))
            samples.update(part.get("notes", {}).get("sample_drops", {}))
        rows = [row for data in rounds for row in data["rows"]]
        if self.by_likelihood:
            rows = self.label_by_likelihood(rounds, funnel)
        if self.is_cls:
            before = Counter(row["output"] for row in rows)
            funnel.notes["classes_before_balance"] = {label: before.get(label, 0) for label in self.labels}
            rows = balance_classes(rows, self.config.balance, derive_seed(self.config.seed, -1, "balance"))
            funnel.drop("balance", sum(before.values()) - len(rows))
            after = Counter(row["output"] for row in rows)
            funnel.classes = {label: after.get(label, 0) for label in self.labels}
            missing = [label for label in self.labels if not before.get(label)]
            if missing and rows:
                logger.warning(
                    "task %s: no synthetic example of label(s) %s; balancing ignores them",
                    self.spec.name,
                    missing,
                )
        funnel.kept = len(rows)
        if samples:
            funnel.notes["sample_drops"] = dict(samples)
        funnel.notes.update(
            rounds=self.num_rounds,
            rounds_reused=reused,
            pool_size=len(self.pool),
            annotation="likelihood" if self.by_likelihood else f"vote over {self.config.num_samples} samples",
        )
        if funnel.raw - funnel.total_dropped != funnel.kept:
            raise RuntimeError(f"funnel does not add up: {funnel.to_dict()}")
        if not rows:
            raise SynthesisError(
                f"task {self.spec.name}: every generation was filtered out, no synthetic data is left.\n"
                f"{funnel.format_table()}\n"
                "Try more inputs (num_inputs), the 'default' preset, or a relaxed filter "
                "(e.g. length_min_sigma_ratio, min_frequency, classification_annotation='likelihood').",
                funnel,
            )
        return SynthesisResult(rows, funnel, rounds_generated=len(rounds) - reused, rounds_reused=reused)


def length_token_cap(texts: Sequence[str], high_chars: int, tokenizer: Any, margin: float = 1.5) -> int:
    """New tokens past which a text can no longer pass a length filter of ``high_chars`` characters.

    Tokens vary in width, so the cap assumes the narrowest characters-per-token
    of the reference ``texts`` and adds ``margin``: a text cut here would have
    been dropped by the length filter anyway, and none it would keep is cut.
    """
    widths = [
        len(t) / n for t in texts if t and (n := len(tokenizer(t, add_special_tokens=False)["input_ids"]))
    ]
    chars_per_token = min(widths) if widths else 1.0
    return math.ceil(margin * high_chars / max(chars_per_token, 1.0)) + 8


def calibrate_label_scores(
    scores: Sequence[Sequence[float]], method: str, fixed_prior: Sequence[float] | None = None
) -> tuple[list[list[float]], list[float] | None]:
    """Label probabilities of every input after dividing out a label prior, and that prior.

    ``scores`` are label log-likelihoods, one row per input. ``batch`` divides by
    the mean probability over these inputs, ``balanced`` by the prior that
    spreads them evenly over the labels, ``content_free`` by ``fixed_prior``
    (computed by the caller), ``none`` by nothing.
    """
    probs = [_softmax(row) for row in scores]
    if method == "none":
        return probs, None
    if method == "batch":
        prior = _mean_columns(probs)
    elif method == "balanced":
        prior = balanced_prior(probs)
    elif method == "content_free" and fixed_prior is not None:
        prior = list(fixed_prior)
    else:
        raise ValueError(f"label_calibration: unknown method {method!r} or missing prior")
    return [_normalize([p / max(q, 1e-12) for p, q in zip(row, prior)]) for row in probs], prior


def assign_balanced_labels(probs: Sequence[Sequence[float]]) -> list[int]:
    """A label per input with class sizes as equal as possible, each input where it fits best.

    Pairs (input, label) are taken in order of probability, best first; a label
    stops taking inputs at its quota (ceil(n / labels)). Balancing downsamples
    every class to the smallest one, so with plain argmax a skewed split
    (task190: 5 / 24 / 19) throws most inputs away; here each class gets the
    inputs that are most its own and nearly nothing is dropped.
    """
    if not probs:
        return []
    quota = math.ceil(len(probs) / len(probs[0]))
    pairs = sorted(
        ((p, i, j) for i, row in enumerate(probs) for j, p in enumerate(row)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    choice: list[int] = [-1] * len(probs)
    taken = [0] * len(probs[0])
    for _, i, j in pairs:
        if choice[i] < 0 and taken[j] < quota:
            choice[i] = j
            taken[j] += 1
    return choice  # the quotas add up to at least n, so every input has a label


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return _normalize(exps)


def balanced_prior(probs: Sequence[Sequence[float]], iterations: int = BALANCED_ITERATIONS) -> list[float]:
    """The label prior that, divided out, gives every label the same total probability.

    Batch calibration divides by the mean probability once; repeating it
    (Sinkhorn scaling) converges to the prior under which the inputs spread
    evenly over the labels, so downsampling to the smallest class keeps most.
    """
    prior = [1.0] * len(probs[0])
    for _ in range(iterations):
        scaled = [_normalize([p / max(q, 1e-12) for p, q in zip(row, prior)]) for row in probs]
        mass = _mean_columns(scaled)
        prior = [q * m * len(prior) for q, m in zip(prior, mass)]
    return _normalize(prior)


def _mean_columns(rows: Sequence[Sequence[float]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*rows)]


def _normalize(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values] if total > 0 else [1.0 / len(values)] * len(values)


def balance_classes(rows: list[dict[str, Any]], method: str, seed: int) -> list[dict[str, Any]]:
    """Downsample every class present to the size of the smallest (seeded); keep row order."""
    if method == "none" or not rows:
        return list(rows)
    by_class: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_class.setdefault(row["output"], []).append(i)
    smallest = min(len(ix) for ix in by_class.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted(by_class):
        keep.update(rng.sample(by_class[label], smallest))
    return [row for i, row in enumerate(rows) if i in keep]


def synthesize(
    spec: TaskSpec,
    engine: GenerationEngine | Callable[[], GenerationEngine],
    tokenizer: Any,
    config: SynthesisConfig | None = None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    state: Any = None,
    context_length: int | None = None,
    show_progress: bool = True,
    key: str = "",
) -> SynthesisResult:
    """Run SELF-GUIDE for ``spec`` and return the kept rows with the funnel.

    ``engine`` may be a factory, called only if some round must be generated.
    With ``work_dir`` each finished round is checkpointed there and reused by a
    later call with the same task, config, tokenizer and ``key`` (pass the model's
    weights fingerprint: checkpoints of other weights are not reused). ``context_length`` (the
    model's) bounds prompt sizes. Raises :class:`SynthesisError` when nothing is
    kept, with the funnel in the message.
    """
    config = config or SynthesisConfig.preset("default")
    state = state or process_state()
    fingerprint = hashlib.sha256(
        f"{spec.fingerprint()}:{config.fingerprint()}:{getattr(tokenizer, 'name_or_path', '')}:{key}".encode()
    ).hexdigest()[:16]
    checkpoints = RoundCheckpoints(work_dir, fingerprint, is_writer=state.is_main_process)
    run = _Synthesis(spec, engine, tokenizer, config, checkpoints, state, context_length, show_progress)
    return run.run()
