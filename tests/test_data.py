"""Data loading: LLaVA JSON and datasets to validated Records; every bad record is named, never silently dropped."""

from __future__ import annotations

import hashlib
import json
import pickle
import re

import pytest
from PIL import Image

from llava_swap.data import (
    BadRecordError,
    LoadedData,
    Record,
    SkippedRecord,
    load_hf_dataset,
    load_llava_json,
    validate_record,
    write_llava_json,
)
from llava_swap.data.records import parts_to_text, text_to_parts
from llava_swap.tasks.shapes import generate as generate_shapes


def make_png(path, colour="red", size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="PNG")
    return path


def llava_entry(record_id, image="a.png", question="<image>\nWhat is this?", answer="A square."):
    entry = {
        "id": record_id,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }
    if image is not None:
        entry["image"] = image
    return entry


def write_entries(path, entries):
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path):
    """A LLaVA data folder with one good image, a.png; the JSON files go beside it."""
    root = tmp_path / "data"
    make_png(root / "a.png")
    return root


# --- markers -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("<image>\nWhat is this?", [{"type": "image"}, {"type": "text", "text": "What is this?"}]),
        ("<image>What?", [{"type": "image"}, {"type": "text", "text": "What?"}]),
        ("<image>\n\nWhat?", [{"type": "image"}, {"type": "text", "text": "\nWhat?"}]),  # exactly one newline goes
        (
            "Compare <image> with\n<image>\nplease.",
            [
                {"type": "text", "text": "Compare "},
                {"type": "image"},
                {"type": "text", "text": " with\n"},
                {"type": "image"},
                {"type": "text", "text": "please."},
            ],
        ),
        ("What is this?\n<image>", [{"type": "text", "text": "What is this?\n"}, {"type": "image"}]),
        ("<image>\n<image>\n", [{"type": "image"}, {"type": "image"}]),
        ("No image here.", [{"type": "text", "text": "No image here."}]),
    ],
)
def test_markers_become_image_parts_in_place(text, parts):
    assert text_to_parts(text) == parts
    assert text_to_parts(parts_to_text(parts)) == parts


def test_loader_places_markers(data_dir):
    make_png(data_dir / "b.png", "blue")
    entry = llava_entry("two", image=["a.png", "b.png"], question="Left: <image> right: <image>\nSame colour?")
    loaded = load_llava_json(write_entries(data_dir / "d.json", [entry]))
    (record,) = loaded.records
    assert record.messages[0] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Left: "},
            {"type": "image"},
            {"type": "text", "text": " right: "},
            {"type": "image"},
            {"type": "text", "text": "Same colour?"},
        ],
    }
    assert record.images == [str(data_dir / "a.png"), str(data_dir / "b.png")]


def test_large_files_show_progress_while_checking(data_dir, monkeypatch, capsys):
    from llava_swap.data import llava_json

    path = write_entries(data_dir / "d.json", [llava_entry(f"r{i}") for i in range(3)])
    load_llava_json(path)
    assert "checking d.json" not in capsys.readouterr().err  # small data stays quiet
    monkeypatch.setattr(llava_json, "PROGRESS_FROM", 3)
    assert len(load_llava_json(path).records) == 3
    err = capsys.readouterr().err
    assert "checking d.json" in err and "3/3" in err


