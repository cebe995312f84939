"""Per-instance analyses against hand-computed values: agreement, bootstrap, CKA, pooled hidden states, ablations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llava_swap.analysis.ablation import ablation_effects
from llava_swap.analysis.agreement import agreement_report, correctness_matrix, pairwise_agreement
from llava_swap.analysis.inference import (
    compare_paired,
    format_interval,
    format_p,
    holm,
    mean_interval,
    paired_test,
)
from llava_swap.analysis.representations import (
    cka_matrix,
    linear_cka,
    pooled_hidden_states,
    relative_depth_pairs,
    stability,
)


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
# Inference: tests, intervals, corrections
# --------------------------------------------------------------------------------------------------------------------


def test_exact_mcnemar_equals_statsmodels_and_stays_valid_with_few_discordant_items():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(5)
    a = rng.integers(0, 2, 80)
    b = a.copy()
    b[:7] = 1 - b[:7]  # 7 discordant items
    result = compare_paired(a, b)
    table = [[int(np.sum((a == 1) & (b == 1))), result["only_a"]], [result["only_b"], int(np.sum((a == 0) & (b == 0)))]]
    assert result["test"] == "exact McNemar" and result["only_a"] + result["only_b"] == 7
    assert result["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    # 6 of 6 discordant items one way: exact p = 2 / 64, where a bootstrap would claim far less.
    c, d = np.array([1] * 6 + [0] * 54), np.zeros(60)
    assert compare_paired(c, d)["p_value"] == pytest.approx(2 / 64)


def test_a_null_difference_is_rarely_called_after_holm_and_a_true_one_is_found():
    """Simulated studies: 3 variants of the same true accuracy on 60 items, 3 paired comparisons, Holm-adjusted. At
    most about 5% of them call any difference; a variant 0.3 better is found."""
    rng = np.random.default_rng(0)
    false_positives = 0
    studies = 300
    for _ in range(studies):
        shared = rng.random(60)  # item difficulty: variants agree on easy and hard items, as real ones do
        columns = [(rng.random(60) * 0.5 + shared * 0.5 < 0.6).astype(float) for _ in range(3)]
        raw = {f"{i}-{j}": paired_test(columns[i], columns[j])["p_value"] for i, j in ((0, 1), (0, 2), (1, 2))}
        # Holm never lowers a p-value, so only studies with a raw p below 0.05 need adjusting.
        false_positives += min(raw.values()) < 0.05 and min(holm(raw).values()) < 0.05
    assert false_positives / studies <= 0.06
    strong = (rng.random(100) < 0.85).astype(float)
    weak = np.where(rng.random(100) < 0.35, strong, 0.0)
    assert holm({"strong - weak": compare_paired(strong, weak)["p_value"], "other": 0.5})["strong - weak"] < 0.05


def test_continuous_scores_use_a_permutation_test_and_intervals_say_when_they_are_degenerate():
    base = np.random.default_rng(3).random(100)
    shifted = compare_paired(base + 0.05, base, n_resamples=999)
    assert shifted["test"] == "paired sign-flip permutation" and shifted["p_value"] < 0.01
    assert shifted["estimate"] == pytest.approx(0.05) and shifted["degenerate"]  # every item moved by 0.05
    assert format_interval(shifted) == "0.050 (no spread across items: no interval)"
    noisy = compare_paired(base + np.random.default_rng(4).normal(0, 0.01, 100), base, n_resamples=999)
    assert noisy["low"] < noisy["estimate"] < noisy["high"] and noisy["interval"] == "paired bootstrap (BCa)"
    same = compare_paired(base, base.copy())
    assert (same["estimate"], same["p_value"], same["degenerate"]) == (0.0, 1.0, True)
    with pytest.raises(ValueError, match="100 values in a but 99 in b"):
        compare_paired(base, base[:-1])
    with pytest.raises(ValueError, match=r"a\[1\] = nan"):
        compare_paired([0.1, float("nan")], [0.1, 0.2])


def test_proportions_get_wilson_intervals_and_p_values_print_without_zeros():
    from statsmodels.stats.proportion import proportion_confint

    accuracy = mean_interval([1] * 45 + [0] * 15)
    assert accuracy["interval"] == "Wilson"
    assert (accuracy["low"], accuracy["high"]) == pytest.approx(proportion_confint(45, 60, method="wilson"))
    all_right = mean_interval([1] * 20)
    assert all_right["high"] == 1.0 and all_right["low"] < 0.9  # never "1.000 [1.000, 1.000]"
    assert format_p(0.0002) == "< 0.001" and format_p(0.0312) == "0.031"
    assert holm({"a": 0.01, "b": 0.04, "c": 0.5}) == pytest.approx({"a": 0.03, "b": 0.08, "c": 0.5})


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


def test_debiased_cka_of_unrelated_representations_is_near_zero_where_linear_cka_is_not():
    """The real manifests' shape (64 prompts x 4096 features): linear CKA of independent random representations is
    ~0.98, debiased CKA ~0; equal representations up to rotation and scale stay at 1; the shuffled baseline is low."""
    from llava_swap.analysis.representations import cka_baseline, debiased_cka

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4096)), rng.normal(size=(64, 4096))
    assert linear_cka(x, y) > 0.95
    assert abs(debiased_cka(x, y)) < 0.05
    rotation, _ = np.linalg.qr(rng.normal(size=(48, 48)))
    small = rng.normal(size=(40, 48))
    assert debiased_cka(small, 3.0 * small @ rotation) == pytest.approx(1.0, abs=1e-10)
    related = small @ rotation + rng.normal(scale=0.5, size=(40, 48))
    baseline = cka_baseline(small, related, permutations=100)
    assert abs(baseline["mean"]) < 0.05 and debiased_cka(small, related) > 0.5 > baseline["p95"]
    with pytest.raises(ValueError, match="at least 4"):
        debiased_cka(small[:3], small[:3])


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
        assert shifted["estimate"] == pytest.approx(0.1) and shifted["degenerate"]
        assert shifted["p_value"] < 0.001 and shifted["p_adjusted"] < 0.01 and shifted["n"] == len(base[evaluation])
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
