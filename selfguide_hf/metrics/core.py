"""Pure-python scoring shared by the ``evaluate`` modules and the rest of the package.

Every score in this package is on a **0-100 scale**: a per-example score is in
[0, 100] and a corpus score is the plain mean of the per-example scores.

Classification (Natural Instructions exact match, as in SELF-GUIDE):

1. extract the label the answer names: the *last* occurrence of any label in the
   answer, case-insensitive, on word boundaries ("N" does not match inside "No");
   when matches overlap, the one that ends last wins, and of two ending at the same
   place the longer one ("not entailment" beats "entailment");
2. if no label is named (or no labels are given) the whole answer is used;
3. both sides are normalised (lowercase, punctuation deleted, whitespace collapsed)
   and compared; the example scores 100 if any reference matches.

Generation: word-level ROUGE-L F1 from ``rouge_score`` with the Porter stemmer, the
best over the references of an example.

Label extraction and normalisation come from `selfguide_hf.labels` (the same rules
annotation and spec validation use); nothing else of the package is imported, and
nothing heavy at import time (``rouge_score`` is imported on first use).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from selfguide_hf import labels as labels_module

__all__ = [
    "CITATION",
    "compute_exact_match",
    "compute_rouge_l",
    "exact_match_score",
    "extract_label",
    "normalize_answer",
    "normalize_references",
    "rouge_l_score",
]

CITATION = """\
@inproceedings{wang-etal-2022-super,
    title = "Super-{N}atural{I}nstructions: Generalization via Declarative Instructions on 1600+ {NLP} Tasks",
    author = "Wang, Yizhong and Mishra, Swaroop and Alipoormolabashi, Pegah and Kordi, Yeganeh and others",
    booktitle = "Proceedings of the 2022 Conference on Empirical Methods in Natural Language Processing",
    year = "2022",
    pages = "5085--5109",
}
@inproceedings{zhao2024selfguide,
    title = "{SELF-GUIDE}: Better Task-Specific Instruction Following via Self-Synthetic Finetuning",
    author = "Zhao, Chenyang and Jia, Xueying and Viswanathan, Vijay and Wu, Tongshuang and Neubig, Graham",
    booktitle = "First Conference on Language Modeling (COLM)",
    year = "2024",
    eprint = "2407.12874",
    archivePrefix = "arXiv",
}
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""


# --------------------------------------------------------------------------- inputs


def _as_text(value: Any, what: str) -> str:
    """A prediction or reference as a string; ``None`` counts as the empty answer."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise TypeError(f"{what} must be a string, got {type(value).__name__}: {value!r}")


def normalize_references(references: str | Iterable[str]) -> list[str]:
    """The references of one example as a non-empty list of strings.

    A single string is one reference; any other iterable (list, tuple, numpy array)
    is a list of references.
    """
    if isinstance(references, str):
        return [references]
    if references is None:
        raise ValueError("an example has no references (got None)")
    try:
        refs = [_as_text(ref, "a reference") for ref in references]
    except TypeError as err:
        if "not iterable" in str(err):
            raise TypeError(
                "references must be a string or a list of strings, "
                f"got {type(references).__name__}: {references!r}"
            ) from None
        raise
    if not refs:
        raise ValueError("an example has an empty list of references")
    return refs


def _check_corpus(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError(
            "predictions and references must be lists with one entry per example, not a single string"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions "
            f"vs {len(references)} references (one entry per example expected)"
        )
    if len(predictions) == 0:
        raise ValueError("no examples to score: predictions and references are empty")


# ---------------------------------------------------------------- exact match


def normalize_answer(text: str | None) -> str:
    """The project's one answer normaliser (`selfguide_hf.labels.normalize_answer`); None is empty."""
    return labels_module.normalize_answer(_as_text(text, "text"))


def _as_labels(labels: Iterable[str] | None) -> tuple[str, ...]:
    if labels is None:
        return ()
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of strings, not a single string: {labels!r}")
    out = tuple(labels)
    for label in out:
        if not isinstance(label, str):
            raise TypeError(f"every label must be a string, got {type(label).__name__}: {label!r}")
    return out


def extract_label(answer: str | None, labels: Iterable[str] | None) -> str | None:
    """The label ``answer`` names (its last occurrence), spelled as in ``labels``; None if none.

    The one label matcher of the project (`selfguide_hf.labels.extract_label`),
    with the type checks a metric's inputs need.
    """
    return labels_module.extract_label(_as_text(answer, "answer"), _as_labels(labels))


def _exact_match_one(
    prediction: str | None, references: str | Iterable[str], labels: tuple[str, ...]
) -> tuple[float, str]:
    refs = normalize_references(references)
    prediction = _as_text(prediction, "a prediction")
    label = extract_label(prediction, labels) if labels else None
    extracted = prediction if label is None else label
    candidate = normalize_answer(extracted)
    hit = any(candidate == normalize_answer(ref) for ref in refs)
    return (100.0 if hit else 0.0), extracted


def exact_match_score(
    prediction: str | None,
    references: str | Iterable[str],
    labels: Iterable[str] | None = None,
) -> float:
    """100.0 if the (extracted, normalised) prediction equals any normalised reference, else 0.0."""
    return _exact_match_one(prediction, references, _as_labels(labels))[0]


def compute_exact_match(
    predictions: Sequence[str | None],
    references: Sequence[str | Iterable[str]],
    labels: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Corpus exact match.

    Returns ``{"exact_match": mean * 100, "scores": [per-example 0/100],
    "extracted_predictions": [...]}``; an extracted prediction is the label the
    answer named (spelled as in ``labels``) or, when it named none or no labels were
    given, the whole answer.
    """
    _check_corpus(predictions, references)
    label_tuple = _as_labels(labels)
    scores: list[float] = []
    extracted: list[str] = []
    for prediction, refs in zip(predictions, references, strict=True):
        score, text = _exact_match_one(prediction, refs, label_tuple)
        scores.append(score)
        extracted.append(text)
    return {
        "exact_match": sum(scores) / len(scores),
        "scores": scores,
        "extracted_predictions": extracted,
    }


# -------------------------------------------------------------------- ROUGE-L


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_score(prediction: str | None, references: str | Iterable[str]) -> float:
    """Word-level ROUGE-L F1 (Porter stemming) x 100, the best over the references.

    An empty prediction (or one with no word tokens) scores 0.
    """
    refs = normalize_references(references)
    prediction = _as_text(prediction, "a prediction")
    if not prediction.strip():
        return 0.0
    scorer = _rouge_scorer()
    best = 0.0
    for ref in refs:
        # rouge_score's argument order is (target, prediction).
        best = max(best, scorer.score(ref, prediction)["rougeL"].fmeasure)
    return 100.0 * best


def compute_rouge_l(
    predictions: Sequence[str | None], references: Sequence[str | Iterable[str]]
) -> dict[str, Any]:
    """Corpus ROUGE-L: ``{"rouge_l": mean * 100, "scores": [per-example 0-100]}``."""
    _check_corpus(predictions, references)
    scores = [rouge_l_score(p, r) for p, r in zip(predictions, references, strict=True)]
    return {"rouge_l": sum(scores) / len(scores), "scores": scores}
