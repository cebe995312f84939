"""The evaluation runner: batched greedy answers with confidences, per-instance records, task metrics, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor
from llava_swap.cli import main
from llava_swap.evaluation import evaluate_model, evaluate_rows, generate_answers, prompt_messages
from llava_swap.tasks import TASKS, get_task
from llava_swap.training import Recipe, default_recipe, run_recipe

RECORD_FIELDS = {
    "id",
    "question_type",
    "prompt",
    "prediction",
    "references",
    "parsed",
    "score",
    "correct",
    "confidence",
    "mean_logprob",
    "num_tokens",
    "first_token_prob",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on vqa_scene, with periodic task evaluation; and its data folder."""
    out = tmp_path_factory.mktemp("trained") / "run"
    recipe = default_recipe().to_dict()
    recipe.update(output_dir=str(out), report_to=[])
    recipe["data"].update(
        task="vqa_scene",
        synthetic_train=64,
        synthetic_test=24,
        synthetic_image_size=32,
        eval_steps=2,
        eval_steps_samples=8,
    )
    recipe["stages"][0].update(max_steps=2, per_device_train_batch_size=8)
    recipe["stages"][1].update(max_steps=4, per_device_train_batch_size=8, logging_steps=2)
    summary = run_recipe(Recipe.from_dict(recipe))
    return out, summary


