"""The lmms-eval task files `llava-swap data generate` writes, checked without lmms-eval: the YAML, its hooks, the
scores they give, and the records they refuse. (tests/test_lmms_eval.py runs them in the real lmms-eval.)"""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from llava_swap.integrations.lmms_eval_tasks import doc_to_target, doc_to_text, score_item, write_lmms_eval_task
from llava_swap.tasks import get_task


class _FunctionTag(yaml.SafeLoader):
    """Reads lmms-eval's `!function utils.name` tags as the string they name."""


_FunctionTag.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@pytest.fixture(scope="module")
def coordinates(tmp_path_factory):
    root = tmp_path_factory.mktemp("coords")
    get_task("seismic_coordinates").generate(root, n_train=4, n_val=1, n_test=6, seed=0, image_size=32)
    return root


def test_written_task_points_at_the_data_and_the_task_settings(coordinates):
    path = write_lmms_eval_task(coordinates, "seismic_coordinates")
    assert path == coordinates / "lmms_eval" / "llava_swap_seismic_coordinates.yaml"
    spec = yaml.load(path.read_text(), Loader=_FunctionTag)
    assert spec["task"] == "llava_swap_seismic_coordinates" and spec["output_type"] == "generate_until"
    assert (path.parent / spec["dataset_kwargs"]["data_files"]["test"]).resolve() == coordinates / "test.json"
    assert spec["generation_kwargs"] == {"max_new_tokens": 24, "do_sample": False, "until": []}
    assert spec["process_results"] == "!function utils.process_results"
    # The hooks file, loaded as lmms-eval loads it (by path), opens the record's image from the data folder.
    loader = importlib.util.spec_from_file_location("utils", path.parent / "utils.py")
    utils = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(utils)
    doc = json.loads((coordinates / "test.json").read_text())[0]
    (image,) = utils.doc_to_visual(doc)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert utils.TASK == "seismic_coordinates"


def test_hooks_ask_and_score_as_llava_swap_evaluate_does(coordinates):
    task = get_task("seismic_coordinates")
    records = task.load(coordinates).records
    doc = json.loads((coordinates / "test.json").read_text())[0]
    record = records[0]
    question = [part["text"] for part in record.messages[0]["content"] if part["type"] == "text"]
    assert doc_to_text(doc) == "".join(question) and "<image>" not in doc_to_text(doc)
    reference = doc_to_target(doc)
    scored = score_item("seismic_coordinates", doc, [f" {reference}\n"])
    assert scored == {"score": 1.0, "item": {"id": record.id, "prediction": f" {reference}\n", "score": 1.0}}
    assert score_item("seismic_coordinates", doc, ["no idea"])["score"] == task.score("no idea", record.meta) == 0.0


def test_records_lmms_eval_cannot_ask_are_refused_by_id():
    two_questions = {
        "id": "r7",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat?"},
            {"from": "gpt", "value": "a"},
            {"from": "human", "value": "And?"},
            {"from": "gpt", "value": "b"},
        ],
    }
    with pytest.raises(ValueError, match=r"record 'r7'.*2 user turns"):
        doc_to_text(two_questions)
    image_last = {
        "id": "r8",
        "conversations": [{"from": "human", "value": "Look:\n<image>"}, {"from": "gpt", "value": "x"}],
    }
    with pytest.raises(ValueError, match=r"record 'r8': an image after the text"):
        doc_to_text(image_last)


def test_data_generate_writes_the_lmms_eval_task(tmp_path, capsys):
    from llava_swap.cli import main

    assert (
        main(["data", "generate", "--task", "vqa_scene", "--out", str(tmp_path), "--n", "20", "--image-size", "32"])
        == 0
    )
    assert (tmp_path / "lmms_eval" / "llava_swap_vqa_scene.yaml").exists()
    assert f"--include_path {tmp_path / 'lmms_eval'} --tasks llava_swap_vqa_scene" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="test.json does not exist"):
        write_lmms_eval_task(tmp_path / "nothing", "vqa_scene")
