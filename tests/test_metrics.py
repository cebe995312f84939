"""Task metrics: hand-computed values, the official VQAv2 rules, ECE against a direct numpy computation, parsing that
never raises, and the shipped evaluate modules loading offline and agreeing with the package functions."""

from __future__ import annotations

import hashlib
import json
import math
import re

import evaluate
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llava_swap.metrics as metrics
import llava_swap.metrics.vqa as vqa_module
from llava_swap.metrics import (
    calibration,
    coordinate_error,
    coordinate_metrics,
    description_scores,
    extract_facts,
    fact_score,
    normalize_vqa_answer,
    parse_coordinates,
    vqa_accuracy,
    vqa_score,
)

# ---------------------------------------------------------------------------------------------------------- VQAv2


@pytest.mark.parametrize(
    ("matches", "expected"), [(10, 0.0), (5, 1.0), (4, 1.0), (3, 0.9), (2, 0.6), (1, 0.3), (0, 0.0)]
)
def test_vqa_score_ten_references(matches, expected):
    """ "two" is normalised to "2" when the humans disagree; ten unanimous "2" are compared as they are (officially)."""
    answers = ["2"] * matches + ["3"] * (10 - matches)
    assert vqa_score("two", answers) == pytest.approx(expected)
    assert vqa_score("two", answers, normalize_unanimous=True) == pytest.approx(1.0 if matches == 10 else expected)


