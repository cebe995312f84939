"""Never pay twice for a frozen vision encoder: its features, computed once per distinct image, kept on disk.

While the vision tower is frozen its output for an image never changes, yet LLaVA-style training runs it again for
every image in every epoch, in both stages, and for every backbone of a study. `VisionFeatureCache` runs it once per
distinct image and stores the selected features (what `LlavaSwapForCausalLM.get_vision_features` returns, before the
projector) as safetensors files. The cache folder is keyed by the encoder's identity (a hash of its weights, config,
feature layer, select strategy and image preprocessing), so another encoder or layer never reads stale features;
within it each file is keyed by the image's content hash, so renamed or duplicated files share one entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data.images import load_image


def image_key(image) -> str:
    """Content hash of an image: its file's bytes, or a PIL image's pixels, mode and size."""
    digest = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        digest.update(Path(image).read_bytes())
    else:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()[:32]


def encoder_identity(model, processor) -> str:
    """What decides the features: the encoder's weights and config, the layer, the strategy, the preprocessing."""
    digest = hashlib.sha256()
    config = model.config
    settings = {
        "vision_config": _content(config.vision_config.to_dict()),
        "layer": config.vision_feature_layer,
        "strategy": config.vision_feature_select_strategy,
        "image_processor": _content(processor.image_processor.to_dict()),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# Where a checkpoint was loaded from, and which library wrote it, do not change its features.
_PROVENANCE = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "processor_class")


def _content(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in _PROVENANCE}


MEMORY_BYTES = 2**30  # features kept in memory between reads: at most 1 GiB, least recently used dropped first


class VisionFeatureCache:
    """Vision features per distinct image for one encoder setting, on disk under `root/<encoder identity>/`.

    Reads keep recently used features in memory up to `memory_bytes` (least recently used first out), so a long run
    over many images stays at a fixed size: at CLIP-L/336 one image's features are ~2.4 MB in float32.
    """

    def __init__(self, root: str | os.PathLike, model, processor, memory_bytes: int = MEMORY_BYTES):
        self.identity = encoder_identity(model, processor)
        self.folder = Path(root) / self.identity
        self.folder.mkdir(parents=True, exist_ok=True)
        self.processor = processor
        self.encoded_images = 0  # images this process sent through the encoder (the work the cache saves)
        self.encoded_total = 0  # ... and all processes of the launch together (set by stages.stage_feature_cache)
        self._keys: dict[str, str] = {}  # path -> content hash, so a file is read and hashed once
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._held = 0  # bytes in _memory

    def key(self, image) -> str:
        if isinstance(image, (str, os.PathLike)):
            path = str(image)
            if path not in self._keys:
                self._keys[path] = image_key(path)
            return self._keys[path]
        return image_key(image)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    @torch.no_grad()
    def precompute(
        self, model, images, batch_size: int = 32, progress: bool = True, shard: tuple[int, int] = (0, 1)
    ) -> int:
        """Encodes every image not cached yet (each distinct one once); returns how many it encoded.

        `shard=(index, count)`: this process's share of the distinct images, when `count` processes fill one cache
        together. Shares are dealt from the distinct images in order, before looking at what is on disk, so that
        every image has exactly one owner whatever the others have written already.
        """
        from tqdm.auto import tqdm

        index, count = shard
        distinct: dict[str, object] = {}
        for image in images:
            distinct.setdefault(self.key(image), image)
        mine = list(distinct.items())[index::count]
        items = [(key, image) for key, image in mine if not self._path(key).exists()]
        was_training = model.training
        model.eval()
        device = next(model.vision_tower.parameters()).device
        try:
            for start in tqdm(range(0, len(items), batch_size), desc="caching vision features", disable=not progress):
                chunk = items[start : start + batch_size]
                pixels = self.processor.image_processor([load_image(image) for _, image in chunk], return_tensors="pt")
                features = model.get_vision_features(pixels["pixel_values"].to(device)).to("cpu")
                for (key, _), feature in zip(chunk, features, strict=True):
                    temporary = self._path(key).with_suffix(f".tmp{os.getpid()}")
                    save_file({"features": feature.contiguous()}, temporary)
                    os.replace(temporary, self._path(key))  # complete files only, even if interrupted
                self.encoded_images += len(chunk)
        finally:
            model.train(was_training)
        return len(items)

    def features(self, images) -> torch.Tensor:
        """`(num_images, image_seq_length, vision_dim)` for the given images, in order, from the cache."""
        tensors = []
        for image in images:
            key = self.key(image)
            if key in self._memory:
                self._memory.move_to_end(key)
                tensors.append(self._memory[key])
                continue
            path = self._path(key)
            if not path.exists():
                raise KeyError(f"No cached vision features for image {image!r}: call precompute() on it first.")
            tensor = load_file(path)["features"]
            tensors.append(tensor)
            self._remember(key, tensor)
        return torch.stack(tensors)

    def _remember(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.memory_bytes:
            return
        self._memory[key] = tensor
        self._held += size
        while self._held > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._held -= dropped.numel() * dropped.element_size()


__all__ = ["VisionFeatureCache", "encoder_identity", "image_key"]
