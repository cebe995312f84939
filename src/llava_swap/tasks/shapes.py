"""`shapes`: a sanity task for the tiny default recipe: one coloured shape per image, asked its colour or its shape.

A random, frozen tiny CLIP can tell a tiny LM enough about one large shape for it to learn these questions in
seconds on a CPU, which makes it the default's proof that training works. The study's tasks (VQA-Scene and the two
seismic tasks) need real encoders. The generator lives in `llava_swap.data.synthetic`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.synthetic import generate_vqa_scene

NAME = "shapes"


def generate(
    out_dir: str | os.PathLike,
    n_train: int = 1200,
    n_val: int = 0,
    n_test: int = 120,
    seed: int = 0,
    image_size: int = 32,
) -> dict[str, Path]:
    """Writes train.json, test.json and pretrain.json (captions) under `out_dir`; `n_val` is not used."""
    return generate_vqa_scene(out_dir, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size)


def references(meta: dict) -> list[str]:
    return [meta["answer"]]


__all__ = ["NAME", "generate", "references"]
