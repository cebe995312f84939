"""Bootstrap confidence intervals for per-item results: one model's statistic, and the paired difference of two.

Every variant of the study answers the same items, so a difference between two variants is estimated on pairs:
resampling item indices jointly keeps each item's difficulty on both sides and gives a far tighter interval than
two independent bootstraps would. Intervals are percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13);
they are deterministic for a seed, so results.json does not change between reruns of the analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Statistic = Callable[..., Any]

# Resample indices in blocks of at most this many entries (32 MB of int64): 2000 resamples of 100k items would
# otherwise need 1.6 GB at once. The block size depends only on the item count, so results stay seed-deterministic.
_BLOCK_ENTRIES = 1 << 22


def as_values(values: Sequence[float], name: str = "values") -> np.ndarray:
    """`values` as a 1-D float64 array of finite numbers; a ValueError names the first bad entry."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a flat sequence of numbers (one per item): {error}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one number per item), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: a statistic of no items is undefined")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is not finite: drop or fix that item first")
    return array


def _check_settings(n_resamples: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:  # also rejects NaN
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")


def _scalar(statistic: Statistic, values: np.ndarray) -> float:
    result = np.asarray(statistic(values))
    if result.ndim != 0:
        raise ValueError(f"statistic must return one number for a 1-D array, got shape {result.shape}")
    return float(result)


def _row_statistics(statistic: Statistic, samples: np.ndarray) -> np.ndarray:
    """`statistic` of each row of `samples`: vectorised through `axis=1` where the statistic takes it (np.mean does)."""
    try:
        result = np.asarray(statistic(samples, axis=1), dtype=np.float64)
    except TypeError:  # a statistic without an axis argument
        result = None
    if result is None or result.shape != (samples.shape[0],):
        result = np.array([_scalar(statistic, row) for row in samples], dtype=np.float64)
    return result


def _resampled(
    statistic: Statistic, arrays: tuple[np.ndarray, ...], n_resamples: int, seed: int
) -> tuple[np.ndarray, ...]:
    """The statistic of each array on `n_resamples` bootstrap resamples that share their item indices."""
    n = arrays[0].size
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ENTRIES // n))
    out = tuple(np.empty(n_resamples, dtype=np.float64) for _ in arrays)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        index = rng.integers(0, n, size=(stop - start, n))
        for array, target in zip(arrays, out, strict=True):
            target[start:stop] = _row_statistics(statistic, array[index])
    return out


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float],
    statistic: Statistic = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap interval of `statistic(values)`: {"estimate", "low", "high"}.

    `statistic` maps a 1-D array to a number; if it takes `axis` (numpy reductions do), resamples are vectorised.
    """
    _check_settings(n_resamples, confidence)
    array = as_values(values)
    estimate = _scalar(statistic, array)
    (samples,) = _resampled(statistic, (array,), int(n_resamples), seed)
    low, high = _interval(samples, confidence)
    return {"estimate": estimate, "low": low, "high": high}


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    statistic: Statistic = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of `statistic(a) - statistic(b)` over aligned items: {"estimate", "low", "high", "p_value"}.

    Items are resampled jointly (a[i] and b[i] always together). p_value is two-sided: twice the share of resampled
    differences at or beyond 0 on the side opposite the estimate, capped at 1; an estimate of exactly 0 gives 1. With
    `n_resamples` resamples the smallest nonzero p is 2 / n_resamples, and 0 means "below that".
    """
    _check_settings(n_resamples, confidence)
    first, second = as_values(a, "a"), as_values(b, "b")
    if first.size != second.size:
        raise ValueError(
            f"paired_bootstrap_diff got {first.size} values in a but {second.size} in b: pass the same items, aligned"
        )
    estimate = _scalar(statistic, first) - _scalar(statistic, second)
    stats_a, stats_b = _resampled(statistic, (first, second), int(n_resamples), seed)
    differences = stats_a - stats_b
    low, high = _interval(differences, confidence)
    if estimate > 0:
        p_value = min(1.0, 2.0 * float(np.mean(differences <= 0)))
    elif estimate < 0:
        p_value = min(1.0, 2.0 * float(np.mean(differences >= 0)))
    else:
        p_value = 1.0
    return {"estimate": float(estimate), "low": low, "high": high, "p_value": p_value}


__all__ = ["as_values", "bootstrap_ci", "paired_bootstrap_diff"]
