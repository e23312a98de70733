"""Text generation behind one small strings-in / strings-out interface.

Every stage that needs the model talks to a :class:`GenerationEngine` (here, vLLM's, Ray's):
prompts arrive rendered by ``prompts.py``; an engine only turns strings into completions.

:class:`TransformersEngine` is the reference implementation on plain
``transformers``. Its two cost savers matter on small hardware:

* prompts are sorted by length and decoded in left-padded batches, with stop
  strings ending rows early (the paper's code always ran to 500 tokens);
* ``n`` samples of one prompt share a single prefill: the prompt's KV cache is
  computed once and repeated ``n`` times, instead of ``num_return_sequences``
  re-encoding the same ~300-token prompt ``n`` times.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

__all__ = [
    "FailedCompletion",
    "GenerationEngine",
    "SamplingParams",
    "TransformersEngine",
    "cut_at_stop",
]


@dataclass
class SamplingParams:
    """How to sample completions; engine-neutral so every backend reads the same fields.

    ``temperature == 0`` means greedy decoding (then ``top_k``/``top_p`` are
    ignored and the ``n`` completions are identical). ``top_k``/``top_p`` of
    ``None`` disable that filter. ``stop`` strings end a completion and are cut
    from it. ``seed`` makes sampling reproducible per call.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise ValueError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}"
            )
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None (no top-k filter), got {self.top_k!r}")
        if self.top_p is not None and (
            isinstance(self.top_p, bool)
            or not isinstance(self.top_p, (int, float))
            or not 0 < self.top_p <= 1
        ):
            raise ValueError(f"top_p must be in (0, 1] or None (no nucleus filter), got {self.top_p!r}")
        if not _is_int(self.n) or self.n < 1:
            raise ValueError(f"n (samples per prompt) must be an integer >= 1, got {self.n!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, (list, tuple)):
            raise ValueError(f"stop must be a list of strings, got {type(self.stop).__name__}")
        self.stop = list(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic (temperature 0)."""
        return self.temperature == 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@runtime_checkable
class GenerationEngine(Protocol):
    """What the pipeline needs from a model: strings in, strings or scores out."""

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        """Return ``sampling.n`` completions per prompt, in input order.

        Completions have special tokens removed, are cut before the first stop
        string, and are whitespace-stripped.
        """
        ...

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Return, per prompt, the total log-likelihood of each choice as its continuation."""
        ...


class FailedCompletion(str):
    """A completion the engine could not make (empty text); ``reason`` says why. Counted, never kept."""

    def __new__(cls, reason: str) -> FailedCompletion:
        (made := super().__new__(cls, "")).reason = reason
        return made

    def __reduce__(self) -> tuple[Any, ...]:  # gathered across processes: keep the reason
        return (FailedCompletion, (self.reason,))


def eos_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the model's generation config and the tokenizer's (chat models differ).

    ``generation_config`` may be a `GenerationConfig`, a model folder, or None.
    """
    if isinstance(generation_config, (str, os.PathLike)):
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(generation_config)
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            generation_config = None
    ids: list[int] = []
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) not in ids:
                ids.append(int(v))
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer defines an EOS token")
    return ids


def decode_completion(tokenizer: Any, tokens: list[int], stop: Sequence[str], eos_ids: Sequence[int]) -> str:
    """A completion's text, the same for every engine: cut at EOS, no special tokens, cut at stop, stripped."""
    for j, t in enumerate(tokens):
        if t in eos_ids:
            tokens = tokens[:j]
            break
    text = tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return cut_at_stop(text, stop).strip()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` before the earliest occurrence of any stop string.

    Generation stops on the token that completes a stop string, and that token
    may carry text beyond it, so the cut is always redone on the decoded text.
    """
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if 0 <= pos < cut:
            cut = pos
    return text[:cut]


class TransformersEngine:
    """A :class:`GenerationEngine` over a ``transformers`` causal LM and its tokenizer.

    ``batch_size`` bounds the number of sequences decoded together (prompts
    times samples), which is what bounds memory: with ``n=10`` and
    ``batch_size=8`` one prompt is decoded at a time. ``share_prefill=False``
    falls back to ``num_return_sequences`` (kept for benchmarks and checks).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        show_progress: bool = True,
        share_prefill: bool = True,
    ) -> None:
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.share_prefill = share_prefill
        model.eval()
        self.pad_token_id = self._pad_token_id()
        self.eos_token_ids = self._eos_token_ids()
        self._forward_params = set(inspect.signature(model.forward).parameters)
        self._stop_cache: dict[tuple[str, ...], Any] = {}

    # ------------------------------------------------------------------ public API

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        """Sample ``sampling.n`` completions for every prompt (see :class:`GenerationEngine`)."""
        prompts = _check_prompts(prompts)
        if not prompts:
            return []
        encoded = self._encode(prompts)
        # Greedy samples are all the same: decode once and copy.
        rows_per_prompt = 1 if sampling.greedy else sampling.n
        per_batch = max(1, self.batch_size // rows_per_prompt)
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[list[str]] = [[] for _ in prompts]
        with (
            torch.inference_mode(),
            _seeded(sampling.seed, self.device),
            tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not self.show_progress) as bar,
        ):
            for start in range(0, len(order), per_batch):
                batch = order[start : start + per_batch]
                completions = self._generate_batch([encoded[i] for i in batch], sampling, rows_per_prompt)
                for i, texts in zip(batch, completions):
                    results[i] = texts * (sampling.n // rows_per_prompt)
                bar.update(len(batch))
        return results

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Total log-likelihood of each choice as the continuation of each prompt.

        Prompt and choice are tokenized jointly (so the choice is scored as the
        model would actually write it after the prompt). Where the joint
        tokenization merges the end of the prompt with the start of the choice,
        the merged token counts as part of the choice. The prompt's KV cache is
        computed once and shared by all choices.
        """
        prompts = _check_scoring_inputs(prompts, choices)
        if not prompts:
            return []
        prompt_ids = self._encode(prompts)
        joint_ids = self._encode([p + c for p in prompts for c in choices])
        n_choices = len(choices)
        items = []  # per prompt: (context, [(remainder, first scored index in remainder)])
        for i, p_ids in enumerate(prompt_ids):
            rows = joint_ids[i * n_choices : (i + 1) * n_choices]
            starts = [_common_prefix_len(p_ids, f) for f in rows]
            if min(starts) == 0:
                raise ValueError(
                    f"prompt {i} merges entirely into a choice when tokenized together; "
                    "cannot score a choice without a preceding token"
                )
            shared = min(starts) - 1  # the last shared token is fed with the choices, to predict them
            context = rows[0][:shared]
            items.append((context, [(f[shared:], k - shared) for f, k in zip(rows, starts)]))

        per_batch = max(1, self.batch_size // n_choices)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
        scores: list[list[float]] = [[] for _ in prompts]
        with (
            torch.inference_mode(),
            tqdm(total=len(prompts), desc="score", unit="prompt", disable=not self.show_progress) as bar,
        ):
            for start in range(0, len(order), per_batch):
                batch = order[start : start + per_batch]
                batch_scores = self._score_batch([items[i] for i in batch], n_choices)
                for i, s in zip(batch, batch_scores):
                    scores[i] = s
                bar.update(len(batch))
        return scores

    # ------------------------------------------------------------------ internals

    @property
    def device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        return device if isinstance(device, torch.device) else next(self.model.parameters()).device

    def _pad_token_id(self) -> int:
        """Padding id: the tokenizer's, else EOS (padding is masked, so the id only needs to exist)."""
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        if pad is None:
            pad = getattr(self.model.generation_config, "pad_token_id", None)
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.eos_token")
        return int(pad)

    def _eos_token_ids(self) -> list[int]:
        return eos_token_ids(self.model.generation_config, self.tokenizer)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids without added specials: rendered prompts already carry BOS etc. from the template."""
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for text, row in zip(texts, ids):
            if not row:
                raise ValueError(f"prompt tokenizes to nothing: {text!r}")
        return [list(row) for row in ids]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _generation_config(self, sampling: SamplingParams) -> Any:
        """A full config, so model defaults (e.g. a hub top_k=50) never leak into sampling."""
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "num_beams": 1,
            "repetition_penalty": 1.0,
        }
        if sampling.greedy:
            return GenerationConfig(do_sample=False, temperature=1.0, top_k=50, top_p=1.0, **common)
        return GenerationConfig(
            do_sample=True,
            temperature=float(sampling.temperature),
            top_k=sampling.top_k or 0,
            top_p=1.0 if sampling.top_p is None else float(sampling.top_p),
            **common,
        )

    def _stop_criteria(self, stop: Sequence[str]) -> Any:
        """transformers' stop-string criterion, built once per stop list.

        Passing ``stop_strings`` to ``generate`` rebuilds it from the whole
        vocabulary on every call (~0.35 s for a 49k vocabulary), once per batch.
        """
        from transformers import StoppingCriteriaList, StopStringCriteria

        key = tuple(stop)
        if key not in self._stop_cache:
            self._stop_cache[key] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(key))])
        return self._stop_cache[key]

    def _can_share_prefill(self, width: int, rows_per_prompt: int) -> bool:
        """The shared prefill needs a decoder-only model that decodes with a plain ``DynamicCache``."""
        supports = getattr(type(self.model), "_supports_default_dynamic_cache", None)
        return (
            self.share_prefill
            and rows_per_prompt > 1
            and width >= 2
            and not getattr(self.model.config, "is_encoder_decoder", False)
            and getattr(self.model.generation_config, "cache_implementation", None) in (None, "dynamic")
            and (supports is None or supports())
        )

    def _generate_batch(
        self, rows: list[list[int]], sampling: SamplingParams, rows_per_prompt: int
    ) -> list[list[str]]:
        input_ids, attention_mask = self._left_pad(rows)
        width = input_ids.shape[1]
        config = self._generation_config(sampling)
        extra: dict[str, Any] = {}
        if sampling.stop:
            extra["stopping_criteria"] = self._stop_criteria(sampling.stop)
        if self._can_share_prefill(width, rows_per_prompt):
            cache = self._prefill(input_ids[:, :-1], attention_mask[:, :-1])
            cache.batch_repeat_interleave(rows_per_prompt)
            # generate() sees a cache covering all but the last prompt token and
            # only runs that one token before decoding.
            output = self.model.generate(
                input_ids=input_ids.repeat_interleave(rows_per_prompt, dim=0),
                attention_mask=attention_mask.repeat_interleave(rows_per_prompt, dim=0),
                past_key_values=cache,
                generation_config=config,
                **extra,
            )
        else:
            config.num_return_sequences = rows_per_prompt
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra
            )
        texts = [self._decode(row[width:].tolist(), sampling.stop) for row in output]
        return [texts[i : i + rows_per_prompt] for i in range(0, len(texts), rows_per_prompt)]

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """Run the (left-padded) prompts once and return their KV cache.

        Position ids follow ``generate``'s own rule (cumulative mask) so the
        cached keys are exactly those ``generate`` would have computed.
        """
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {}
        if "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = 1  # only the cache is needed, skip the vocabulary projection
        self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        return cache

    def _decode(self, tokens: list[int], stop: Sequence[str]) -> str:
        return decode_completion(self.tokenizer, tokens, stop, self.eos_token_ids)

    def _score_batch(
        self, items: list[tuple[list[int], list[tuple[list[int], int]]]], n_choices: int
    ) -> list[list[float]]:
        """Score the choices of a few prompts: one pass over the contexts, one over all remainders."""
        device = self.device
        past = None
        context_lens = torch.tensor([len(ctx) for ctx, _ in items], dtype=torch.long, device=device)
        context_mask = torch.zeros((len(items), 0), dtype=torch.long, device=device)
        if int(context_lens.max()) > 0:
            ctx_ids, context_mask = self._left_pad([ctx or [self.pad_token_id] for ctx, _ in items])
            # an empty context is all padding
            context_mask = context_mask * (context_lens > 0).long().unsqueeze(1)
            past = self._prefill(ctx_ids, context_mask)
            past.batch_repeat_interleave(n_choices)
            context_mask = context_mask.repeat_interleave(n_choices, dim=0)

        remainders = [rem for _, choice_rows in items for rem, _ in choice_rows]
        width = max(len(r) for r in remainders)
        rem_ids = torch.full((len(remainders), width), self.pad_token_id, dtype=torch.long)
        rem_mask = torch.zeros((len(remainders), width), dtype=torch.long)
        for i, r in enumerate(remainders):
            rem_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            rem_mask[i, : len(r)] = 1
        rem_ids, rem_mask = rem_ids.to(device), rem_mask.to(device)
        offsets = context_lens.repeat_interleave(n_choices).unsqueeze(1)
        positions = offsets + torch.arange(width, device=device)
        kwargs: dict[str, Any] = {"past_key_values": past, "use_cache": past is not None}
        logits = self.model(
            input_ids=rem_ids,
            attention_mask=torch.cat([context_mask, rem_mask], dim=1),
            position_ids=positions,
            **kwargs,
        ).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logprobs = logprobs.gather(-1, rem_ids[:, 1:].unsqueeze(-1)).squeeze(-1)

        out: list[list[float]] = []
        row = 0
        for _, choice_rows in items:
            scores = []
            for rem, first in choice_rows:
                # token j of the remainder is predicted at position j - 1
                scores.append(float(token_logprobs[row, first - 1 : len(rem) - 1].sum()))
                row += 1
            out.append(scores)
        return out


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    prompts = list(prompts)
    for p in prompts:
        if not isinstance(p, str) or not p:
            raise ValueError(f"prompts must be non-empty strings, got {p!r}")
    return prompts


def _check_scoring_inputs(prompts: list[str], choices: list[str]) -> list[str]:
    prompts = _check_prompts(prompts)
    if isinstance(choices, str) or not choices:
        raise ValueError("choices must be a non-empty list of strings")
    for c in choices:
        if not isinstance(c, str) or not c:
            raise ValueError(f"choices must be non-empty strings, got {c!r}")
    return prompts


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    k = 0
    for x, y in zip(a, b):
        if x != y:
            break
        k += 1
    return k


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch for one call and restore the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
