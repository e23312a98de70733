# Loaded by path: evaluate.load("<package>/selfguide_hf/metrics/ni_exact_match").
# evaluate copies this one file into its modules cache, so it must not use relative
# imports; the scoring lives in selfguide_hf.metrics.core (imported absolutely).
"""Natural Instructions exact match for classification tasks (SELF-GUIDE evaluation)."""

import evaluate

from selfguide_hf.metrics._evaluate_support import ReferenceListsMixin, metric_info
from selfguide_hf.metrics.core import compute_exact_match

_DESCRIPTION = """\
Exact match for classification tasks, as used to evaluate SELF-GUIDE on Natural
Instructions V2. The model's free-text answer is reduced to the label it names: the
last occurrence of any of the task's labels, case-insensitive, on word boundaries
(of overlapping matches the one ending last, then the longer one). Without labels, or
when the answer names none, the whole answer is used. Both sides are then normalised
(lowercase, punctuation deleted, whitespace collapsed) and compared. An example
scores 100 if any of its references matches; the result is the mean over examples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, the model's answers (free text).
    references: list of str or list of list of str, the reference answer(s) of each
        example.
    labels: optional list of str, the task's label set, used to extract the label
        an answer names.
Returns:
    exact_match: float in [0, 100], the mean over examples.
    scores: list of float, per example 0.0 or 100.0.
    extracted_predictions: list of str, the label each answer named (spelled as in
        `labels`) or the whole answer when it named none.
Examples:
    >>> metric = evaluate.load("selfguide_hf/metrics/ni_exact_match")
    >>> metric.compute(predictions=["The answer is C."], references=[["C"]],
    ...                labels=["E", "C", "N"])["exact_match"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NiExactMatch(ReferenceListsMixin, evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, "https://github.com/allenai/natural-instructions"
        )

    def _compute(self, predictions, references, labels=None):
        return compute_exact_match(predictions, references, labels=labels)
