"""The three tasks of the study: VQA-Scene, seismic text description, seismic coordinate prediction.

(And `shapes`, the tiny default recipe's sanity task.)

Each task is a generator module (offline synthetic data in LLaVA JSON, see `vqa_scene.py`,
`seismic_description.py`, `seismic_coordinates.py`) plus what scores it, gathered here as data: how to parse an
answer, how one answer scores against its record, and which metric summarises a run. A user's own data in the same
layout (LLaVA JSON whose records carry the task's reference fields) loads through `Task.load`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import metrics
from ..data.llava_json import load_llava_json
from ..data.records import BadRecordError, LoadedData, SkippedRecord
from ..metrics.coordinates import coordinate_error, coordinate_hit, parse_coordinates
from ..metrics.description import fact_score
from ..metrics.vqa import normalize_vqa_answer, vqa_score


def _target(meta: dict) -> tuple[float, float]:
    return float(meta["target"]["x"]), float(meta["target"]["y"])


def _coordinate_score(prediction: str, meta: dict) -> float:
    return float(coordinate_hit(coordinate_error(prediction, _target(meta))))


@dataclass(frozen=True)
class Task:
    """A task: its generator module, the reference fields its records carry, and how answers are scored."""

    name: str
    module_name: str
    required_meta: tuple[str, ...]  # the fields a record of this task must carry
    metric: str  # the evaluate module (llava_swap.metrics.path(metric)) that summarises a run
    max_new_tokens: int
    parse: Callable[[str], Any]  # the answer as the metric reads it (never raises)
    score: Callable[[str, dict], float]  # one answer against its record's meta, in [0, 1]
    # The evaluate module's inputs beside the predictions (references, and any extra keywords), from the records
    metric_inputs: Callable[[list[dict]], dict[str, Any]]
    # Answers must parse into a structure (coordinates): the study reports how often they do, per backbone
    structured_output: bool = False
    # Words of the answer format, not of the answer ('{"x": 0.3, "y": 0.2}': x, y): confidence leaves them out
    format_words: tuple[str, ...] = ()

    @property
    def module(self):
        return importlib.import_module(f"{__name__}.{self.module_name}")

    def generate(self, out_dir: str | os.PathLike, **kwargs) -> dict[str, Path]:
        """Writes the task's synthetic splits (train, val, test, pretrain) under `out_dir`; see the module."""
        return self.module.generate(out_dir, **kwargs)

    def references(self, meta: dict) -> Any:
        return self.module.references(meta)

    def compute(self, predictions: list[str], metas: list[dict]) -> dict:
        """Task metrics of a run, computed by the task's evaluate module (`metric`)."""
        return metrics.load(self.metric).compute(predictions=predictions, **self.metric_inputs(metas))

    def load(self, data: str | os.PathLike, split: str = "test", on_bad_record: str = "error") -> LoadedData:
        """Loads `split` of a task folder (or a LLaVA JSON file) and checks every record belongs to this task."""
        path = Path(data)
        path = path / f"{split}.json" if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: pass the task's data folder (with {split}.json) or file.")
        return self.keep_own(load_llava_json(path, on_bad_record=on_bad_record), on_bad_record)

    def keep_own(self, loaded: LoadedData, on_bad_record: str = "error") -> LoadedData:
        """The records of `loaded` that this task can score; others raise, or are skipped and listed."""
        kept, skipped = [], list(loaded.skipped)
        for record in loaded.records:
            try:
                self.check(record.id, record.source, record.meta)
            except BadRecordError as error:
                if on_bad_record == "error":
                    raise
                skipped.append(SkippedRecord(record.id, record.source, error.problem))
                continue
            kept.append(record)
        return LoadedData(records=kept, skipped=skipped)

    def check(self, record_id: str, source: str, meta: dict) -> None:
        task = meta.get("task")
        if task is not None and task != self.name:
            raise BadRecordError(
                record_id, source, f"belongs to task {task!r}, not {self.name!r}: point --task at the right data"
            )
        missing = [key for key in self.required_meta if key not in meta]
        if missing:
            raise BadRecordError(
                record_id, source, f"lacks the field(s) {missing} that task {self.name!r} scores against"
            )


TASKS = {
    task.name: task
    for task in (
        Task(
            name="shapes",
            module_name="shapes",
            required_meta=("answer",),
            metric="vqa_accuracy",
            max_new_tokens=8,
            parse=normalize_vqa_answer,
            score=lambda prediction, meta: vqa_score(prediction, [meta["answer"]]),
            metric_inputs=lambda metas: {"references": [[m["answer"]] for m in metas]},
        ),
        Task(
            name="vqa_scene",
            module_name="vqa_scene",
            required_meta=("answers", "question_type"),
            metric="vqa_accuracy",
            max_new_tokens=8,
            parse=normalize_vqa_answer,
            score=lambda prediction, meta: vqa_score(prediction, list(meta["answers"])),
            metric_inputs=lambda metas: {"references": [list(m["answers"]) for m in metas]},
        ),
        Task(
            name="seismic_description",
            module_name="seismic_description",
            required_meta=("reference", "facts"),
            metric="description",
            max_new_tokens=64,
            parse=lambda prediction: prediction.strip(),
            score=lambda prediction, meta: fact_score(prediction, meta["facts"]),
            metric_inputs=lambda metas: {
                "references": [m["reference"] for m in metas],
                "facts": [m["facts"] for m in metas],
            },
        ),
        Task(
            name="seismic_coordinates",
            module_name="seismic_coordinates",
            required_meta=("target",),
            metric="coordinates",
            max_new_tokens=24,
            parse=parse_coordinates,
            score=_coordinate_score,
            metric_inputs=lambda metas: {"references": [_target(m) for m in metas]},
            structured_output=True,
            format_words=("x", "y"),
        ),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name raises an error listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}: use one of {sorted(TASKS)}.")
    return TASKS[name]


__all__ = ["TASKS", "Task", "get_task"]