# --- LLaVA JSON ----------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    root = tmp_path / "root"
    first, second = make_png(root / "img" / "1.png"), make_png(root / "img" / "2.png", "green")
    path = tmp_path / "out" / "data.json"
    records = [
        Record(
            "r0",
            [str(first)],
            [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
                {"role": "user", "content": [{"type": "text", "text": "Sure?\n"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
            ],
            str(path),
            {"answer": "red", "tags": ["a", "b"]},
        ),
        Record(
            "r1",
            [str(first), str(second)],
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " vs "}, {"type": "image"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Different."}]},
            ],
            str(path),
        ),
        Record(
            "r2",
            [],
            [
                {"role": "user", "content": [{"type": "text", "text": "Text only."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Fine."}]},
            ],
            str(path),
        ),
    ]
    write_llava_json(records, path, root)
    written = json.loads(path.read_text())
    assert written[0]["image"] == "img/1.png" and written[1]["image"] == ["img/1.png", "img/2.png"]
    assert "image" not in written[2]
    loaded = load_llava_json(path, image_root=root)
    assert loaded.records == records
    assert loaded.skipped == []


def test_ids_and_extra_keys(data_dir):
    entries = [llava_entry(7), {**llava_entry(None), "answer": "square", "weight": 2.0}]
    del entries[1]["id"]
    loaded = load_llava_json(write_entries(data_dir / "d.json", entries))
    assert [record.id for record in loaded.records] == ["7", "d.json#1"]
    assert loaded.records[0].meta == {}
    assert loaded.records[1].meta == {"answer": "square", "weight": 2.0}
    assert loaded.records[1].to_row()["meta"] == {"answer": "square", "weight": 2.0}
    assert loaded.records[0].source == str(data_dir / "d.json")


def _bad(**changes):
    entry = llava_entry("bad")
    entry.update(changes)
    return entry


def _turns(*turns):
    return _bad(conversations=[{"from": speaker, "value": value} for speaker, value in turns])


BAD_RECORDS = {
    "missing image": (_bad(image="nope.png"), r"image 1 file .*nope\.png does not exist"),
    "corrupt image": (_bad(image="corrupt.png"), r"image 1 file .*corrupt\.png is not a readable image"),
    "truncated image": (_bad(image="truncated.png"), r"image 1 file .*truncated\.png is not a readable image"),
    "path traversal": (_bad(image="../outside.png"), r"'.*\.\./outside\.png' resolves to .*outside the image root"),
    "absolute path elsewhere": (_bad(image="ABSOLUTE"), r"outside the image root"),
    "more markers than images": (
        _bad(conversations=[{"from": "human", "value": "<image>\n<image>\nBoth?"}, {"from": "gpt", "value": "Yes."}]),
        r"2 image part\(s\) \(<image> markers\) but the record has 1 image\(s\)",
    ),
    "more images than markers": (
        _bad(image=["a.png", "a.png"]),
        r"1 image part\(s\) \(<image> markers\) but the record has 2 image\(s\)",
    ),
    "unknown role": (_turns(("human", "<image>\nHi"), ("bot", "Hello")), r"turn 2 has unknown role \"from\": 'bot'"),
    "empty conversation": (_bad(conversations=[], image=None), r"the conversation is empty"),
    "empty content": (_turns(("human", "<image>\nHi"), ("gpt", "  \n")), r"turn 2 \(assistant\) has empty content"),
    "no assistant turn": (_turns(("human", "<image>\nHi")), r"no assistant turn, so there is nothing to learn"),
    "starts with the assistant": (
        _turns(("gpt", "<image>\nHi"), ("human", "Hello")),
        r"starts with assistant: it must start with a user turn",
    ),
    "system then assistant": (
        _turns(("system", "Be brief."), ("gpt", "<image>\nHi")),
        r"starts with system then assistant",
    ),
    "two user turns in a row": (
        _turns(("human", "<image>\nHi"), ("human", "Hello?"), ("gpt", "Hey")),
        r"turns 1 and 2 are both user turns",
    ),
    "late system turn": (
        _turns(("human", "<image>\nHi"), ("gpt", "Hey"), ("system", "Be brief.")),
        r"turn 3 is a system turn",
    ),
    "no conversations": ({"id": "bad", "image": "a.png"}, r'it has no "conversations"'),
    "value not a string": (_turns(("human", "<image>\nHi"), ("gpt", None)), r'turn 2 \(gpt\) has a "value" of type'),
}


@pytest.fixture
def bad_files(data_dir, tmp_path):
    (data_dir / "corrupt.png").write_bytes(b"this is not an image")
    png = (data_dir / "a.png").read_bytes()
    (data_dir / "truncated.png").write_bytes(png[: len(png) - 20])
    make_png(tmp_path / "outside.png")

    def entry(kind):
        entry, pattern = BAD_RECORDS[kind]
        entry = json.loads(json.dumps(entry))
        if entry.get("image") == "ABSOLUTE":
            entry["image"] = str(tmp_path / "outside.png")
        return entry, pattern

    return entry


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_bad_record_error_names_record_file_and_problem(kind, bad_files, data_dir):
    entry, pattern = bad_files(kind)
    path = write_entries(data_dir / "d.json", [llava_entry("good"), entry])
    with pytest.raises(BadRecordError) as caught:
        load_llava_json(path)
    error = caught.value
    assert (error.record_id, error.source) == ("bad", str(path))
    assert str(error).startswith(f"record 'bad' in {path}: ")
    assert re.search(pattern, error.problem), error.problem
    assert error.problem in str(error)


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_bad_record_skipped_and_listed(kind, bad_files, data_dir, tmp_path, caplog):
    entry, pattern = bad_files(kind)
    entries = [llava_entry("first"), entry, llava_entry("last")]
    path = write_entries(data_dir / "d.json", entries)
    loaded = load_llava_json(path, on_bad_record="skip")
    assert [record.id for record in loaded.records] == ["first", "last"]
    assert len(loaded.skipped) == 1 and loaded.skipped[0].id == "bad"
    assert "Skipped 1 of 3 records" in caplog.text
    listed = json.loads(loaded.write_skipped(tmp_path / "run").read_text())
    assert listed == [{"id": "bad", "source": str(path), "problem": loaded.skipped[0].problem}]
    assert re.search(pattern, listed[0]["problem"])


def test_entry_not_an_object_is_named_by_position(data_dir):
    path = write_entries(data_dir / "d.json", [llava_entry("good"), ["not", "a", "record"]])
    with pytest.raises(BadRecordError, match=r"record 'd\.json#1' in .*d\.json: entry 1 is a JSON list, not a record"):
        load_llava_json(path)
    assert [skipped.id for skipped in load_llava_json(path, on_bad_record="skip").skipped] == ["d.json#1"]


def test_duplicate_ids(data_dir):
    path = write_entries(data_dir / "d.json", [llava_entry("x"), llava_entry("y"), llava_entry("x", answer="B")])
    with pytest.raises(BadRecordError, match=r"record 'x' in .*: its id is also used by entry 0 \(entry 2 repeats it"):
        load_llava_json(path)
    loaded = load_llava_json(path, on_bad_record="skip")
    assert [record.id for record in loaded.records] == ["x", "y"]
    assert loaded.records[0].messages[1]["content"][0]["text"] == "A square."  # the first one is kept
    assert [skipped.id for skipped in loaded.skipped] == ["x"]


def test_unknown_on_bad_record(data_dir):
    path = write_entries(data_dir / "d.json", [llava_entry("good")])
    with pytest.raises(ValueError, match=r"Unknown on_bad_record='ignore': use one of 'error', 'skip'"):
        load_llava_json(path, on_bad_record="ignore")
    with pytest.raises(ValueError, match=r"Unknown on_bad_record='drop'"):
        load_hf_dataset([], on_bad_record="drop")


def test_file_level_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"LLaVA JSON file .*missing\.json does not exist"):
        load_llava_json(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('[{"id": 1,')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_llava_json(tmp_path / "broken.json", on_bad_record="skip")
    (tmp_path / "lines.json").write_text('{"id": 1}\n{"id": 2}\n')
    with pytest.raises(ValueError, match=r"lines\.json is not valid JSON .*JSONL"):
        load_llava_json(tmp_path / "lines.json")
    (tmp_path / "dict.json").write_text('{"data": []}')
    with pytest.raises(ValueError, match=r"dict\.json holds a JSON dict, not a list of records"):
        load_llava_json(tmp_path / "dict.json")


def test_image_root_other_than_the_json_folder(tmp_path):
    make_png(tmp_path / "images" / "a.png")
    (tmp_path / "json").mkdir()
    path = write_entries(tmp_path / "json" / "d.json", [llava_entry("good")])
    with pytest.raises(BadRecordError, match=r"image 1 file .*json/a\.png does not exist"):
        load_llava_json(path)
    assert load_llava_json(path, image_root=tmp_path / "images").records[0].images == [
        str(tmp_path / "images" / "a.png")
    ]


def test_symlink_inside_the_root_is_followed(tmp_path):
    # Hugging Face's cache links every file of a snapshot to a blob outside it; such data must load.
    blob = make_png(tmp_path / "blobs" / "abc123")
    root = tmp_path / "snapshot"
    root.mkdir()
    (root / "a.png").symlink_to(blob)
    loaded = load_llava_json(write_entries(root / "d.json", [llava_entry("good")]))
    assert loaded.records[0].images == [str(root / "a.png")]


# --- validate_record and Record ------------------------------------------------------------------------------------


def _record(messages, images=(), record_id="r"):
    return Record(record_id, list(images), messages, "memory")


def test_validate_record_directly(tmp_path):
    image = make_png(tmp_path / "a.png")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    validate_record(_record([user, answer], [str(image)]), image_root=tmp_path)
    validate_record(_record([user, answer], [Image.new("RGB", (4, 4))]))
    with pytest.raises(BadRecordError, match=r"record 'r' in memory: turn 2 has unknown role 'robot'"):
        validate_record(_record([user, {**answer, "role": "robot"}], [str(image)]))
    marker = {"role": "user", "content": [{"type": "text", "text": "<image>\nHi"}]}
    with pytest.raises(BadRecordError, match=r"image marker '<image>' inside a text part"):
        validate_record(_record([marker, answer], [str(image)]))
    with pytest.raises(BadRecordError, match=r"image 1 is a int: give the path of an image file or a PIL image"):
        validate_record(_record([user, answer], [3]))
    with pytest.raises(BadRecordError, match=r"outside the image root"):
        validate_record(_record([user, answer], [str(image)]), image_root=tmp_path / "elsewhere")


def test_lazy_pil_image_is_verified(tmp_path):
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    png = make_png(tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(png[:-20])
    with pytest.raises(BadRecordError, match=r"image 1 \(a PIL image\) is not a readable image"):
        validate_record(_record([user, answer], [Image.open(tmp_path / "t.png")]))
    lazy = Image.open(tmp_path / "a.png")
    validate_record(_record([user, answer], [lazy]))
    assert lazy.convert("RGB").getpixel((0, 0)) == Image.open(tmp_path / "a.png").convert("RGB").getpixel((0, 0))
    # still usable: the check ran on a fresh handle


def test_rows_round_trip_through_a_dataset():
    import datasets

    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    record = Record("r", [Image.new("RGB", (4, 4), "blue")], [user, answer], "memory", {"answer": "blue"})
    row = datasets.Dataset.from_list([record.to_row()])[0]
    assert row["messages"][0]["content"][0] == {"type": "image", "text": None}  # Arrow fills absent keys with None
    back = Record.from_row(row)
    assert back.messages == record.messages and back.meta == record.meta and back.id == "r"
    assert back.images[0].getpixel((0, 0)) == (0, 0, 255)


def test_write_skipped(tmp_path):
    stale = tmp_path / "skipped_records.json"
    stale.write_text("[]")
    assert LoadedData([], []).write_skipped(tmp_path) is None
    assert not stale.exists()
    path = LoadedData([], [SkippedRecord("x", "f.json", "broken")]).write_skipped(tmp_path / "new")
    assert json.loads(path.read_text()) == [{"id": "x", "source": "f.json", "problem": "broken"}]


def test_bad_record_error_pickles():
    error = pickle.loads(pickle.dumps(BadRecordError("r", "f.json", "broken")))
    assert (error.record_id, error.source, error.problem, str(error)) == (
        "r",
        "f.json",
        "broken",
        "record 'r' in f.json: broken",
    )


# --- Hugging Face datasets -----------------------------------------------------------------------------------------


def _hf_rows():
    red, blue = Image.new("RGB", (6, 6), "red"), Image.new("RGB", (6, 6), "blue")
    return [
        {
            "qid": 10,
            "images": [red],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            ],
            "answer": "red",
        },
        {
            "qid": 11,
            "images": [red, blue],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
            ],
            "answer": "no",
        },
    ]


def test_hf_dataset_with_pil_images():
    import datasets

    dataset = datasets.Dataset.from_list(_hf_rows())
    assert isinstance(dataset.features["images"].feature, datasets.Image)  # datasets stored the PIL images as PNG
    loaded = load_hf_dataset(dataset, id_column="qid", name="toy")
    assert [record.id for record in loaded.records] == ["10", "11"]
    first = loaded.records[0]
    assert first.source == "toy" and first.meta == {"answer": "red"}
    assert first.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Colour?"}]  # no text=None
    assert first.images[0].getpixel((0, 0)) == (255, 0, 0)
    # A plain list of rows gives the same records.
    plain = load_hf_dataset(_hf_rows(), id_column="qid", name="toy")
    assert [record.messages for record in plain.records] == [record.messages for record in loaded.records]


def test_hf_string_content_and_inline_images():
    image = Image.new("RGB", (6, 6), "green")
    rows = [
        {
            "images": [image],
            "messages": [{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "Green."}],
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "And?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Green."}]},
            ]
        },
    ]
    loaded = load_hf_dataset(rows)
    assert [record.id for record in loaded.records] == ["dataset#0", "dataset#1"]
    assert loaded.records[0].messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What?"}]
    assert loaded.records[1].messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "And?"}]
    assert loaded.records[1].images == [image]


