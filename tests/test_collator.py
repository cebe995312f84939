"""Labels supervise assistant answers (with their end-of-turn token) only, for every family; bad samples raise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _helpers import chat_image
from llava_swap.collator import IGNORE_INDEX, LlavaSwapCollator, UnsupervisedSampleError, check_rows


def _row(row_id="r0", answer_1="It is red.", answer_2="Two."):
    return {
        "id": row_id,
        "source": "test.json",
        "images": [chat_image()],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer_1}]},
            {"role": "user", "content": [{"type": "text", "text": "How many circles?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer_2}]},
        ],
    }


# Exactly the text that carries loss, per family: each answer plus its end-of-turn token, nothing else.
SUPERVISED = {
    "llama1": " It is red.</s> Two.</s>",
    "llama2": " It is red.</s> Two.</s>",
    "llama3": "It is red.<|eot_id|>Two.<|eot_id|>",
    "gemma": "It is red.<end_of_turn>Two.<end_of_turn>",
}


def _supervised_text(tokenizer, labels) -> str:
    pieces = tokenizer.convert_ids_to_tokens([t for t in labels.tolist() if t != IGNORE_INDEX])
    text = "".join(pieces)
    return text.replace("\u2581", " ") if "\u2581" in text else tokenizer.convert_tokens_to_string(pieces)


def _check_labels(model, processor, expected: str) -> None:
    batch = LlavaSwapCollator(processor)([_row("a"), _row("b", "Blue.", "Three circles.")])
    labels, ids = batch["labels"], batch["input_ids"]
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    assert batch["pixel_values"].shape[0] == 2
    assert _supervised_text(processor.tokenizer, labels[0]) == expected
    supervised = labels != IGNORE_INDEX
    assert torch.equal(labels[supervised], ids[supervised])  # supervised labels are the tokens themselves
    assert not supervised[ids == model.config.image_token_id].any()  # never an image token
    assert not supervised[batch["attention_mask"] == 0].any()  # never padding
    assert ids[0, 0] == processor.tokenizer.bos_token_id and not supervised[:, 0].any()


@pytest.mark.parametrize("family", ["llama1", "llama2", "llama3", "gemma"])
def test_labels_per_tiny_family(built, family):
    model, processor = built(family, "clip")
    _check_labels(model, processor, SUPERVISED[family])


@pytest.mark.parametrize("name", ["llama2", "llama3", "llama3-instruct"])
def test_labels_on_real_tokenizers(real_lm, tiny_vision, name):
    from llava_swap import build_vlm

    model, processor = build_vlm(real_lm(name), tiny_vision("clip"))
    expected = SUPERVISED["llama2"] if name == "llama2" else SUPERVISED["llama3"]
    _check_labels(model, processor, expected)


def test_loss_is_computed_on_answers_only(built):
    model, processor = built("llama3", "clip")
    batch = LlavaSwapCollator(processor)([_row()])
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    targets = batch["labels"][0, 1:]
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[0, :-1][keep], targets[keep])
    assert torch.allclose(loss, manual, atol=1e-6)


def test_sample_with_no_answer_raises(built):
    _, processor = built("llama3", "clip")
    row = _row()
    row["messages"] = row["messages"][:1]  # a question and no answer: nothing to learn
    with pytest.raises(UnsupervisedSampleError, match="record 'r0' in test.json: no token would be supervised"):
        LlavaSwapCollator(processor)([row])


def test_truncation_that_cuts_images_or_answers_is_found_before_training(built):
    _, processor = built("llama3", "clip")
    rows = [_row("fits"), _row("long", answer_1="word " * 200)]
    tokenized, failures = check_rows(rows, processor, max_length=64)
    assert [row["id"] for row, _ in failures] == []  # the first answer still fits in 64 tokens
    assert [row["length"] for row in tokenized] == [min(len(row["tokens"]), 64) for row in tokenized]
    assert all("tokens" not in row and "length" not in row for row in rows)  # the input rows stay as they were
    _, failures = check_rows([_row("short")], processor, max_length=10)
    assert [(row["id"], "cut into its image tokens" in str(error)) for row, error in failures] == [("short", True)]
    long_prompt = _row("prompt")
    long_prompt["messages"][0]["content"][1]["text"] = "Tell me " * 60
    _, failures = check_rows([long_prompt], processor, max_length=60)
    assert "no token would be supervised after truncation to max_length=60" in str(failures[0][1])


@pytest.mark.parametrize("name", ["llama2", "llama3", "smollm2-instruct"])
def test_batched_check_tokens_equal_the_pixel_path_on_real_tokenizers(real_lm, tiny_vision, name):
    """`tokenize_conversations` (one tokenizer call for a batch, masks from vectorised offsets) gives, for each row,
    the tokens and supervised positions of the collator's pixel path, which tokenizes each expanded prompt."""
    from llava_swap import build_vlm

    _, processor = build_vlm(real_lm(name), tiny_vision("clip"))
    rows = [_row(f"r{index}", "It is red. " * index + "Yes.", "Two." * (index % 2 + 1)) for index in range(5)]
    batch = LlavaSwapCollator(processor)(rows)
    checked = processor.tokenize_conversations([row["messages"] for row in rows])
    for index, (ids, mask) in enumerate(checked):
        assert (ids.dtype, mask.dtype) == (np.int32, np.bool_)
        real = batch["attention_mask"][index] == 1
        assert ids.tolist() == batch["input_ids"][index][real].tolist()
        assert mask.tolist() == (batch["labels"][index][real] != IGNORE_INDEX).tolist()
        assert int((ids == processor.image_token_id).sum()) == processor.num_image_tokens
    assert processor.tokenize_conversation(rows[2]["messages"]) == (checked[2][0].tolist(), checked[2][1].tolist())


