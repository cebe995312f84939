"""One inference layer for the study: paired comparisons of variants on the same items, and their correction.

Every variant answers the same items, so two variants are compared item by item:
- correct/incorrect per item: the exact McNemar test (a binomial test on the items only one variant gets right,
  `scipy.stats.binomtest`), which stays valid however few items differ;
- continuous per-item scores: a paired sign-flip permutation test of the mean difference
  (`scipy.stats.permutation_test`);
- the difference itself: a paired bootstrap interval (`scipy.stats.bootstrap`, BCa; percentile where BCa is
  undefined; the method used is recorded); a proportion: a Wilson interval (`statsmodels`).
A family of comparisons is Holm-adjusted (`statsmodels.stats.multitest`), and both p-values are kept. An interval
of zero width (every item the same) is marked `degenerate`, never printed as if it were precise.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 4999


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


_TOLERANCE = 1e-12  # floating-point noise: 0.1 + x - x is not always 0.1


def _constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) <= _TOLERANCE * max(1.0, float(np.max(np.abs(values)))))


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def compare_paired(
    a: Sequence[float], b: Sequence[float], seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, Any]:
    """`mean(a) - mean(b)` over aligned items, with its interval and a two-sided p-value (`paired_test`).

    Returns {"estimate", "low", "high", "interval", "degenerate", "p_value", "test", "n"}, and "only_a" / "only_b"
    for 0/1 values.
    """
    first, second = as_values(a, "a"), as_values(b, "b")
    if first.size != second.size:
        raise ValueError(f"compare_paired got {first.size} values in a but {second.size} in b: pass the same items")
    out: dict[str, Any] = {"estimate": float(np.mean(first - second)), "n": int(first.size)}
    out.update(paired_test(first, second, seed, n_resamples))
    out.update(_paired_interval(first, second, seed, n_resamples))
    return out


def paired_test(first: np.ndarray, second: np.ndarray, seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict:
    """The two-sided test of no difference between aligned items: {"test", "p_value"} (+ the discordant counts
    "only_a" / "only_b" of 0/1 values, which are all the exact McNemar test looks at)."""
    from scipy import stats

    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    differences = first - second
    if is_binary(first) and is_binary(second):
        only_a, only_b = int(np.sum((first == 1) & (second == 0))), int(np.sum((first == 0) & (second == 1)))
        p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        return {"test": "exact McNemar", "p_value": float(p), "only_a": only_a, "only_b": only_b}
    if _constant(differences) and abs(differences[0]) <= _TOLERANCE:
        return {"test": "paired sign-flip permutation", "p_value": 1.0}
    result = stats.permutation_test(
        (differences,),
        lambda d, axis: np.mean(d, axis=axis),
        permutation_type="samples",
        n_resamples=n_resamples,
        alternative="two-sided",
        **_seeded(stats.permutation_test, seed),
    )
    return {"test": "paired sign-flip permutation", "p_value": float(result.pvalue)}


def _paired_interval(first: np.ndarray, second: np.ndarray, seed: int, n_resamples: int) -> dict[str, Any]:
    from scipy import stats

    estimate = float(np.mean(first - second))
    if _constant(first - second):  # every item differs by the same amount: nothing to resample
        return {"low": estimate, "high": estimate, "interval": "none", "degenerate": True}
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns (and returns NaN) where it is undefined
            result = stats.bootstrap(
                (first, second),
                lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                paired=True,
                vectorized=True,
                confidence_level=CONFIDENCE,
                n_resamples=n_resamples,
                method=method,
                **_seeded(stats.bootstrap, seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return {"low": low, "high": high, "interval": f"paired bootstrap ({method})", "degenerate": low == high}
    raise AssertionError("the percentile bootstrap interval is always finite for finite data")


def mean_interval(values: Sequence[float], seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """The mean of per-item values with its interval: Wilson for 0/1 values, else a bootstrap (BCa) interval."""
    from scipy import stats
    from statsmodels.stats.proportion import proportion_confint

    array = as_values(values)
    estimate = float(array.mean())
    if is_binary(array):
        low, high = proportion_confint(int(array.sum()), array.size, alpha=1 - CONFIDENCE, method="wilson")
        return {"estimate": estimate, "low": float(low), "high": float(high), "interval": "Wilson", "degenerate": False}
    if _constant(array):
        return {"estimate": estimate, "low": estimate, "high": estimate, "interval": "none", "degenerate": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (array,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_resamples, **_seeded(stats.bootstrap, seed)
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    method = "bootstrap (BCa)"
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = (float(q) for q in np.quantile(array, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
        method = "item quantiles"
    return {"estimate": estimate, "low": low, "high": high, "interval": method, "degenerate": low == high}


def statistic_interval(
    arrays: Sequence[Sequence[float]], statistic, seed: int = 0, n_resamples: int = 999
) -> dict[str, Any]:
    """A percentile bootstrap interval of any statistic of per-item arrays resampled together (items kept whole):
    e.g. ECE of (confidence, correct) pairs. {"estimate", "low", "high", "interval", "degenerate"}."""
    from scipy import stats

    data = tuple(np.asarray(array, dtype=np.float64) for array in arrays)
    estimate = float(statistic(*data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=False,
            confidence_level=CONFIDENCE,
            n_resamples=n_resamples,
            method="percentile",
            **_seeded(stats.bootstrap, seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {
        "estimate": estimate,
        "low": low,
        "high": high,
        "interval": "paired bootstrap (percentile)",
        "degenerate": low == high,
    }


def _seeded(function, seed: int) -> dict[str, Any]:
    """The seed argument of a scipy resampling function: `rng` from scipy 1.15 on, `random_state` before."""
    import inspect

    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values of a family of comparisons (same keys)."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return {}
    _, adjusted, _, _ = multipletests(list(p_values.values()), method="holm")
    return {key: float(value) for key, value in zip(p_values, adjusted, strict=True)}


def format_p(p: float) -> str:
    """A p-value as a report prints it: "< 0.001" below that, never "0.000"."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_interval(value: Mapping[str, Any]) -> str:
    """`estimate [low, high]`, or the estimate and why there is no interval."""
    if value.get("degenerate"):
        return f"{value['estimate']:.3f} (no spread across items: no interval)"
    return f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


__all__ = [
    "as_values",
    "compare_paired",
    "paired_test",
    "format_interval",
    "format_p",
    "holm",
    "is_binary",
    "mean_interval",
]