class _OfficialVQAEval:
    """vqaEval.py of GT-Vision-Lab/VQA at HEAD (a013f00, "Fixed processing answers bug"), ported statement by
    statement to Python 3: `processPunctuation`, `processDigitArticle` and the per-question loop of `evaluate()`. It
    shares nothing with llava_swap.metrics.vqa but the two word tables, which test_official_tables checks."""

    def __init__(self):
        self.contractions = vqa_module.CONTRACTIONS
        self.manualMap = dict(vqa_module.DIGIT_WORDS)
        self.articles = ["a", "an", "the"]
        # Python 2's re without re.UNICODE (vqaEval.py is Python 2 code): \d is [0-9]
        self.periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
        self.commaStrip = re.compile(r"(\d)(\,)(\d)", re.ASCII)
        self.punct = [
            ";",
            r"/",
            "[",
            "]",
            '"',
            "{",
            "}",
            "(",
            ")",
            "=",
            "+",
            "\\",
            "_",
            "-",
            ">",
            "<",
            "@",
            "`",
            ",",
            "?",
            "!",
        ]

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) != None):  # noqa: E711
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("", outText, re.UNICODE)
        return outText

    def processDigitArticle(self, inText):
        outText = []
        tempText = inText.lower().split()
        for word in tempText:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        outText = " ".join(outText)
        return outText

    def question_accuracy(self, resAns: str, answers: list[str]) -> float:
        gts = {"answers": [{"answer": answer, "answer_id": i + 1} for i, answer in enumerate(answers)]}
        for ansDic in gts["answers"]:
            ansDic["answer"] = ansDic["answer"].replace("\n", " ")
            ansDic["answer"] = ansDic["answer"].replace("\t", " ")
            ansDic["answer"] = ansDic["answer"].strip()
        resAns = resAns.replace("\n", " ")
        resAns = resAns.replace("\t", " ")
        resAns = resAns.strip()
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in gts["answers"]]
        if len(set(gtAnswers)) > 1:
            for ansDic in gts["answers"]:
                ansDic["answer"] = self.processPunctuation(ansDic["answer"])
                ansDic["answer"] = self.processDigitArticle(ansDic["answer"])
            resAns = self.processPunctuation(resAns)
            resAns = self.processDigitArticle(resAns)
        for gtAnsDatum in gts["answers"]:
            otherGTAns = [item for item in gts["answers"] if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        return float(sum(gtAcc)) / len(gtAcc)


OFFICIAL = _OfficialVQAEval()

OFFICIAL_CASES = [
    ("two", ["2"] * 10),  # unanimous: no normalisation, 0
    ("2", ["2"] * 10),
    ("Yes", ["yes"] * 10),  # unanimous and case-sensitive
    ("two", ["2"] * 9 + ["two"]),
    ("2", ["two"] * 4 + ["three"] * 6),  # both sides normalised: "two" -> "2" matches 4 humans
    ("The red one.", ["red"] * 6 + ["red one"] * 4),
    ("A dog\n", ["dog", "dogs", "a dog", "dog", "the dog", "puppy", "dog", "dog", "Dog", "dog"]),
    ("dont know", ["don't know"] * 5 + ["no idea"] * 5),
    ("dont know", ["dont know"] * 5 + ["no idea"] * 5),  # the humans' "dont" is restored too
    ("3,000", ["3000"] * 3 + ["3,000"] * 7),
    ("Yes", ["YES", "yes."] + ["no"] * 8),
    ("\u0663\u0665", ["\u0663.\u0665"] * 4 + ["3.5"] * 6),  # Python 2's \d is ASCII: the period goes
    ("1\u0663", ["1,\u0663"] * 5 + ["13"] * 5),  # and "1,٣" has no digit-comma-digit: the comma becomes a space
]


@pytest.mark.parametrize(("prediction", "answers"), OFFICIAL_CASES)
def test_vqa_score_equals_the_official_evaluation(prediction, answers):
    assert vqa_score(prediction, answers) == OFFICIAL.question_accuracy(prediction, answers)


def test_vqa_score_normalises_both_sides_when_the_humans_disagree():
    # The case: a Beta-v0.9 / HEAD mix scored it 0.0.
    assert vqa_score("2", ["two"] * 4 + ["three"] * 6) == 1.0
    assert vqa_score("two", ["2"] * 10) == 0.0  # unanimous: compared as they are
    assert vqa_score("two", ["2"] * 10, normalize_unanimous=True) == 1.0


def test_official_tables():
    """The port above shares the two word tables; these are the official ones (vqaEval.py HEAD)."""
    # sha256 of the official contractions map, json.dumps(sorted(items)), read off vqaEval.py at a013f00
    official = "3e5960526f62912d3b70896069c43c13d7c21be38d50ca28efbb9095b499454f"
    assert hashlib.sha256(json.dumps(sorted(vqa_module.CONTRACTIONS.items())).encode()).hexdigest() == official
    assert {
        word: str(i)
        for i, word in enumerate(
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
        )
    } | {"none": "0"} == vqa_module.DIGIT_WORDS


# Pieces that exercise every rule: number words and digits, articles, contractions with and without apostrophes,
# each punctuation mark with and without touching spaces, digit-comma-digit, periods before and after digits, case,
# and newlines and tabs.
_PIECES = [
    "\u0663",  # an Arabic-Indic digit: not a digit to the official (Python 2) regexes
    "\u0663.\u0665",
    "1,\u0663",
    "\u00a0",
    "TWO",
    "two",
    "2",
    "Two",
    "none",
    "0",
    "ten",
    "10",
    "a",
    "an",
    "The",
    "dog",
    "dogs",
    "red",
    "dont",
    "don't",
    "Im",
    "yes",
    "no",
    "3,000",
    "3000",
    "2.5",
    "st.",
    "1.",
    "e-mail",
    "black/white",
    "black / white",
    "(yes)",
    "yes!",
    "it's",
    "?",
    ",",
    ";",
    "-",
    "\n",
    "\t",
    " ",
    "  ",
    ".",
    "...",
    "\\",
    "<",
    ">",
    "@",
    "`",
    '"',
    "_",
    "=",
]
_text = st.lists(st.sampled_from(_PIECES), min_size=0, max_size=5).map(lambda parts: " ".join(parts))
_answer_pool = st.lists(_text, min_size=1, max_size=4)


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_vqa_score_equals_the_official_evaluation_on_generated_cases(data):
    """Generated cases, unanimous and not: humans draw from a small pool (so they often agree, fully or in part),
    the prediction is one of them or fresh text."""
    pool = data.draw(_answer_pool)
    answers = data.draw(st.lists(st.sampled_from(pool), min_size=2, max_size=10))
    prediction = data.draw(st.one_of(st.sampled_from(pool), _text))
    assert vqa_score(prediction, answers) == OFFICIAL.question_accuracy(prediction, answers)


def test_vqa_score_is_the_leave_one_out_mean_for_any_number_of_references():
    # 4 references, 2 match: leaving out a match leaves 1 (1/3), leaving out a non-match leaves 2 (2/3).
    assert vqa_score("cat", ["cat", "cat", "dog", "dog"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3 + 2 / 3) / 4)


def test_vqa_score_single_reference_is_exact_match_after_normalisation():
    assert vqa_score("The Dog.", ["dog"]) == 1.0
    assert vqa_score("Two", ["2"]) == 1.0
    assert vqa_score("dogs", ["dog"]) == 0.0


def test_vqa_accuracy_means_over_items_and_validates():
    refs = [["yes"] * 10, ["2"] * 3 + ["3"] * 7, ["red"]]
    assert vqa_accuracy(["yes", "two", "blue"], refs) == {"accuracy": pytest.approx((1.0 + 0.9 + 0.0) / 3)}
    assert vqa_accuracy(["Yes", "two", "blue"], refs) == {"accuracy": pytest.approx(0.9 / 3)}  # unanimous: as is
    with pytest.raises(ValueError, match=r"2 predictions but 3"):
        vqa_accuracy(["a", "b"], refs)
    with pytest.raises(ValueError, match=r"references\[1\]"):
        vqa_accuracy(["a", "b"], [["a"], []])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # case, whitespace
        ("  YES\n", "yes"),
        ("red\tcar", "red car"),
        # punctuation: removed when it touches a space, else replaced by a space
        ("black/white", "black white"),
        ("black / white", "black white"),
        ("e-mail", "e mail"),
        ("red, white", "red white"),
        ("hello!", "hello"),
        ("(yes)", "yes"),
        ("it's", "it's"),  # apostrophes stay
        # a digit-comma-digit anywhere: every mark is removed, none replaced
        ("1,000", "1000"),
        ("yes,1,000", "yes1000"),
        # periods: removed unless a digit follows
        ("yes.", "yes"),
        ("2.5", "2.5"),
        ("st.louis", "stlouis"),
        # number words to digits
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("zero", "0"),
        ("eleven", "eleven"),
        ("two dogs", "2 dogs"),
        # articles
        ("a dog", "dog"),
        ("an apple", "apple"),
        ("The cat", "cat"),
        ("theater", "theater"),
        # contractions
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("I dont know", "i don't know"),
        ("Im", "im"),  # the official map's "Im" key can never match lower-cased text
    ],
)
def test_normalize_vqa_answer_official_rules(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_normalize_vqa_answer_keeps_the_official_period_count_quirk():
    # vqaEval.py passes re.UNICODE (32) where `count` goes: at most 32 periods are stripped.
    assert normalize_vqa_answer("wow" + "." * 40) == "wow" + "." * 8


# ---------------------------------------------------------------------------------------------------- calibration


def _direct_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1, dtype=np.float64)
    ece = 0.0
    for i in range(n_bins):
        in_bin = (conf > edges[i]) & (conf <= edges[i + 1])
        if i == 0:
            in_bin |= conf == 0.0
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_direct_numpy(seed, n_bins):
    rng = np.random.default_rng(seed)
    conf = rng.random(1000)
    conf[:12] = [0.0, 1.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1 / 15, 2 / 15, 14 / 15, 0.6]  # on or near bin edges
    correct = (rng.random(1000) < conf**1.5).astype(np.int64)
    result = calibration(conf.tolist(), correct.tolist(), n_bins=n_bins)
    assert result["ece"] == pytest.approx(_direct_ece(conf, correct.astype(np.float64), n_bins), rel=1e-12, abs=1e-15)
    assert sum(b["count"] for b in result["bins"]) == len(conf)
    assert result["brier"] == pytest.approx(float(np.mean((conf - correct) ** 2)), rel=1e-12)


