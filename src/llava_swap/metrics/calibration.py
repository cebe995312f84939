"""Calibration of answer confidences: ECE, adaptive ECE, Brier score and the reliability-diagram table.

A model that says 0.8 should be right 8 times in 10. ECE (Naeini et al. 2015; Guo et al. 2017) groups answers into
equal-width confidence bins and averages |accuracy - confidence| weighted by bin size; adaptive ECE (Nixon et al.
2019) uses equal-mass bins instead, so sparse high-confidence regions do not hide in one bin; the Brier score is the
mean squared error of the confidence against 0/1 correctness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _validated(confidences: Sequence[float], correct: Sequence[int | bool]) -> tuple[np.ndarray, np.ndarray]:
    if len(confidences) != len(correct):
        raise ValueError(
            f"calibration got {len(confidences)} confidences but {len(correct)} correctness values: one per answer."
        )
    if len(confidences) == 0:
        raise ValueError("calibration got no confidences: calibration of nothing is undefined.")
    conf = np.empty(len(confidences), dtype=np.float64)
    for index, value in enumerate(confidences):
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"confidences[{index}] = {value!r} is not a number") from error
        if not 0.0 <= number <= 1.0:  # also rejects NaN
            raise ValueError(f"confidences[{index}] = {value!r} is outside [0, 1]")
        conf[index] = number
    hits = np.empty(len(correct), dtype=np.float64)
    for index, value in enumerate(correct):
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"correct[{index}] = {value!r} is not 0 or 1") from error
        if number not in (0.0, 1.0):
            raise ValueError(f"correct[{index}] = {value!r} is not 0 or 1 (True/False also work)")
        hits[index] = number
    return conf, hits


def _optional(value: float | None) -> float | None:
    return None if value is None else float(value)


def _equal_mass_bounds(sorted_conf: np.ndarray, n_bins: int) -> list[int]:
    """Bin boundaries (positions in `sorted_conf`, from 0 to N) of the adaptive bins: `np.array_split`'s cuts, each
    moved out of any group of tied confidences it falls in (see `calibration`); empty bins are dropped."""
    total = len(sorted_conf)
    base, extra = divmod(total, n_bins)
    cuts = np.cumsum([base + 1] * extra + [base] * (n_bins - extra))[:-1]
    bounds = {0, total}
    for cut in cuts.tolist():
        if 0 < cut < total and sorted_conf[cut - 1] == sorted_conf[cut]:  # the cut splits a tie: move it out
            low = int(np.searchsorted(sorted_conf, sorted_conf[cut], side="left"))
            high = int(np.searchsorted(sorted_conf, sorted_conf[cut], side="right"))
            cut = low if cut - low < high - cut else high
        bounds.add(int(cut))
    return sorted(bounds)


def calibration(confidences: Sequence[float], correct: Sequence[int | bool], n_bins: int = 15) -> dict[str, Any]:
    """Calibration of confidences (in [0, 1]) against correctness (0/1 or bools).

    ece: sum over `n_bins` equal-width bins of (bin count / N) * |bin accuracy - bin mean confidence|; bin i covers
    (i/n, (i+1)/n], the first also 0 (edges as `np.linspace(0, 1, n + 1)`).
    adaptive_ece: the same over equal-mass bins: answers sorted by confidence, cut into `n_bins` runs whose sizes
    differ by at most one (larger first, as `np.array_split`); empty runs (N < n_bins) are skipped. A cut never
    splits answers of equal confidence: a cut that falls inside a group of tied confidences moves to the nearer end
    of that group (to its upper end when both are equal, so the group joins the lower bin), and cuts that then
    coincide merge, leaving fewer, larger bins. Bins therefore depend only on the confidence values, never on the
    order of the answers: any permutation gives exactly the same adaptive_ece; without ties the cuts are unchanged.
    brier: mean of (confidence - correct)^2.
    bins: the equal-width bins, empty ones included, as {"lower", "upper", "count", "confidence" (mean),
    "accuracy" (mean), "gap" (confidence - accuracy: positive is over-confident)}; means are None for empty bins.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    conf, hits = _validated(confidences, correct)
    total = len(conf)

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" gives the first edge >= conf: conf in (edges[i-1], edges[i]] lands in bin i-1; conf 0 in bin 0.
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        mean_conf = mean_acc = gap = None
        if count:
            mean_conf, mean_acc = float(conf[members].mean()), float(hits[members].mean())
            gap = mean_conf - mean_acc
            ece += count / total * abs(mean_acc - mean_conf)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": _optional(mean_conf),
                "accuracy": _optional(mean_acc),
                "gap": _optional(gap),
            }
        )

    order = np.argsort(conf, kind="stable")
    sorted_conf, sorted_hits = conf[order], hits[order]
    adaptive_ece = 0.0
    bounds = _equal_mass_bounds(sorted_conf, n_bins)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        # Within a bin, sorted_conf is the same sequence for any input order (ties are equal values) and the hits
        # are 0/1, so both sums, and hence the result, are exactly order-independent.
        count = stop - start
        mean_acc, mean_conf = float(sorted_hits[start:stop].sum()) / count, float(sorted_conf[start:stop].mean())
        adaptive_ece += count / total * abs(mean_acc - mean_conf)

    brier = float(np.mean((conf - hits) ** 2))
    return {"ece": float(ece), "adaptive_ece": float(adaptive_ece), "brier": brier, "bins": bins}


__all__ = ["calibration"]
