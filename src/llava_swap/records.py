"""Typed records of what crosses a boundary between stages of the pipeline, each defined once.

- `EvaluationRecord`: one evaluated item, a line of `predictions.jsonl`; evaluation writes it, the study's analyses
  and report read it.
- `StudyLayout` / `TaskEvalLayout`: where a study keeps what; the study runner writes there and the report reads
  there, through these paths only.

Adding a field or a file is a one-place change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EvaluationRecord:
    """One evaluated item: its answer, how it scored, and how sure the model was."""

    id: str
    question_type: str | None
    prompt: str
    prediction: str
    references: list
    parsed: Any  # the answer as the task's metric reads it; None where it does not parse
    score: float  # in [0, 1]
    correct: int  # score >= 0.5
    confidence: float  # probability of the first answer token
    mean_logprob: float  # mean log-probability of the answer's tokens
    num_tokens: int | None = None  # tokens generated
    prob_correct: float | None = None  # probability of the correct answer (the study computes it)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line's fields (a field nobody computed is left out)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None or key in REQUIRED}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> EvaluationRecord:
        """A record from a JSON line; `where` names the file and line in the error a damaged line raises."""
        missing = [name for name in REQUIRED if not isinstance(values, dict) or name not in values]
        if missing:
            item = values.get("id") if isinstance(values, dict) else None
            raise ValueError(
                f"{where} (id {item!r}): missing field(s) {missing}; re-run `llava-swap evaluate` to rewrite the file."
            )
        return cls(**{name: values[name] for name in FIELDS if name in values})


FIELDS = tuple(field.name for field in dataclasses.fields(EvaluationRecord))
REQUIRED = tuple(field.name for field in dataclasses.fields(EvaluationRecord) if field.default is dataclasses.MISSING)


@dataclass(frozen=True)
class TaskEvalLayout:
    """One variant's evaluation of one task: the per-item records and what the analyses read."""

    folder: Path

    @classmethod
    def for_variant(cls, variant_dir: Path, task: str) -> TaskEvalLayout:
        return cls(Path(variant_dir) / "eval" / task)

    @property
    def predictions(self) -> Path:  # predictions.jsonl, one evaluation record per item (evaluation.write_results)
        return self.folder / "predictions.jsonl"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def hidden_states(self) -> Path:  # pooled LM hidden states per layer, on the analysis prompts
        return self.folder / "hidden_states.npz"

    @property
    def hidden_states_perturbed(self) -> Path:  # the same, with slightly perturbed images (stability)
        return self.folder / "hidden_states_perturbed.npz"

    @property
    def relevancy(self) -> Path:
        return self.folder / "relevancy.json"


@dataclass(frozen=True)
class StudyLayout:
    """A study folder: the manifest, shared data and feature cache, one folder per variant, the report."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def feature_cache(self) -> Path:  # one for every variant: they share the vision encoder
        return self.root / "feature_cache"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def variant(self, name: str) -> Path:
        """The variant's training output: its model, stages and `train_summary.json`."""
        return self.root / "variants" / name

    def task_eval(self, variant: str, task: str) -> TaskEvalLayout:
        return TaskEvalLayout.for_variant(self.variant(variant), task)


__all__ = ["EvaluationRecord", "StudyLayout", "TaskEvalLayout"]