HAND_CONF = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
HAND_CORRECT = [0, 0, 1, 0, 1, 1]


def test_calibration_hand_example():
    result = calibration(HAND_CONF, HAND_CORRECT, n_bins=10)
    # Each value sits on the upper edge of its bin, one per bin: gaps .1 .2 .7 .4 .5 .4.
    assert result["ece"] == pytest.approx((0.1 + 0.2 + 0.7 + 0.4 + 0.5 + 0.4) / 6)
    assert [b["count"] for b in result["bins"]] == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert result["bins"][2] == {
        "lower": pytest.approx(0.2),
        "upper": pytest.approx(0.3),
        "count": 1,
        "confidence": 0.3,
        "accuracy": 1.0,
        "gap": pytest.approx(-0.7),
    }
    assert result["bins"][9] == {
        "lower": pytest.approx(0.9),
        "upper": 1.0,
        "count": 0,
        "confidence": None,
        "accuracy": None,
        "gap": None,
    }
    # Equal mass, 3 bins of 2: conf .15/.35/.55 against accuracy 0/.5/1.
    assert result["brier"] == pytest.approx((0.01 + 0.04 + 0.49 + 0.16 + 0.25 + 0.16) / 6)
    assert calibration(HAND_CONF, HAND_CORRECT, n_bins=3)["adaptive_ece"] == pytest.approx((0.15 + 0.15 + 0.45) / 3)


