"""Design-factor ablations: how much does changing one factor move the probability of the correct answer?

LLaVA-Gemma (Hinck et al. 2024, Figure 1) reports, for each design factor (connector pretraining, a larger vision
encoder, ...), the average change in the probability the model gives the correct answer against the baseline design,
per evaluation, with confidence intervals. Each factor is represented by one variant that differs from the baseline
in that factor only, so the effect is a paired difference over the same items: mean(variant - baseline), with a
paired bootstrap interval and a sign-flip permutation p-value (`inference.compare_paired`), Holm-adjusted over
every factor and evaluation (`p_adjusted`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llava_swap.analysis.inference import as_values, compare_paired, holm


def _probabilities(prob_correct: Mapping[str, Mapping[str, Sequence[float]]], variant: str, evaluation: str):
    values = as_values(prob_correct[variant][evaluation], f"prob_correct[{variant!r}][{evaluation!r}]")
    outside = np.flatnonzero((values < 0) | (values > 1))
    if outside.size:
        raise ValueError(
            f"prob_correct[{variant!r}][{evaluation!r}][{outside[0]}] = {values[outside[0]]} is not a probability "
            "in [0, 1]"
        )
    return values


def ablation_effects(
    prob_correct: Mapping[str, Mapping[str, Sequence[float]]],
    baseline: str,
    factors: Mapping[str, str],
    n_resamples: int = 4999,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{factor: {evaluation: {"estimate", "low", "high", "p_value", "p_adjusted", "n", ...}}}: the effect of each
    factor on each evaluation (see `inference.compare_paired`).

    `prob_correct[variant][evaluation]` lists, per item, the probability that variant gave the correct answer; the
    items of an evaluation must be the same and in the same order for every variant. `factors` maps a factor's name
    to the variant that differs from `baseline` in that factor only. The effect is mean(variant - baseline) over the
    items, with a 95% paired bootstrap interval; every comparison uses `seed`, so the results are reproducible.
    Evaluations are the baseline's; a factor variant that lacks one is a ValueError (extra ones are not compared).
    """
    if baseline not in prob_correct:
        raise ValueError(f"baseline {baseline!r} is not in prob_correct (variants: {sorted(prob_correct)})")
    if not factors:
        raise ValueError("factors is empty: pass {factor name: variant differing from the baseline in it}")
    evaluations = list(prob_correct[baseline])
    if not evaluations:
        raise ValueError(f"prob_correct[{baseline!r}] has no evaluations")

    effects: dict[str, dict[str, dict[str, Any]]] = {}
    for factor, variant in factors.items():
        if variant not in prob_correct:
            raise ValueError(
                f"factor {factor!r} names variant {variant!r}, which is not in prob_correct "
                f"(variants: {sorted(prob_correct)})"
            )
        if variant == baseline:
            raise ValueError(f"factor {factor!r} names the baseline {baseline!r} itself; name the ablated variant")
        missing = [evaluation for evaluation in evaluations if evaluation not in prob_correct[variant]]
        if missing:
            raise ValueError(
                f"variant {variant!r} (factor {factor!r}) has no results for evaluation(s) {missing} that the "
                f"baseline {baseline!r} has; evaluate it on them too"
            )
        effects[factor] = {}
        for evaluation in evaluations:
            treated = _probabilities(prob_correct, variant, evaluation)
            reference = _probabilities(prob_correct, baseline, evaluation)
            if treated.size != reference.size:
                raise ValueError(
                    f"evaluation {evaluation!r}: variant {variant!r} has {treated.size} items but baseline "
                    f"{baseline!r} has {reference.size}; the items must be the same, in the same order"
                )
            effects[factor][evaluation] = compare_paired(treated, reference, seed=seed, n_resamples=n_resamples)
    adjusted = holm(
        {(f, e): effect["p_value"] for f, by_evaluation in effects.items() for e, effect in by_evaluation.items()}
    )
    for (factor, evaluation), p_adjusted in adjusted.items():
        effects[factor][evaluation]["p_adjusted"] = p_adjusted
    return effects


__all__ = ["ablation_effects"]
