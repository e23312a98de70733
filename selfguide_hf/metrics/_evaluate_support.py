"""Pieces shared by the two ``evaluate`` metric modules (imports ``datasets``)."""

from __future__ import annotations

import datasets
import evaluate

from selfguide_hf.metrics.core import CITATION, normalize_references

__all__ = ["ReferenceListsMixin", "metric_info", "reference_features"]
PAPER_URL = "https://arxiv.org/abs/2407.12874"


def metric_info(description: str, inputs_description: str, source_url: str) -> evaluate.MetricInfo:
    """The MetricInfo both modules share: the paper's citation, reference-list features."""
    return evaluate.MetricInfo(
        description=description,
        citation=CITATION,
        inputs_description=inputs_description,
        features=reference_features(),
        reference_urls=[PAPER_URL, source_url],
    )


def reference_features() -> list[datasets.Features]:
    """Accepted input formats: references as a list of strings, or one string each."""
    return [
        datasets.Features(
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }
        ),
        datasets.Features(
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
            }
        ),
    ]


def _as_reference_lists(references):
    if references is None:
        return None
    return [normalize_references(refs) for refs in references]


class ReferenceListsMixin:
    """Stores references as lists of strings whatever their input form.

    So one batch, or successive ``add`` calls, may mix single strings and lists,
    and a length mismatch fails with a plain message before anything is written.
    Put it before ``evaluate.Metric`` in the bases.
    """

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score what was added plus ``predictions``/``references`` (if given)."""
        nothing_added = getattr(self, "writer", None) is None
        if nothing_added and (predictions is None or len(predictions) == 0):
            raise ValueError(
                "no examples to score: pass non-empty predictions and references, "
                "or add() / add_batch() some first"
            )
        return super().compute(predictions=predictions, references=references, **kwargs)

    # Both methods need a docstring: evaluate appends the inputs description to it.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (one string or a list each)."""
        if predictions is not None and references is not None:
            if isinstance(predictions, str) or isinstance(references, str):
                raise TypeError(
                    "predictions and references must be lists with one entry per example, not a single string"
                )
            if len(predictions) == 0 and len(references) == 0:
                return  # an empty batch (e.g. an empty shard) adds nothing
            if len(predictions) != len(references):
                raise ValueError(
                    f"predictions and references differ in length: {len(predictions)} "
                    f"predictions vs {len(references)} references (one entry per example "
                    "expected)"
                )
        super().add_batch(predictions=predictions, references=_as_reference_lists(references), **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference(s) (a string or a list of strings)."""
        if reference is not None:
            reference = normalize_references(reference)
        super().add(prediction=prediction, reference=reference, **kwargs)
