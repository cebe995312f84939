"""Training seeds as an axis of the study: summaries over runs, and the rule a stated finding must pass.

A study trains every variant once per training seed (the initialisation of the new rows and the projector, and the
data order; the generated data stay fixed), so every statistic has one value per seed. `spread` summarises them:
the mean over seeds, the standard deviation between seeds and the range. `consistency` decides whether a paired
difference holds across training runs: its Holm-adjusted p-value is below `ALPHA` in every seed, with the same sign
in all of them. A difference significant in some seeds only, or in opposite directions, is not consistent across
seeds, and the report claims nothing from it.

Per-seed values are keyed by the seed as a string (the key results.json gives them).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05


@dataclass(frozen=True)
class Spread:
    """One statistic over the training seeds."""

    per_seed: dict[str, float | None]  # None where the statistic is undefined in that seed (e.g. kappa)
    mean: float | None  # over the seeds where it is defined; None in none
    sd: float | None  # between seeds (n - 1 in the denominator); None with fewer than two values
    min: float | None
    max: float | None
    n: int  # seeds with a value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spread(per_seed: Mapping[str, float | None]) -> Spread:
    """Mean, between-seed SD and range of one value per seed."""
    values = [float(value) for value in per_seed.values() if value is not None]
    return Spread(
        per_seed={str(seed): None if value is None else float(value) for seed, value in per_seed.items()},
        mean=statistics.fmean(values) if values else None,
        sd=statistics.stdev(values) if len(values) > 1 else None,
        min=min(values, default=None),
        max=max(values, default=None),
        n=len(values),
    )


@dataclass(frozen=True)
class Consistency:
    """Does a paired difference hold in every training run?"""

    seeds: list[str]
    significant_in: list[str]  # seeds whose Holm-adjusted p is below ALPHA
    signs: dict[str, int]  # the sign of the estimate in each of those seeds (+1, -1 or 0)

    @property
    def holds(self) -> bool:
        """Significant in every seed, all with one (non-zero) sign."""
        return self.significant_in == self.seeds and len(set(self.signs.values())) == 1 and 0 not in self.signs.values()

    @property
    def direction(self) -> int:
        """+1 (the first of the pair is higher) or -1 where the difference holds; 0 where it does not."""
        return next(iter(self.signs.values())) if self.holds else 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "holds": self.holds, "direction": self.direction}


def consistency(per_seed: Mapping[str, Mapping[str, Any]], alpha: float = ALPHA) -> Consistency:
    """`per_seed`: {seed: a comparison with "estimate" and "p_adjusted"} of one pair (or effect) in every seed."""
    signs = {
        str(seed): _sign(comparison["estimate"])
        for seed, comparison in per_seed.items()
        if comparison["p_adjusted"] < alpha
    }
    return Consistency(seeds=[str(seed) for seed in per_seed], significant_in=list(signs), signs=signs)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


__all__ = ["ALPHA", "Consistency", "Spread", "consistency", "spread"]
