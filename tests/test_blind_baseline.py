"""The question-only baseline: the chance level the study states per question type and tests every variant against."""

from __future__ import annotations

import pytest

from llava_swap.analysis.blind_baseline import blind_baseline
from llava_swap.data.records import Record
from llava_swap.tasks import get_task


def _record(index: int, question: str, answer: str, kind: str, split: str = "train") -> Record:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    meta = {"question_type": kind, "answers": [answer] * 10, "answer": answer}
    return Record(f"{split}-{index}", ["x.png"], messages, split, meta)


def test_each_question_gets_its_best_training_answer_then_its_type_s():
    task = get_task("vqa_scene")
    train = [
        _record(0, "Is there a red circle?", "no", "existence"),
        _record(1, "Is there a red circle?", "no", "existence"),
        _record(2, "Is there a red circle?", "yes", "existence"),
        _record(3, "Is there a blue square?", "no", "existence"),
        _record(4, "How many shapes are there?", "3", "counting"),
        _record(5, "How many shapes are there?", "2", "counting"),
        _record(6, "How many shapes are there?", "2", "counting"),
    ]
    test = [
        _record(0, "Is there a red circle?", "no", "existence", "test"),
        _record(1, "Is there a red circle?", "yes", "existence", "test"),
        _record(2, "Is there a green triangle?", "no", "existence", "test"),  # never asked: its type's answer
        _record(3, "How many shapes are there?", "3", "counting", "test"),
    ]
    baseline = blind_baseline(task, train, test)
    assert baseline.answers == ["no", "no", "no", "2"]
    assert baseline.scores == [1.0, 0.0, 1.0, 0.0]
    assert baseline.by_type() == {"counting": 0.0, "existence": pytest.approx(2 / 3), "all": 0.5}
    # The order of the training records changes nothing.
    assert blind_baseline(task, train[::-1], test).answers == baseline.answers


def _point(index: int, x: float, y: float, answer: tuple[float, float], split: str = "train") -> Record:
    from llava_swap.tasks.seismic_coordinates import PROMPT, format_answer

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": format_answer(*answer)}]},
    ]
    meta = {"question_type": "location", "target": {"x": x, "y": y}, "answer": format_answer(*answer)}
    return Record(f"{split}-{index}", ["x.png"], messages, split, meta)


def test_the_constant_is_the_best_scoring_answer_not_the_most_frequent():
    """Two answers at a far corner are the most frequent; the point near three events scores best and is chosen."""
    targets = [(0.50, 0.50), (0.52, 0.48), (0.49, 0.53), (0.95, 0.95), (0.95, 0.95)]
    train = [_point(i, x, y, (x, y)) for i, (x, y) in enumerate(targets)]
    test = [_point(0, 0.51, 0.50, (0.51, 0.50), "test"), _point(1, 0.10, 0.10, (0.10, 0.10), "test")]
    baseline = blind_baseline(get_task("seismic_coordinates"), train, test)
    assert baseline.answers == ['{"x": 0.50, "y": 0.50}'] * 2
    assert baseline.scores == [1.0, 0.0]


def test_generated_vqa_scene_has_a_chance_level_per_question_type(tmp_path):
    task = get_task("vqa_scene")
    task.generate(tmp_path, n_train=200, n_val=1, n_test=40, seed=0, image_size=32)
    baseline = blind_baseline(task, task.load(tmp_path, "train").records, task.load(tmp_path, "test").records)
    levels = baseline.by_type()
    assert set(levels) == {"attribute", "counting", "existence", "spatial", "all"}
    assert all(0.0 <= level < 0.8 for level in levels.values())  # no type is answerable from its question
    assert len(baseline.scores) == 40


def test_no_training_records_is_an_error():
    with pytest.raises(ValueError, match="needs training and test records"):
        blind_baseline(get_task("vqa_scene"), [], [_record(0, "q", "a", "existence", "test")])