def test_adaptive_ece_uneven_split_and_zero_confidence():
    # 5 answers, 2 bins: sizes 3 and 2, larger first. conf 0 belongs to the first equal-width bin.
    result = calibration([0.0, 0.2, 0.4, 0.8, 1.0], [0, 1, 0, 1, 1], n_bins=2)
    assert result["adaptive_ece"] == pytest.approx(3 / 5 * abs(1 / 3 - 0.2) + 2 / 5 * abs(1.0 - 0.9))
    assert [b["count"] for b in result["bins"]] == [3, 2]
    assert result["ece"] == pytest.approx(result["adaptive_ece"])


@pytest.mark.parametrize(
    "conf",
    [
        [0.5] * 12,  # one group of ties: one bin, whatever n_bins is
        [0.2] * 7 + [0.8] * 5,  # two groups, cuts inside both
        [0.1, 0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6, 0.9, 0.9, 0.95, 1.0, 1.0],  # ties mixed with distinct values
    ],
)
@pytest.mark.parametrize("n_bins", [2, 3, 5, 15])
def test_adaptive_ece_is_independent_of_item_order_under_ties(conf, n_bins):
    rng = np.random.default_rng(0)
    correct = (rng.random(len(conf)) < 0.5).astype(int).tolist()
    expected = calibration(conf, correct, n_bins=n_bins)["adaptive_ece"]
    for _ in range(20):
        order = rng.permutation(len(conf))
        permuted = calibration([conf[i] for i in order], [correct[i] for i in order], n_bins=n_bins)
        assert permuted["adaptive_ece"] == expected  # exactly, not approximately


def test_adaptive_ece_keeps_tied_confidences_in_one_bin():
    # All 0.5: a single bin whatever the order, |accuracy - 0.5| = |4/8 - 0.5| = 0; a split by order could give > 0.
    assert calibration([0.5] * 8, [1, 1, 1, 1, 0, 0, 0, 0], n_bins=2)["adaptive_ece"] == 0.0
    assert calibration([0.5] * 8, [0, 0, 0, 0, 1, 1, 1, 1], n_bins=4)["adaptive_ece"] == 0.0
    # 0.2 x 3 then 0.8 x 3, 4 bins: array_split cuts at 2, 4, 5; the cut at 2 moves to 3 (the group 0..3 ends nearer),
    # the cut at 4 moves to 3 (the group 3..6 starts nearer), the cut at 5 moves to 6 (its end): two bins of 3.
    result = calibration([0.8, 0.2, 0.8, 0.2, 0.8, 0.2], [1, 0, 1, 1, 0, 0], n_bins=4)
    assert result["adaptive_ece"] == pytest.approx(0.5 * abs(1 / 3 - 0.2) + 0.5 * abs(2 / 3 - 0.8))
    # A cut in the exact middle of a tie moves to the group's upper end: 2 bins, cut at 2 of [.3 .5 .5 .7] -> 3.
    result = calibration([0.5, 0.7, 0.3, 0.5], [1, 1, 0, 0], n_bins=2)
    assert result["adaptive_ece"] == pytest.approx(3 / 4 * abs(1 / 3 - 0.4333333333333333) + 1 / 4 * abs(1 - 0.7))


def test_adaptive_ece_without_ties_is_unchanged():
    # Distinct confidences: the np.array_split bins as before. 7 answers, 3 bins of sizes 3, 2, 2 (larger first):
    # conf .1 .2 .3 | .5 .6 | .8 .9 (mean .2, .55, .85) against accuracy 1/3, 1/2, 1.
    conf, correct = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.6], [1, 0, 0, 1, 1, 0, 1]
    hand = 3 / 7 * abs(1 / 3 - 0.2) + 2 / 7 * abs(0.5 - 0.55) + 2 / 7 * abs(1.0 - 0.85)
    assert calibration(conf, correct, n_bins=3)["adaptive_ece"] == pytest.approx(hand, rel=1e-12)
    order = np.argsort(conf, kind="stable")
    previous = sum(
        len(run) / len(conf) * abs(np.mean(np.asarray(correct)[run]) - np.mean(np.asarray(conf)[run]))
        for run in np.array_split(order, 3)
    )
    assert calibration(conf, correct, n_bins=3)["adaptive_ece"] == pytest.approx(previous, rel=1e-12)


