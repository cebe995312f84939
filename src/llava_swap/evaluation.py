"""Batched greedy answers and exact-match accuracy: the recipe's before/after check on held-out items.

Left padding and the KV cache, one forward per batch and step; deterministic. (The tasks' own metrics, confidences
and per-instance records build on this.)
"""

from __future__ import annotations

import re
import string

import torch
from tqdm.auto import tqdm

from .collator import with_images

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces: 'The Red.' == 'red'."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def prompt_messages(row: dict) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what the model is asked."""
    messages = row["messages"]
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    return messages[:last]


def reference_answer(row: dict) -> str:
    """The text of the last assistant turn."""
    message = [m for m in row["messages"] if m["role"] == "assistant"][-1]
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


@torch.no_grad()
def generate_answers(
    model, processor, rows: list[dict], batch_size: int = 16, max_new_tokens: int = 16, progress: bool = True
) -> list[str]:
    """Greedy answers to each row's last question, in row order."""
    was_training = model.training
    model.eval()
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its own last token
    answers: list[str] = []
    try:
        batches = range(0, len(rows), batch_size)
        for start in tqdm(batches, desc="generating", disable=not progress, leave=False):
            chunk = rows[start : start + batch_size]
            conversations = [with_images(prompt_messages(row), row.get("images") or []) for row in chunk]
            inputs = processor.apply_chat_template(
                conversations,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True, "padding_side": "left"},
            ).to(model.device)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [answer.strip() for answer in answers]


def exact_match_accuracy(model, processor, rows: list[dict], batch_size: int = 16) -> dict[str, float]:
    """`{"accuracy": ..., "n": ...}`: share of rows whose normalised answer equals the normalised reference."""
    answers = generate_answers(model, processor, rows, batch_size=batch_size)
    hits = [normalize_answer(a) == normalize_answer(reference_answer(r)) for a, r in zip(answers, rows, strict=True)]
    return {"accuracy": sum(hits) / max(len(hits), 1), "n": len(hits)}


__all__ = ["exact_match_accuracy", "generate_answers", "normalize_answer", "prompt_messages", "reference_answer"]
