"""Counterfactual image dependence: does the model's answer change when the image's content does?

The relevancy image share says where attention-gradient mass goes, not whether the image matters: a model whose
projector is zeroed (the same logits for any image) still puts about half its relevance on the image tokens. This
module measures dependence by intervention instead. For each item it takes the teacher-forced probability of the
reference answer (`evaluation.answer_probabilities`) under
- the real image,
- a blank image (same size and mode, filled with the image's most common colour: the background stays, the content
  goes), and
- another item's image (a seeded derangement: never the item's own image, nor a byte-identical copy of it),
and reports the paired difference real - counterfactual (`inference.compare_paired`: mean, bootstrap interval,
permutation p-value). A model that ignores the image scores exactly 0 on both; one that reads it loses probability
on its reference answer when the content is removed or swapped.

`relevancy_blank_share` is the matching control for the relevancy analysis: the mean image share on the same
prompts with blank images. A share that stays the same on a blank image says nothing about the content.

Everything returned is plain JSON (floats, ints, strings, lists, dicts): the study writes it as
`image_dependence.json` per task with `json.dumps`, and reads it back with `json.loads`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

_MAX_DERANGEMENT_TRIES = 1000


def _opened(image) -> Image.Image:
    """A PIL image as given, or a path opened in its own mode (not converted: the blank keeps the file's mode)."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            opened.load()
            return opened.copy()
    return image


def blank_image(image) -> Image.Image:
    """`image` (PIL or a path) with its content removed: same size and mode, every pixel its most common colour.

    The most common colour is the background of a drawn scene, so the blank differs from the real image only in what
    is drawn on it, not in overall brightness or colour (which a plain black image would also change).
    """
    image = _opened(image)
    width, height = image.size
    colours = image.getcolors(maxcolors=width * height)  # [(count, colour)]; never None with this many allowed
    # Ties between equally common colours go to the largest colour value, so the result never depends on pixel order.
    _, colour = max(colours, key=lambda entry: (entry[0], entry[1]))
    blank = Image.new(image.mode, image.size, colour)
    if image.mode == "P":  # a palette image's colour is an index: keep the palette it points into
        blank.putpalette(image.getpalette())
    return blank


def _image_key(image) -> str:
    """A content hash: two paths to the same bytes, or equal PIL images, get the same key."""
    digest = hashlib.sha1()
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as handle:
            digest.update(handle.read())
    else:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _donors(rows: list[dict], seed: int) -> list[int | None]:
    """Per row, the index of the row whose images it borrows (None for a row without images).

    Rows swap only with rows holding as many images, so every image marker keeps an image. Within such a group the
    donors are a cyclic shift of a seeded random order (a derangement: no row is its own donor); orders where a row
    would receive an identical image (same file content, or equal pixels) are redrawn.
    """
    rng = np.random.default_rng(seed)
    keys = [{_image_key(image) for image in row.get("images") or []} for row in rows]
    groups: dict[int, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if row.get("images"):
            groups[len(row["images"])].append(index)
    donors: list[int | None] = [None] * len(rows)
    for count, members in sorted(groups.items()):
        if len(members) < 2:
            raise ValueError(
                f"row {rows[members[0]]['id']!r} is the only row with {count} image(s): there is no other image of "
                "the same shape to swap in; pass more rows"
            )
        for _ in range(_MAX_DERANGEMENT_TRIES):
            order = [members[i] for i in rng.permutation(len(members))]
            chosen = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
            if all(not (keys[row] & keys[donor]) for row, donor in chosen.items()):
                break
        else:
            raise ValueError(
                f"could not give every row with {count} image(s) a different image in {_MAX_DERANGEMENT_TRIES} "
                "tries: most of these rows share the same image"
            )
        for row, donor in chosen.items():
            donors[row] = donor
    return donors


def other_images(rows: list[dict], seed: int = 0) -> list[list]:
    """Per row, the `images` list of another row (same number of images; [] for a row without images).

    Deterministic for a seed; never a row's own image nor an identical copy of it (see `_donors`). Raises a
    ValueError when that is impossible (a single row, or rows that all share one image).
    """
    return [[] if donor is None else list(rows[donor]["images"]) for donor in _donors(rows, seed)]


def _with_images(rows: list[dict], images: list[list]) -> list[dict]:
    """Shallow copies of `rows` with their images replaced; messages and answers stay the same objects."""
    return [{**row, "images": list(replacement)} for row, replacement in zip(rows, images, strict=True)]


def image_dependence(
    model, processor, rows: list[dict], seed: int = 0, batch_size: int = 16, real: list[float] | None = None
) -> dict[str, Any]:
    """Teacher-forced reference-answer probability per item under the real, a blank and another item's image.

    Returns (all JSON-serialisable):
        {"n": int, "seed": int,
         "ids": [str], "other_ids": [str | None] (whose image each item got),
         "real": [float], "blank": [float], "other": [float]  (per item, aligned with "ids"),
         "summary": {"blank": compare_paired(real, blank), "other": compare_paired(real, other)}}
    Each summary is `inference.compare_paired`'s dict: "estimate" = mean(real - counterfactual), "low"/"high" its
    paired bootstrap interval, "p_value" of the paired sign-flip permutation test, "test", "interval", "degenerate",
    "n". Positive estimates mean the real image helps the reference answer; 0 means the image is not used.
    """
    from ..evaluation import answer_probabilities
    from .inference import compare_paired

    if not rows:
        raise ValueError("image_dependence got no rows: pass the items to measure")
    donors = _donors(rows, seed)
    blanks = [[blank_image(image) for image in row.get("images") or []] for row in rows]
    others = [[] if donor is None else list(rows[donor]["images"]) for donor in donors]
    if real is None:  # the caller may have them already (the study's prob_correct)
        real = answer_probabilities(model, processor, rows, batch_size=batch_size)
    elif len(real) != len(rows):
        raise ValueError(f"image_dependence got {len(real)} real-image probabilities for {len(rows)} rows")
    blank = answer_probabilities(model, processor, _with_images(rows, blanks), batch_size=batch_size)
    other = answer_probabilities(model, processor, _with_images(rows, others), batch_size=batch_size)
    result = {
        "n": len(rows),
        "seed": int(seed),
        "ids": [str(row["id"]) for row in rows],
        "other_ids": [None if donor is None else str(rows[donor]["id"]) for donor in donors],
        "real": [float(value) for value in real],
        "blank": [float(value) for value in blank],
        "other": [float(value) for value in other],
        "summary": {
            "blank": compare_paired(real, blank, seed=seed),
            "other": compare_paired(real, other, seed=seed),
        },
    }
    logger.info(
        "image dependence over %d items: real - blank %.4g (p %.3g), real - other %.4g (p %.3g)",
        len(rows),
        result["summary"]["blank"]["estimate"],
        result["summary"]["blank"]["p_value"],
        result["summary"]["other"]["estimate"],
        result["summary"]["other"]["p_value"],
    )
    return result


def relevancy_blank_share(model, processor, rows: list[dict], target_tokens: list[int] | None = None) -> float | None:
    """Mean relevancy image share (`relevancy.relevancy`) over `rows` with every image blanked.

    The control for the real share: the same prompts, built as the study builds them for relevancy (one prompt at a
    time, generation prompt added), each explaining `target_tokens` (pass the tokens the real-image maps explained,
    so both explain the same logit; default: each prompt's own greedy first answer token). A real share close to this
    one says the share reflects where image tokens sit, not what the image shows. None for no rows.
    """
    from ..data.images import with_images
    from ..evaluation import prompt_messages
    from .relevancy import relevancy

    if not rows:
        return None  # nothing explained, nothing to compare with
    targets = target_tokens if target_tokens is not None else [None] * len(rows)
    shares = []
    for row, target in zip(rows, targets, strict=True):
        images = [blank_image(image) for image in row.get("images") or []]
        single = processor.apply_chat_template(
            with_images(prompt_messages(row), images),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        ).to(model.device)
        shares.append(relevancy(model, dict(single), target_token=target)["image_share"])
    share = float(np.mean(shares))
    logger.info("relevancy image share with blank images over %d items: %.4f", len(rows), share)
    return share


__all__ = ["blank_image", "image_dependence", "other_images", "relevancy_blank_share"]
