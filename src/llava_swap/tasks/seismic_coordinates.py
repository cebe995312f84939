"""Seismic coordinate prediction: an offline stand-in for the study's task of locating an event as numbers.

Each image is a top-view station map: faint grid lines, 3-6 stations (small dark triangles) and one event (a filled
red disc) somewhere on it. The model answers with the event's location in normalised image coordinates, x from
the left edge (0) to the right edge (1) and y from the top (0) to the bottom (1), to 2 decimals, always in one
format: {"x": 0.42, "y": 0.77}. The disc is centred on the pixel that contains that point (`to_pixel`), so the
answer can be checked against the pixels, and it never touches a station.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw

from ._common import CAPTION_PROMPT, WHITE, Item, generate_task

NAME = "seismic_coordinates"
PROMPT = 'Where is the seismic event? Answer with its normalised image coordinates as JSON: {"x": <0-1>, "y": <0-1>}.'
PROMPTS = (PROMPT,)
EVENT_COLOUR = (220, 30, 30)
STATION_COLOUR = (40, 40, 40)
GRID_COLOUR = (225, 225, 225)
STATION_RANGE = (3, 6)
_OBJECT = re.compile(r"\{[^{}]*\}")


def to_pixel(value: float, image_size: int) -> int:
    """The pixel row/column containing normalised coordinate `value` (the tiny epsilon absorbs 0.29 * 100 < 29)."""
    return min(image_size - 1, max(0, int(value * image_size + 1e-9)))


def format_answer(x: float, y: float) -> str:
    """'{"x": 0.42, "y": 0.77}': always two decimals, so every answer has the same shape."""
    return f'{{"x": {x:.2f}, "y": {y:.2f}}}'


def parse_answer(text: str) -> tuple[float, float] | None:
    """(x, y) from the first JSON object in `text` with numeric "x" and "y", or None when there is none."""
    for match in _OBJECT.finditer(text):
        try:
            value = json.loads(match.group())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and all(
            isinstance(value.get(key), (int, float)) and not isinstance(value.get(key), bool) for key in ("x", "y")
        ):
            return float(value["x"]), float(value["y"])
    return None


def references(meta: dict) -> tuple[float, float]:
    """The true event location (x, y), normalised, that a predicted location is compared against."""
    return meta["target"]["x"], meta["target"]["y"]


def _region(x: float, y: float) -> str:
    row, col = min(2, int(y * 3)), min(2, int(x * 3))
    if (row, col) == (1, 1):
        return "in the centre"
    rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
    if col == 1:
        return f"at the {rows[row]}"
    if row == 1:
        return f"on the {cols[col]}"
    return f"at the {rows[row]} {cols[col]}"


def caption(num_stations: int, x: float, y: float) -> str:
    """'A station map with 4 stations and one event at the top left.'"""
    return f"A station map with {num_stations} stations and one event {_region(x, y)}."


def _items(rng: random.Random, count: int, image_size: int) -> Iterator[Item]:
    radius = max(2, image_size // 16)
    extent = max(4, image_size // 8)  # a station triangle's side, in pixels
    # Hundredths whose pixel keeps the whole disc inside the image.
    allowed = [k / 100 for k in range(101) if radius <= to_pixel(k / 100, image_size) <= image_size - 1 - radius]
    for _ in range(count):
        x, y = rng.choice(allowed), rng.choice(allowed)
        cx, cy = to_pixel(x, image_size), to_pixel(y, image_size)
        image = Image.new("RGB", (image_size, image_size), WHITE)
        draw = ImageDraw.Draw(image)  # no anti-aliasing: the event pixels are exactly EVENT_COLOUR
        step = image_size // 4
        for k in range(1, 4):
            draw.line([(k * step, 0), (k * step, image_size - 1)], fill=GRID_COLOUR)
            draw.line([(0, k * step), (image_size - 1, k * step)], fill=GRID_COLOUR)
        stations: list[tuple[int, int]] = []  # top-left corners
        wanted = rng.randint(*STATION_RANGE)
        for _ in range(10_000):
            if len(stations) == wanted:
                break
            left, top = rng.randint(0, image_size - extent), rng.randint(0, image_size - extent)
            # Boxes at least a pixel apart from each other and from the event disc's box.
            clear_of_event = left > cx + radius + 1 or left + extent < cx - radius - 1
            clear_of_event = clear_of_event or top > cy + radius + 1 or top + extent < cy - radius - 1
            clear = all(
                left > sl + extent or sl > left + extent or top > st + extent or st > top + extent
                for sl, st in stations
            )
            if clear_of_event and clear:
                stations.append((left, top))
        for left, top in stations:
            right, bottom = left + extent - 1, top + extent - 1
            draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=STATION_COLOUR)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=EVENT_COLOUR)
        answer = format_answer(x, y)
        meta = {
            "question_type": "location",
            "target": {"x": x, "y": y},
            "answer": answer,
            "stations": [
                {"x": round((left + extent / 2) / image_size, 2), "y": round((top + extent / 2) / image_size, 2)}
                for left, top in stations
            ],
        }
        yield Item(image, PROMPT, answer, meta, caption(len(stations), x, y))


def generate(
    out_dir: str | os.PathLike,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = 64,
) -> dict[str, Path]:
    """Writes the seismic coordinate task under `out_dir` (images/, four LLaVA JSON files, task.json).

    Records carry "question_type" ("location"), "target" ({"x", "y"}, normalised, 2 decimals), "answer" (the
    target as '{"x": 0.42, "y": 0.77}') and "stations" (each station's centre, normalised).
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return generate_task(NAME, out_dir, counts, seed, image_size, _items)


__all__ = [
    "CAPTION_PROMPT",
    "EVENT_COLOUR",
    "NAME",
    "PROMPT",
    "PROMPTS",
    "caption",
    "format_answer",
    "generate",
    "parse_answer",
    "references",
    "to_pixel",
]
