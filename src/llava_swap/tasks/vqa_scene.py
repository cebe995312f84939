"""VQA-Scene: an offline stand-in for the study's visual question answering task, on rendered scenes of shapes.

Each image holds 1-6 filled shapes (circle, square, triangle; six far-apart colours; small or large) on white, one
per cell of a 3x3 grid so that they never overlap and "left of" is never ambiguous (cells do not share columns of
pixels). Questions come in four balanced types, answered VQAv2-style with one lower-case word or digits:
counting ("How many red shapes are there?"), attribute ("What colour is the circle?"), existence ("Is there a green
triangle?", yes/no balanced) and spatial ("Is the red circle left of the blue square?" or "Which shape is
leftmost?"). Each record keeps 10 annotator answers for the VQAv2 soft score; for counting, one or two annotators
may be off by one, as real annotators are.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ._common import CAPTION_PROMPT, WHITE, Item, generate_task, join_words

NAME = "vqa_scene"
# Far apart in hue, each clearly readable on white even at 32x32 pixels.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 150, 40),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
    "purple": (130, 40, 170),
    "orange": (245, 125, 0),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
QUESTION_TYPES = ("counting", "attribute", "existence", "spatial")
PROMPTS = {
    "counting": ("How many shapes are there?", "How many {colour} shapes are there?"),
    "attribute": ("What colour is the {shape}?", "What shape is the {colour} object?"),
    "existence": ("Is there a {colour} {shape}?",),
    "spatial": ("Is the {first} {relation} the {second}?", "Which shape is {extreme}?"),
}
MAX_OBJECTS = 6
NOISY_COUNT_PROBABILITY = 0.25  # share of counting items where 1-2 of the 10 annotators are off by one
N_ANSWERS = 10
NUMBER_WORDS = ("No", "One", "Two", "Three", "Four", "Five", "Six")
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")


@dataclass(frozen=True)
class Shape:
    """One drawn object: what it is, its grid cell and its pixel box (left, top, right, bottom, inclusive)."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        if (self.row, self.col) == (1, 1):
            return "in the centre"
        if self.col == 1:
            return f"at the {ROWS[self.row]}"
        if self.row == 1:
            return f"on the {COLUMNS[self.col]}"
        return f"at the {ROWS[self.row]} {COLUMNS[self.col]}"


def answer_type(question_type: str, answer: str | None = None) -> str:
    """VQAv2's answer type ("yes/no", "number", "other"); spatial needs the answer (yes/no or a shape name)."""
    if question_type == "counting":
        return "number"
    if question_type == "existence":
        return "yes/no"
    if question_type == "attribute":
        return "other"
    if question_type == "spatial" and answer is not None:
        return "yes/no" if answer in ("yes", "no") else "other"
    raise ValueError(f"No answer type for question_type={question_type!r} with answer={answer!r}.")


def references(meta: dict) -> list[str]:
    """The 10 annotator answers a prediction is scored against (VQAv2 accuracy: min(#matches / 3, 1))."""
    return list(meta["answers"])


def _scene(rng: random.Random, image_size: int, n_objects: int) -> list[Shape]:
    cell = image_size // 3
    offset = (image_size - 3 * cell) // 2
    # A one-pixel gap to the next cell keeps neighbours apart; small shapes still span 5+ pixels at size 32.
    extents = {"large": cell - 1, "small": max(5, (cell - 1) * 2 // 3)}
    shapes = []
    for index in rng.sample(range(9), n_objects):
        row, col = divmod(index, 3)
        size = rng.choice(SIZES)
        extent = extents[size]
        left = offset + col * cell + rng.randint(0, cell - 1 - extent)
        top = offset + row * cell + rng.randint(0, cell - 1 - extent)
        box = (left, top, left + extent - 1, top + extent - 1)
        shapes.append(Shape(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), size, row, col, box))
    return sorted(shapes, key=lambda shape: (shape.col, shape.row))  # reading order, left to right, for captions


def _draw(scene: list[Shape], image_size: int) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), WHITE)
    draw = ImageDraw.Draw(image)  # PIL's plain drawing does not anti-alias: every pixel is background or a colour
    for shape in scene:
        fill = COLOURS[shape.colour]
        left, top, right, bottom = shape.box
        if shape.shape == "circle":
            draw.ellipse(shape.box, fill=fill)
        elif shape.shape == "square":
            draw.rectangle(shape.box, fill=fill)
        else:
            draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)
    return image


