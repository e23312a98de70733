"""Reading a label out of text, one way for spec validation, annotation and scoring.

Three places ask "which label is this?": a spec's demonstrations and an eval
file's references (must *be* a label), a sampled annotation (must name exactly
one label), and a model's answer at evaluation (the last label it names). They
share one normaliser and one set of label patterns, so a label set the spec
accepts can never be confused by annotation or scoring: labels that collide
under the normaliser (``"+"`` and ``"-"`` both normalise to nothing;
``"not-entailment"`` and ``"notentailment"`` to the same text) are refused up
front by `check_label_set`.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = [
    "MIN_PREFIX_LABEL_CHARS",
    "canonical_label",
    "check_label_set",
    "extract_label",
    "map_label",
    "normalize_answer",
]

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_WHITESPACE = re.compile(r"\s+")
# Labels at least this long may also match as the start of a word when annotating
# ("support" in "Supporting"); shorter ones ("no", "E", "1") only as whole words.
MIN_PREFIX_LABEL_CHARS = 4


def normalize_answer(text: str) -> str:
    """Lowercase, delete punctuation, collapse whitespace, strip (the Natural Instructions rule).

    Punctuation is every ASCII ``string.punctuation`` character plus every Unicode
    punctuation character (category P*). Characters are deleted, not replaced by
    spaces: ``"Not-Entailment!"`` -> ``"notentailment"``.
    """
    text = text.lower()
    text = "".join(
        ch for ch in text if ch not in _ASCII_PUNCTUATION and not unicodedata.category(ch).startswith("P")
    )
    return _WHITESPACE.sub(" ", text).strip()


def check_label_set(labels: Sequence[str]) -> None:
    """Raise ValueError naming the label(s) at fault when two labels cannot be told apart.

    A label must keep some text after normalisation, and no two labels may
    normalise to the same text: scoring compares normalised text, so such
    labels would score as equal.
    """
    seen: dict[str, str] = {}
    for label in labels:
        if label != label.strip():
            raise ValueError(f"label {label!r} has leading or trailing spaces; write it as {label.strip()!r}")
        key = normalize_answer(label)
        if not key:
            raise ValueError(
                f"label {label!r} is empty once punctuation is removed, so no answer could be scored "
                "against it; use words (e.g. 'positive' / 'negative')"
            )
        if key in seen:
            raise ValueError(
                f"duplicate label: {seen[key]!r} and {label!r} are the same label once case and punctuation "
                f"are ignored (both read as {key!r}); rename one of them"
            )
        seen[key] = label


def canonical_label(text: str, labels: Iterable[str]) -> str | None:
    """The label ``text`` is (equal after normalisation), spelled as in ``labels``; else None."""
    key = normalize_answer(text)
    for label in labels:
        if normalize_answer(label) == key:
            return label
    return None


@functools.lru_cache(maxsize=256)
def _patterns(labels: tuple[str, ...], prefix: bool) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One compiled pattern per distinct label (deduplicated case-insensitively).

    Word boundaries only where the label itself starts / ends with a word
    character: "E" must not match in "Entailment", "(A)" may follow a space or a
    colon; any whitespace may stand between the words of a multiword label. With
    ``prefix``, labels of MIN_PREFIX_LABEL_CHARS or more may be followed by more
    word characters. The lookahead makes overlapping occurrences all visible.
    """
    patterns = []
    seen = set()
    for label in labels:
        core = label.strip()
        key = _WHITESPACE.sub(" ", core).casefold()
        if not core or key in seen:
            continue
        seen.add(key)
        body = r"\s+".join(re.escape(part) for part in core.split())
        left = r"(?<!\w)" if re.match(r"\w", core[0]) else ""
        word_end = re.match(r"\w", core[-1])
        tail = r"\w*" if prefix and word_end and len(core) >= MIN_PREFIX_LABEL_CHARS else ""
        right = r"(?!\w)" if word_end else ""
        patterns.append((label, re.compile(rf"(?=({left}{body}{tail}{right}))", re.IGNORECASE)))
    return tuple(patterns)


def _occurrences(answer: str, labels: Sequence[str], prefix: bool) -> list[tuple[int, int, int, str]]:
    """(start, end, label order, label) of every label occurrence in ``answer``."""
    found = []
    for order, (label, pattern) in enumerate(_patterns(tuple(labels), prefix)):
        for match in pattern.finditer(answer):
            start, end = match.span(1)
            found.append((start, end, order, label))
    return found


def extract_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer gives at evaluation: its last occurrence, spelled as in ``labels``.

    Of overlapping matches the one that ends last wins, and of two that end at
    the same character the longer one.
    """
    found = _occurrences(answer, labels, prefix=False) if answer else []
    if not found:
        return None
    best = max(found, key=lambda f: (f[1], f[1] - f[0], -f[2]))
    return best[3]


def map_label(answer: str, labels: Sequence[str]) -> tuple[str | None, str]:
    """The label a sampled annotation names, or None with the reason (``no_label`` / ``ambiguous_label``).

    Stricter than `extract_label`, because a training label must be certain: an
    answer that *is* a label wins; otherwise exactly one distinct label must
    occur as a whole word, or failing that (labels of 4+ characters) as the
    start of a word ("Supporting" for "support"). Several labels drop the answer.
    """
    exact = canonical_label(answer, labels)
    if exact is not None:
        return exact, ""
    for prefix in (False, True):
        distinct = {label for _, _, _, label in _occurrences(answer, labels, prefix)}
        if len(distinct) == 1:
            return distinct.pop(), ""
        if len(distinct) > 1:
            return None, "ambiguous_label"
    return None, "no_label"
