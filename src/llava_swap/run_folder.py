"""A run's output folder: never train over earlier work by accident, never resume it with another recipe.

A run records its resolved recipe in `recipe.json` when it starts. Starting again in a folder that already holds
trained work (a summary, final weights, a stage's checkpoints) is refused unless the run resumes it or is told to
overwrite it; resuming compares the recipe with the recorded one and refuses a difference, naming each field, unless
the change is allowed explicitly, and then the summary and model card carry the list of changes. Files a run
re-creates (its data, tiny backbones, evaluation before training, the vision-feature cache) are not work.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPE_RECORD = "recipe.json"
# Kept by --overwrite_output_dir: encoder features are keyed by encoder and image, valid for any run.
KEPT_ON_OVERWRITE = ("feature_cache",)
# Recipe fields that may differ on resume without changing what is trained.
NOT_COMPARED = ("output_dir",)


def trained_work(out: Path) -> list[Path]:
    """What in `out` a training run produced: its summary, final weights, stage results and checkpoints."""
    if not out.is_dir():
        return []
    found = [path for path in (out / "train_summary.json", out / "model.safetensors") if path.exists()]
    found += sorted(out.glob("*/final")) + sorted(out.glob("*/checkpoint-*"))
    return found


def check_output_dir(
    out: Path, recipe: dict[str, Any], resume: bool, overwrite: bool, allow_recipe_change: bool
) -> list[dict[str, Any]]:
    """Refuses to lose or mislabel work in `out` (nothing is written here); returns the recipe changes a resume
    was allowed to make, as `{"field", "was", "now"}`."""
    if resume and overwrite:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir together: choose one.")
    work = trained_work(out)
    if work and not (resume or overwrite):
        shown = ", ".join(str(path.relative_to(out)) for path in work[:3]) + (", ..." if len(work) > 3 else "")
        raise FileExistsError(
            f"output_dir {out} already holds a training run ({shown}): pass --resume_from_checkpoint to continue "
            "it, --overwrite_output_dir to replace it, or another --output_dir."
        )
    record = out / RECIPE_RECORD
    if not (resume and record.exists()):
        return []
    changes = recipe_changes(json.loads(record.read_text()), recipe)
    if changes and not allow_recipe_change:
        listed = "; ".join(f"{c['field']}: {c['was']!r} -> {c['now']!r}" for c in changes)
        raise ValueError(
            f"Resuming {out} with another recipe than it was started with ({listed}). Resume with the recipe in "
            f"{record}, or pass --allow_recipe_change to continue anyway (the summary and model card then list the "
            "changes)."
        )
    return changes


def start_output_dir(out: Path, recipe: dict[str, Any], overwrite: bool, resume: bool) -> None:
    """Clears `out` for an overwrite and records the recipe (main process, after `check_output_dir`)."""
    if overwrite and out.is_dir():
        for item in out.iterdir():
            if item.name in KEPT_ON_OVERWRITE:
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
        logger.info(f"--overwrite_output_dir: cleared {out}")
    out.mkdir(parents=True, exist_ok=True)
    record = out / RECIPE_RECORD
    if not (resume and record.exists()):  # a resume keeps the recipe the weights were started with
        record.write_text(json.dumps(recipe, indent=2, default=str))


def recipe_changes(was: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """Fields that differ between two resolved recipes, as dotted paths (`stages.1.learning_rate`)."""
    changes: list[dict[str, Any]] = []

    def walk(a, b, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and path == "stages":
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}.{index}")
        elif a != b:
            changes.append({"field": path, "was": a, "now": b})

    walk(
        {k: v for k, v in was.items() if k not in NOT_COMPARED},
        {k: v for k, v in now.items() if k not in NOT_COMPARED},
        "",
    )
    return changes


__all__ = ["RECIPE_RECORD", "check_output_dir", "recipe_changes", "start_output_dir", "trained_work"]
