"""The tensor names of llava checkpoints on disk, and their renaming to and from the model's module tree.

llava checkpoints (llava-hf/*, what vLLM and SGLang read, and llava-swap's own) keep transformers 4's tensor names:
`language_model.model.*`, `language_model.lm_head.*`, `multi_modal_projector.*`, and the vision tower under
`vision_tower.` as its standalone checkpoint names it (`vision_tower.vision_model.*` for CLIP and SigLIP,
`vision_tower.*` for DINOv2). transformers 5 moved the modules under `model.` and dropped CLIP's and SigLIP's
`vision_model.` level; its own `save_pretrained` writes `vision_tower.embeddings.*`, which vLLM refuses. So loading
renames every layout ever written (llava-hf's, transformers 5's, llava-swap's before 0.1.0) to module paths, and
`write_disk_layout` rewrites what `save_pretrained` wrote to the llava-hf names, for our format and the native export
alike: one file layout that every reader takes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

from . import compat

# regex on the on-disk name -> module path, for `from_pretrained`. transformers strips CLIP's and SigLIP's
# `vision_model.` level itself, as it does for llava-hf checkpoints (its CLIPVisionModel conversion, applied to
# submodules too).
NATIVE_LAYOUT = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}
# The same prefixes by hand, to read back whatever layout `save_pretrained` wrote before `write_disk_layout` renames it
# (loading a state dict goes through transformers' own renaming: `compat.checkpoint_names_to_modules`). The first
# matching rule wins, so a tower's `vision_model.` level goes before the plain `vision_tower.` rule sees it.
_TO_MODULES = (
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
    (re.compile(r"^language_model\.model\."), "model.language_model."),
    (re.compile(r"^vision_tower\.vision_model\."), "model.vision_tower."),
    (re.compile(r"^vision_tower\."), "model.vision_tower."),
    (re.compile(r"^multi_modal_projector\."), "model.multi_modal_projector."),
)


def to_module_name(name: str) -> str:
    """The module path of an on-disk tensor name (any layout above); module paths pass unchanged."""
    for pattern, replacement in _TO_MODULES:
        renamed, count = pattern.subn(replacement, name)
        if count:
            return renamed
    return name


def to_disk_name(module_name: str, vision_prefix: str) -> str:
    """The llava-hf name of a module path (`model.vision_tower.embeddings.x` -> `vision_tower.vision_model.embeddings.x`
    for `vision_prefix="vision_model."`); names not in the model's tree pass unchanged."""
    for prefix, disk in (
        ("lm_head.", "language_model.lm_head."),
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", f"vision_tower.{vision_prefix}"),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ):
        if module_name.startswith(prefix):
            return disk + module_name[len(prefix) :]
    return module_name


def write_disk_layout(folder: str | os.PathLike, vision_prefix: str) -> list[str]:
    """Renames the tensors of the safetensors checkpoint in `folder` (one file or shards with their index) to the
    llava-hf layout, whatever layout `save_pretrained` wrote; returns the files rewritten.

    Only the names change: each file's header is rewritten and its tensor bytes copied as they are (no tensor is
    loaded). Each file goes to a temporary name first and is renamed over the original, so a crash leaves the old or
    the new file, never half of one; a file already in the layout is left untouched.
    """
    folder = Path(folder)
    rewritten = [path.name for path in sorted(folder.glob("*.safetensors")) if _rename_tensors(path, vision_prefix)]
    for index_path in sorted(folder.glob("*.safetensors.index*.json")) if rewritten else ():
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
        index["weight_map"] = {
            to_disk_name(to_module_name(name), vision_prefix): file for name, file in weight_map.items()
        }
        _replace(index_path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    return rewritten


def _rename_tensors(path: Path, vision_prefix: str) -> bool:
    """Rewrites the safetensors file at `path` with llava-hf tensor names; False where they already are."""
    with path.open("rb") as source:
        (header_size,) = struct.unpack("<Q", source.read(8))
        header = json.loads(source.read(header_size))
        renamed = {
            name if name == "__metadata__" else to_disk_name(to_module_name(name), vision_prefix): entry
            for name, entry in header.items()
        }
        if list(renamed) == list(header):
            return False
        if len(renamed) != len(header):
            raise ValueError(f"{path}: two tensors map to one llava-hf name; the checkpoint mixes layouts.")
        # Offsets count from the end of the header, so they stay valid; the header is padded to 8 bytes as
        # safetensors writes it.
        encoded = json.dumps(renamed, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with partial.open("wb") as target:
            target.write(struct.pack("<Q", len(encoded)) + encoded)
            shutil.copyfileobj(source, target, 16 * 1024 * 1024)
    os.replace(partial, path)
    return True


def _replace(path: Path, content: bytes) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(content)
    os.replace(partial, path)


def register(model_type: str) -> None:
    """`from_pretrained` of `model_type` reads the on-disk names (saving rewrites them: `write_disk_layout`)."""
    compat.register_checkpoint_layout(model_type, NATIVE_LAYOUT)


__all__ = ["NATIVE_LAYOUT", "register", "to_disk_name", "to_module_name", "write_disk_layout"]
