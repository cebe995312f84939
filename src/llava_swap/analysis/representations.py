"""Representation similarity: how alike are the hidden states of two backbones, and how stable under perturbation?

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited") compares two sets of
representations of the same n inputs, whatever their widths: it is 1 for representations equal up to a rotation and
an isotropic scaling, and near 0 for unrelated ones only when the inputs far outnumber the features: with few inputs
and many features (32 prompts of a 4096-wide LLM) unrelated representations give linear CKA near 1. The report
therefore uses debiased CKA (the unbiased HSIC estimator of Song et al. 2012, as in Nguyen et al. 2021), which is ~0
for unrelated representations at any size, and shows beside each value the same measure with one side's rows
shuffled (`cka_baseline`): what "no relation" looks like on these very inputs. Backbones of different depths are compared at the same
relative depths. Sentence-level representations here are hidden states mean-pooled over the real (non-padding)
tokens, one vector per input and layer, so left- or right-padding a batch does not change them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def _matrix(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric (n, d) array: {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n inputs, d features), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} holds NaN or infinite values: check the model's outputs (overflow in half precision?)"
        )
    return array


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA of x (n, d1) and y (n, d2): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred float64.

    Row i of x and row i of y must describe the same input. Raises ValueError when a representation is constant over
    the inputs (after centring it is zero and CKA is undefined), which also happens for n = 1.
    """
    first, second = _matrix(x, "x"), _matrix(y, "y")
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"linear_cka needs the same inputs on both sides: x has {first.shape[0]} rows, y has {second.shape[0]}"
        )
    first = first - first.mean(axis=0, keepdims=True)
    second = second - second.mean(axis=0, keepdims=True)
    n = first.shape[0]
    if n <= min(first.shape[1], second.shape[1]):
        # Fewer inputs than features (the usual case for LLM hidden states): the n x n Gram matrices are cheaper,
        # and ||Y^T X||_F^2 = <XX^T, YY^T>_F, ||X^T X||_F = ||XX^T||_F.
        gram_x, gram_y = first @ first.T, second @ second.T
        cross = float(np.sum(gram_x * gram_y))
        norm_x, norm_y = float(np.linalg.norm(gram_x)), float(np.linalg.norm(gram_y))
    else:
        cross = float(np.linalg.norm(second.T @ first) ** 2)
        norm_x, norm_y = float(np.linalg.norm(first.T @ first)), float(np.linalg.norm(second.T @ second))
    for norm, name in ((norm_x, "x"), (norm_y, "y")):
        if norm == 0.0:
            raise ValueError(
                f"linear_cka: {name} is the same for every input (zero after centring), so CKA is undefined; "
                "use at least 2 inputs with distinct representations"
            )
    return cross / (norm_x * norm_y)