def _question(rng: random.Random, scene: list[Shape], kind: str, variant: int, yes: bool) -> tuple[str, str] | None:
    """(question, answer) of the planned kind about `scene`, or None when the scene cannot ask it unambiguously."""
    colours = Counter(shape.colour for shape in scene)
    shapes = Counter(shape.shape for shape in scene)
    if kind == "counting" and variant == 0:
        return PROMPTS[kind][0], str(len(scene))
    if kind == "counting":
        # Mostly a colour in the scene; sometimes an absent one, whose count is 0 (VQAv2 has such questions too).
        absent = sorted(set(COLOURS) - set(colours))
        colour = rng.choice(sorted(colours) if rng.random() < 0.8 or not absent else absent)
        return PROMPTS[kind][1].format(colour=colour), str(colours[colour])
    if kind == "attribute":
        # "the circle" / "the blue object" must name exactly one object.
        unique = [shape for shape in scene if (shapes[shape.shape] if variant == 0 else colours[shape.colour]) == 1]
        if not unique:
            return None
        target = rng.choice(unique)
        if variant == 0:
            return PROMPTS[kind][0].format(shape=target.shape), target.colour
        return PROMPTS[kind][1].format(colour=target.colour), target.shape
    if kind == "existence":
        present = {(shape.colour, shape.shape) for shape in scene}
        pool = sorted(present) if yes else sorted((c, s) for c in COLOURS for s in SHAPES if (c, s) not in present)
        colour, shape = rng.choice(pool)
        return PROMPTS[kind][0].format(colour=colour, shape=shape), "yes" if yes else "no"
    names = Counter(shape.name for shape in scene)
    if variant == 0:
        # Only shapes named uniquely by colour and shape, and in different grid columns, so the truth is clear.
        named = [shape for shape in scene if names[shape.name] == 1]
        pairs = [(a, b) for a in named for b in named if a.col < b.col]
        if not pairs:
            return None
        left, right = rng.choice(pairs)
        relation = rng.choice(("left of", "right of"))
        first, second = (left, right) if (relation == "left of") == yes else (right, left)
        question = PROMPTS[kind][0].format(first=first.name, relation=relation, second=second.name)
        return question, "yes" if yes else "no"
    extreme = rng.choice(("leftmost", "rightmost"))
    edge = min(shape.col for shape in scene) if extreme == "leftmost" else max(shape.col for shape in scene)
    candidates = [shape for shape in scene if shape.col == edge]
    if len(scene) < 2 or len(candidates) != 1:
        return None
    return PROMPTS[kind][1].format(extreme=extreme), candidates[0].shape


def _answers(rng: random.Random, kind: str, answer: str) -> list[str]:
    answers = [answer] * N_ANSWERS
    if kind == "counting" and rng.random() < NOISY_COUNT_PROBABILITY:
        count = int(answer)
        for position in rng.sample(range(N_ANSWERS), rng.choice((1, 2))):
            answers[position] = str(count + 1 if count == 0 or rng.random() < 0.5 else count - 1)
    return answers


def caption(scene: list[Shape]) -> str:
    """'Two shapes: a small red circle on the left and a large blue square at the top right.'"""
    noun = "shape" if len(scene) == 1 else "shapes"
    parts = [f"a {shape.size} {shape.colour} {shape.shape} {shape.position}" for shape in scene]
    return f"{NUMBER_WORDS[len(scene)]} {noun}: {join_words(parts)}."


def _items(rng: random.Random, count: int, image_size: int) -> Iterator[Item]:
    # A balanced plan, then shuffled: the types take turns; within a type, `variant` alternates between its two
    # question forms (and for existence between yes and no), and `yes` alternates over the yes/no spatial items.
    plan = [(QUESTION_TYPES[i % 4], (i // 4) % 2, (i // 8) % 2 == 0) for i in range(count)]
    plan = [(kind, variant, variant == 0 if kind == "existence" else yes) for kind, variant, yes in plan]
    rng.shuffle(plan)
    for kind, variant, yes in plan:
        for _ in range(10_000):  # rejection sampling: a few tries at most, in practice
            scene = _scene(rng, image_size, rng.randint(1, MAX_OBJECTS))
            qa = _question(rng, scene, kind, variant, yes)
            if qa is not None:
                break
        else:
            raise RuntimeError(f"Could not draw a scene for a {kind} question (variant {variant}).")
        question, answer = qa
        meta = {
            "question_type": kind,
            "answer": answer,
            "answers": _answers(rng, kind, answer),
            "answer_type": answer_type(kind, answer),
            "objects": [{**asdict(shape), "box": list(shape.box)} for shape in scene],
        }
        yield Item(_draw(scene, image_size), question, answer, meta, caption(scene))


def generate(
    out_dir: str | os.PathLike,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = 64,
) -> dict[str, Path]:
    """Writes VQA-Scene under `out_dir` (images/, train/val/test/pretrain.json, task.json); returns the JSON paths.

    Records carry "question_type", "answer" (canonical), "answers" (10 annotators), "answer_type" and "objects"
    (the drawn scene: shape, colour, size, grid row/col and pixel box of each object).
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return generate_task(NAME, out_dir, counts, seed, image_size, _items)


__all__ = [
    "CAPTION_PROMPT",
    "COLOURS",
    "NAME",
    "PROMPTS",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "Shape",
    "answer_type",
    "caption",
    "generate",
    "references",
]