def test_hf_bad_rows(tmp_path):
    import datasets

    rows = _hf_rows()
    features = datasets.Features(
        {
            "qid": datasets.Value("int64"),
            "images": datasets.List(datasets.Image()),
            "messages": datasets.Dataset.from_list(rows).features["messages"],
            "answer": datasets.Value("string"),
        }
    )
    corrupt = {**rows[0], "qid": 12, "images": [{"bytes": b"not an image", "path": None}]}
    mismatch = {**rows[1], "qid": 13, "images": rows[0]["images"]}
    dataset = datasets.Dataset.from_list([rows[0], corrupt, mismatch, rows[1]], features=features)
    with pytest.raises(BadRecordError, match=r"record '12' in toy: its images could not be decoded"):
        load_hf_dataset(dataset, id_column="qid", name="toy")
    loaded = load_hf_dataset(dataset, id_column="qid", name="toy", on_bad_record="skip")
    assert [record.id for record in loaded.records] == ["10", "11"]
    assert [skipped.id for skipped in loaded.skipped] == ["12", "13"]
    assert "2 image part(s) (<image> markers) but the record has 1 image(s)" in loaded.skipped[1].problem
    assert [entry["id"] for entry in json.loads(loaded.write_skipped(tmp_path).read_text())] == ["12", "13"]
    with pytest.raises(ValueError, match=r"toy has no column 'conversation' .*pass the right messages_column"):
        load_hf_dataset(dataset, messages_column="conversation", name="toy")
    with pytest.raises(BadRecordError, match=r"but no 'pictures' column .*pass image_column="):
        load_hf_dataset(dataset, image_column="pictures", name="toy")
    with pytest.raises(TypeError, match=r"pass one split, e\.g\. dataset\['train'\]"):
        load_hf_dataset(datasets.DatasetDict({"train": dataset}))