def test_parallel_check_gives_the_serial_results_in_order(built, monkeypatch):
    """Worker processes tokenize batches of rows: the same tokens, masks, failures and order as one process, a row
    the template refuses named among the others of its batch."""
    from llava_swap import collator

    _, processor = built("gemma", "clip")  # its checkpoint template refuses a system message
    monkeypatch.setattr(collator, "CHECK_BATCH", 3)
    rows = [_row(f"r{index}", "It is red. " * (index % 4 + 1)) for index in range(11)]
    rows[4]["messages"] = rows[4]["messages"][:1]  # no answer: nothing to train on
    rows[7]["messages"].insert(0, {"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
    serial, serial_failures = check_rows(rows, processor, max_length=None, num_proc=1)
    parallel, parallel_failures = check_rows(rows, processor, max_length=None, num_proc=3)
    assert [row["id"] for row in parallel] == [row["id"] for row in serial] == [f"r{i}" for i in range(11) if i != 7]
    for one, other in zip(serial, parallel, strict=True):
        assert np.array_equal(one["tokens"], other["tokens"]) and np.array_equal(one["supervised"], other["supervised"])
    described = [(row["id"], str(error)) for row, error in parallel_failures]
    assert described == [(row["id"], str(error)) for row, error in serial_failures]
    assert [(row_id, "no assistant content" in text, "cannot train on it" in text) for row_id, text in described] == [
        ("r4", True, False),
        ("r7", False, True),
    ]


def test_a_row_checked_by_an_earlier_stage_is_not_tokenized_again(built, monkeypatch):
    _, processor = built("llama3", "clip")
    long_question = _row("b")
    long_question["messages"][0]["content"][1]["text"] = "Tell me " * 30
    checked, _ = check_rows([_row("a"), long_question], processor, max_length=None)
    calls = []
    tokenize = processor.tokenize_conversations
    monkeypatch.setattr(processor, "tokenize_conversations", lambda batch: calls.append(len(batch)) or tokenize(batch))
    again, failures = check_rows([*checked, _row("c")], processor, max_length=40)
    assert calls == [1]  # only the new row
    assert [row["length"] for row in again] == [min(40, len(row["tokens"])) for row in again]
    assert [row["id"] for row, _ in failures] == ["b"]  # its first answer starts past 40 tokens


def test_cached_batches_are_the_same_from_arrays_and_from_a_dataset(built):
    """check_rows keeps tokens as arrays; a datasets.Dataset gives them back as lists: the same batch either way."""
    from datasets import Dataset

    _, processor = built("llama3", "clip")

    class Features:  # the feature cache's interface: one row of features per image
        def features(self, images):
            return torch.zeros(len(images), processor.num_image_tokens, 8)

    checked, _ = check_rows([_row("a"), _row("b", "Blue and green.")], processor, max_length=None)
    stored = [{key: value for key, value in row.items() if key != "images"} for row in checked]
    from_lists = [{**row, "images": checked[0]["images"]} for row in Dataset.from_list(stored)]
    for padding_free in (False, True):
        collate = LlavaSwapCollator(processor, feature_cache=Features(), padding_free=padding_free)
        arrays, lists = collate(checked), collate(from_lists)
        assert isinstance(from_lists[0]["tokens"], list)
        assert arrays.keys() == lists.keys()
        assert all(torch.equal(arrays[key], lists[key]) for key in arrays if isinstance(arrays[key], torch.Tensor))


def test_tokenizing_processes_share_the_node_and_skip_small_data(monkeypatch):
    from llava_swap import collator

    monkeypatch.setattr(collator.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert collator.tokenizing_processes(collator.PARALLEL_FROM - 1) == 1
    assert collator.tokenizing_processes(collator.PARALLEL_FROM) == collator.MAX_PROCESSES == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert collator.tokenizing_processes(665_000) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert collator.tokenizing_processes(665_000) == 1
