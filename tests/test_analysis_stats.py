"""Per-instance analyses against hand-computed values: agreement, bootstrap, CKA, pooled hidden states, ablations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llava_swap.analysis.ablation import ablation_effects
from llava_swap.analysis.agreement import agreement_report, correctness_matrix, pairwise_agreement
from llava_swap.analysis.representations import (
    cka_matrix,
    linear_cka,
    pooled_hidden_states,
    relative_depth_pairs,
    stability,
)
from llava_swap.analysis.stats import bootstrap_ci, paired_bootstrap_diff


def _columns(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return a, b


def _records(correct: dict[str, int], question_types: dict[str, str] | None = None) -> list[dict]:
    types = question_types or {}
    return [
        {"id": item, "question_type": types.get(item, "count"), "score": float(c), "correct": c, "confidence": 0.5}
        for item, c in correct.items()
    ]


# --------------------------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------------------------


def test_pairwise_agreement_matches_hand_computed_table():
    # both=20, only_a=5, only_b=10, neither=15, n=50; margins: a=1: 25, a=0: 25, b=1: 30, b=0: 20.
    # phi = (20*15 - 5*10) / sqrt(25*25*30*20) = 250 / sqrt(375000) = 250 / (250 sqrt 6) = 1/sqrt(6) ~ 0.40825.
    # kappa: p_o = (20+15)/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4.
    # McNemar exact: discordant 5 vs 10, X ~ Bin(15, 1/2); P(X <= 5) = (1+15+105+455+1365+3003) / 2^15 = 4944/32768;
    # p = 2 * 4944/32768 = 9888/32768 = 0.3017578125. chi2 = (|5-10| - 1)^2 / 15 = 16/15.
    result = pairwise_agreement(*_columns(20, 5, 10, 15))
    assert (result["both"], result["only_a"], result["only_b"], result["neither"], result["n"]) == (20, 5, 10, 15, 50)
    assert result["phi"] == pytest.approx(1 / math.sqrt(6), abs=1e-12)
    assert result["kappa"] == pytest.approx(0.4, abs=1e-12)
    assert result["mcnemar_p"] == pytest.approx(9888 / 32768, abs=1e-12)
    assert result["mcnemar_chi2"] == pytest.approx(16 / 15, abs=1e-12)
    json.dumps(result)  # plain Python types only


def test_pairwise_agreement_second_table_and_symmetry():
    # both=30, only_a=2, only_b=8, neither=10 (n=50): margins a=1: 32, a=0: 18, b=1: 38, b=0: 12.
    # phi = (300 - 16) / sqrt(32*18*38*12) = 284 / sqrt(262656) = 284 / 512.5 = 0.5541463...
    # kappa = 2*284 / (32*12 + 38*18) = 568 / (384 + 684) = 568/1068 = 0.5318352...
    # McNemar: Bin(10, 1/2), P(X <= 2) = (1+10+45)/1024 = 56/1024; p = 112/1024 = 0.109375. chi2 = (6-1)^2/10 = 2.5.
    result = pairwise_agreement(*_columns(30, 2, 8, 10))
    assert result["phi"] == pytest.approx(284 / math.sqrt(262656), abs=1e-12)
    assert result["kappa"] == pytest.approx(568 / 1068, abs=1e-12)
    assert result["mcnemar_p"] == pytest.approx(0.109375, abs=1e-12)
    assert result["mcnemar_chi2"] == pytest.approx(2.5)
    swapped = pairwise_agreement(*reversed(_columns(30, 2, 8, 10)))
    assert (swapped["only_a"], swapped["only_b"]) == (8, 2)
    for key in ("phi", "kappa", "mcnemar_p", "mcnemar_chi2"):
        assert swapped[key] == pytest.approx(result[key])


def test_pairwise_agreement_degenerate_tables():
    # No discordant items: McNemar p = 1, chi2 undefined.
    same = pairwise_agreement([1, 0, 1, 1], [1, 0, 1, 1])
    assert same["mcnemar_p"] == 1.0 and same["mcnemar_chi2"] is None
    assert same["phi"] == pytest.approx(1.0) and same["kappa"] == pytest.approx(1.0)
    # Both columns the same constant: phi and kappa undefined.
    constant = pairwise_agreement([1, 1, 1], [1, 1, 1])
    assert constant["phi"] is None and constant["kappa"] is None
    # One constant column: phi undefined, kappa 0 (agreement exactly at chance).
    one_constant = pairwise_agreement([1, 1, 1, 1], [1, 0, 1, 0])
    assert one_constant["phi"] is None and one_constant["kappa"] == 0.0
    # Every item discordant one way: P(X <= 0) for Bin(4, 1/2) = 1/16, p = 1/8; chi2 = (4-1)^2/4 = 2.25.
    lopsided = pairwise_agreement([1, 1, 1, 1], [0, 0, 0, 0])
    assert lopsided["mcnemar_p"] == pytest.approx(0.125) and lopsided["mcnemar_chi2"] == pytest.approx(2.25)
    # Equal discordant counts: p capped at 1.
    assert pairwise_agreement([1, 0], [0, 1])["mcnemar_p"] == 1.0


def test_mcnemar_p_stays_finite_for_many_discordant_items():
    # 2^3000 overflows a float; Bin(3000, 1/2) puts P(X <= 1500) just above 1/2, so p = 1.
    a, b = _columns(0, 1500, 1500, 0)
    assert pairwise_agreement(a, b)["mcnemar_p"] == 1.0
    a, b = _columns(0, 1300, 1700, 0)
    assert 0.0 <= pairwise_agreement(a, b)["mcnemar_p"] < 1e-10


def test_pairwise_agreement_rejects_bad_input():
    with pytest.raises(ValueError, match="3 values in a but 2 in b"):
        pairwise_agreement([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=r"a\[1\] = 2 is not 0 or 1"):
        pairwise_agreement([1, 2], [1, 0])


def test_correctness_matrix_aligns_by_id():
    records = {
        "A": _records({"q1": 1, "q2": 0, "q3": 1}),
        "B": list(reversed(_records({"q1": 0, "q2": 0, "q3": 1}))),
    }
    ids, variants, matrix = correctness_matrix(records)
    assert ids == ["q1", "q2", "q3"] and variants == ["A", "B"]
    assert matrix.tolist() == [[1, 0], [0, 0], [1, 1]]


def test_correctness_matrix_treats_int_and_string_ids_as_the_same_item():
    records = {"A": _records({1: 1, 2: 0}), "B": _records({"2": 1, "1": 1})}
    ids, _, matrix = correctness_matrix(records)
    assert ids == ["1", "2"] and matrix.tolist() == [[1, 1], [0, 1]]


def test_correctness_matrix_names_the_variant_and_the_missing_ids():
    records = {
        "A": _records({"q1": 1, "q2": 0, "q3": 1}),
        "B": _records({"q1": 1, "q3": 0}),
    }
    with pytest.raises(ValueError, match=r"variant 'B' has no record for 1 item\(s\).*'q2'"):
        correctness_matrix(records)
    records["B"].append({"id": "q4", "correct": 1})
    with pytest.raises(ValueError, match="variant 'A'.*'q4'"):
        correctness_matrix(records)
    with pytest.raises(ValueError, match="'q1' occurs twice"):
        correctness_matrix({"A": _records({"q1": 1}) + _records({"q1": 0})})


def test_agreement_report_pairs_question_types_and_upset():
    rng = np.random.default_rng(0)
    ids = [f"q{i}" for i in range(40)]
    types = {item: ("count" if i % 2 else "colour") for i, item in enumerate(ids)}
    records = {
        name: _records({item: int(rng.random() < p) for item in ids}, types)
        for name, p in (("llama2", 0.5), ("llama3", 0.7), ("gemma", 0.6))
    }
    report = agreement_report(records)
    assert set(report["pairs"]) == {"llama2 vs llama3", "llama2 vs gemma", "llama3 vs gemma"}
    assert set(report["by_question_type"]) == {"colour", "count"}
    for pairs in report["by_question_type"].values():
        assert set(pairs) == set(report["pairs"])
    # The per-type tables partition the overall one.
    for pair, overall in report["pairs"].items():
        for key in ("both", "only_a", "only_b", "neither", "n"):
            assert overall[key] == sum(per[pair][key] for per in report["by_question_type"].values())
    upset = report["upset"]
    assert len(upset) == 2**3 and "none" in upset and "llama2&llama3&gemma" in upset
    assert sum(upset.values()) == report["n"] == 40
    # Each variant's accuracy is the sum of the upset cells that contain it.
    _, variants, matrix = correctness_matrix(records)
    for column, name in enumerate(variants):
        assert sum(count for key, count in upset.items() if name in key.split("&")) == int(matrix[:, column].sum())
    json.dumps(report)
    assert agreement_report(records, by_question_type=False)["by_question_type"] == {}


# --------------------------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    values = np.random.default_rng(1).random(200)
    result = bootstrap_ci(values, n_resamples=500, seed=3)
    assert result["estimate"] == pytest.approx(float(np.mean(values)))
    assert result["low"] < result["estimate"] < result["high"]
    assert result == bootstrap_ci(values, n_resamples=500, seed=3)
    assert result != bootstrap_ci(values, n_resamples=500, seed=4)
    assert all(type(v) is float for v in result.values())
    # A statistic without an `axis` argument gives the same interval through the per-resample loop.
    assert bootstrap_ci(values, statistic=lambda v: float(np.mean(v)), n_resamples=500, seed=3) == result


def test_bootstrap_ci_of_a_constant_is_a_point_and_bad_input_is_named():
    assert bootstrap_ci([0.5] * 10, n_resamples=50) == {"estimate": 0.5, "low": 0.5, "high": 0.5}
    with pytest.raises(ValueError, match=r"values\[1\] = nan"):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_paired_bootstrap_diff_identical_arrays_is_zero_with_p_one():
    values = np.random.default_rng(2).random(50)
    result = paired_bootstrap_diff(values, values.copy(), n_resamples=300)
    assert result == {"estimate": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_diff_detects_a_consistent_shift():
    base = np.random.default_rng(3).random(100)
    result = paired_bootstrap_diff(base + 0.05, base, n_resamples=300)
    # Every item moves by 0.05, so every paired resample differs by exactly 0.05 (up to rounding).
    assert result["estimate"] == pytest.approx(0.05)
    assert result["low"] == pytest.approx(0.05) and result["high"] == pytest.approx(0.05)
    assert result["p_value"] == 0.0
    assert paired_bootstrap_diff(base, base + 0.05, n_resamples=300)["estimate"] == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="100 values in a but 99 in b"):
        paired_bootstrap_diff(base, base[:-1])


# --------------------------------------------------------------------------------------------------------------------
# CKA
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), [(30, 8), (8, 30)])  # feature-space and Gram-space branches
def test_linear_cka_identity_orthogonal_and_scaling_invariance(n, d):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 7.5 * x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 0.01 * x @ q + 3.0) == pytest.approx(1.0, abs=1e-10)  # centring removes the offset
    y = rng.normal(size=(n, d + 3))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_linear_cka_of_independent_matrices_is_small():
    rng = np.random.default_rng(5)
    # For independent Gaussians CKA ~ d / n-ish; with n=2000 and d=10 it is about 0.005.
    assert linear_cka(rng.normal(size=(2000, 10)), rng.normal(size=(2000, 12))) < 0.05


def test_linear_cka_rejects_mismatched_and_constant_inputs():
    with pytest.raises(ValueError, match="x has 5 rows, y has 4"):
        linear_cka(np.ones((5, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="x is the same for every input"):
        linear_cka(np.ones((5, 3)), np.arange(15.0).reshape(5, 3))


def test_cka_matrix_and_relative_depth_pairs():
    rng = np.random.default_rng(6)
    layers = [rng.normal(size=(20, 6)) for _ in range(3)]
    matrix = cka_matrix(layers, [torch.tensor(layer) for layer in layers[:2]])
    assert len(matrix) == 3 and all(len(row) == 2 for row in matrix)
    assert matrix[0][0] == pytest.approx(1.0) and matrix[1][1] == pytest.approx(1.0)
    assert matrix[2][0] == pytest.approx(linear_cka(layers[2], layers[0]))
    assert relative_depth_pairs(33, 19, points=5) == [(0, 0), (8, 5), (16, 9), (24, 14), (32, 18)]
    assert relative_depth_pairs(3, 5, points=3) == [(0, 0), (1, 2), (2, 4)]
    assert all(type(i) is int and type(j) is int for i, j in relative_depth_pairs(7, 9))
    with pytest.raises(ValueError, match="points must be a positive integer"):
        relative_depth_pairs(3, 5, points=0)


# --------------------------------------------------------------------------------------------------------------------
# Pooled hidden states on a tiny LLaMA-3
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama3(tiny_lm):
    from transformers import AutoModelForCausalLM

    path = tiny_lm("llama3")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model


def test_pooled_hidden_states_shapes_and_padding_invariance(tiny_llama3):
    model = tiny_llama3
    model.train()  # a model in training mode must come back in training mode
    config = model.config
    pad = 0  # any id: padded positions are masked out of attention and of the pooling
    rows = [[5, 17, 42, 99, 7], [11, 3, 64]]
    # Each row alone, no padding.
    alone = [
        pooled_hidden_states(model, {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row))})
        for row in rows
    ]
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    batched = pooled_hidden_states(model, {"input_ids": input_ids, "attention_mask": attention_mask})

    assert len(batched) == config.num_hidden_layers + 1
    for layer in batched:
        assert layer.shape == (2, config.hidden_size) and layer.dtype == np.float64
    for index in range(len(rows)):
        for layer, single in zip(batched, alone[index], strict=True):
            np.testing.assert_allclose(layer[index], single[0], atol=1e-5, rtol=0)
    assert model.training is True
    model.eval()


def test_stability_is_one_for_the_same_inputs(tiny_llama3):
    inputs = {
        "input_ids": torch.tensor([[5, 17, 42, 99], [11, 3, 64, 8], [21, 30, 2, 77]]),
        "attention_mask": torch.ones(3, 4, dtype=torch.long),
    }
    same = stability(tiny_llama3, inputs, inputs)
    assert len(same) == tiny_llama3.config.num_hidden_layers + 1
    assert same == pytest.approx([1.0] * len(same), abs=1e-9)
    perturbed = {**inputs, "input_ids": inputs["input_ids"].flip(1)}
    changed = stability(tiny_llama3, inputs, perturbed)
    # Mean pooling of the embeddings ignores token order; the layers see it, so their similarity drops below 1
    assert changed[0] == pytest.approx(1.0, abs=1e-9) and max(changed[1:]) < 0.99
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in changed)


def test_pooled_hidden_states_rejects_an_empty_row(tiny_llama3):
    inputs = {"input_ids": torch.tensor([[5, 6], [7, 8]]), "attention_mask": torch.tensor([[1, 1], [0, 0]])}
    with pytest.raises(ValueError, match=r"every token of batch row\(s\) \[1\]"):
        pooled_hidden_states(tiny_llama3, inputs)


# --------------------------------------------------------------------------------------------------------------------
# Ablations
# --------------------------------------------------------------------------------------------------------------------


def test_ablation_effects_recover_a_constructed_shift():
    rng = np.random.default_rng(7)
    base = {"vqa": rng.uniform(0.2, 0.8, 60).tolist(), "gqa": rng.uniform(0.2, 0.8, 40).tolist()}
    prob_correct = {
        "baseline": base,
        "pretrained_connector": {name: [p + 0.1 for p in values] for name, values in base.items()},
        "big_vision": {name: list(values) for name, values in base.items()},
    }
    effects = ablation_effects(
        prob_correct, "baseline", {"connector pretraining": "pretrained_connector", "vision": "big_vision"}
    )
    assert set(effects) == {"connector pretraining", "vision"}
    for evaluation in ("vqa", "gqa"):
        shifted = effects["connector pretraining"][evaluation]
        assert shifted["estimate"] == pytest.approx(0.1)
        assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
        assert shifted["p_value"] == 0.0 and shifted["n"] == len(base[evaluation])
        unchanged = effects["vision"][evaluation]
        assert unchanged["estimate"] == 0.0 and unchanged["p_value"] == 1.0
    json.dumps(effects)


def test_ablation_effects_name_what_is_missing():
    prob_correct = {"baseline": {"vqa": [0.5, 0.6]}, "other": {"gqa": [0.5, 0.6]}}
    with pytest.raises(ValueError, match=r"'other'.*evaluation\(s\) \['vqa'\]"):
        ablation_effects(prob_correct, "baseline", {"factor": "other"})
    with pytest.raises(ValueError, match="variant 'nope', which is not in prob_correct"):
        ablation_effects(prob_correct, "baseline", {"factor": "nope"})
    prob_correct["other"]["vqa"] = [0.5, 1.5]
    with pytest.raises(ValueError, match=r"\['vqa'\]\[1\] = 1.5 is not a probability"):
        ablation_effects(prob_correct, "baseline", {"factor": "other"})
