"""`shapes`: the tiny default recipe's sanity task: one coloured shape per image, asked its colour or its shape.

A random, frozen tiny CLIP tells a tiny LM enough about one large shape for it to learn these questions in seconds
on a CPU, which makes it the default's proof that training works; the study's tasks (VQA-Scene and the two seismic
tasks) need real encoders. Same seed, same bytes: images are drawn without anti-aliasing and saved as PNG with fixed
settings, JSON is written with sorted keys and fixed indentation, and each split has its own random stream, so the
test split does not change when `n_train` does.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..data.llava_json import write_llava_json
from ..data.records import Record
from .vqa_scene import COLOURS, SHAPES  # one palette and one set of shapes for every scene task

NAME = "shapes"
QUESTIONS = {"colour": "What colour is the shape?", "shape": "What shape is it?"}
CAPTION_PROMPT = "Describe the image briefly."
MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class Scene:
    """One filled shape: its kind, colour, side length and top-left corner, in pixels."""

    shape: str
    colour: str
    extent: int
    x: int
    y: int
    large: bool

    def draw(self, image_size: int) -> Image.Image:
        image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        box = (self.x, self.y, self.x + self.extent - 1, self.y + self.extent - 1)
        fill = COLOURS[self.colour]
        if self.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif self.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            left, top, right, bottom = box
            draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)
        return image

    @property
    def caption(self) -> str:
        return f"A {'large' if self.large else 'small'} {self.colour} {self.shape}."


def _scene(rng: random.Random, image_size: int) -> Scene:
    smallest, largest = max(6, image_size * 3 // 10), image_size * 4 // 5
    extent = rng.randint(smallest, largest)
    return Scene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(sorted(COLOURS)),
        extent=extent,
        x=rng.randint(0, image_size - extent),
        y=rng.randint(0, image_size - extent),
        large=extent > (smallest + largest) / 2,
    )


def _user_turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def _assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def generate(
    out_dir: str | os.PathLike,
    n_train: int = 1200,
    n_val: int = 0,
    n_test: int = 120,
    seed: int = 0,
    image_size: int = 32,
) -> dict[str, Path]:
    """Writes the task under `out_dir`: PNGs in images/, and train.json, test.json, pretrain.json in LLaVA format.

    train/test: one question per image, "What colour is the shape?" or "What shape is it?" (half each, shuffled),
    answered with one lowercase word; test records also carry "answer" and "question_type" ("colour" / "shape").
    pretrain: a caption per train image ("<image>\\nDescribe the image briefly." -> "A small red circle.").
    Returns {"train": path, "test": path, "pretrain": path}; `n_val` is accepted for the common task signature and
    not used (the default recipe holds out the test split).
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size} is too small to tell shapes apart: use {MIN_IMAGE_SIZE} or more.")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must both be at least 1.")
    out_dir = Path(os.path.abspath(out_dir))
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[Record]] = {"train": [], "test": [], "pretrain": []}
    for split, count in (("train", n_train), ("test", n_test)):
        # A string seed is hashed with SHA-512 by `random`, the same in every process and Python version.
        rng = random.Random(f"vqa-scene/{split}/{seed}")
        kinds = [sorted(QUESTIONS)[index % len(QUESTIONS)] for index in range(count)]
        rng.shuffle(kinds)
        shown = tqdm(kinds, desc=f"shapes {split}", unit=" items", disable=count < 500)
        for index, kind in enumerate(shown):
            scene = _scene(rng, image_size)
            image_path = image_dir / f"{split}-{index:05d}.png"
            scene.draw(image_size).save(image_path, format="PNG", optimize=False, compress_level=9)
            answer = scene.colour if kind == "colour" else scene.shape
            meta = {"answer": answer, "question_type": kind} if split == "test" else {}
            messages = [_user_turn(QUESTIONS[kind]), _assistant_turn(answer)]
            splits[split].append(Record(f"vqa-{split}-{index:05d}", [str(image_path)], messages, split, meta))
            if split == "train":
                caption = [_user_turn(CAPTION_PROMPT), _assistant_turn(scene.caption)]
                splits["pretrain"].append(Record(f"vqa-pretrain-{index:05d}", [str(image_path)], caption, split))
    return {split: write_llava_json(records, out_dir / f"{split}.json", out_dir) for split, records in splits.items()}


def references(meta: dict) -> list[str]:
    return [meta["answer"]]


__all__ = ["NAME", "QUESTIONS", "Scene", "generate", "references"]
