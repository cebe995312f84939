"""Batches of training rows -> model inputs whose labels supervise the assistant answers only.

Labels come from the chat template's {% generation %} spans, placed on tokens by their character offsets
(`LlavaSwapProcessor.tokenize_conversation`), never by string-length arithmetic: image tokens, prompts, system text
and padding are -100; each answer and its end-of-turn token are supervised. A sample that would train on nothing, or
whose truncation would cut into its image tokens, raises an error naming it, here and in `check_rows` before training
starts. (LLaVA's silent "tokenization mismatch" zeroed such samples' loss; we never do.)
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from jinja2.exceptions import TemplateError

from .data.images import with_images
from .processing_llava_swap import LlavaSwapProcessor

IGNORE_INDEX = -100

# Rows rendered and tokenized per call (the tokenizer's batch, and a worker's unit of work); the row count from which
# a progress bar shows; and the one from which worker processes pay for their start (~2 s each: torch's import).
CHECK_BATCH = 512
CHECK_PROGRESS_FROM = 10_000
PARALLEL_FROM = 20_000
MAX_PROCESSES = 16


class UnsupervisedSampleError(ValueError):
    """A sample that would contribute no supervised token, or lose image tokens, after tokenization."""


def check_sample(
    row_id: str, ids: list[int], mask: list[int], image_token_id: int, max_length: int | None, source: str = ""
) -> None:
    """Raises `UnsupervisedSampleError` if truncation to `max_length` would cut image tokens or leave no answer."""
    where = f"record {row_id!r}" + (f" in {source}" if source else "")
    if max_length is not None and len(ids) > max_length and image_token_id in ids[max_length:]:
        raise UnsupervisedSampleError(
            f"{where}: truncation to max_length={max_length} would cut into its image tokens (the sample has "
            f"{len(ids)} tokens). Raise max_length, shorten the text before the image, or skip the record."
        )
    kept = mask[:max_length] if max_length is not None else mask
    if not np.any(kept):
        reason = (
            f"after truncation to max_length={max_length} (the sample has {len(ids)} tokens)"
            if np.any(mask)
            else "its conversation has no assistant content"
        )
        raise UnsupervisedSampleError(
            f"{where}: no token would be supervised {reason}; it would train on nothing. Raise max_length or fix the "
            "record."
        )


def check_rows(
    rows: Iterable[dict], processor: LlavaSwapProcessor, max_length: int | None, num_proc: int | None = None
) -> tuple[list[dict], list[tuple[dict, UnsupervisedSampleError]]]:
    """Tokenizes every row (without decoding images): `(tokenized rows, failures)`, the input rows left as they were.

    A tokenized row is the row plus what was computed: its token count under "length" (image tokens included, for
    length-grouped batching), and its tokens (int32) and assistant mask (bool) under "tokens" / "supervised", as
    arrays (a Python list of ints costs ~6x the memory: gigabytes at LLaVA-665k), so the cached-feature collator
    never renders or tokenizes it again (not in any epoch or stage; a row tokenized by an earlier stage is only
    checked again against this `max_length`). Failures are the rows that would train on nothing or lose image
    tokens, or that the chat template refuses (a system message to Gemma-it's own template, roles out of turn to
    LLaMA-2-chat's), each with its error naming the record.

    Rows are tokenized in batches, by `num_proc` worker processes (None: `tokenizing_processes`), with a progress
    bar on large data.
    """
    from tqdm.auto import tqdm

    rows = list(rows)
    todo = [row for row in rows if row.get("tokens") is None]
    processes = tokenizing_processes(len(todo)) if num_proc is None else num_proc
    batches = [
        [(row["id"], row.get("source", ""), row["messages"]) for row in todo[begin : begin + CHECK_BATCH]]
        for begin in range(0, len(todo), CHECK_BATCH)
    ]
    results: list[tuple | UnsupervisedSampleError] = []
    with tqdm(total=len(todo), desc="tokenizing", unit=" records", disable=len(todo) < CHECK_PROGRESS_FROM) as bar:
        for done in _tokenize_batches(batches, processor, processes):
            results.extend(done)
            bar.update(len(done))
    computed = {id(row): result for row, result in zip(todo, results, strict=True)}
    tokenized, failures = [], []
    for row in rows:
        result = computed.get(id(row), (row.get("tokens"), row.get("supervised")))
        if isinstance(result, UnsupervisedSampleError):
            failures.append((row, result))
            continue
        ids, mask = result
        length = min(len(ids), max_length) if max_length is not None else len(ids)
        checked = {**row, "length": length, "tokens": ids, "supervised": mask}
        tokenized.append(checked)
        try:
            check_sample(row["id"], ids, mask, processor.image_token_id, max_length, row.get("source", ""))
        except UnsupervisedSampleError as error:
            failures.append((checked, error))
    return tokenized, failures


def tokenizing_processes(rows: int) -> int:
    """Worker processes for tokenizing `rows` rows: one per CPU core this process may use, shared among the ranks of
    its node (LOCAL_WORLD_SIZE, which accelerate and torchrun set), at most MAX_PROCESSES; 1 (no workers) below
    PARALLEL_FROM rows."""
    if rows < PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_PROCESSES, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _tokenize_batches(batches: list[list[tuple]], processor: LlavaSwapProcessor, processes: int) -> Iterator[list]:
    """Each batch's results in order, computed here or by `processes` worker processes."""
    if processes <= 1 or len(batches) <= 1:
        yield from (_tokenized(batch, processor) for batch in batches)
        return
    # Forked where the platform forks, as `datasets.map(num_proc=...)` does: a spawned worker would import the
    # user's __main__ again (a training script without an `if __name__ == "__main__"` guard would rerun). The
    # workers only render templates and tokenize, and their tokenizer stays serial (TOKENIZERS_PARALLELISM), so
    # no thread of the parent's is needed in them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    serial = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # inherited at the fork; the parent's setting comes back below
    try:
        with ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context(method),
            initializer=_worker_start,
            initargs=(processor,),
        ) as pool:
            yield from pool.map(_worker_tokenized, batches)
    finally:
        if serial is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = serial


