"""Chance level: what answering from the question alone scores, per item and per question type.

A model that never looks at the image can still learn each question's most common answer ("Is there ...?" -> "no",
"How many shapes?" -> "2"). That is the level a vision-language model must beat to show it sees, and the level the
study's report states per question type. The blind baseline answers each test question with the most frequent
training answer to the same question text (the most frequent answer of its question type, then of the whole task,
where the text was never asked in training) and is scored by the task's own item score, so it is directly
comparable, item by item, with every variant.
"""

from __future__ import annotations

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


def _most_common(answers: Counter) -> str:
    # Ties go to the alphabetically first answer, so the baseline never depends on the order of the records.
    return min(answers, key=lambda answer: (-answers[answer], answer))


def blind_baseline(task, train: Sequence[Record], test: Sequence[Record]) -> BlindBaseline:
    """Answers every `test` record with the majority training answer to its question; scored with `task.score`."""
    if not train or not test:
        raise ValueError(
            f"{task.name}: the blind baseline needs training and test records (got {len(train)}, {len(test)})."
        )
    by_question: dict[str, Counter] = {}
    by_type: dict[str | None, Counter] = {}
    overall: Counter = Counter()
    for record in train:
        question, answer = _question_and_answer(record)
        by_question.setdefault(question, Counter())[answer] += 1
        by_type.setdefault(record.meta.get("question_type"), Counter())[answer] += 1
        overall[answer] += 1
    answers, scores = [], []
    for record in test:
        question, _ = _question_and_answer(record)
        pool = by_question.get(question) or by_type.get(record.meta.get("question_type")) or overall
        answer = _most_common(pool)
        answers.append(answer)
        scores.append(float(task.score(answer, record.meta)))
    return BlindBaseline(
        ids=[record.id for record in test],
        question_types=[record.meta.get("question_type") for record in test],
        answers=answers,
        scores=scores,
    )


__all__ = ["BlindBaseline", "blind_baseline"]
