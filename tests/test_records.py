"""The typed records that cross stages: what they write is what they read back, and damaged input is named."""

from __future__ import annotations

import json

import pytest

from llava_swap.records import EvaluationRecord, StageSummary, StudyLayout, TrainingSummary


def _stage(**changes) -> StageSummary:
    values = dict(
        stage="finetune", language_model="lora", train_runtime=1.5, train_samples_seen=48,
        train_samples_per_second=32.0, final_loss=0.25, train_loss=0.5, global_step=6, world_size=2,
        trainable_parameters={"vision_tower": 0, "projector": 10, "language_model": 20},
    )  # fmt: skip
    return StageSummary(**{**values, **changes})


def test_training_summary_round_trips_through_its_file(tmp_path):
    summary = TrainingSummary(
        recipe={"name": "r", "data": {"task": "shapes"}},
        stages={"stage2": _stage(eval_history=[{"step": 2, "eval_accuracy": 0.5}])},
        eval={"accuracy": 0.75, "n": 4},
        final_loss=0.25,
        output_dir=str(tmp_path),
    )
    summary.write(tmp_path / "train_summary.json")
    assert TrainingSummary.read(tmp_path / "train_summary.json") == summary
    assert json.loads((tmp_path / "train_summary.json").read_text())["stages"]["stage2"]["global_step"] == 6
    # A newer release's extra field is ignored; a folder without a summary reads as the empty one.
    (tmp_path / "newer.json").write_text(json.dumps({**summary.to_dict(), "added_later": 1}))
    assert TrainingSummary.read(tmp_path / "newer.json") == summary
    assert TrainingSummary.read(tmp_path / "absent.json") == TrainingSummary()


def test_evaluation_record_lines_name_what_is_missing():
    record = EvaluationRecord(
        id="q1", question_type="count", prompt="How many?", prediction="2", references=["2"], parsed="2",
        score=1.0, correct=1, confidence=0.9, mean_logprob=-0.1, num_tokens=2,
    )  # fmt: skip
    line = record.to_dict()
    assert "prob_correct" not in line  # only the study computes it
    assert EvaluationRecord.from_dict(json.loads(json.dumps(line)), "f, line 1") == record
    del line["confidence"]
    with pytest.raises(ValueError, match=r"f, line 3 \(id 'q1'\): missing field\(s\) \['confidence'\]"):
        EvaluationRecord.from_dict(line, "f, line 3")


def test_study_layout_places_each_file_under_its_variant_and_task(tmp_path):
    layout = StudyLayout(tmp_path)
    evaluation = layout.task_eval("llama3", "vqa_scene", 2)
    run = tmp_path / "variants" / "llama3" / "seed-2"
    assert evaluation.predictions == run / "eval" / "vqa_scene" / "predictions.jsonl"
    assert evaluation.folder.parent.parent == layout.variant("llama3", 2) == run
    assert layout.variant_root("llama3") == run.parent
    assert {layout.manifest.name, layout.results.name, layout.report.name} == {
        "manifest.json",
        "results.json",
        "report.md",
    }