def _centred_gram(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    return centred @ centred.T


def _unbiased_hsic(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC of two n x n Gram matrices (n >= 4), diagonals excluded."""
    n = gram_x.shape[0]
    k, l_ = gram_x.copy(), gram_y.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    ones_k, ones_l = k.sum(axis=0), l_.sum(axis=0)
    value = np.sum(k * l_) + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_k @ ones_l
    return float(value / (n * (n - 3)))


def _debiased_from_grams(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    norm = _unbiased_hsic(gram_x, gram_x) * _unbiased_hsic(gram_y, gram_y)
    if norm <= 0.0:
        raise ValueError("debiased_cka: a representation varies too little across the inputs for CKA to be defined")
    return _unbiased_hsic(gram_x, gram_y) / math.sqrt(norm)


def debiased_cka(x: Any, y: Any) -> float:
    """Debiased linear CKA of x (n, d1) and y (n, d2), n >= 4: ~0 for unrelated representations whatever n and d,
    1 for equal ones up to rotation and isotropic scaling (it can be slightly negative by chance)."""
    first, second = _matrix(x, "x"), _matrix(y, "y")
    if first.shape[0] != second.shape[0] or first.shape[0] < 4:
        raise ValueError(
            f"debiased_cka needs the same inputs (at least 4) on both sides: x has {first.shape[0]} rows, y has "
            f"{second.shape[0]}"
        )
    return _debiased_from_grams(_centred_gram(first), _centred_gram(second))


def cka_baseline(x: Any, y: Any, permutations: int = 200, seed: int = 0) -> dict[str, float]:
    """Debiased CKA of x against y with y's rows shuffled (the inputs no longer correspond): {"mean", "p95"} over
    `permutations` shuffles. A CKA value means something only where it stands clear of this."""
    gram_x, gram_y = _centred_gram(_matrix(x, "x")), _centred_gram(_matrix(y, "y"))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(permutations):
        order = rng.permutation(gram_y.shape[0])
        values.append(_debiased_from_grams(gram_x, gram_y[np.ix_(order, order)]))
    return {"mean": float(np.mean(values)), "p95": float(np.quantile(values, 0.95))}


def cka_matrix(layers_a: Sequence[Any], layers_b: Sequence[Any], measure=None) -> list[list[float]]:
    """CKA of every layer of one model against every layer of another: result[i][j] = CKA(a[i], b[j]) (linear CKA,
    or `measure`, e.g. `debiased_cka`)."""
    measure = measure or linear_cka
    if len(layers_a) == 0 or len(layers_b) == 0:
        raise ValueError(f"cka_matrix needs layers on both sides, got {len(layers_a)} and {len(layers_b)}")
    # Convert each layer (torch tensors included) once rather than once per pair.
    first = [_matrix(layer, f"layers_a[{i}]") for i, layer in enumerate(layers_a)]
    second = [_matrix(layer, f"layers_b[{j}]") for j, layer in enumerate(layers_b)]
    return [[measure(x, y) for y in second] for x in first]


def _depth_index(fraction: float, n_layers: int) -> int:
    return int(math.floor(fraction * (n_layers - 1) + 0.5))  # round half up, unlike round()'s banker's rounding


def relative_depth_pairs(n_layers_a: int, n_layers_b: int, points: int = 5) -> list[tuple[int, int]]:
    """`points` layer index pairs (i, j) at the same relative depths, evenly from 0 (first) to 1 (last), inclusive.

    Depth t maps to round(t * (n_layers - 1)); with more points than layers an index repeats, so the result always
    has `points` pairs.
    """
    for name, value in (("n_layers_a", n_layers_a), ("n_layers_b", n_layers_b), ("points", points)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    fractions = [0.0] if points == 1 else [k / (points - 1) for k in range(points)]
    return [(_depth_index(t, int(n_layers_a)), _depth_index(t, int(n_layers_b))) for t in fractions]


def _device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def pooled_hidden_states(
    model: torch.nn.Module, inputs: Mapping[str, Any], mask_key: str | None = "attention_mask"
) -> list[np.ndarray]:
    """Mean-pooled hidden states: one (batch, hidden) float64 array per entry of `.hidden_states` (embeddings first).

    Runs `model(**inputs, output_hidden_states=True)` without gradients and in eval mode (the model's mode is
    restored afterwards), then averages each layer over the tokens where `inputs[mask_key]` is 1. Without that key
    (or with mask_key=None) every token counts.
    """
    device = _device(model)
    moved = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
    was_training = model.training
    model.eval()  # dropout would make the representation of the same input differ between calls
    try:
        with torch.no_grad():
            outputs = model(**moved, output_hidden_states=True)
    finally:
        model.train(was_training)
    hidden_states = getattr(outputs, "hidden_states", None)
    if not hidden_states:
        raise ValueError(
            f"{type(model).__name__} returned no hidden_states with output_hidden_states=True: pass a model whose "
            "output has them (a Hugging Face causal LM or LLaVA model)"
        )

    mask = moved.get(mask_key) if mask_key is not None else None
    pooled = []
    for index, hidden in enumerate(hidden_states):
        if hidden.ndim != 3:
            raise ValueError(
                f"hidden_states[{index}] has shape {tuple(hidden.shape)}, expected (batch, tokens, hidden)"
            )
        if mask is None:
            weights = torch.ones(hidden.shape[:2], device=hidden.device)
        else:
            if tuple(mask.shape) != tuple(hidden.shape[:2]):
                raise ValueError(
                    f"inputs[{mask_key!r}] has shape {tuple(mask.shape)} but the hidden states cover "
                    f"{tuple(hidden.shape[:2])} (batch, tokens); pass the mask that matches the model's sequence"
                )
            weights = mask.to(hidden.device, torch.float32)
        counts = weights.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            empty = torch.nonzero(counts[:, 0] == 0).flatten().tolist()
            raise ValueError(f"inputs[{mask_key!r}] masks out every token of batch row(s) {empty}: nothing to pool")
        # Float32 accumulation on the model's device: pooling a bf16 model on a GPU needs no float64 copy of the
        # whole (batch, tokens, hidden) tensor; the result is float64 for the CKA that follows.
        summed = torch.einsum("bt,bth->bh", weights, hidden.float())
        pooled.append((summed / counts).to("cpu", torch.float64).numpy())
    return pooled


def stability(model: torch.nn.Module, inputs: Mapping[str, Any], perturbed_inputs: Mapping[str, Any]) -> list[float]:
    """Per layer, linear CKA between the pooled representations of `inputs` and of `perturbed_inputs`.

    Row i of the perturbed batch must be a perturbation of row i of `inputs` (the token counts may differ).
    """
    original = pooled_hidden_states(model, inputs)
    perturbed = pooled_hidden_states(model, perturbed_inputs)
    if len(original) != len(perturbed) or original[0].shape[0] != perturbed[0].shape[0]:
        raise ValueError(
            f"stability: inputs give {len(original)} layers x {original[0].shape[0]} rows but perturbed_inputs "
            f"{len(perturbed)} x {perturbed[0].shape[0]}; perturb each input once, in the same order"
        )
    return [linear_cka(x, y) for x, y in zip(original, perturbed, strict=True)]


__all__ = [
    "cka_baseline",
    "cka_matrix",
    "debiased_cka",
    "linear_cka",
    "pooled_hidden_states",
    "relative_depth_pairs",
    "stability",
]
