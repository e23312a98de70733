"""Small pure keep/drop rules for generated text, and a registry to name them from a config.

Each filter takes the text and a :class:`FilterContext` (everything it may look
at: the length window, noise strings, texts already seen, labels) and returns a
:class:`Verdict`. None of them touches a model, so the rules stay testable on
plain strings and a config can list them by name (``input_filters=("empty",
"length", "noise", "duplicate")``). The order of a list is the order the paper
applies them in, and the first drop wins so each dropped text has one reason.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from selfguide_hf.labels import map_label, normalize_answer
from selfguide_hf.registry import Registry

__all__ = [
    "CHAT_PHRASES",
    "FILTERS",
    "FilterContext",
    "NoveltyIndex",
    "Verdict",
    "apply_filters",
    "format_markers",
    "get_filter",
    "leading_marker",
    "length_window",
    "map_label",
    "normalize_answer",
    "register_filter",
    "rouge_l_f1",
    "self_consistency_vote",
]

# Canned chat replies: the model answered the prompt instead of writing task text.
CHAT_PHRASES: tuple[str, ...] = (
    "sure, i'd be happy to help",
    "sure! here",
    "sure, here",
    "of course!",
    "certainly!",
    "i'd be happy to",
    "i would be happy to",
    "as an ai",
    "i'm sorry, but",
    "i apologize",
    "i hope this helps",
    "here is a new input",
    "here's a new input",
    "i'm ready to",
    "i'm here to help",
    "how can i help",
    "how can i assist",
    "what would you like",
    "you are a helpful",
)


@dataclass(frozen=True)
class Verdict:
    """Keep or drop, with the name of the rule that dropped, and the (possibly rewritten) text."""

    keep: bool
    reason: str = ""
    text: str = ""

    @classmethod
    def kept(cls, text: str) -> Verdict:
        return cls(True, "", text)

    @classmethod
    def dropped(cls, reason: str, text: str = "") -> Verdict:
        return cls(False, reason, text)


_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """Word-level ROUGE-L F1 of two token lists (longest common subsequence)."""
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


class NoveltyIndex:
    """Texts accepted so far, to find the most similar one by word ROUGE-L F1 (Self-Instruct's filter).

    An inverted index gives, for every accepted text sharing a word with the
    candidate, the count of shared words; that bounds ROUGE-L F1 from above
    (a common subsequence cannot be longer than the shared words), so the
    quadratic LCS runs only for the few texts that could exceed the threshold.
    """

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: list[list[str]] = []
        self.counts: list[Counter[str]] = []
        self.postings: dict[str, list[int]] = {}
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        words = _words(text)
        index = len(self.texts)
        self.texts.append(words)
        counts = Counter(words)
        self.counts.append(counts)
        for word in counts:
            self.postings.setdefault(word, []).append(index)

    def exceeds(self, text: str, threshold: float) -> bool:
        """Whether some accepted text has ROUGE-L F1 above ``threshold`` with ``text``."""
        words = _words(text)
        if not words:
            return False
        counts = Counter(words)
        shared: Counter[int] = Counter()
        for word, n in counts.items():
            for index in self.postings.get(word, ()):
                shared[index] += min(n, self.counts[index][word])
        for index, overlap in shared.items():
            other = self.texts[index]
            if 2 * overlap / (len(words) + len(other)) > threshold and rouge_l_f1(words, other) > threshold:
                return True
        return False


@dataclass(frozen=True)
class FilterContext:
    """What filters may consult. Built once per stage; ``seen`` and ``novelty`` grow between calls."""

    length_window: tuple[int, int] | None = None
    noise_strings: tuple[str, ...] = ()
    chat_phrases: tuple[str, ...] = CHAT_PHRASES
    seen: frozenset[str] | set[str] = field(default_factory=frozenset)
    labels: tuple[str, ...] = ()
    format_markers: tuple[str, ...] = ()
    novelty: NoveltyIndex | None = None  # accepted inputs and demonstrations, for the "novelty" filter
    novelty_threshold: float = 0.7


FilterFn = Callable[[str, FilterContext], Verdict]
FILTERS: Registry[FilterFn] = Registry("filter")


def register_filter(name: str) -> Callable[[FilterFn], FilterFn]:
    """Register a filter under ``name`` so configs can refer to it."""
    return lambda fn: FILTERS.add(name, fn)


def get_filter(name: str) -> FilterFn:
    return FILTERS.lookup(name)


def apply_filters(text: str, names: Sequence[str], ctx: FilterContext) -> Verdict:
    """Run filters in order; the first drop decides. Kept text may be rewritten (label mapping)."""
    for name in names:
        verdict = get_filter(name)(text, ctx)
        if not verdict.keep:
            return verdict
        text = verdict.text
    return Verdict.kept(text)


# ------------------------------------------------------------------ helpers
def length_window(
    lengths: Iterable[int], sigmas: float = 2.0, min_sigma_ratio: float = 0.0
) -> tuple[int, int] | None:
    """The paper's ``int(mu - k*sigma) <= len < int(mu + k*sigma)`` window, or None when empty.

    ``sigma`` is the population standard deviation of the reference lengths.
    With two or three demonstrations it can be a few characters, so
    ``min_sigma_ratio`` (0 in the paper) floors it at that fraction of the mean.
    """
    values = [int(v) for v in lengths]
    if not values:
        return None
    mu = sum(values) / len(values)
    sigma = math.sqrt(sum((v - mu) ** 2 for v in values) / len(values))
    sigma = max(sigma, min_sigma_ratio * mu)
    low, high = int(mu - sigmas * sigma), int(mu + sigmas * sigma)
    return (low, high) if low < high else None


_MARKER = re.compile(r"(?<![\w-])([A-Za-z][A-Za-z0-9]*(?: [A-Za-z0-9]+)?) ?:(?=\s|$)")


def format_markers(examples: Iterable[str]) -> tuple[str, ...]:
    """Field markers ("claim:", "Sentence 1:") found in every example, lowercased, in order of first use.

    Derived from the demonstrations, so the "format" filter needs no per-task setup
    and does nothing for tasks whose inputs are plain text.
    """
    found: list[list[str]] = [[m.group(1).lower() for m in _MARKER.finditer(text)] for text in examples]
    if not found:
        return ()
    common = set(found[0]).intersection(*map(set, found[1:]))
    return tuple(dict.fromkeys(m for m in found[0] if m in common))


def leading_marker(examples: Sequence[str]) -> str:
    """The field marker the examples start with, with a space ("claim: "), or "" when one does not.

    Every example must open with a marker; when their spellings differ (a typo
    such as "Statment:"), the most common one is used.
    """
    heads = []
    for text in examples:
        match = _MARKER.match(text.lstrip())
        if match is None:
            return ""
        heads.append(text.lstrip()[: match.end()])
    if not heads:
        return ""
    counts = Counter(head.lower() for head in heads)
    best = max(counts.values())
    head = next(h for h in heads if counts[h.lower()] == best)
    return head + " "


# ------------------------------------------------------------------ filters
# A first line that only announces the input ("Example 3:", "New input:", "Here is one:").
_HEADER = re.compile(
    r"\A\s*(?:(?:new )?(?:example|input)(?: \d+)?\s*:|[^\n]{0,80}:[ \t]*\n)\s*", re.IGNORECASE
)


@register_filter("unwrap")
def unwrap_filter(text: str, ctx: FilterContext) -> Verdict:
    """Rewrite: strip a leading header line such as "Example 3:" or "Here is a new input:"."""
    stripped = text.strip()
    match = _HEADER.match(stripped)
    if match and not any(match.group(0).lower().strip().startswith(m) for m in ctx.format_markers):
        stripped = stripped[match.end() :]
    return Verdict.kept(stripped)


@register_filter("format")
def format_filter(text: str, ctx: FilterContext) -> Verdict:
    """Missing a field marker that every demonstration input has (e.g. "claim:", "Premise:")."""
    lowered = text.lower()
    for marker in ctx.format_markers:
        if not re.search(rf"(?<![\w-]){re.escape(marker)} ?:", lowered):
            return Verdict.dropped("format", text)
    return Verdict.kept(text)


@register_filter("empty")
def empty_filter(text: str, ctx: FilterContext) -> Verdict:
    """Nothing left after stripping."""
    stripped = text.strip()
    return Verdict.kept(stripped) if stripped else Verdict.dropped("empty", text)


@register_filter("length")
def length_filter(text: str, ctx: FilterContext) -> Verdict:
    """Outside the character-length window of the demonstrations (no window: keep)."""
    if ctx.length_window is None:
        return Verdict.kept(text)
    low, high = ctx.length_window
    return Verdict.kept(text) if low <= len(text) < high else Verdict.dropped("length", text)


@register_filter("noise")
def noise_filter(text: str, ctx: FilterContext) -> Verdict:
    """Contains a task noise string (case-sensitive, as the paper) or a canned chat phrase."""
    if any(noise in text for noise in ctx.noise_strings):
        return Verdict.dropped("noise", text)
    lowered = text.lower()
    if any(phrase in lowered for phrase in ctx.chat_phrases):
        return Verdict.dropped("chat_phrase", text)
    return Verdict.kept(text)


@register_filter("novelty")
def novelty_filter(text: str, ctx: FilterContext) -> Verdict:
    """Self-Instruct: drop a text whose ROUGE-L F1 with an accepted input or a demonstration exceeds the threshold."""
    if ctx.novelty is not None and ctx.novelty.exceeds(text, ctx.novelty_threshold):
        return Verdict.dropped("novelty", text)
    return Verdict.kept(text)


@register_filter("duplicate")
def duplicate_filter(text: str, ctx: FilterContext) -> Verdict:
    """Already accepted, or a demonstration (ignoring case and spacing)."""
    return Verdict.dropped("duplicate", text) if normalize_answer(text) in ctx.seen else Verdict.kept(text)


@register_filter("label")
def label_filter(text: str, ctx: FilterContext) -> Verdict:
    """Rewrite a classification answer to the one label it names; drop it otherwise."""
    label, reason = map_label(text, ctx.labels)
    return Verdict.kept(label) if label is not None else Verdict.dropped(reason, text)


# ------------------------------------------------------------------ voting
def self_consistency_vote(answers: Sequence[str], min_frequency: float) -> tuple[str | None, float, int]:
    """The most frequent answer among the surviving samples, its share and count.

    Answers are compared ignoring case and spacing; ties go to the shortest
    (then alphabetical, for determinism). Below ``min_frequency`` the winner
    is None: the model does not agree with itself enough to trust it.
    """
    if not answers:
        return None, 0.0, 0
    counts: dict[str, int] = {}
    for answer in answers:
        key = normalize_answer(answer)
        counts[key] = counts.get(key, 0) + 1
    best = max(counts.values())
    winner = min((a for a in answers if counts[normalize_answer(a)] == best), key=lambda a: (len(a), a))
    share = best / len(answers)
    return (winner if share >= min_frequency else None), share, best
