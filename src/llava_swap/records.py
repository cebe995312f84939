"""Typed records of what crosses a boundary between stages of the pipeline, each defined once.

- `EvaluationRecord`: one evaluated item, a line of `predictions.jsonl`; evaluation writes it, the study's analyses
  and report read it.
- `StageSummary` / `TrainingSummary`: a stage's and a run's training record (`<stage>/final/stage_summary.json`,
  `train_summary.json`); training writes them, resume, the command line, the study and the model card read them.
- `StudyLayout` / `TaskEvalLayout`: where a study keeps what; the study runner writes there and the report reads
  there, through these paths only.

Adding a field or a file is a one-place change.
"""

from __future__ import annotations

import dataclasses
import json
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
    correct: int  # score >= 0.5 (the threshold calibration is measured against)
    confidence: float  # the answer's probability: geometric mean over its content tokens (evaluation.py)
    mean_logprob: float  # mean log-probability of the answer's tokens
    num_tokens: int | None = None  # tokens generated
    prob_correct: float | None = None  # probability of the correct answer (the study computes it)
    first_token_prob: float | None = None  # probability of the first answer token (the former confidence)

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


@dataclass
class StageSummary:
    """What one training stage did."""

    stage: str  # pretrain or finetune
    language_model: str  # full, lora, qlora or frozen
    train_runtime: float  # seconds inside the Trainer's loop, in this process's lifetime
    train_samples_seen: int
    train_samples_per_second: float
    final_loss: float | None
    train_loss: float | None
    global_step: int
    world_size: int
    trainable_parameters: dict[str, int]  # per part: vision_tower, projector, language_model
    resumed_from: str | None = None  # the checkpoint this run went on from
    vision_feature_cache: dict | None = None  # folder and images encoded (by all processes), when it was cached
    eval_history: list[dict] = dataclasses.field(default_factory=list)  # periodic task evaluation, per step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StageSummary:
        return cls(**_known(cls, values))


@dataclass
class TrainingSummary:
    """What a training run did: its recipe, each stage, and the evaluation before and after (all empty: a model
    that was built but not trained)."""

    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)  # Recipe.to_dict() of the run
    stages: dict[str, StageSummary] = dataclasses.field(default_factory=dict)
    skipped_records: dict[str, int] = dataclasses.field(default_factory=dict)  # per split (on_bad_record: skip)
    eval_before: dict[str, Any] = dataclasses.field(default_factory=dict)  # task metrics on the held-out items
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_runtime: float = 0.0
    total_runtime: float = 0.0
    samples_per_second: float = 0.0
    final_loss: float | None = None
    trainable_parameters: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    output_dir: str = ""
    # Fields a resume was allowed to change ({"field", "was", "now"}): stages finished before it used "was".
    recipe_changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingSummary:
        values = _known(cls, values)
        values["stages"] = {name: StageSummary.from_dict(stage) for name, stage in values.get("stages", {}).items()}
        return cls(**values)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def read(cls, path: Path) -> TrainingSummary:
        """The summary in `path`; the empty summary where there is none (a model built but never trained here)."""
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text())) if path.exists() else cls()


def _known(cls, values: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a file written by a newer release may carry more."""
    names = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in values.items() if key in names}


@dataclass(frozen=True)
class TaskEvalLayout:
    """One training run's evaluation of one task: the per-item records and what the analyses read."""

    folder: Path

    @staticmethod
    def root(variant_dir: Path) -> Path:
        """Where a run keeps the evaluations of all its tasks."""
        return Path(variant_dir) / "eval"

    @classmethod
    def for_variant(cls, variant_dir: Path, task: str) -> TaskEvalLayout:
        return cls(cls.root(variant_dir) / task)

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

    @property
    def image_dependence(self) -> Path:  # answer probabilities with a blank / another item's image, and controls
        return self.folder / "image_dependence.json"


RUN_RECORD = "variant.json"


@dataclass(frozen=True)
class StudyLayout:
    """A study folder: the manifest, shared data and feature cache, one folder per variant and training seed
    (`variants/<name>/seed-<seed>/`), the report."""

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
    def feature_cache(self) -> Path:  # one for every variant and seed: features are keyed by the encoder's weights
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

    def variant_root(self, name: str) -> Path:
        """Every training run of one variant, a folder per seed."""
        return self.root / "variants" / name

    def run_record(self, name: str, seed: int) -> Path:
        """Written last by a run that finished (its fingerprints and training summary): what "finished" means."""
        return self.variant(name, seed) / RUN_RECORD

    def variant(self, name: str, seed: int) -> Path:
        """One training run, the variant trained with `seed`: its model, stages, `train_summary.json` and `eval/`."""
        return self.variant_root(name) / f"seed-{seed}"

    def task_eval(self, variant: str, task: str, seed: int) -> TaskEvalLayout:
        return TaskEvalLayout.for_variant(self.variant(variant, seed), task)


__all__ = ["EvaluationRecord", "StageSummary", "StudyLayout", "TaskEvalLayout", "TrainingSummary"]
