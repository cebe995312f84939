"""Small builders shared by the tests (images, conversations)."""

from __future__ import annotations


def chat_image(seed: int = 0, size: tuple[int, int] = (40, 48)):
    """A small deterministic RGB image (height x width)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def two_turn_messages(image=None):
    """A 2-turn conversation with one image in the first user turn (transformers' message format)."""
    image = chat_image() if image is None else image
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "What colour is it?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It is red."}]},
        {"role": "user", "content": [{"type": "text", "text": "How many circles?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two."}]},
    ]