def test_recipe_logs_task_metrics_during_training_and_writes_evaluations(trained):
    out, summary = trained
    history = summary.stages["stage2-finetune"].eval_history
    assert [entry["step"] for entry in history] == [2, 4]
    assert {"eval_accuracy", "eval_ece", "eval_brier"} <= set(history[0])
    assert all("loss" in entry for entry in history)  # the step's own loss log survives beside the task metrics
    for name in ("eval_before", "eval"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["task"] == "vqa_scene" and metrics["metrics"]["n"] == 24
        assert len((out / name / "predictions.jsonl").read_text().splitlines()) == 24
    assert summary.eval["accuracy"] == json.loads((out / "eval" / "metrics.json").read_text())["metrics"]["accuracy"]


def test_cli_evaluate_writes_predictions_and_metrics(trained, tmp_path, capsys):
    out, _ = trained
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--task",
                "vqa_scene",
                "--data",
                str(out / "data"),
                "--batch-size",
                "8",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "vqa_scene (test, 24 items" in printed and "ece" in printed
    records = [json.loads(line) for line in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(set(record) == RECORD_FIELDS for record in records)
    assert all(0.0 < r["confidence"] <= 1.0 and r["mean_logprob"] <= 0.0 and 0.0 <= r["score"] <= 1.0 for r in records)
    assert {r["question_type"] for r in records} <= {"counting", "attribute", "existence", "spatial"}
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"] == pytest.approx(sum(r["score"] for r in records) / 24)
    assert {"ece", "adaptive_ece", "brier"} == set(metrics["metrics"]["calibration"])
    # Deterministic: the same command gives the same file; another batch size the same answers.
    command = ["evaluate", "--model", str(out), "--task", "vqa_scene", "--data", str(out / "data")]
    main([*command, "--batch-size", "8", "--out", str(tmp_path / "f")])
    assert (tmp_path / "f" / "predictions.jsonl").read_text() == (tmp_path / "e" / "predictions.jsonl").read_text()
    main([*command, "--batch-size", "5", "--out", str(tmp_path / "g")])
    other = [json.loads(line) for line in (tmp_path / "g" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in other] == [r["prediction"] for r in records]
    assert [r["confidence"] for r in other] == pytest.approx([r["confidence"] for r in records], abs=1e-4)


def test_confidence_is_the_probability_of_the_first_answer_token(trained):
    out, _ = trained
    model, processor = LlavaSwapForCausalLM.from_pretrained(out), LlavaSwapProcessor.from_pretrained(out)
    rows = [r.to_row() for r in get_task("vqa_scene").load(out / "data").records[:3]]
    generations = generate_answers(model, processor, rows, batch_size=3, max_new_tokens=8, progress=False)
    from llava_swap.data.images import with_images

    for row, generation in zip(rows, generations, strict=True):
        inputs = processor.apply_chat_template(
            with_images(prompt_messages(row), row["images"]), add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt",
        )  # fmt: skip
        with torch.no_grad():
            probabilities = model(**inputs).logits[0, -1].softmax(-1)
        assert generation.first_token_prob == pytest.approx(probabilities.max().item(), abs=1e-5)


def test_wrong_data_unknown_task_and_missing_fields(trained, tmp_path):
    out, _ = trained
    with pytest.raises(ValueError, match=r"Unknown task 'vqa'.*seismic_coordinates"):
        get_task("vqa")
    with pytest.raises(
        ValueError,
        match=r"record 'vqa_scene-test-00000' in .*test.json: belongs to task 'vqa_scene', not 'seismic_coordinates'",
    ):
        evaluate_model(out, "seismic_coordinates", out / "data")
    records = json.loads((out / "data" / "test.json").read_text())
    del records[1]["answers"]
    (tmp_path / "test.json").write_text(json.dumps(records))
    for image in (out / "data" / "images").iterdir():
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(ValueError, match=r"record 'vqa_scene-test-00001'.*lacks the field\(s\) \['answers'\]"):
        get_task("vqa_scene").load(tmp_path)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_evaluates_end_to_end(built, tmp_path, name):
    model, processor = built("llama3", "clip")
    task = get_task(name)
    task.generate(tmp_path, n_train=2, n_val=1, n_test=6, seed=0, image_size=32)
    rows = [record.to_row() for record in task.load(tmp_path).records]
    result = evaluate_rows(model, processor, rows, task, batch_size=4, max_new_tokens=6, progress=False)
    assert len(result.records) == 6 and result.metrics["n"] == 6
    assert set(result.metrics) >= {"mean_score", "by_question_type", "calibration"}


def test_read_predictions_checks_every_line(trained, tmp_path):
    from llava_swap.evaluation import read_predictions

    out, _ = trained
    records = read_predictions(out / "eval" / "predictions.jsonl")
    assert len(records) == 24
    broken = tmp_path / "predictions.jsonl"
    lines = (out / "eval" / "predictions.jsonl").read_text().splitlines()
    damaged = json.loads(lines[2])
    del damaged["score"]
    broken.write_text("\n".join([lines[0], lines[1], json.dumps(damaged)]) + "\n")
    with pytest.raises(
        ValueError, match=r"predictions.jsonl, line 3 \(id 'vqa_scene-test-00002'\): missing field\(s\) \['score'\]"
    ):
        read_predictions(broken)
    broken.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not JSON"):
        read_predictions(broken)


def test_cli_data_generate(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "generate",
                "--task",
                "seismic_coordinates",
                "--out",
                str(tmp_path),
                "--n",
                "20",
                "--image-size",
                "32",
            ]
        )
        == 0
    )
    assert "wrote seismic_coordinates" in capsys.readouterr().out
    assert {p.name for p in tmp_path.glob("*.json")} == {
        "train.json",
        "val.json",
        "test.json",
        "pretrain.json",
        "task.json",
    }
    assert len(json.loads((tmp_path / "train.json").read_text())) == 20
    assert len(get_task("seismic_coordinates").load(tmp_path).records) == 2  # n / 10


def test_answer_confidence_leaves_out_format_tokens(tiny_lm):
    """A coordinate answer's `{`, quotes and keys are written with certainty by any model: only the number tokens
    carry the answer, so only they make its confidence."""
    from transformers import AutoTokenizer

    from llava_swap.evaluation import content_positions

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    tokens = tokenizer('{"x": 0.35, "y": 0.2}', add_special_tokens=False).input_ids
    kept = content_positions(tokenizer, tokens, ("x", "y"))
    assert (
        kept and "".join(tokenizer.decode([tokens[i]]) for i in kept).replace(" ", "") == "03502"
    )  # 0.35 and 0.2, points dropped
    assert content_positions(tokenizer, tokens) != kept  # without the task's format words, x and y count
