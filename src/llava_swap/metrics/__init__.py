"""Task metrics: VQAv2 accuracy, seismic description scores, event location scores and confidence calibration.

Each metric is a plain function here and also an `evaluate` module shipped with the package, so that
`evaluate.load(llava_swap.metrics.path("vqa_accuracy"))` works offline (the Hub's own "accuracy", "bleu" and "rouge"
scripts are not in the evaluate wheel and cannot be fetched without a network). The module scripts are thin wrappers
that import from this package: all logic lives here, where it is tested and versioned with the code.

Note: `llava_swap.metrics.calibration` is the function below, which shadows its submodule of the same name as an
attribute; import from the submodule with `from llava_swap.metrics.calibration import ...`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .calibration import calibration
from .coordinates import DEFAULT_TOLERANCE, coordinate_error, coordinate_metrics, parse_coordinates
from .description import description_scores, extract_facts, fact_score
from .vqa import normalize_vqa_answer, vqa_accuracy, vqa_score

NAMES = ("vqa_accuracy", "description", "coordinates", "calibration")
_MODULES = Path(__file__).resolve().parent / "modules"


def path(name: str) -> str:
    """Folder of the shipped evaluate module `name`, for `evaluate.load(path(name))`."""
    if name not in NAMES:
        raise ValueError(f"Unknown metric {name!r}: the shipped evaluate modules are {list(NAMES)}")
    return str(_MODULES / name)


@functools.cache
def load(name: str):
    """The shipped evaluate module `name`, loaded offline and kept in memory (no cache files per computation).

    The one surface through which the pipeline computes task metrics: evaluation, the training recipe and the study
    all go through a task's module, as a user calling `evaluate.load(path(name))` would.
    """
    import evaluate

    return evaluate.load(path(name), keep_in_memory=True)


__all__ = [
    "DEFAULT_TOLERANCE",
    "NAMES",
    "calibration",
    "coordinate_error",
    "coordinate_metrics",
    "description_scores",
    "extract_facts",
    "fact_score",
    "load",
    "normalize_vqa_answer",
    "parse_coordinates",
    "path",
    "vqa_accuracy",
    "vqa_score",
]