# --- synthetic task ------------------------------------------------------------------------------------------------


def _digests(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_vqa_scene_is_deterministic(tmp_path):
    first = generate_shapes(tmp_path / "one", n_train=12, n_test=6, seed=3)
    second = generate_shapes(tmp_path / "two", n_train=12, n_test=6, seed=3)
    assert set(first) == {"train", "test", "pretrain"}
    assert second == {split: tmp_path / "two" / f"{split}.json" for split in first}
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert len(_digests(tmp_path / "one")) == 12 + 6 + 3
    other = generate_shapes(tmp_path / "three", n_train=12, n_test=6, seed=4)
    assert other["test"].read_bytes() != first["test"].read_bytes()


def test_vqa_scene_splits(tmp_path):
    paths = generate_shapes(tmp_path, n_train=10, n_test=8, image_size=24)
    train, test, pretrain = (load_llava_json(paths[split]).records for split in ("train", "test", "pretrain"))
    assert [len(train), len(test), len(pretrain)] == [10, 8, 10]
    assert (
        train[3].id == "vqa-train-00003" and test[0].id == "vqa-test-00000" and pretrain[0].id == "vqa-pretrain-00000"
    )
    questions = {record.messages[0]["content"][1]["text"] for record in train + test}
    assert questions == {"What colour is the shape?", "What shape is it?"}
    for record in test:
        assert set(record.meta) == {"answer", "question_type"}
        assert record.messages[1]["content"] == [{"type": "text", "text": record.meta["answer"]}]
        kind = "colour" if "colour" in record.messages[0]["content"][1]["text"] else "shape"
        assert record.meta["question_type"] == kind
    assert sum(record.meta["question_type"] == "colour" for record in test) == 4
    assert all(record.meta == {} for record in train + pretrain)
    assert re.fullmatch(
        r"A (small|large) [a-z]+ (circle|square|triangle)\.", pretrain[0].messages[1]["content"][0]["text"]
    )
    assert pretrain[0].messages[0]["content"][1]["text"] == "Describe the image briefly."
    with Image.open(train[0].images[0]) as image:
        assert image.size == (24, 24) and image.mode == "RGB"
    raw = json.loads(paths["test"].read_text())
    assert raw[0]["image"] == "images/test-00000.png" and raw[0]["conversations"][0]["value"].startswith("<image>\n")


def test_images_are_checked_in_parallel_in_record_order(data_dir, monkeypatch):
    """Checks run in threads, yet the policy sees records in file order: the first bad one is the one an error names,
    and skipping keeps the others in order."""
    from llava_swap.data import llava_json

    monkeypatch.setattr(llava_json, "CHECK_THREADS", 4)
    (data_dir / "broken.png").write_bytes(b"not a png")
    entries = [llava_entry(f"r{i}") for i in range(12)]
    entries[5]["image"] = entries[9]["image"] = "broken.png"
    path = write_entries(data_dir / "mixed.json", entries)
    with pytest.raises(BadRecordError, match="'r5'.*broken.png is not a readable image"):
        load_llava_json(path)
    loaded = load_llava_json(path, on_bad_record="skip")
    assert [record.id for record in loaded.records] == [f"r{i}" for i in range(12) if i not in (5, 9)]
    assert [item.id for item in loaded.skipped] == ["r5", "r9"]


def test_header_checks_only_open_the_file(data_dir):
    """A truncated PNG opens (its header is whole) but does not verify: `header` lets it through, `verify` does not."""
    Image.effect_noise((64, 64), 60).convert("RGB").save(data_dir / "noise.png")
    whole = (data_dir / "noise.png").read_bytes()
    (data_dir / "cut.png").write_bytes(whole[: len(whole) - 200])  # the header is whole, the pixel data is not
    entry = {**llava_entry("cut"), "image": "cut.png"}
    path = write_entries(data_dir / "cut.json", [entry])
    assert [record.id for record in load_llava_json(path, image_check="header").records] == ["cut"]
    with pytest.raises(BadRecordError, match="'cut'"):
        load_llava_json(path, image_check="verify")
    with pytest.raises(ValueError, match="image_check='fast' is not one of"):
        load_llava_json(path, image_check="fast")
