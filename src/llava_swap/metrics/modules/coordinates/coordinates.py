"""evaluate module `coordinates`: scores of a predicted seismic event location; a thin wrapper, the logic is
`llava_swap.metrics.coordinates`.

Load it offline with `evaluate.load(llava_swap.metrics.path("coordinates"))`. Imports are absolute on purpose: a
relative import makes evaluate try to download the imported file.
"""

from collections.abc import Mapping

import datasets
import evaluate

from llava_swap.metrics.coordinates import DEFAULT_TOLERANCE, coordinate_metrics

_DESCRIPTION = """\
Scores the location of a seismic event predicted as text, in normalised image coordinates (x, y in [0, 1]). The point
is read from the answer: a JSON-like object with keys x and y ({"x": 0.42, "y": 0.77}, also inside other text, with
single quotes, extra keys or numbers as strings), "x=0.42, y=0.77" / "x: 0.42 y: 0.77", or "(0.42, 0.77)"; anything
else (or a non-finite number) is unparsed. parse_rate is the fraction of answers with a point; accuracy the fraction
of ALL answers within `tolerance` Euclidean distance of the true location (default 0.1, a tenth of the image side;
unparsed answers are misses); mean_error and median_error are the Euclidean distances over parsed answers (None when
none parsed).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `str`): model answers.
    references (`list` of [x, y] pairs, or `list` of {"x": float, "y": float}): true locations in [0, 1].
    tolerance (`float`, default 0.1): hit radius in normalised coordinates (0.1 = a tenth of the image side).
Returns:
    parse_rate (`float`), accuracy (`float`), mean_error (`float` or None), median_error (`float` or None).
Examples:
    >>> metric = evaluate.load(llava_swap.metrics.path("coordinates"))
    >>> metric.compute(predictions=['{"x": 0.4, "y": 0.8}', "no idea"], references=[[0.42, 0.77], [0.1, 0.1]])
    {'parse_rate': 0.5, 'accuracy': 0.5, 'mean_error': 0.036..., 'median_error': 0.036...}
"""


def _pair(reference):
    return [reference["x"], reference["y"]] if isinstance(reference, Mapping) else reference


def _pairs(references):
    return None if references is None else [_pair(reference) for reference in references]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Coordinates(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("float64"), length=2),
                }
            ),
        )

    # A list of two Features would not do for {"x", "y"} dicts: datasets encodes a dict as a list of its keys, and
    # the dict format raises AttributeError on pairs, which evaluate does not catch. Dicts become pairs here instead.
    # (evaluate appends the inputs description to these methods' docstrings: they must have one.)
    def add_batch(self, *, predictions=None, references=None, **kwargs) -> None:
        """Adds a batch of answers and true locations ([x, y] pairs or {"x", "y"} dicts)."""
        super().add_batch(predictions=predictions, references=_pairs(references), **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs) -> None:
        """Adds one answer and its true location ([x, y] or {"x", "y"})."""
        super().add(prediction=prediction, reference=_pair(reference), **kwargs)

    def _compute(self, predictions, references, tolerance: float = DEFAULT_TOLERANCE) -> dict:
        return coordinate_metrics(predictions, references, tolerance=tolerance)