def test_calibration_validates_with_the_index():
    with pytest.raises(ValueError, match=r"confidences\[2\]"):
        calibration([0.1, 0.2, 1.5], [0, 1, 1])
    with pytest.raises(ValueError, match=r"confidences\[0\]"):
        calibration([float("nan")], [1])
    with pytest.raises(ValueError, match=r"correct\[1\]"):
        calibration([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match=r"2 confidences but 1"):
        calibration([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="n_bins"):
        calibration([0.1], [1], n_bins=0)
    assert calibration([0.9, 0.1], [True, False])["brier"] == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize(
    "text",
    [
        '{"x": 0.42, "y": 0.77}',
        'The event is at {"x": 0.42, "y": 0.77} in the image.',
        "{'x': 0.42, 'y': 0.77}",
        '{"y": 0.77, "label": "quake", "x": 0.42, "confidence": 0.9}',
        '{"x": "0.42", "y": "0.77"}',
        "(0.42, 0.77)",
        "Located at (0.42,0.77).",
        "x=0.42, y=0.77",
        "x: 0.42 y: 0.77",
        "X = 0.42; Y = 0.77.",
        "x=4.2e-1, y=7.7E-1",
    ],
)
def test_parse_coordinates_accepted_formats(text):
    assert parse_coordinates(text) == pytest.approx((0.42, 0.77))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "somewhere in the middle",
        "0.42, 0.77",
        "[0.42, 0.77]",
        '{"x": 0.42}',
        '{"x": null, "y": 0.77}',
        '{"x": NaN, "y": 0.77}',
        "(nan, 0.77)",
        "(inf, 0.77)",
        "(1e999, 0.77)",
        "max=0.42, y=0.77",
        "x=0.42px, y=0.77",
        "(0.42, 0.77, 0.9)",
    ],
)
def test_parse_coordinates_rejections(text):
    assert parse_coordinates(text) is None


def test_parse_coordinates_non_strings_and_huge_inputs():
    assert parse_coordinates(None) is None  # type: ignore[arg-type]
    assert parse_coordinates("{" * 200_000) is None
    assert parse_coordinates("(" + "9" * 200_000) is None
    assert parse_coordinates("x=" * 100_000 + "x=0.5, y=0.25") == (0.5, 0.25)


def _check_parse_result(result) -> None:
    assert result is None or (
        isinstance(result, tuple)
        and len(result) == 2
        and all(type(value) is float and math.isfinite(value) for value in result)
    )


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_coordinates_never_raises_on_any_text(text):
    _check_parse_result(parse_coordinates(text))


_PIECES = st.sampled_from(
    ["(", ")", ",", ", ", "{", "}", '"x": ', "'y': ", "x=", "y=", "x:", " y: ", '"', "'", ".", "-"]
)
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e-999", ".5", "5.", "1,5", "٣.٤", "０.５"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_PIECES, _NUMBERS, st.text(max_size=3)), max_size=12).map("".join))
def test_parse_coordinates_never_raises_on_text_around_numbers(text):
    _check_parse_result(parse_coordinates(text))


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["({x}, {y})", '{{"x": {x}, "y": {y}}}', "x={x}, y={y}", "answer: {{'y': '{y}', 'x': '{x}'}}"]),
)
def test_parse_coordinates_reads_back_any_finite_pair(x, y, template):
    assert parse_coordinates(template.format(x=repr(x), y=repr(y))) == (x, y)


