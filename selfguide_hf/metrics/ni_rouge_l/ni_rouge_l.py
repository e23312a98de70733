# Loaded by path: evaluate.load("<package>/selfguide_hf/metrics/ni_rouge_l").
# evaluate copies this one file into its modules cache, so it must not use relative
# imports; the scoring lives in selfguide_hf.metrics.core (imported absolutely).
"""Natural Instructions ROUGE-L for generation tasks (SELF-GUIDE evaluation)."""

import evaluate

from selfguide_hf.metrics._evaluate_support import ReferenceListsMixin, metric_info
from selfguide_hf.metrics.core import compute_rouge_l

_DESCRIPTION = """\
Word-level ROUGE-L F1 for generation tasks, as used to evaluate SELF-GUIDE on Natural
Instructions V2: the `rouge_score` package's rougeL with the Porter stemmer and its
default tokenizer (lowercase, alphanumeric words). Each example takes the best score
over its references; the result is the mean over examples, times 100. An empty
prediction scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, the model's outputs.
    references: list of str or list of list of str, the reference output(s) of each
        example.
Returns:
    rouge_l: float in [0, 100], the mean over examples.
    scores: list of float, per-example ROUGE-L F1 x 100.
Examples:
    >>> metric = evaluate.load("selfguide_hf/metrics/ni_rouge_l")
    >>> metric.compute(predictions=["the cats are running"],
    ...                references=[["a cat runs quickly"]])["rouge_l"]
    50.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NiRougeL(ReferenceListsMixin, evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            "https://github.com/google-research/google-research/tree/master/rouge",
        )

    def _compute(self, predictions, references):
        return compute_rouge_l(predictions, references)