_WORKER_PROCESSOR: LlavaSwapProcessor | None = None


def _worker_start(processor: LlavaSwapProcessor) -> None:
    global _WORKER_PROCESSOR
    _WORKER_PROCESSOR = processor


def _worker_tokenized(batch: list[tuple]) -> list:
    return _tokenized(batch, _WORKER_PROCESSOR)


def _tokenized(batch: list[tuple], processor: LlavaSwapProcessor) -> list:
    """(ids, mask) per `(id, source, messages)`, or the error of one the chat template refuses. A refusal fails the
    batch call, so that batch is then tokenized one by one to say which rows it was."""
    try:
        return processor.tokenize_conversations([messages for _, _, messages in batch])
    except (ValueError, TemplateError) as error:  # a template that refuses the record, or rewrites its answers
        if len(batch) > 1:
            return [item for row in batch for item in _tokenized([row], processor)]
        row_id, source, _ = batch[0]
        where = f"record {row_id!r}" + (f" in {source}" if source else "")
        reason = " ".join(str(error).split()).removeprefix("Conversation 0: ")
        return [
            UnsupervisedSampleError(
                f"{where}: the chat template cannot train on it: {reason} (pass template= one of llava-swap's "
                "templates to train in another format, or fix or skip the record)"
            )
        ]


@dataclass
class LlavaSwapCollator:
    """Collates rows `{"id", "images", "messages"}` into `input_ids`, `attention_mask`, `pixel_values`, `labels`."""

    processor: LlavaSwapProcessor
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    feature_cache: object | None = None  # a VisionFeatureCache: image features instead of pixels
    # With the cache: the batch's samples as one sequence with per-sample position ids (no padding at all); the
    # attention masks derived from the position ids keep samples apart, so the loss equals the padded batch's.
    padding_free: bool = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.feature_cache is not None:
            return self._from_cache(rows)
        conversations = [with_images(row["messages"], row.get("images") or []) for row in rows]
        processor_kwargs = {
            "padding": True,
            "padding_side": "right",
            "truncation": self.max_length is not None,
            "max_length": self.max_length,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        }
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs=processor_kwargs,
        )
        labels = batch["input_ids"].clone()
        labels[batch.pop("assistant_masks") == 0] = IGNORE_INDEX  # prompts, images and padding carry no loss
        image_token_id = self.processor.image_token_id
        for index, row in enumerate(rows):
            if not (labels[index] != IGNORE_INDEX).any():
                ids, mask = self.processor.tokenize_conversation(row["messages"])
                check_sample(row["id"], ids, mask, image_token_id, self.max_length, row.get("source", ""))
                raise UnsupervisedSampleError(f"record {row['id']!r}: no supervised token in its batch row.")
            expected_images = len(row.get("images") or []) * self.processor.num_image_tokens
            found = int((batch["input_ids"][index] == image_token_id).sum())
            if found != expected_images:
                ids, mask = self.processor.tokenize_conversation(row["messages"])
                check_sample(row["id"], ids, mask, image_token_id, self.max_length, row.get("source", ""))
                raise UnsupervisedSampleError(
                    f"record {row['id']!r}: {len(row.get('images') or [])} image(s) but {found} image tokens in its "
                    f"text ({self.processor.num_image_tokens} per image): one image part per image."
                )
        batch["labels"] = labels
        return dict(batch)

    def _from_cache(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """The same batch without touching pixels: tokens from the template, features from the cache."""
        image_token_id = self.processor.image_token_id
        sequences, masks = [], []
        for row in rows:
            if row.get("tokens") is not None:  # tokenized once by check_rows, before training
                ids, mask = row["tokens"], row["supervised"]
            else:
                ids, mask = self.processor.tokenize_conversation(row["messages"])
            check_sample(row["id"], ids, mask, image_token_id, self.max_length, row.get("source", ""))
            if self.max_length is not None:
                ids, mask = ids[: self.max_length], mask[: self.max_length]
            # Arrays from check_rows, or lists as a datasets.Dataset gives them back
            sequences.append(torch.as_tensor(np.asarray(ids, dtype=np.int64)))
            masks.append(torch.as_tensor(np.asarray(mask, dtype=bool)))
        images = [image for row in rows for image in (row.get("images") or [])]
        features = {"image_features": self.feature_cache.features(images)} if images else {}
        if self.padding_free:
            tokens, selected = torch.cat(sequences), torch.cat(masks)
            return {
                "input_ids": tokens[None],
                "position_ids": torch.cat([torch.arange(len(ids)) for ids in sequences])[None],
                "labels": torch.where(selected, tokens, IGNORE_INDEX)[None],
                "use_cache": False,  # with a cache object transformers would not derive the per-sample masks
                **features,
            }
        length = max(len(ids) for ids in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = self.processor.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for index, (tokens, mask) in enumerate(zip(sequences, masks, strict=True)):
            input_ids[index, : len(tokens)] = tokens
            attention_mask[index, : len(tokens)] = 1
            labels[index, : len(tokens)] = torch.where(mask, tokens, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, **features}


__all__ = ["IGNORE_INDEX", "LlavaSwapCollator", "UnsupervisedSampleError", "check_rows", "check_sample"]