def test_coordinate_error_and_metrics_hand_example():
    assert coordinate_error("(0.3, 0.4)", (0.0, 0.0)) == pytest.approx(0.5)
    assert coordinate_error("no idea", {"x": 0.1, "y": 0.1}) is None
    predictions = ["(0.5, 0.5)", '{"x": 0.55, "y": 0.5}', "x=0.9, y=0.9", "I cannot tell"]
    references = [(0.5, 0.5), {"x": 0.5, "y": 0.5}, [0.5, 0.5], (0.1, 0.1)]
    result = coordinate_metrics(predictions, references)
    far = math.hypot(0.4, 0.4)
    assert result == {
        "parse_rate": 0.75,
        "accuracy": 0.5,  # 2 hits out of ALL 4 items
        "mean_error": pytest.approx((0.0 + 0.05 + far) / 3),
        "median_error": pytest.approx(0.05),
    }
    assert coordinate_metrics(predictions, references, tolerance=0.6)["accuracy"] == 0.75
    # A point exactly `tolerance` away is a hit, whatever the float rounding.
    assert coordinate_metrics(["(0.8, 0.5)"], [(0.7, 0.5)])["accuracy"] == 1.0


def test_coordinate_metrics_nothing_parsed_and_validation():
    assert coordinate_metrics(["?", "??"], [(0.1, 0.1), (0.2, 0.2)]) == {
        "parse_rate": 0.0,
        "accuracy": 0.0,
        "mean_error": None,
        "median_error": None,
    }
    with pytest.raises(ValueError, match=r"1 predictions but 2"):
        coordinate_metrics(["?"], [(0.1, 0.1), (0.2, 0.2)])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        coordinate_metrics(["?", "?"], [(0.1, 0.1), {"x": 0.2}])


# -------------------------------------------------------------------------------------------------- descriptions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "There are 3 traces. The P wave arrives at 1.2 s and the S wave at 3.4 s.",
            {"num_traces": 3, "p_arrival_s": 1.2, "s_arrival_s": 3.4},
        ),
        (
            "Three traces; P arrival at 1.20 s, S arrival at 2.5 seconds. High amplitude, low-frequency content.",
            {
                "num_traces": 3,
                "p_arrival_s": 1.2,
                "s_arrival_s": 2.5,
                "amplitude_class": "high",
                "frequency_class": "low",
            },
        ),
        ("P at 1.2s, S at 3.4s", {"p_arrival_s": 1.2, "s_arrival_s": 3.4}),
        (
            "p WAVE ARRIVES AT 0.8 S. MEDIUM AMPLITUDE, HIGH FREQUENCY.",
            {"p_arrival_s": 0.8, "amplitude_class": "medium", "frequency_class": "high"},
        ),
        ("The P-wave onset is at 1200 ms; amplitude is moderate.", {"p_arrival_s": 1.2, "amplitude_class": "medium"}),
        # An S-P time is no arrival; "5 s" after a number is a unit, not an S phase.
        ("The S-P time is 2.2 s.", {}),
        ("P at 1.2 s and the shaking lasts 5 s", {"p_arrival_s": 1.2}),
        ("The P wave is emergent and the S wave arrives at 3.4 s", {"s_arrival_s": 3.4}),
        ("A single trace with high-frequency energy", {"num_traces": 1, "frequency_class": "high"}),
        ("No event visible.", {}),
        ("", {}),
    ],
)
def test_extract_facts(text, expected):
    assert extract_facts(text) == expected


def test_extract_facts_never_raises():
    assert extract_facts(None) == {}  # type: ignore[arg-type]
    assert extract_facts("P at " + "9" * 5000 + " s") == {}  # past float's range: not a time
    assert extract_facts("P wave " * 50_000) == {}


def test_fact_score():
    facts = {"num_traces": 3, "p_arrival_s": 1.2, "s_arrival_s": 3.4, "amplitude_class": "high"}
    text = "3 traces; P wave arrives at 1.4 s, S wave at 3.8 s; low amplitude."
    assert fact_score(text, facts) == pytest.approx(2 / 4)  # traces, P within 0.25 s; S 0.4 s off; amplitude wrong
    assert fact_score(text, facts, time_tolerance=0.5) == pytest.approx(3 / 4)
    assert fact_score("P at 1.45 s", {"p_arrival_s": 1.2}) == 1.0  # exactly at the tolerance
    assert fact_score("nothing useful", facts) == 0.0
    assert fact_score("High amplitude.", {"amplitude_class": "High", "frequency_class": None}) == 1.0
    with pytest.raises(ValueError, match="no facts"):
        fact_score("3 traces", {})
    with pytest.raises(ValueError, match="unknown keys"):
        fact_score("3 traces", {"traces": 3})


