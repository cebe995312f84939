"""Batched greedy generation with confidences, and per-instance evaluation records.

One forward per batch and step (left padding, KV cache), deterministic. Each answer comes with confidences read from
the raw logits: the answer's probability (the geometric mean over its content tokens: tokens with a letter or digit
that are not words of the task's format, so `{` and `"x"` of a coordinate answer, which any model writes with
certainty, say nothing), the probability of its first token, and the mean log-probability of all its tokens (up to
and including the stop token). `evaluate_rows` turns answers into per-instance records (id, question type, prompt,
prediction, references, parsed answer, score, confidence) and task metrics; `write_results` stores them as
`predictions.jsonl` and `metrics.json`, the input of every later analysis.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data.images import with_images
from .records import EvaluationRecord, TaskEvalLayout

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces: 'The Red.' == 'red'."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def prompt_messages(row: dict) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what the model is asked."""
    messages = row["messages"]
    assistant_turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    return messages[: assistant_turns[-1]] if assistant_turns else messages


def message_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def reference_answer(row: dict) -> str:
    """The text of the last assistant turn."""
    return message_text([m for m in row["messages"] if m["role"] == "assistant"][-1])


@dataclass
class Generation:
    """One generated answer and how sure the model was of it."""

    text: str
    answer_prob: float  # geometric mean probability of the content tokens (see the module)
    first_token_prob: float
    mean_logprob: float
    num_tokens: int


def content_positions(tokenizer, tokens: list[int], format_words: tuple[str, ...] = ()) -> list[int]:
    """Positions of the tokens that carry the answer: a letter or digit, and not a word of the task's format."""
    positions = []
    for position, token in enumerate(tokens):
        text = tokenizer.decode([token], skip_special_tokens=True)
        word = text.strip().strip("\"'").lower()
        if any(char.isalnum() for char in text) and word not in format_words:
            positions.append(position)
    return positions


