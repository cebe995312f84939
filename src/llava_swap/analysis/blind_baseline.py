"""Chance level: what answering from the question alone scores, per item and per question type.

A model that never looks at the image can still learn the best answer to each question ("Is there ...?" -> "no",
"How many shapes?" -> "2", a description of the most common event, a point near the middle of the map). That is the
level a vision-language model must beat to show it uses the image, and the level the study's report states per
question type. The blind baseline gives every test question one constant answer: among the training answers to the
same question (to its question type where the text was never asked in training, then to any question), the one
that scores best on those training items by the task's own item score, so that scores that are not exact match
(facts mentioned, distance to a point) get their best constant too. It is scored like the variants, item by item.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.records import Record


@dataclass(frozen=True)
class BlindBaseline:
    """The question-only answer and its item score for each test item, in the test records' order."""

    ids: list[str]
    question_types: list[str | None]
    answers: list[str]
    scores: list[float]

    def by_type(self) -> dict[str, float]:
        """Mean score per question type (the chance level of each type), and "all"."""
        groups: dict[str, list[float]] = {}
        for kind, score in zip(self.question_types, self.scores, strict=True):
            groups.setdefault(str(kind), []).append(score)
        means = {kind: sum(values) / len(values) for kind, values in sorted(groups.items())}
        return {**means, "all": sum(self.scores) / len(self.scores)}


def _question_and_answer(record: Record) -> tuple[str, str]:
    from ..evaluation import message_text, prompt_messages, reference_answer

    row = record.to_row()
    question = " ".join(message_text(message) for message in prompt_messages(row) if message["role"] == "user")
    return question.strip(), reference_answer(row).strip()


CANDIDATES = 32  # answers tried per question: its most frequent training answers
SCORED_ITEMS = 200  # training items each candidate is scored on (an even subsample of larger pools)


def _best_answer(task, pool: list[tuple[str, dict]]) -> str:
    """The constant answer that scores best on `pool`, the (answer, meta) of the training items asking a question."""
    counts = Counter(answer for answer, _ in pool)
    # The most frequent first; ties in a fixed pseudo-random order (a hash of the text), so that a question whose
    # answers are all different (a description) is tried on a spread of them, and the order of the records never
    # matters.
    candidates = sorted(counts, key=lambda answer: (-counts[answer], hashlib.sha1(answer.encode()).hexdigest()))
    items = sorted(pool, key=lambda item: hashlib.sha1(repr(item).encode()).hexdigest())[:SCORED_ITEMS]

    def mean_score(answer: str) -> float:
        return sum(task.score(answer, meta) for _, meta in items) / len(items)

    return max(candidates[:CANDIDATES], key=mean_score)  # the first of equal scores: the more frequent answer


def blind_baseline(task, train: Sequence[Record], test: Sequence[Record]) -> BlindBaseline:
    """Answers every `test` record with the best constant answer to its question (see the module); scored with
    `task.score`."""
    if not train or not test:
        raise ValueError(
            f"{task.name}: the blind baseline needs training and test records (got {len(train)}, {len(test)})."
        )
    by_question: dict[str, list] = {}
    by_type: dict[str | None, list] = {}
    overall: list = []
    for record in train:
        question, answer = _question_and_answer(record)
        for pool in (
            by_question.setdefault(question, []),
            by_type.setdefault(record.meta.get("question_type"), []),
            overall,
        ):
            pool.append((answer, record.meta))
    chosen: dict[tuple, str] = {}  # one answer per pool, computed once
    answers, scores = [], []
    for record in test:
        question, _ = _question_and_answer(record)
        kind = record.meta.get("question_type")
        key = ("question", question) if question in by_question else ("type", kind) if kind in by_type else ("all",)
        if key not in chosen:
            pool = by_question.get(question) or by_type.get(kind) or overall
            chosen[key] = _best_answer(task, pool)
        answers.append(chosen[key])
        scores.append(float(task.score(chosen[key], record.meta)))
    return BlindBaseline(
        ids=[record.id for record in test],
        question_types=[record.meta.get("question_type") for record in test],
        answers=answers,
        scores=scores,
    )


__all__ = ["BlindBaseline", "blind_baseline"]
