"""Do two backbones get the same items right? Item-level agreement between the variants of a controlled study.

Two variants with the same accuracy may still fail on different items; accuracy alone cannot tell. For each pair of
variants this module builds the 2x2 table of joint correctness and reports phi (the correlation of the two 0/1
columns), Cohen's kappa (agreement beyond what the two accuracies alone would produce) and McNemar's test (do the
items only one variant gets right lean towards one of them: a paired test of the accuracy difference). The "upset"
counts say, for every subset of variants, how many items exactly that subset got right.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_SHOWN_IDS = 5  # how many offending ids an error message lists


def _show(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


def _correct_value(record: Mapping[str, Any], variant: str, item: str) -> int:
    if "correct" not in record:
        raise ValueError(f"variant {variant!r}, item {item!r}: record has no 'correct' field (0 or 1)")
    value = record["correct"]
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"variant {variant!r}, item {item!r}: correct = {value!r} is not 0 or 1") from error
    if number not in (0.0, 1.0):
        raise ValueError(f"variant {variant!r}, item {item!r}: correct = {value!r} is not 0 or 1 (True/False work)")
    return int(number)


def _indexed(records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Mapping]]:
    """Each variant's records by id (ids as strings, so 7 and "7" from a JSON round trip are the same item)."""
    if not records_by_variant:
        raise ValueError("records_by_variant is empty: pass {variant name: [per-item record, ...]}")
    indexed: dict[str, dict[str, Mapping]] = {}
    for variant, records in records_by_variant.items():
        by_id: dict[str, Mapping] = {}
        for position, record in enumerate(records):
            if "id" not in record:
                raise ValueError(f"variant {variant!r}: record {position} has no 'id' field")
            item = str(record["id"])
            if item in by_id:
                raise ValueError(f"variant {variant!r}: id {item!r} occurs twice; each item must be scored once")
            by_id[item] = record
        indexed[str(variant)] = by_id
    all_ids = set().union(*(set(by_id) for by_id in indexed.values()))
    for variant, by_id in indexed.items():
        missing = sorted(all_ids - set(by_id))
        if missing:
            raise ValueError(
                f"variant {variant!r} has no record for {len(missing)} item(s) the others have: {_show(missing)}. "
                "Evaluate every variant on the same items (or filter all of them to the common ids) first."
            )
    if not all_ids:
        raise ValueError("records_by_variant holds no records: there is nothing to compare")
    return indexed


def _matrix(indexed: dict[str, dict[str, Mapping]]) -> tuple[list[str], list[str], np.ndarray]:
    variants = list(indexed)
    ids = list(indexed[variants[0]])  # the first variant's order; every variant has the same set
    matrix = np.empty((len(ids), len(variants)), dtype=np.int64)
    for column, variant in enumerate(variants):
        by_id = indexed[variant]
        for row, item in enumerate(ids):
            matrix[row, column] = _correct_value(by_id[item], variant, item)
    return ids, variants, matrix