@torch.no_grad()
def generate_answers(
    model,
    processor,
    rows: list[dict],
    batch_size: int = 16,
    max_new_tokens: int = 16,
    progress: bool = True,
    format_words: tuple[str, ...] = (),
) -> list[Generation]:
    """Greedy answers to each row's last question, in row order, with their confidences."""
    was_training = model.training
    model.eval()
    tokenizer = processor.tokenizer
    stop_ids = model.generation_config.eos_token_id
    stop_ids = set([stop_ids] if isinstance(stop_ids, int) else stop_ids or [])
    results: list[Generation] = []
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
                processor_kwargs={"padding": True, "padding_side": "left"},  # every row continues from its end
            ).to(model.device)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                return_dict_in_generate=True,
                output_logits=True,
            )
            new_tokens = output.sequences[:, inputs["input_ids"].shape[1] :]  # (batch, steps)
            logits = torch.stack(output.logits, dim=1).float()  # (batch, steps, vocab): raw, before any processor
            logprobs = logits.log_softmax(-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
            for row_index in range(len(chunk)):
                tokens = new_tokens[row_index].tolist()
                length = next((i + 1 for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
                row_logprobs = logprobs[row_index, :length]
                content = content_positions(tokenizer, tokens[:length], format_words) or list(range(length))
                results.append(
                    Generation(
                        text=tokenizer.decode(tokens[:length], skip_special_tokens=True).strip(),
                        answer_prob=float(row_logprobs[content].mean().exp()),
                        first_token_prob=float(row_logprobs[0].exp()),
                        mean_logprob=float(row_logprobs.mean()),
                        num_tokens=length,
                    )
                )
    finally:
        model.train(was_training)
    return results


@torch.no_grad()
def answer_probabilities(model, processor, rows: list[dict], batch_size: int = 16) -> list[float]:
    """Per row, the probability the model gives the reference answer (teacher-forced): the geometric mean of its
    tokens' probabilities, end-of-turn token included, so answers of different lengths compare (LLaVA-Gemma's
    "probability of the correct answer")."""
    from .collator import IGNORE_INDEX, LlavaSwapCollator

    collate = LlavaSwapCollator(processor)
    was_training = model.training
    model.eval()
    probabilities: list[float] = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size])
            labels = batch.pop("labels").to(model.device)
            logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float()
            targets = labels[:, 1:]  # position t predicts token t + 1
            logprobs = logits[:, :-1].log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            supervised = targets != IGNORE_INDEX
            mean = (logprobs * supervised).sum(1) / supervised.sum(1).clamp(min=1)
            probabilities += mean.exp().tolist()
    finally:
        model.train(was_training)
    return probabilities


@dataclass
class EvaluationResult:
    """Per-instance records and the metrics computed from them."""

    records: list[EvaluationRecord]
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def evaluate_rows(
    model,
    processor,
    rows: list[dict],
    task=None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Generates answers for `rows` and scores them with `task` (exact match when no task is given)."""
    from .metrics import calibration

    start = time.perf_counter()
    max_new_tokens = max_new_tokens or (task.max_new_tokens if task is not None else 16)
    format_words = task.format_words if task is not None else ()
    generations = generate_answers(model, processor, rows, batch_size, max_new_tokens, progress, format_words)
    records = []
    for row, generation in zip(rows, generations, strict=True):
        meta = row.get("meta") or {}
        if task is None:
            references, parsed = [reference_answer(row)], normalize_answer(generation.text)
            score = float(parsed == normalize_answer(references[0]))
        else:
            references, parsed = task.references(meta), task.parse(generation.text)
            score = task.score(generation.text, meta)
        records.append(
            EvaluationRecord(
                id=row["id"],
                question_type=meta.get("question_type"),
                prompt="\n".join(message_text(m) for m in prompt_messages(row) if m["role"] != "system"),
                prediction=generation.text,
                references=references,
                parsed=parsed,
                score=score,
                correct=int(score >= 0.5),
                confidence=generation.answer_prob,
                mean_logprob=generation.mean_logprob,
                first_token_prob=generation.first_token_prob,
                num_tokens=generation.num_tokens,
            )
        )
    if task is None:
        metrics: dict[str, Any] = {"accuracy": sum(r.score for r in records) / max(len(records), 1)}
    else:
        metrics = task.compute([g.text for g in generations], [row.get("meta") or {} for row in rows])
    metrics["n"] = len(records)
    metrics["mean_score"] = sum(r.score for r in records) / max(len(records), 1)
    by_type: dict[str, list[float]] = defaultdict(list)
    for record in records:
        by_type[str(record.question_type)].append(record.score)
    metrics["by_question_type"] = {name: sum(s) / len(s) for name, s in sorted(by_type.items())}
    if records:
        calibrated = calibration([r.confidence for r in records], [r.correct for r in records])
        metrics["calibration"] = {key: calibrated[key] for key in ("ece", "adaptive_ece", "brier")}
    elapsed = time.perf_counter() - start
    info = {"seconds": elapsed, "items_per_second": len(records) / elapsed if elapsed else 0.0}
    return EvaluationResult(records=records, metrics=metrics, info=info)


def write_results(result: EvaluationResult, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes `predictions.jsonl` (one record per line) and `metrics.json` into `out_dir`."""
    layout = TaskEvalLayout(Path(out_dir))
    layout.folder.mkdir(parents=True, exist_ok=True)
    with open(layout.predictions, "w", encoding="utf-8") as handle:
        for record in result.records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    payload = {**result.info, **(extra or {}), "metrics": result.metrics}
    layout.metrics.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return layout.folder


def evaluate_model(
    model,
    task: str,
    data: str | Path,
    split: str = "test",
    processor=None,
    batch_size: int = 16,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluates a model (a loaded one, or a saved model's folder) on `split` of a task's data folder.

    Writes `predictions.jsonl` and `metrics.json` into `out_dir` when given.
    """
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .tasks import get_task

    task_spec = get_task(task)
    if isinstance(model, (str, Path)):
        from transformers import AutoProcessor

        model_name, model = str(model), LlavaSwapForCausalLM.from_pretrained(model)  # says what a wrong folder is
        processor = processor or AutoProcessor.from_pretrained(model_name)
        if torch.cuda.is_available():  # a saved model loads on CPU; generate on the GPU when there is one
            model.to("cuda")
    else:
        model_name = getattr(model, "name_or_path", "") or type(model).__name__
        if processor is None:
            raise ValueError("Pass processor= with an in-memory model (or pass the model's folder instead).")
    rows = [record.to_row() for record in task_spec.load(data, split).records][:limit]
    result = evaluate_rows(model, processor, rows, task_spec, batch_size=batch_size, progress=progress)
    result.info.update(model=model_name, task=task, data=str(data), split=split, batch_size=batch_size)
    if out_dir is not None:
        write_results(result, out_dir)
    return result


def read_predictions(path: str | Path) -> list[EvaluationRecord]:
    """Reads a `predictions.jsonl`, checking every line is a record with all the fields analyses rely on."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `llava-swap evaluate` to write it.")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}); the file is damaged.") from None
        records.append(EvaluationRecord.from_dict(values, f"{path}, line {number}"))
    return records


def exact_match_accuracy(model, processor, rows: list[dict], batch_size: int = 16) -> dict[str, float]:
    """`{"accuracy": ..., "n": ...}`: share of rows whose normalised answer equals the normalised reference."""
    result = evaluate_rows(model, processor, rows, batch_size=batch_size)
    return {"accuracy": result.metrics["accuracy"], "n": result.metrics["n"]}


__all__ = [
    "EvaluationResult",
    "answer_probabilities",
    "Generation",
    "evaluate_model",
    "evaluate_rows",
    "exact_match_accuracy",
    "generate_answers",
    "normalize_answer",
    "prompt_messages",
    "read_predictions",
    "reference_answer",
    "write_results",
]
