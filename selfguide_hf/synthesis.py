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

import hashlib
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from selfguide_hf.annotation import AnnotationMixin, derive_seed
from selfguide_hf.calibration import (
    balance_classes,
)
from selfguide_hf.checkpoints import RoundCheckpoints
from selfguide_hf.corpus import corpus_fingerprint, load_corpus, rank_corpus
from selfguide_hf.distributed import generate_distributed, on_main_process, process_state
from selfguide_hf.engines import close_engine
from selfguide_hf.errors import StageError
from selfguide_hf.filters import (
    CHAT_PHRASES,
    FilterContext,
    NoveltyIndex,
    apply_filters,
    format_markers,
    leading_marker,
    length_window,
    normalize_answer,
)
from selfguide_hf.funnel import ENGINE_FAILED, Funnel
from selfguide_hf.generation import FailedCompletion, GenerationEngine, SamplingParams
from selfguide_hf.prompts import (
    input_generation_stop_strings,
    render_input_generation_prompt,
    render_rewrite_prompt,
    render_task_prompt,
)
from selfguide_hf.synthesis_config import PRESETS, SynthesisConfig
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "SynthesisConfig", "SynthesisError", "SynthesisResult", "synthesize"]

RUN_ON_EXAMPLE = "\nExample "


class SynthesisError(StageError):
    """Synthesis cannot produce data (everything filtered, prompts over budget); the message says why.

    ``funnel`` is the funnel when the error is that everything was filtered out.
    """

    def __init__(self, message: str, funnel: Funnel | None = None) -> None:
        super().__init__(message)
        self.funnel = funnel


# ====================================================================== results
@dataclass
class SynthesisResult:
    """The kept rows (SFT-ready, with provenance) and the funnel of everything dropped."""

    rows: list[dict[str, Any]]
    funnel: Funnel
    rounds_generated: int = 0
    rounds_reused: int = 0


ROW_COLUMNS = ("prompt", "completion", "input", "output", "round", "vote_share", "num_agreeing", "reasoning")


