"""The three task generators (VQA-Scene, seismic description, seismic coordinates): deterministic, complete, true.

"True" means the answers agree with what was drawn: counts with the stored scene, every fact of a seismic event in
its reference text, and the event pixel at the target coordinates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from llava_swap.data import load_llava_json
from llava_swap.tasks import seismic_coordinates, seismic_description, vqa_scene

MODULES = (vqa_scene, seismic_description, seismic_coordinates)
SPLITS = ("train", "val", "test", "pretrain")
REFERENCE_FIELDS = {
    "vqa_scene": ("answer", "answers", "answer_type", "objects"),
    "seismic_description": ("facts", "reference", "answer"),
    "seismic_coordinates": ("target", "answer"),
}
SMALL = {"n_train": 6, "n_val": 3, "n_test": 8, "image_size": 32}


def file_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def load_split(root: Path, split: str) -> list:
    loaded = load_llava_json(root / f"{split}.json")
    assert not loaded.skipped
    return loaded.records


def text_of(record, role: str) -> str:
    message = next(message for message in record.messages if message["role"] == role)
    return "".join(part.get("text", "") for part in message["content"])


@pytest.fixture(scope="module")
def vqa_test(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("vqa")
    vqa_scene.generate(root, n_train=4, n_val=0, n_test=200, seed=3, image_size=32)
    return load_split(root, "test")


# --- the common contract -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
def test_same_arguments_give_the_same_bytes(module, tmp_path):
    module.generate(tmp_path / "a", seed=7, **SMALL)
    module.generate(tmp_path / "b", seed=7, **SMALL)
    first, second = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert first == second
    assert len([name for name in first if name.startswith("images/")]) == 6 + 3 + 8
    module.generate(tmp_path / "c", seed=8, **SMALL)
    assert file_hashes(tmp_path / "c")["test.json"] != first["test.json"]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
def test_writes_every_split_and_valid_records(module, tmp_path):
    paths = module.generate(tmp_path, seed=1, **SMALL)
    assert paths == {split: tmp_path / f"{split}.json" for split in SPLITS}
    summary = json.loads((tmp_path / "task.json").read_text(encoding="utf-8"))
    assert summary == {
        "task": module.NAME,
        "seed": 1,
        "image_size": 32,
        "counts": {"train": 6, "val": 3, "test": 8, "pretrain": 6},
    }
    ids = []
    for split in SPLITS:
        records = load_split(tmp_path, split)
        assert len(records) == summary["counts"][split]
        for index, record in enumerate(records):
            assert record.id == f"{module.NAME}-{split}-{index:05d}"
            assert record.meta["task"] == module.NAME
            assert "question_type" in record.meta
            assert [message["role"] for message in record.messages] == ["user", "assistant"]
            assert record.messages[0]["content"][0] == {"type": "image"}
            with Image.open(record.images[0]) as image:
                assert image.size == (32, 32) and image.mode == "RGB"
            if split == "pretrain":
                assert text_of(record, "user") == module.CAPTION_PROMPT
                assert record.meta["question_type"] == "caption"
                assert text_of(record, "assistant").endswith(".")
            else:
                for key in REFERENCE_FIELDS[module.NAME]:
                    assert key in record.meta, (record.id, key)
                assert module.references(record.meta) is not None
            ids.append(record.id)
    assert len(ids) == len(set(ids))
    # The raw JSON is LLaVA's: "<image>\n" + question.
    raw = json.loads((tmp_path / "test.json").read_text(encoding="utf-8"))
    assert raw[0]["conversations"][0]["value"].startswith("<image>\n")
    assert raw[0]["image"] == "images/test-00000.png"


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
def test_test_split_does_not_depend_on_the_train_size(module, tmp_path):
    module.generate(tmp_path / "a", n_train=3, n_val=2, n_test=5, image_size=32)
    module.generate(tmp_path / "b", n_train=9, n_val=4, n_test=5, image_size=32)
    first, second = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    tested = [name for name in first if name == "test.json" or name.startswith("images/test-")]
    assert len(tested) == 6
    assert {name: first[name] for name in tested} == {name: second[name] for name in tested}
    assert first["train.json"] != second["train.json"]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
@pytest.mark.parametrize("image_size", [45, 100])
def test_other_image_sizes(module, image_size, tmp_path):
    module.generate(tmp_path, n_train=2, n_val=1, n_test=6, image_size=image_size)
    for record in load_split(tmp_path, "test"):
        with Image.open(record.images[0]) as image:
            assert image.size == (image_size, image_size)


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
def test_bad_arguments_are_refused(module, tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        module.generate(tmp_path, n_train=2, n_val=1, n_test=2, image_size=16)
    with pytest.raises(ValueError, match="n_test"):
        module.generate(tmp_path, n_train=2, n_val=1, n_test=0, image_size=32)


# --- VQA-Scene -----------------------------------------------------------------------------------------------------


def test_vqa_question_types_are_balanced(vqa_test):
    types = Counter(record.meta["question_type"] for record in vqa_test)
    assert types == {kind: 50 for kind in vqa_scene.QUESTION_TYPES}
    yes_no = [record.meta["answer"] for record in vqa_test if record.meta["answer_type"] == "yes/no"]
    assert len(yes_no) >= 60
    assert 0.4 <= yes_no.count("yes") / len(yes_no) <= 0.6
    questions = {text_of(record, "user") for record in vqa_test}
    assert {"How many shapes are there?", "Which shape is leftmost?", "Which shape is rightmost?"} <= questions


def test_vqa_answers_match_the_drawn_scene(vqa_test):
    noisy = 0
    for record in vqa_test:
        meta, question = record.meta, text_of(record, "user")
        objects, answer = meta["objects"], meta["answer"]
        assert text_of(record, "assistant") == answer == answer.lower()
        assert len(meta["answers"]) == 10 and Counter(meta["answers"]).most_common(1)[0][0] == answer
        assert meta["answer_type"] == vqa_scene.answer_type(meta["question_type"], answer)
        assert 1 <= len(objects) <= 6
        with Image.open(record.images[0]) as image:
            for obj in objects:  # the centre of a box is inside its circle, square or triangle
                left, top, right, bottom = obj["box"]
                assert image.getpixel(((left + right) // 2, (top + bottom) // 2)) == vqa_scene.COLOURS[obj["colour"]]
        kind = meta["question_type"]
        if kind == "counting":
            noisy += meta["answers"].count(answer) < 10
            assert all(abs(int(other) - int(answer)) <= 1 for other in meta["answers"])
            assert meta["answers"].count(answer) >= 8
            match = re.fullmatch(r"How many (?:(\w+) )?shapes are there\?", question)
            colour = match.group(1)
            assert int(answer) == sum(colour is None or obj["colour"] == colour for obj in objects)
        elif kind == "attribute":
            if match := re.fullmatch(r"What colour is the (\w+)\?", question):
                (obj,) = [obj for obj in objects if obj["shape"] == match.group(1)]
                assert answer == obj["colour"]
            else:
                colour = re.fullmatch(r"What shape is the (\w+) object\?", question).group(1)
                (obj,) = [obj for obj in objects if obj["colour"] == colour]
                assert answer == obj["shape"]
        elif kind == "existence":
            colour, shape = re.fullmatch(r"Is there a (\w+) (\w+)\?", question).groups()
            present = any(obj["colour"] == colour and obj["shape"] == shape for obj in objects)
            assert answer == ("yes" if present else "no")
        elif match := re.fullmatch(r"Is the (\w+) (\w+) (left|right) of the (\w+) (\w+)\?", question):
            (a,) = [obj for obj in objects if [obj["colour"], obj["shape"]] == list(match.group(1, 2))]
            (b,) = [obj for obj in objects if [obj["colour"], obj["shape"]] == list(match.group(4, 5))]
            assert a["col"] != b["col"]
            truth = a["box"][2] < b["box"][0] if match.group(3) == "left" else a["box"][0] > b["box"][2]
            assert answer == ("yes" if truth else "no")
        else:
            extreme = re.fullmatch(r"Which shape is (leftmost|rightmost)\?", question).group(1)
            edge = min if extreme == "leftmost" else max
            column = edge(obj["col"] for obj in objects)
            (obj,) = [obj for obj in objects if obj["col"] == column]
            assert answer == obj["shape"]
    assert noisy >= 1  # some counting items have off-by-one annotators, so the soft score is exercised
    assert vqa_scene.references(vqa_test[0].meta) == vqa_test[0].meta["answers"]


def test_vqa_answers_are_already_in_official_normal_form(vqa_test):
    """Every human answer VQA-Scene writes is unchanged by the official normalisation, so the VQA score of any
    prediction is the same under GT-Vision-Lab/VQA's Beta and HEAD rules (the study's VQA numbers did not move when
    vqa_score followed HEAD)."""
    from llava_swap.metrics.vqa import _process_punctuation, normalize_vqa_answer

    answers = {answer for record in vqa_test for answer in record.meta["answers"]}
    assert {"0", "3", "yes", "no", "red", "circle"} <= answers
    assert all(normalize_vqa_answer(answer) == answer == _process_punctuation(answer) for answer in answers)


def test_vqa_caption_describes_each_object(tmp_path):
    vqa_scene.generate(tmp_path, **SMALL)
    for record in load_split(tmp_path, "pretrain"):
        train = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
        objects = next(entry["objects"] for entry in train if entry["image"] in record.images[0])
        caption = text_of(record, "assistant")
        for obj in objects:
            assert f"{obj['size']} {obj['colour']} {obj['shape']}" in caption


def test_vqa_answer_type():
    assert vqa_scene.answer_type("counting") == "number"
    assert vqa_scene.answer_type("existence") == "yes/no"
    assert vqa_scene.answer_type("spatial", "circle") == "other"
    with pytest.raises(ValueError, match="No answer type for question_type='spatial' with answer=None"):
        vqa_scene.answer_type("spatial")


# --- seismic description -------------------------------------------------------------------------------------------


def test_seismic_reference_states_every_fact(tmp_path):
    seismic_description.generate(tmp_path, n_train=2, n_val=0, n_test=60, image_size=32)
    records = load_split(tmp_path, "test")
    seen = Counter()
    for record in records:
        facts, reference = record.meta["facts"], record.meta["reference"]
        assert record.meta["question_type"] == "description"
        assert text_of(record, "user") == seismic_description.PROMPT
        assert text_of(record, "assistant") == reference == seismic_description.references(record.meta)
        assert 1 <= facts["num_traces"] <= 4
        assert facts["p_arrival_s"] == round(facts["p_arrival_s"], 1) < facts["s_arrival_s"] <= 10
        assert f"{facts['num_traces']} trace" in reference
        assert f"{facts['p_arrival_s']:.1f} s" in reference and f"{facts['s_arrival_s']:.1f} s" in reference
        assert f"{facts['amplitude_class']} amplitude" in reference
        assert f"{facts['frequency_class']}-frequency" in reference
        seen.update([facts["amplitude_class"], facts["frequency_class"] + "-frequency", facts["num_traces"]])
    assert {"low", "medium", "high", "low-frequency", "high-frequency", 1, 2, 3, 4} <= set(seen)


def test_seismic_reference_reads_back_with_the_metric(tmp_path):
    from llava_swap.metrics import description

    seismic_description.generate(tmp_path, n_train=2, n_val=0, n_test=20, image_size=32)
    for record in load_split(tmp_path, "test"):
        assert description.extract_facts(record.meta["reference"]) == record.meta["facts"]


def test_seismic_traces_are_drawn(tmp_path):
    seismic_description.generate(tmp_path, n_train=2, n_val=0, n_test=10, image_size=64)
    for record in load_split(tmp_path, "test"):
        with Image.open(record.images[0]) as image:
            ink_rows = {y for y in range(64) for x in range(64) if image.getpixel((x, y)) == (0, 0, 0)}
        # Each trace's baseline is a black row; traces are separated by white rows.
        runs = sum(1 for y in sorted(ink_rows) if y - 1 not in ink_rows)
        assert runs == record.meta["facts"]["num_traces"]


# --- seismic coordinates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [32, 77])
def test_coordinates_answer_is_the_event_pixel(image_size, tmp_path):
    seismic_coordinates.generate(tmp_path, n_train=2, n_val=0, n_test=40, image_size=image_size)
    for record in load_split(tmp_path, "test"):
        meta = record.meta
        answer = text_of(record, "assistant")
        assert answer == meta["answer"]
        assert re.fullmatch(r'\{"x": [01]\.\d\d, "y": [01]\.\d\d\}', answer)
        assert json.loads(answer) == meta["target"]
        assert seismic_coordinates.parse_answer(f"It is at {answer}.") == seismic_coordinates.references(meta)
        x, y = meta["target"]["x"], meta["target"]["y"]
        pixel = (seismic_coordinates.to_pixel(x, image_size), seismic_coordinates.to_pixel(y, image_size))
        with Image.open(record.images[0]) as image:
            assert image.getpixel(pixel) == seismic_coordinates.EVENT_COLOUR
            event_pixels = sum(colour == seismic_coordinates.EVENT_COLOUR for colour in image.getdata())
        assert event_pixels >= 9  # a disc, not a dot
        assert 3 <= len(meta["stations"]) <= 6
        assert text_of(record, "user") == seismic_coordinates.PROMPT


def test_coordinates_parse_answer():
    assert seismic_coordinates.parse_answer('{"x": 0.42, "y": 0.77}') == (0.42, 0.77)
    assert seismic_coordinates.parse_answer('{"x": "a"} then {"y": 1, "x": 0}') == (0.0, 1.0)
    assert seismic_coordinates.parse_answer("somewhere in the middle") is None
    assert seismic_coordinates.format_answer(0.4, 0.05) == '{"x": 0.40, "y": 0.05}'


@pytest.mark.parametrize("task", ["vqa_scene", "seismic_description", "seismic_coordinates"])
def test_held_out_images_are_never_training_images(tmp_path, task):
    """VQA-Scene at seed 0 drew a test image identical to a training one (32 px scenes repeat): it is redrawn, with
    the same question type, and every other item stays as it was."""
    import hashlib
    import json

    from llava_swap.tasks import get_task

    get_task(task).generate(tmp_path, n_train=240, n_val=0, n_test=60, seed=0, image_size=32)

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    training = {digest(path) for path in (tmp_path / "images").glob("train-*.png")}
    held_out = sorted((tmp_path / "images").glob("test-*.png"))
    assert len(held_out) == 60 and not [path.name for path in held_out if digest(path) in training]
    types = [record.get("question_type") for record in json.loads((tmp_path / "test.json").read_text())]
    if task == "vqa_scene":
        assert {kind: types.count(kind) for kind in set(types)} == {
            "spatial": 15,
            "existence": 15,
            "attribute": 15,
            "counting": 15,
        }
