"""The study's tasks as lmms-eval tasks: a YAML and its `utils.py` beside a task's data, for any VLM lmms-eval runs.

`llava-swap data generate --task T --out DIR` writes `DIR/lmms_eval/llava_swap_T.yaml` over `DIR/test.json`; then

    lmms-eval eval --include_path DIR/lmms_eval --tasks llava_swap_T --model llava_swap --model_args pretrained=...

Each item is asked as `llava-swap evaluate` asks it (its images, then the question's text), generated greedily up
to the task's `max_new_tokens`, and scored by the task's own scorer (the official VQA score, the fact score, the
coordinate hit), so the `score` lmms-eval reports is the mean of the per-item scores in `llava-swap evaluate`'s
predictions.jsonl. Each sample's `item` carries the record's id beside its score.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.llava_json import FROM_TO_ROLE
from ..data.records import text_to_parts
from ..tasks import get_task

FOLDER = "lmms_eval"
_YAML = """\
# lmms-eval task over {task}'s test split (written by llava-swap; see llava_swap.integrations.lmms_eval_tasks).
task: llava_swap_{task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  do_sample: false
  until: []
metric_list:
  - metric: score
    aggregation: mean
    higher_is_better: true
  - metric: item
    aggregation: !function utils.mean_item_score
    higher_is_better: true
"""
_UTILS = '''\
"""lmms-eval's hooks for the llava_swap_* tasks in this folder (written by llava-swap; the logic is in the package)."""

from pathlib import Path

from llava_swap.integrations.lmms_eval_tasks import doc_to_target, doc_to_text, images_of, mean_item_score, score_item

TASK = "{task}"
DATA = Path(__file__).resolve().parent.parent  # the task's data folder: image paths are relative to it


def doc_to_visual(doc):
    return images_of(doc, DATA)


def process_results(doc, results):
    return score_item(TASK, doc, results)
'''


def write_lmms_eval_task(data_dir: str | os.PathLike, task: str) -> Path:
    """Writes the lmms-eval task of `task` over `data_dir/test.json`; returns the YAML's path."""
    data_dir = Path(data_dir)
    spec = get_task(task)
    if not (data_dir / "test.json").exists():
        raise FileNotFoundError(f"{data_dir / 'test.json'} does not exist: write the task's data first.")
    folder = data_dir / FOLDER
    folder.mkdir(exist_ok=True)
    (folder / "utils.py").write_text(_UTILS.replace("{task}", task))
    # lmms-eval resolves a relative json path against the YAML's folder.
    yaml_text = _YAML.format(task=task, data="../test.json", max_new_tokens=spec.max_new_tokens)
    path = folder / f"llava_swap_{task}.yaml"
    path.write_text(yaml_text)
    return path


def _question(doc: dict) -> list[dict]:
    """The content parts of the single question a test record asks."""
    turns = [turn for turn in doc["conversations"] if FROM_TO_ROLE.get(turn["from"]) == "user"]
    if len(turns) != 1 or any(FROM_TO_ROLE.get(turn["from"]) == "system" for turn in doc["conversations"]):
        raise ValueError(
            f"record {doc.get('id')!r}: lmms-eval's tasks ask one question with no system message; this record has "
            f"{len(turns)} user turns."
        )
    parts = text_to_parts(turns[0]["value"])
    first_text = next((i for i, part in enumerate(parts) if part["type"] == "text"), len(parts))
    if any(part["type"] == "image" for part in parts[first_text:]):
        raise ValueError(f"record {doc.get('id')!r}: an image after the text; lmms-eval puts every image first.")
    return parts


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return "".join(part["text"] for part in _question(doc) if part["type"] == "text")


def images_of(doc: dict, data_dir: Path) -> list:
    from PIL import Image

    names = doc.get("image") or doc.get("images") or []
    names = [names] if isinstance(names, str) else names
    return [Image.open(data_dir / name).convert("RGB") for name in names]


def doc_to_target(doc: dict) -> str:
    answers = [turn["value"] for turn in doc["conversations"] if FROM_TO_ROLE.get(turn["from"]) == "assistant"]
    return answers[-1]


def score_item(task: str, doc: dict, results: list[str]) -> dict:
    """lmms-eval's per-sample metrics: the task's score of the answer, and the record's id beside it."""
    (prediction,) = results
    score = get_task(task).score(prediction.strip(), doc)
    return {"score": score, "item": {"id": doc["id"], "prediction": prediction, "score": score}}


def mean_item_score(items: list[dict]) -> float:
    return sum(item["score"] for item in items) / len(items)


__all__ = [
    "FOLDER",
    "doc_to_target",
    "doc_to_text",
    "images_of",
    "mean_item_score",
    "score_item",
    "write_lmms_eval_task",
]