# ==================================================================== the loop
class _Synthesis(AnnotationMixin):
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
        self.corpus_rows: list[str] | None = None
        raw_inputs = config.num_inputs
        if config.corpus:
            self.corpus_rows = on_main_process(state, self._retrieve)  # not once per rank
            raw_inputs = len(self.corpus_rows)  # a corpus smaller than num_inputs gives what it has
        self.raw_inputs = raw_inputs
        self.num_rounds = math.ceil(raw_inputs / config.prompts_per_round)
        budget = config.max_prompt_tokens
        if context_length:
            budget = min(budget, context_length - config.input_max_new_tokens)
        self.input_prompt_budget = budget
        self.task_prompt_budget = (
            (context_length - config.annotation_max_new_tokens) if context_length else None
        )
        self.pool: list[str] = []
        self.seen: set[str] = {normalize_answer(d.input) for d in spec.demonstrations}
        chat = CHAT_PHRASES if config.chat_phrases else ()
        noise = tuple(spec.noise_strings)
        demo_in = [len(d.input) for d in spec.demonstrations]
        demo_out = [len(d.output) for d in spec.demonstrations]
        window = (config.length_sigmas, config.length_min_sigma_ratio)
        markers = format_markers(d.input for d in spec.demonstrations)
        novelty = None
        if "novelty" in (
            config.input_filters_classification if self.is_cls else config.input_filters_generation
        ):
            novelty = NoveltyIndex(d.input for d in spec.demonstrations)
        self.input_ctx = FilterContext(
            length_window(demo_in, *window),
            noise,
            chat,
            self.seen,
            self.labels,
            markers,
            novelty,
            config.novelty_threshold,
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
        c = self.config
        return self.is_cls and c.classification_annotation == "likelihood" and not c.chain_of_thought

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
        """The round's input-generation prompts; ``self.drawn_labels``: the label each was written for."""
        rng = random.Random(f"{self.config.seed}:{round_index}:prompts")
        self.drawn_labels, prompts = [], []
        for _ in range(count):  # one rng, label then examples, prompt by prompt
            label = rng.choice(self.labels) if self.is_cls and self.config.label_conditioned else None
            self.drawn_labels.append(label)
            prompts.append(self._one_input_prompt(rng, label))
        return prompts

    def _one_input_prompt(self, rng: random.Random, label: str | None) -> str:
        limit = min(self.config.max_pool_examples, len(self.pool))
        for _ in range(self.config.max_prompt_retries + 1 if limit else 0):
            examples = self._examples(rng, rng.randint(1, limit))
            prompt = render_input_generation_prompt(self.spec, examples, self.tokenizer, label)
            if self._count_tokens(prompt) <= self.input_prompt_budget:
                return prompt + self.input_prefix
        # Every draw overflowed (or the pool is empty): the demonstrations alone, checked to fit up front.
        examples = self._examples(rng, 0)
        return render_input_generation_prompt(self.spec, examples, self.tokenizer, label) + self.input_prefix

    def rewrite_prompts(self, round_index: int, sources: list[str]) -> list[str]:
        """ReBase: the model turns each retrieved text into one input in the demonstrations' format."""
        rng = random.Random(f"{self.config.seed}:{round_index}:rewrite")
        prompts = []
        for source in sources:
            limit = min(self.config.max_pool_examples, len(self.pool))
            examples = self._examples(rng, rng.randint(1, limit) if limit else 0)
            prompt = render_rewrite_prompt(self.spec, examples, source, self.tokenizer)
            if (
                self._count_tokens(prompt) > self.input_prompt_budget
            ):  # a long source: the demonstrations alone
                prompt = render_rewrite_prompt(self.spec, self._examples(rng, 0), source, self.tokenizer)
            prompts.append(prompt + self.input_prefix)
        return prompts

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
        return [
            outs[0]
            if isinstance(outs[0], FailedCompletion)
            else self.input_prefix + outs[0]
            if outs[0]
            else ""
            for outs in outputs
        ]

    def filter_inputs(self, texts: list[str], funnel: Funnel) -> list[str]:
        """The inputs the filters keep; ``self.accepted_index``: the position of each in ``texts``."""
        accepted = []
        self.accepted_index: list[int] = []
        for index, text in enumerate(texts):
            if isinstance(text, FailedCompletion):  # the engine failed on this row (--engine ray)
                funnel.drop(ENGINE_FAILED, example=text.reason)
                continue
            if self.config.drop_truncated and self._count_tokens(text) >= self.input_budget - 1:
                funnel.drop("input:truncated", example=text)
                continue
            verdict = apply_filters(text, self.input_filters, self.input_ctx)
            if not verdict.keep:
                funnel.drop(f"input:{verdict.reason}", example=verdict.text)
                continue
            self._remember(verdict.text)
            accepted.append(verdict.text)
            self.accepted_index.append(index)
        return accepted

    # ---------------------------------------------------------------- rounds
    def run_round(self, round_index: int) -> dict[str, Any]:
        c = self.config
        first = round_index * c.prompts_per_round
        count = min(c.prompts_per_round, self.raw_inputs - first)
        funnel = Funnel(raw=count)
        self.drawn_labels = [None] * count
        if self.corpus_rows is not None and c.corpus_mode == "inputs":
            generated = self.corpus_rows[first : first + count]  # retrieved texts are the inputs
        else:
            if self.corpus_rows is not None:  # rewrite: one prompt per retrieved text
                prompts = self.rewrite_prompts(round_index, self.corpus_rows[first : first + count])
            else:
                prompts = self.input_prompts(round_index, count)
            generated = self.generate_inputs(round_index, prompts)
        accepted = self.filter_inputs(generated, funnel)
        self.pool.extend(accepted)
        drawn = [self.drawn_labels[i] for i in self.accepted_index]
        annotated = self.annotate(round_index, accepted, funnel, drawn)
        return {
            "round": round_index,
            "accepted_inputs": accepted,
            **annotated,
            "funnel": funnel.to_dict(),
        }

    def _remember(self, text: str) -> None:
        """An accepted input: later ones may not repeat it (duplicate) or resemble it too closely (novelty)."""
        self.seen.add(normalize_answer(text))
        if self.input_ctx.novelty is not None:
            self.input_ctx.novelty.add(text)

    def restore(self, data: dict[str, Any]) -> None:
        for text in data["accepted_inputs"]:
            self.pool.append(text)
            self._remember(text)

    def _retrieve(self) -> list[str]:
        """The ``num_inputs`` corpus rows most relevant to the task, best first."""
        config = self.config
        texts = load_corpus(config.corpus, config.corpus_field)
        order = rank_corpus(texts, self.spec, config.corpus_retriever, config.corpus_embedding_model)
        return [texts[i] for i in order][: config.num_inputs]

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
        if self.by_likelihood:  # labelled now that every round is in (label_source "condition": already)
            rows += self.label_by_likelihood(rounds, funnel)
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
            annotation="none: the label each input was written for (label_source condition)"
            if self.config.label_source == "condition"
            else "likelihood"
            if self.by_likelihood
            else f"vote over {self.config.num_samples} samples"
            + (" (chain of thought)" if self.config.chain_of_thought else ""),
        )
        if self.corpus_rows is not None:
            funnel.notes["corpus"] = {
                "name": os.path.basename(self.config.corpus or ""),
                "fingerprint": corpus_fingerprint(self.config.corpus),
                "mode": self.config.corpus_mode,
                "retriever": self.config.corpus_retriever
                + (
                    f" ({self.config.corpus_embedding_model})"
                    if self.config.corpus_retriever == "embeddings"
                    else ""
                ),
                "rows_used": len(self.corpus_rows),
            }
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
    try:
        return run.run()
    finally:
        if not isinstance(engine, GenerationEngine) and isinstance(run._engine, GenerationEngine):
            close_engine(run._engine)  # built here from the factory: free it (a vLLM core is a process)