def test_description_scores():
    text = "The P wave arrives at 1.2 s and the S wave arrives at 3.4 s on all three traces."
    other = "Two traces show a weak low-frequency signal with no clear arrivals."
    identical = description_scores([text, other], [text, other])
    assert identical == {"bleu": pytest.approx(100.0), "rouge_l": pytest.approx(1.0)}  # sacrebleu: 100.00000000000004
    facts = [{"num_traces": 3, "p_arrival_s": 1.25}, {"num_traces": 2, "frequency_class": "high"}]
    scored = description_scores([text, other], [other, text], facts=facts)
    assert scored["bleu"] < 20 and scored["rouge_l"] < 0.5
    assert scored["fact_score"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match=r"2 predictions but 1"):
        description_scores([text, other], [text])
    with pytest.raises(ValueError, match=r"facts\[1\]"):
        description_scores([text, other], [text, other], facts=[{"num_traces": 3}, {}])


# ------------------------------------------------------------------------------------------ shipped evaluate modules

MODULE_CASES = {
    "vqa_accuracy": (
        {"predictions": ["Two", "yes", "a red car"], "references": [["2"] * 3 + ["3"] * 7, ["no"], ["red car"]]},
        lambda kw: vqa_accuracy(kw["predictions"], kw["references"]),
    ),
    "description": (
        {
            "predictions": ["3 traces, P at 1.2 s, high amplitude", "two traces, low frequency"],
            "references": ["Three traces; the P wave arrives at 1.25 s.", "Two traces with low-frequency content."],
            "facts": [{"num_traces": 3, "p_arrival_s": 1.25, "amplitude_class": "low"}, {"frequency_class": "low"}],
            "time_tolerance": 0.1,
        },
        lambda kw: description_scores(**kw),
    ),
    "coordinates": (
        {
            "predictions": ['{"x": 0.4, "y": 0.8}', "no idea", "(0.11, 0.2)"],
            "references": [[0.42, 0.77], {"x": 0.1, "y": 0.1}, (0.1, 0.1)],
            "tolerance": 0.05,
        },
        lambda kw: coordinate_metrics(kw["predictions"], kw["references"], tolerance=kw["tolerance"]),
    ),
    "calibration": (
        {"predictions": [0.95, 0.6, 0.3, 0.81, 0.0], "references": [1, 0, 0, 1, 0], "n_bins": 10},
        lambda kw: calibration(kw["predictions"], kw["references"], n_bins=kw["n_bins"]),
    ),
}


def test_module_names():
    assert tuple(MODULE_CASES) == metrics.NAMES
    with pytest.raises(ValueError, match="vqa_accuracy"):
        metrics.path("accuracy")


@pytest.mark.parametrize("name", list(MODULE_CASES))
def test_evaluate_module_loads_offline_and_matches_the_function(name):
    module = evaluate.load(metrics.path(name), keep_in_memory=True)
    assert module.description.strip() and module.features is not None
    kwargs, direct = MODULE_CASES[name]
    assert module.compute(**kwargs) == direct(kwargs)


def test_the_coordinate_item_score_and_the_run_accuracy_agree_at_the_tolerance_edge():
    """A point exactly 0.1 away (0.1 is not exact in binary) counts in both, so mean score equals accuracy."""
    from llava_swap.metrics.coordinates import coordinate_metrics
    from llava_swap.tasks import get_task

    task = get_task("seismic_coordinates")
    meta = {"target": {"x": 0.3, "y": 0.2}}
    answers = ['{"x": 0.4, "y": 0.2}', '{"x": 0.3, "y": 0.1}', '{"x": 0.5, "y": 0.2}']
    scores = [task.score(answer, meta) for answer in answers]
    assert scores == [1.0, 1.0, 0.0]
    run = coordinate_metrics(answers, [(0.3, 0.2)] * 3)
    assert run["accuracy"] == pytest.approx(sum(scores) / 3)


def test_a_negated_statement_is_not_a_stated_fact():
    from llava_swap.metrics.description import extract_facts, fact_score

    facts = {"num_traces": 3, "p_arrival_s": 1.2, "amplitude_class": "high"}
    denied = "There is no P wave at 1.2 s; it is not a high amplitude record, and it does not show three traces."
    assert extract_facts(denied) == {}
    assert fact_score(denied, facts) == 0.0
    assert extract_facts("Not a high amplitude but a low amplitude; 3 traces.") == {
        "amplitude_class": "low",
        "num_traces": 3,
    }
    assert fact_score("Three traces, P wave at 1.2 s, high amplitude.", facts) == 1.0
