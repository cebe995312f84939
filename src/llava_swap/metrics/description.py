"""Scores for free-text descriptions of seismic events: BLEU, ROUGE-L, and whether the stated facts are right.

BLEU and ROUGE-L reward wording; a description can read well and still give the wrong P arrival. `extract_facts` reads
the facts a description states back out of it (trace count, P and S arrival times, amplitude and frequency class) and
`fact_score` checks them against the event's known facts, with a tolerance on times.

Facts of an event: a dict with any of `num_traces` (int), `p_arrival_s` and `s_arrival_s` (float, seconds),
`amplitude_class` ("low", "medium", "high") and `frequency_class` ("low", "high"); only the keys present count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

FACT_KEYS = ("num_traces", "p_arrival_s", "s_arrival_s", "amplitude_class", "frequency_class")
TIME_KEYS = ("p_arrival_s", "s_arrival_s")
AMPLITUDE_CLASSES = ("low", "medium", "high")
FREQUENCY_CLASSES = ("low", "high")
# Slack on the tolerance test, so that a time exactly `time_tolerance` away counts despite float rounding.
_EPSILON = 1e-9

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
_COUNT = r"(?P<count>\d{1,6}|" + "|".join(_NUMBER_WORDS) + r"|a\s+single|single)"
_TRACES = re.compile(
    rf"\b{_COUNT}[\s-]+(?:seismic\s+|waveform\s+|recorded\s+|separate\s+)?traces?\b"
    r"|\b(?:number\s+of\s+traces|traces)\s*(?:is|was|are|:|=)\s*(?P<count2>\d{1,6})\b",
    re.IGNORECASE,
)
_NUMBER = r"(?P<value>\d+(?:\.\d+)?|\.\d+)"
_UNIT = r"\s*(?P<unit>ms|milliseconds?|s|secs?|seconds?)\b"
# Between the phase and its time: words and spaces, no digit, no sentence end, no other phase ("P ... S wave at 3 s"
# must not give P the S time). "approx." is the one period allowed; at most 60 characters, so scans stay linear.
_GAP = r"(?:approx\.|(?!\b[ps](?:[\s-]?(?:waves?|phases?))?\b)[^\d\n.!?;]){0,60}?"


def _phase_time(letter: str) -> re.Pattern[str]:
    # "P wave", "P-phase", or the letter alone, but not right after a number: "1.2 s and lasts 5 s" has no S arrival.
    # "S-P time" is a difference, not an arrival: a letter joined to another by "-" or "/" is not a phase.
    phase = rf"(?:{letter}[\s-]?(?:waves?|phases?)|(?<![\d.]\s)(?<![\d.]){letter})"
    return re.compile(rf"(?<![\w/–-]){phase}(?![\w/–-]){_GAP}{_NUMBER}{_UNIT}", re.IGNORECASE)


_PHASES = {"p_arrival_s": _phase_time("p"), "s_arrival_s": _phase_time("s")}
_AMPLITUDE = re.compile(
    r"\b(?P<a>low|medium|moderate|high)[\s-]+amplitudes?\b"
    r"|\bamplitudes?\s*(?:is|was|are|were|:|=)?\s*(?:very\s+|relatively\s+)?(?P<b>low|medium|moderate|high)\b",
    re.IGNORECASE,
)
_FREQUENCY = re.compile(
    r"\b(?P<a>low|high)[\s-]+frequenc(?:y|ies)\b"
    r"|\bfrequency(?:\s+content)?\s*(?:is|was|are|were|:|=)?\s*(?:very\s+|relatively\s+|mostly\s+)?(?P<b>low|high)\b",
    re.IGNORECASE,
)


# A negation shortly before a mention, in the same clause: "not a high amplitude", "no P wave at 1.2 s", "isn't".
_NEGATION = re.compile(r"(?:\b(?:not|no|never|without|nor)|n't)\s+(?:[\w-]+\s+){0,2}$", re.IGNORECASE)


def _first_affirmed(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first mention `pattern` finds that is not negated: a denied fact is not a stated one."""
    for match in pattern.finditer(text):
        clause = re.split(r"[.;,!?\n]", text[max(0, match.start() - 40) : match.start()])[-1]
        if not _NEGATION.search(clause):
            return match
    return None


def _count_value(text: str) -> int:
    text = " ".join(text.lower().split())
    if text in ("a single", "single"):
        return 1
    return _NUMBER_WORDS[text] if text in _NUMBER_WORDS else int(text)


