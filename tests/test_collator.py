"""Labels supervise assistant answers (with their end-of-turn token) only, for every family; bad samples raise."""

from __future__ import annotations

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
