"""The tensor names of llava checkpoints on disk, and their renaming to the model's module tree.

llava checkpoints (llava-hf/*, what vLLM and SGLang read, and llava-swap's own) keep transformers 4's tensor names:
`language_model.model.*`, `language_model.lm_head`, `vision_tower.*`, `multi_modal_projector.*`. transformers 5
moved the modules under `model.`; loading renames, saving renames back (registered for `llava_swap` here), so one
file layout serves both our format and the native one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from . import compat

# regex on the on-disk name -> module path
NATIVE_LAYOUT = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}


def to_module_names(state_dict: Mapping) -> dict:
    """`state_dict` with on-disk names renamed to module paths; names already in the module tree pass unchanged."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in NATIVE_LAYOUT.items():
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed


def register(model_type: str) -> None:
    """`from_pretrained` of `model_type` reads the on-disk names, `save_pretrained` writes them."""
    compat.register_checkpoint_layout(model_type, NATIVE_LAYOUT)


__all__ = ["NATIVE_LAYOUT", "register", "to_module_names"]