def correctness_matrix(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, variants, matrix): matrix[i, j] = 1 if variant j got item ids[i] right, aligned by the records' "id".

    Ids are strings in the first variant's order; variants keep the mapping's order. An item missing from any variant,
    or scored twice in one, is a ValueError: nothing is dropped silently.
    """
    return _matrix(_indexed(records_by_variant))


def _binary(values: Sequence[int | bool], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of 0/1 (one per item), got shape {array.shape}")
    try:
        numbers = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold 0/1 values: {error}") from error
    bad = np.flatnonzero((numbers != 0) & (numbers != 1))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]].item()!r} is not 0 or 1 (True/False also work)")
    return numbers.astype(bool)


def _exact_mcnemar_p(discordant_a: int, discordant_b: int) -> float:
    """Two-sided exact McNemar p: min(1, 2 P(X <= min(b, c))) for X ~ Bin(b + c, 1/2)."""
    total = discordant_a + discordant_b
    if total == 0:
        return 1.0
    smaller = min(discordant_a, discordant_b)
    # Log space: 2 ** total overflows a float beyond about 1000 discordant items.
    logs = [math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) for k in range(smaller + 1)]
    top = max(logs)
    log_cdf = top + math.log(math.fsum(math.exp(value - top) for value in logs)) - total * math.log(2.0)
    return min(1.0, 2.0 * math.exp(log_cdf))


def pairwise_agreement(a: Sequence[int | bool], b: Sequence[int | bool]) -> dict[str, Any]:
    """Agreement of two aligned 0/1 correctness columns.

    both / only_a / only_b / neither: the 2x2 table; n: the item count.
    phi: Pearson correlation of the two columns, (both*neither - only_a*only_b) / sqrt(product of the four margins);
    None when a column is constant.
    kappa: Cohen's kappa, (p_observed - p_chance) / (1 - p_chance); None only when both columns are the same
    constant (p_chance = 1). One constant column and one varying gives kappa = 0 (agreement is at chance) but phi None.
    mcnemar_p: exact two-sided McNemar, min(1, 2 P(X <= min(only_a, only_b))), X ~ Bin(only_a + only_b, 1/2); 1.0
    without discordant items.
    mcnemar_chi2: (|only_a - only_b| - 1)^2 / (only_a + only_b) (Edwards' continuity correction, as statsmodels);
    None without discordant items.
    """
    first, second = _binary(a, "a"), _binary(b, "b")
    if first.size != second.size:
        raise ValueError(f"pairwise_agreement got {first.size} values in a but {second.size} in b: align the items")
    if first.size == 0:
        raise ValueError("pairwise_agreement got no items: agreement of nothing is undefined")
    both = int(np.sum(first & second))
    only_a = int(np.sum(first & ~second))
    only_b = int(np.sum(~first & second))
    neither = int(np.sum(~first & ~second))
    n = both + only_a + only_b + neither

    # Integer arithmetic up to the final division: "undefined" is an exact zero, not a float near one.
    cross = both * neither - only_a * only_b
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = cross / math.sqrt(margins) if margins else None
    # Cohen's kappa of a 2x2 table in closed form: 2(ad - bc) / ((a+b)(b+d) + (a+c)(c+d)).
    kappa_denominator = (both + only_a) * (only_a + neither) + (both + only_b) * (only_b + neither)
    kappa = 2 * cross / kappa_denominator if kappa_denominator else None

    discordant = only_a + only_b
    chi2 = (abs(only_a - only_b) - 1) ** 2 / discordant if discordant else None
    return {
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": neither,
        "n": n,
        "phi": None if phi is None else float(phi),
        "kappa": None if kappa is None else float(kappa),
        "mcnemar_p": _exact_mcnemar_p(only_a, only_b),
        "mcnemar_chi2": None if chi2 is None else float(chi2),
    }


def _pairs(variants: list[str], matrix: np.ndarray) -> dict[str, dict[str, Any]]:
    return {
        f"{variants[i]} vs {variants[j]}": pairwise_agreement(matrix[:, i], matrix[:, j])
        for i, j in itertools.combinations(range(len(variants)), 2)
    }


def _upset(variants: list[str], matrix: np.ndarray) -> dict[str, int]:
    """Items right for exactly each subset of variants, every subset listed (zeros too), smaller subsets first."""
    counts: dict[str, int] = {}
    for size in range(len(variants) + 1):
        for subset in itertools.combinations(range(len(variants)), size):
            pattern = np.zeros(len(variants), dtype=bool)
            pattern[list(subset)] = True
            key = "&".join(variants[k] for k in subset) if subset else "none"
            counts[key] = int(np.sum(np.all(matrix.astype(bool) == pattern, axis=1)))
    return counts


def agreement_report(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], by_question_type: bool = True
) -> dict[str, Any]:
    """Pairwise agreement of all variants, overall and per question type, plus the upset counts.

    Returns {"variants": [...], "n": item count, "pairs": {"A vs B": pairwise_agreement(...)}, "by_question_type":
    {question_type: {"A vs B": ...}} (sorted; {} when `by_question_type` is False), "upset": {"A&B": items exactly A
    and B got right, ..., "none": items no variant got right}}. The upset counts sum to n.
    """
    indexed = _indexed(records_by_variant)
    ids, variants, matrix = _matrix(indexed)
    for variant in variants:
        # The report's keys are built from the names; these would make them ambiguous.
        if variant == "none" or "&" in variant or " vs " in variant:
            raise ValueError(f"variant name {variant!r} clashes with the report's keys: avoid 'none', '&' and ' vs '")
    report: dict[str, Any] = {"variants": variants, "n": len(ids), "pairs": _pairs(variants, matrix)}

    per_type: dict[str, dict[str, Any]] = {}
    if by_question_type:
        types: list[str] = []
        for item in ids:
            seen = {variant: indexed[variant][item].get("question_type", None) for variant in variants}
            if any(value is None for value in seen.values()):
                raise ValueError(
                    f"item {item!r} has no 'question_type' in some variant ({seen}); "
                    "add it or pass by_question_type=False"
                )
            if len(set(map(str, seen.values()))) > 1:
                raise ValueError(f"item {item!r} has a different question_type per variant: {seen}; fix the records")
            types.append(str(seen[variants[0]]))
        labels = np.array(types, dtype=object)
        for question_type in sorted(set(types)):
            per_type[question_type] = _pairs(variants, matrix[labels == question_type])
    report["by_question_type"] = per_type
    report["upset"] = _upset(variants, matrix)
    return report


__all__ = ["agreement_report", "correctness_matrix", "pairwise_agreement"]
