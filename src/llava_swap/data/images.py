"""A row's images: loaded as RGB, and placed into its chat messages where the processor reads them."""

from __future__ import annotations

import os

from PIL import Image


def load_image(image) -> Image.Image:
    """A row's image as RGB PIL: a path is opened, a PIL image is used as is."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    return image.convert("RGB")


def with_images(messages: list[dict], images: list) -> list[dict]:
    """Messages whose `{"type": "image"}` parts carry the row's images, in order (what the processor reads)."""
    remaining = iter(images)
    filled = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {**part, "image": load_image(next(remaining))} if part.get("type") == "image" else part
                for part in content
            ]
        filled.append({**message, "content": content})
    return filled


__all__ = ["load_image", "with_images"]
