"""What the three task generators share: argument checks, per-split random streams and writing a task folder.

Each task module only says how to draw one item (image, question, answer, reference fields, caption); this module
turns a stream of items into PNGs under `images/`, the LLaVA JSON files train/val/test/pretrain and `task.json`.
Same arguments, same bytes: every split has its own random stream seeded from a string (hashed with SHA-512 by
`random`, stable across processes, unlike the salted `hash()`), images are drawn without anti-aliasing and saved
with fixed PNG settings, and JSON is written with sorted keys and fixed indentation.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.llava_json import write_llava_json
from ..data.records import Record

CAPTION_PROMPT = "Describe the image briefly."
MIN_IMAGE_SIZE = 32
SPLITS = ("train", "val", "test")
WHITE = (255, 255, 255)


@dataclass
class Item:
    """One generated example: its image, the question and answer, the reference fields (meta) and a caption."""

    image: Image.Image
    question: str
    answer: str
    meta: dict
    caption: str


# (rng, count, image_size) -> the split's items, lazily: a split of large images need not sit in memory at once.
ItemMaker = Callable[[random.Random, int, int], Iterator[Item]]


def split_rng(task: str, split: str, seed: int) -> random.Random:
    """The random stream of one split of one task: independent of the other splits' sizes."""
    return random.Random(f"{task}-{split}-{seed}")


def numpy_rng(rng: random.Random) -> np.random.Generator:
    """A numpy Generator drawn from `rng`, for vectorised noise; it advances `rng` by one draw."""
    return np.random.default_rng(rng.getrandbits(64))


def messages(question: str, answer: str) -> list[dict]:
    """A single-turn conversation: the image and the question, then the answer (LLaVA: "<image>\\n" + question)."""
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def check_arguments(n_train: int, n_val: int, n_test: int, image_size: int) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size} is too small to read the drawings: use {MIN_IMAGE_SIZE} or more.")
    if n_train < 1 or n_test < 1 or n_val < 0:
        raise ValueError(
            f"n_train={n_train}, n_val={n_val}, n_test={n_test}: train and test need at least 1 item, val at least 0."
        )


def generate_task(
    task: str,
    out_dir: str | os.PathLike,
    counts: dict[str, int],
    seed: int,
    image_size: int,
    make_items: ItemMaker,
) -> dict[str, Path]:
    """Writes a task folder from `make_items` and returns {"train", "val", "test", "pretrain"} -> JSON path.

    pretrain holds a caption item per train image ("<image>\\nDescribe the image briefly." -> the caption), for
    stage-1 projector pretraining. Every record's meta carries "task" and "question_type" ("caption" in pretrain).
    """
    check_arguments(counts["train"], counts["val"], counts["test"], image_size)
    out_dir = Path(os.path.abspath(out_dir))
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[Record]] = {"train": [], "val": [], "test": [], "pretrain": []}
    training_images: set[bytes] = set()
    for split in SPLITS:
        items = make_items(split_rng(task, split, seed), counts[split], image_size)
        shown = tqdm(items, total=counts[split], desc=f"{task} {split}", unit=" items", disable=counts[split] < 500)
        for index, item in enumerate(shown):
            if split == "train":
                training_images.add(item.image.tobytes())
            elif item.image.tobytes() in training_images:  # a held-out item must not be a training image
                item = _replacement(task, split, seed, index, item, image_size, make_items, training_images)
            if item.image.size != (image_size, image_size):
                raise AssertionError(f"{task} drew a {item.image.size} image, not {image_size}x{image_size}")
            image_path = image_dir / f"{split}-{index:05d}.png"
            item.image.save(image_path, format="PNG", optimize=False, compress_level=9)
            meta = {**item.meta, "task": task}
            record_id = f"{task}-{split}-{index:05d}"
            splits[split].append(
                Record(record_id, [str(image_path)], messages(item.question, item.answer), split, meta)
            )
            if split == "train":
                caption_meta = {"task": task, "question_type": "caption", "answer": item.caption}
                splits["pretrain"].append(
                    Record(
                        f"{task}-pretrain-{index:05d}",
                        [str(image_path)],
                        messages(CAPTION_PROMPT, item.caption),
                        "pretrain",
                        caption_meta,
                    )
                )
    paths = {split: write_llava_json(records, out_dir / f"{split}.json", out_dir) for split, records in splits.items()}
    summary = {
        "task": task,
        "seed": seed,
        "image_size": image_size,
        "counts": {split: len(records) for split, records in splits.items()},
    }
    (out_dir / "task.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return paths


def _replacement(
    task: str, split: str, seed: int, index: int, item: Item, image_size: int, make_items: ItemMaker, avoid: set
) -> Item:
    """Another held-out item of the same question type whose image no training item has, drawn from a stream of its
    own (so the other items of the split stay as they were)."""
    for attempt in range(100):
        rng = split_rng(task, f"{split}-{index}-replacement-{attempt}", seed)
        for candidate in make_items(rng, 8, image_size):
            same_type = candidate.meta.get("question_type") == item.meta.get("question_type")
            if same_type and candidate.image.tobytes() not in avoid:
                return candidate
    raise RuntimeError(f"{task}: no {split} image unlike every training image after 100 draws; use larger images.")


def join_words(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c': the list phrasing of the captions and descriptions."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


__all__ = [
    "CAPTION_PROMPT",
    "MIN_IMAGE_SIZE",
    "SPLITS",
    "WHITE",
    "Item",
    "ItemMaker",
    "check_arguments",
    "generate_task",
    "join_words",
    "messages",
    "numpy_rng",
    "split_rng",
]