def extract_facts(text: str) -> dict[str, Any]:
    """The facts a description states, by the first mention of each; never raises (non-strings give `{}`).

    Reads "3 traces" / "three traces", "P wave arrives at 1.2 s" / "P arrival at 1.20 s" / "P at 1.2s" (also "ms"),
    the same for S, "low/medium/high amplitude" (or "amplitude is high"; "moderate" means medium) and
    "low-frequency" / "high frequency" (or "frequency content is low"). Case-insensitive. A negated mention ("not a
    high amplitude", "no P wave at 1.2 s") states nothing; a later affirmed one counts.
    """
    if not isinstance(text, str):
        return {}
    facts: dict[str, Any] = {}
    try:
        if match := _first_affirmed(_TRACES, text):
            facts["num_traces"] = _count_value(match.group("count") or match.group("count2"))
        for key, pattern in _PHASES.items():
            if match := _first_affirmed(pattern, text):
                value = float(match.group("value"))
                if match.group("unit").lower().startswith("m"):
                    value /= 1000
                if math.isfinite(value):
                    facts[key] = value
        if match := _first_affirmed(_AMPLITUDE, text):
            amplitude = (match.group("a") or match.group("b")).lower()
            facts["amplitude_class"] = "medium" if amplitude == "moderate" else amplitude
        if match := _first_affirmed(_FREQUENCY, text):
            facts["frequency_class"] = (match.group("a") or match.group("b")).lower()
    except (ValueError, OverflowError, KeyError):  # defensive: a metric must not crash an evaluation run
        pass
    return facts


def _checked_facts(facts: Mapping[str, Any], where: str = "facts") -> dict[str, Any]:
    if not isinstance(facts, Mapping):
        raise ValueError(f"{where} must be a dict of event facts, got {type(facts).__name__}")
    unknown = sorted(set(facts) - set(FACT_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}: the known facts are {list(FACT_KEYS)}")
    present = {key: value for key, value in facts.items() if value is not None}
    if not present:
        raise ValueError(f"{where} states no facts: give at least one of {list(FACT_KEYS)}")
    return present


def fact_score(prediction: str, facts: Mapping[str, Any], time_tolerance: float = 0.25) -> float:
    """Fraction of the event's facts that the description states correctly (0.0 when it states none of them).

    Trace count and classes must match exactly (classes case-insensitively); arrival times must be within
    `time_tolerance` seconds (inclusive). Keys absent from `facts` (or None) do not count; no facts: ValueError.
    """
    present = _checked_facts(facts)
    stated = extract_facts(prediction)
    correct = 0
    for key, expected in present.items():
        if key not in stated:
            continue
        if key in TIME_KEYS:
            correct += abs(stated[key] - float(expected)) <= time_tolerance + _EPSILON
        elif key == "num_traces":
            correct += stated[key] == int(expected)
        else:
            correct += stated[key] == str(expected).lower()
    return correct / len(present)


def description_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    facts: Sequence[Mapping[str, Any]] | None = None,
    time_tolerance: float = 0.25,
) -> dict[str, float]:
    """`{"bleu", "rouge_l", "fact_score"}` of descriptions against one reference description each.

    bleu: sacrebleu's corpus BLEU, on its 0-100 scale (default 13a tokenisation, exponential smoothing).
    rouge_l: mean ROUGE-L F1 of rouge_score with the Porter stemmer, in [0, 1].
    fact_score: mean `fact_score` over items; only when `facts` (one dict per item) is given.
    """
    # Imported here: only this function needs them, and the package imports without them.
    import sacrebleu
    from rouge_score import rouge_scorer

    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be lists of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(
            f"description_scores got {len(predictions)} predictions but {len(references)} references: one reference "
            "description per prediction."
        )
    if len(predictions) == 0:
        raise ValueError("description_scores got no predictions.")
    if facts is not None and len(facts) != len(predictions):
        raise ValueError(f"description_scores got {len(predictions)} predictions but {len(facts)} facts dicts.")
    predictions, references = list(predictions), list(references)
    scores: dict[str, float] = {"bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score)}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in zip(predictions, references, strict=True)
    ]
    scores["rouge_l"] = float(sum(rouge) / len(rouge))
    if facts is not None:
        for index, item in enumerate(facts):
            _checked_facts(item, where=f"facts[{index}]")
        per_item = [fact_score(p, item, time_tolerance) for p, item in zip(predictions, facts, strict=True)]
        scores["fact_score"] = sum(per_item) / len(per_item)
    return scores


__all__ = [
    "AMPLITUDE_CLASSES",
    "FACT_KEYS",
    "FREQUENCY_CLASSES",
    "description_scores",
    "extract_facts",
    "fact_score",
]
