"""Scores for a predicted seismic event location: where in the image, as normalised (x, y) coordinates in [0, 1].

A model answers in text, so `parse_coordinates` reads the point back first; an answer it cannot read counts against
the parse rate and as a miss, never as an error. A hit is a point within `tolerance` (Euclidean distance in normalised
coordinates, default 0.1: a tenth of the image side) of the true location.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_TOLERANCE = 0.1
# Slack on the tolerance test, so that a point exactly `tolerance` away counts despite float rounding.
_EPSILON = 1e-9

# ASCII digits only, no "nan"/"inf" words: every match is a finite-looking decimal (1e999 is caught after float()).
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
# A bare number must end there ("0.5px" is not 0.5) but may end a sentence ("y=0.77.").
_QUOTED_NUMBER = rf"""(?:"\s*({_NUMBER})\s*"|'\s*({_NUMBER})\s*'|({_NUMBER})(?!\w|\.[0-9]))"""


def _key(name: str) -> str:
    # `x`, "x" or 'x', not the tail of another key ("max", "x_px").
    return rf"""(?<![\w"']){name}(?![\w"'])|"{name}"|'{name}'"""


# A JSON-ish object: braces with no braces inside, so one scan finds every candidate in linear time.
_OBJECT = re.compile(r"\{[^{}]*\}")
_OBJECT_FIELD = {name: re.compile(rf"(?:{_key(name)})\s*:\s*{_QUOTED_NUMBER}", re.IGNORECASE) for name in "xy"}
# "x=0.42, y=0.77", "x: 0.42 y: 0.77": x then y, separated by spaces and at most one comma or semicolon.
_PAIR = re.compile(
    rf"(?:{_key('x')})\s*[:=]\s*{_QUOTED_NUMBER}\s*[,;]?\s*(?:{_key('y')})\s*[:=]\s*{_QUOTED_NUMBER}",
    re.IGNORECASE,
)
# "(0.42, 0.77)"
_TUPLE = re.compile(rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)")


def _finite_point(x_text: str, y_text: str) -> tuple[float, float] | None:
    try:
        x, y = float(x_text), float(y_text)
    except (TypeError, ValueError, OverflowError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def _first_number(match: re.Match[str], start: int) -> str | None:
    # _QUOTED_NUMBER has three alternative groups (double-quoted, single-quoted, bare): one of them matched.
    return next((group for group in match.groups()[start : start + 3] if group is not None), None)


def parse_coordinates(text: str) -> tuple[float, float] | None:
    """The (x, y) point an answer states, or None; never raises, whatever the input.

    Accepted, first found wins in this order: a JSON-like object with keys x and y anywhere in the text
    (`{"x": 0.42, "y": 0.77}`, single quotes, extra keys, numbers as strings); `x=0.42, y=0.77` or `x: 0.42 y: 0.77`;
    `(0.42, 0.77)`. Values need not lie in [0, 1] (a point outside the image is parsed, and simply far off); a
    non-finite value (`1e999`; `nan` and `inf` are not numbers here) leaves the answer unparsed.
    """
    if not isinstance(text, str):
        return None
    try:
        for candidate in _OBJECT.finditer(text):
            body = candidate.group()
            x_match, y_match = _OBJECT_FIELD["x"].search(body), _OBJECT_FIELD["y"].search(body)
            if x_match and y_match:
                point = _finite_point(_first_number(x_match, 0), _first_number(y_match, 0))
                if point is not None:
                    return point
        for match in _PAIR.finditer(text):
            point = _finite_point(_first_number(match, 0), _first_number(match, 3))
            if point is not None:
                return point
        for match in _TUPLE.finditer(text):
            point = _finite_point(match.group(1), match.group(2))
            if point is not None:
                return point
    except Exception:  # a metric reading model output must never crash an evaluation run
        return None
    return None


def _target(reference: Any, index: int | None = None) -> tuple[float, float]:
    where = "target" if index is None else f"references[{index}]"
    if isinstance(reference, Mapping):
        if "x" not in reference or "y" not in reference:
            raise ValueError(f"{where} must have keys 'x' and 'y', got {sorted(reference)}")
        values = (reference["x"], reference["y"])
    elif isinstance(reference, Sequence) and not isinstance(reference, str) and len(reference) == 2:
        values = (reference[0], reference[1])
    else:
        raise ValueError(f"{where} must be an (x, y) pair or a dict with 'x' and 'y', got {reference!r}")
    try:
        x, y = float(values[0]), float(values[1])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} has a non-numeric coordinate: {reference!r}") from error
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{where} has a non-finite coordinate: {reference!r}")
    return x, y


def coordinate_error(prediction: str, target: tuple[float, float] | Mapping[str, float]) -> float | None:
    """Euclidean distance from the point the answer states to `target`; None when the answer has no point."""
    target_x, target_y = _target(target)
    point = parse_coordinates(prediction)
    if point is None:
        return None
    return math.hypot(point[0] - target_x, point[1] - target_y)


def coordinate_hit(error: float | None, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether an answer with this error counts as correct: it parsed, and lies at most `tolerance` away (a point
    exactly `tolerance` away counts despite float rounding). The per-item score and the run metric both use it."""
    return error is not None and error <= tolerance + _EPSILON


def coordinate_metrics(
    predictions: Sequence[str],
    references: Sequence[tuple[float, float] | Mapping[str, float]],
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, float | None]:
    """Location scores over items; references are (x, y) pairs or {"x", "y"} dicts, normalised to [0, 1].

    parse_rate: fraction of answers with a readable point. accuracy: fraction of ALL items whose point is within
    `tolerance` (inclusive; default 0.1 of the image side) of the target, unparsed answers counting as misses.
    mean_error, median_error: Euclidean distance over parsed items only; None when no answer parsed.
    """
    if isinstance(predictions, str):
        raise ValueError("predictions must be a list of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(
            f"coordinate_metrics got {len(predictions)} predictions but {len(references)} references: one target "
            "point per prediction."
        )
    if len(predictions) == 0:
        raise ValueError("coordinate_metrics got no predictions.")
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError):
        tolerance = math.nan
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    targets = [_target(reference, index) for index, reference in enumerate(references)]
    errors = []
    for prediction, (target_x, target_y) in zip(predictions, targets, strict=True):
        point = parse_coordinates(prediction)
        if point is not None:
            errors.append(math.hypot(point[0] - target_x, point[1] - target_y))
    hits = sum(coordinate_hit(error, tolerance) for error in errors)
    return {
        "parse_rate": len(errors) / len(predictions),
        "accuracy": hits / len(predictions),
        "mean_error": sum(errors) / len(errors) if errors else None,
        "median_error": float(statistics.median(errors)) if errors else None,
    }


__all__ = ["DEFAULT_TOLERANCE", "coordinate_error", "coordinate_hit", "coordinate_metrics", "parse_coordinates"]
