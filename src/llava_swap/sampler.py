"""Length-grouped batches that never mix modalities: LLaVA's `group_by_modality_length`.

`group_by_length: true` in a stage batches samples of similar token counts together, so little padding (or, with
padding-free batches, little length imbalance) is left. LLaVA groups image samples and text-only samples separately:
their lengths differ systematically (hundreds of image tokens), and a mixed batch pays for the longest of both. Here
each modality is length-grouped with transformers' own megabatch scheme, cut into whole batches, and the batches of
both modalities are shuffled together; the few samples that fill no whole batch of their modality form the last
batch(es). The longest batch comes first, so an out-of-memory error shows at the first step rather than hours in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def modality_length_grouped_indices(
    lengths: Sequence[int], has_image: Sequence[bool], batch_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """Every index once; each run of `batch_size` holds one modality and similar lengths (but the final leftovers)."""
    if len(lengths) != len(has_image):
        raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags: give one of each per sample.")
    groups = [[i for i, image in enumerate(has_image) if image], [i for i, image in enumerate(has_image) if not image]]
    batches, leftovers = [], []
    for group in (group for group in groups if group):
        order = get_length_grouped_indices([lengths[i] for i in group], batch_size, generator=generator)
        ordered = [group[i] for i in order]
        whole = len(ordered) // batch_size * batch_size
        batches += [ordered[start : start + batch_size] for start in range(0, whole, batch_size)]
        leftovers += ordered[whole:]
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    leftovers.sort(key=lambda i: (not has_image[i], -lengths[i]))  # at most one mixed batch, at the very end
    return [index for batch in batches for index in batch] + leftovers


class ModalityLengthGroupedSampler(Sampler[int]):
    """A training sampler for `modality_length_grouped_indices`; a fresh grouping every epoch."""

    def __init__(
        self,
        lengths: Sequence[int],
        has_image: Sequence[bool],
        batch_size: int,
        generator: torch.Generator | None = None,
    ):
        self.lengths, self.has_image = list(lengths), [bool(flag) for flag in has_image]
        self.batch_size, self.generator = batch_size, generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        yield from modality_length_grouped_indices(self.lengths, self.has_image, self.batch_size, self.generator)


__all__ = ["ModalityLengthGroupedSampler", "modality_length_grouped_indices"]
