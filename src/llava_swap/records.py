"""Typed records of what crosses a boundary between stages of the pipeline, each defined once.

`StudyLayout` / `TaskEvalLayout`: where a study keeps what; the study runner writes there and the report reads
there, through these paths only. (Adding a file is a one-place change.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


__all__ = ["StudyLayout", "TaskEvalLayout"]
