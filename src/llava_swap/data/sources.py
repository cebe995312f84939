"""Where a recipe's data comes from: files it names (LLaVA JSON, a saved `datasets` folder, `hf:<id>`) or, with none,
its task's offline generator; and the record of what was skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from ..distributed import log_once
from ..recipes import DataConfig, Recipe

logger = logging.getLogger(__name__)


def resolve_data(recipe: Recipe, out: Path) -> dict[str, str | Path]:
    """The files of each split the recipe's stages use: as named, or generated under `out/data` (synthetic)."""
    data = recipe.data
    needed = {stage.data for stage in recipe.stages}
    given = {"train": data.train, "pretrain": data.pretrain, "eval": data.eval}
    if all(given[name] for name in needed):
        return {name: path for name, path in given.items() if path}
    if any(given.values()):
        missing = sorted(name for name in needed if not given[name])
        raise ValueError(f"The recipe names some data files but not {missing}: give every split its stages use.")
    from ..tasks import get_task

    if data.task is None:
        raise ValueError("Synthetic data needs a task: set data.task (e.g. shapes, vqa_scene) or give data files.")
    else:
        paths = get_task(data.task).generate(
            out / "data",
            n_train=data.synthetic_train,
            n_val=max(data.synthetic_test // 2, 1),
            n_test=data.synthetic_test,
            seed=recipe.seed,
            image_size=data.synthetic_image_size,
        )
    return {"train": paths["train"], "pretrain": paths["pretrain"], "eval": paths["test"]}


def load_split(path: str | os.PathLike, image_root: str | None, data: DataConfig):
    """One split as validated records: LLaVA JSON, a saved `datasets` folder, or `hf:<id>[:<split>]`."""
    from .llava_json import load_hf_dataset, load_llava_json

    text = str(path)
    if text.startswith("hf:"):
        from datasets import load_dataset

        name, _, split = text[3:].partition(":")
        dataset = load_dataset(name, split=split or "train")
        return load_hf_dataset(dataset, on_bad_record=data.on_bad_record, name=text)
    if Path(text).is_dir():
        from datasets import load_from_disk

        return load_hf_dataset(load_from_disk(text), on_bad_record=data.on_bad_record, name=text)
    return load_llava_json(text, image_root, on_bad_record=data.on_bad_record, image_check=data.image_check)


def write_skipped(out: Path, skipped: dict[str, list]) -> None:
    """Lists every skipped record (`on_bad_record: skip`) in `out/skipped_records.json`, with its split."""
    everything = [dataclasses.asdict(item) | {"split": split} for split, items in skipped.items() for item in items]
    if everything:
        out.mkdir(parents=True, exist_ok=True)
        (out / "skipped_records.json").write_text(json.dumps(everything, indent=2))
        log_once(logger, f"skipped {len(everything)} bad record(s): listed in {out / 'skipped_records.json'}")


def count_skipped(skipped: dict[str, list]) -> dict[str, int]:
    return {split: len(items) for split, items in skipped.items()}


__all__ = ["count_skipped", "load_split", "resolve_data", "write_skipped"]
