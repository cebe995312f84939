"""Never pay twice for a frozen vision encoder: its features, computed once per distinct image, kept on disk in shards.

While the vision tower is frozen its output for an image never changes, yet LLaVA-style training runs it again for
every image in every epoch, in both stages, and for every backbone of a study. `VisionFeatureCache` runs it once per
distinct image and stores the selected features (what `LlavaSwapForCausalLM.get_vision_features` returns, before the
projector). The cache folder is keyed by the encoder's identity (a hash of its weights, config, feature layer, select
strategy, image preprocessing) and the stored dtype, so another encoder, layer or precision never reads stale
features; within it, rows are keyed by the image's content hash, so renamed or duplicated files share one entry.

At LLaVA's scale (558k images, CLIP-L/336: 576 tokens x 1024 features, 1.2 MB per image in bf16) the layout matters:

* **Shards.** Rows go into shard files of about `shard_bytes` (1 GiB), each a plain safetensors file holding one
  `features` tensor `(rows, tokens, dim)` and, in its metadata, the image keys of its rows: the index (32 bytes an
  image) travels inside the shards, and a reader builds it from their headers alone.
* **Write once, atomically.** A shard is streamed to a temporary name (never held whole in memory) and renamed when
  complete, so a reader sees whole shards or nothing; a killed precompute keeps its finished shards, and the next one
  encodes only what they lack. Jobs sharing a folder (a study's runs on one machine or a cluster's shared disk) take
  a file lock per share of the work, so the second waits and then finds the images done instead of encoding them
  again; should two writers still overlap, their rows are identical and the first shard by name wins.
* **Reads that do not accumulate.** Rows are read at their offset straight into the batch tensor (one unbuffered
  read, one copy), not memory-mapped: mapped pages count towards the process's resident memory for as long as the
  mapping lives, while the kernel's page cache keeps hot shards fast for free. A process's memory stays flat
  whatever the size of the cache.
* **Space checked first.** `precompute` encodes one image to learn a row's size and refuses, naming the folder and
  the bytes needed and free, before writing anything to a disk that cannot hold the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import struct
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .data.images import load_image

logger = logging.getLogger(__name__)

FORMAT = "llava-swap-feature-shard/1"  # in every shard's metadata
LAYOUT = "shards1"  # in the folder's name: a new layout starts a new folder instead of misreading an old one
SHARD_BYTES = 2**30  # rows per shard file: about 1 GiB (~900 CLIP-L/336 images in bf16)
OPEN_SHARDS = 64  # shard files kept open for reading (least recently used closed first)
SPACE_MARGIN = 1.02  # room asked of the disk beyond the rows themselves: headers, filesystem slack
# safetensors' names for the dtypes a cache stores (https://github.com/huggingface/safetensors, format.md)
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class InsufficientDiskSpace(OSError):
    """The cache folder's disk cannot hold the features about to be encoded."""

    @classmethod
    def at(cls, folder: Path, need: int, free: int, what: str) -> InsufficientDiskSpace:
        return cls(
            f"Caching vision features of {what} needs {_gb(need)} in {folder}, and its disk has {_gb(free)} free. "
            "Free some space, point vision_feature_cache to a folder on a larger disk, store a smaller "
            "vision_feature_cache_dtype (bfloat16), or set vision_feature_cache: off to encode images on the fly."
        )


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


def cache_dtype(setting: str | None, encoder_dtype: torch.dtype, mixed_precision: str | None = None) -> torch.dtype:
    """The dtype a cache stores: `setting` when given (float32, bfloat16, float16); `auto`/None: the precision the
    projector reads features at: the encoder's dtype, or the half type of a float32 encoder trained under bf16/fp16
    mixed precision (autocast rounds the projector's input to it anyway, and the cache halves)."""
    if setting not in (None, "auto"):
        if setting not in CACHE_DTYPES:
            raise ValueError(f"cache_dtype={setting!r}: use auto or one of {sorted(CACHE_DTYPES)}.")
        return CACHE_DTYPES[setting]
    if encoder_dtype == torch.float32 and mixed_precision in ("bf16", "fp16"):
        return torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return encoder_dtype if encoder_dtype in SAFETENSORS_DTYPES else torch.float32


class VisionFeatureCache:
    """Vision features per distinct image for one encoder setting, in shards under `root/<identity>-<dtype>-<layout>/`."""

    def __init__(
        self,
        root: str | os.PathLike,
        model,
        processor,
        dtype: torch.dtype | str | None = None,
        shard_bytes: int = SHARD_BYTES,
    ):
        encoder_dtype = next(model.vision_tower.parameters()).dtype
        self.dtype = cache_dtype(dtype, encoder_dtype) if not isinstance(dtype, torch.dtype) else dtype
        if self.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"Cannot cache vision features as {self.dtype}: use one of {sorted(CACHE_DTYPES)}.")
        self.identity = encoder_identity(model, processor)
        self.folder = Path(root) / f"{self.identity}-{str(self.dtype).removeprefix('torch.')}-{LAYOUT}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.processor = processor
        self.shard_bytes = shard_bytes
        self.encoded_images = 0  # images this process sent through the encoder (the work the cache saves)
        self.encoded_total = 0  # ... and all processes of the launch together (set by stages.stage_feature_cache)
        self._keys: dict[str, str] = {}  # path -> content hash, so a file is read and hashed once
        self._index: dict[str, tuple[Path, int]] = {}  # image key -> (shard, row)
        self._shards: dict[Path, _ShardLayout] = {}
        self._open: OrderedDict[Path, object] = OrderedDict()  # shard -> unbuffered file, for reading
        self._probed: dict[str, torch.Tensor] = {}  # the image check_space encoded, written by precompute

    def key(self, image) -> str:
        if isinstance(image, (str, os.PathLike)):
            path = str(image)
            if path not in self._keys:
                self._keys[path] = image_key(path)
            return self._keys[path]
        return image_key(image)

    def __len__(self) -> int:
        self.refresh()
        return len(self._index)

    def refresh(self) -> None:
        """Indexes the complete shards written since the last look (by any process); temporary files are not."""
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            if path in self._shards:
                continue
            layout = _ShardLayout.read(path)
            self._shards[path] = layout
            for row, key in enumerate(layout.keys):
                self._index.setdefault(key, (path, row))  # an overlap of two writers: identical rows, first wins

    # ----------------------------------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------------------------------

    def missing(self, images, shard: tuple[int, int] = (0, 1)) -> list[tuple[str, object]]:
        """(key, image) of the distinct images of this share that no shard holds yet, in order.

        Shares are dealt from the distinct images in order, before looking at what is on disk, so that every image
        has exactly one owner whatever the others have written already.
        """
        index, count = shard
        distinct: dict[str, object] = {}
        for image in images:
            distinct.setdefault(self.key(image), image)
        self.refresh()
        return [(key, image) for key, image in list(distinct.items())[index::count] if key not in self._index]

    def space(self, model, images, shard: tuple[int, int] = (0, 1)) -> tuple[int, int, int]:
        """(missing images of this share, bytes their features need, bytes free on the folder's disk). Encodes the
        first missing image to learn a row's size (kept: `precompute` writes it without encoding it again)."""
        items = self.missing(images, shard)
        free = shutil.disk_usage(self.folder).free
        if not items:
            return 0, 0, free
        key, image = items[0]
        if key not in self._probed:
            self._probed = {key: self._encode(model, [image])}
            self.encoded_images += 1
        row = self._probed[key][0]
        return len(items), math.ceil(len(items) * row.numel() * row.element_size() * SPACE_MARGIN), free

    def check_space(self, model, images, shard: tuple[int, int] = (0, 1)) -> tuple[int, int]:
        """(bytes the missing features of this share need, bytes free); raises InsufficientDiskSpace when they do not
        fit. Writes nothing."""
        count, need, free = self.space(model, images, shard)
        if need > free:
            raise InsufficientDiskSpace.at(self.folder, need, free, f"{count} images")
        return need, free

    def precompute(
        self,
        model,
        images,
        batch_size: int = 32,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
        check_space: bool = True,
    ) -> int:
        """Encodes every image of this share that no shard holds yet (each distinct one once); returns how many.

        `shard=(index, count)`: this process's share of the distinct images, when `count` processes fill one cache
        together. Jobs filling the same share of one folder take turns (a file lock), so the later one encodes only
        what the earlier one left. Nothing is written before the disk is known to hold the result (`check_space`).
        """
        index, count = shard
        lock = FileLock(str(self.folder / f".share-{index}-of-{count}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:  # another job fills this share of the folder: wait, then encode only what it left
            logger.info("Waiting for another job caching vision features in %s ...", self.folder)
            lock.acquire()
        try:
            self._remove_stale_temporaries(shard)
            if check_space:
                self.check_space(model, images, shard)
            items = self.missing(images, shard)
            self._write(self._encoded_batches(model, items, batch_size), items, progress, shard)
        finally:
            lock.release()
        self._probed = {}
        return len(items)

    def _encoded_batches(self, model, items, batch_size: int):
        """Features of `items` in order, a batch at a time; the image `check_space` encoded is not encoded again."""
        start = 0
        if items and items[0][0] in self._probed:
            yield self._probed.pop(items[0][0])
            start = 1
        for begin in range(start, len(items), batch_size):
            chunk = items[begin : begin + batch_size]
            features = self._encode(model, [image for _, image in chunk])
            self.encoded_images += len(chunk)
            yield features

    def _write(self, batches, items, progress: bool, shard: tuple[int, int]) -> None:
        from tqdm.auto import tqdm

        writer, rows_per_shard, done = None, None, 0
        bar = tqdm(total=len(items), desc="caching vision features", unit=" images", disable=not progress)
        try:
            for features in batches:
                if rows_per_shard is None:
                    row_bytes = features[0].numel() * features[0].element_size()
                    rows_per_shard = max(1, self.shard_bytes // row_bytes)
                position = 0
                while position < len(features):
                    if writer is None:
                        keys = [key for key, _ in items[done : done + rows_per_shard]]
                        writer = _ShardWriter(self.folder, shard, keys, features.shape[1:], self.dtype)
                    taken = min(len(features) - position, writer.remaining)
                    writer.append(features[position : position + taken])
                    position, done = position + taken, done + taken
                    if writer.remaining == 0:
                        writer.commit()
                        writer = None
                bar.update(len(features))
        finally:
            bar.close()
            if writer is not None:  # interrupted: the unfinished shard is not left to be read
                writer.discard()
        self.refresh()

    @torch.no_grad()
    def _encode(self, model, images) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            device = next(model.vision_tower.parameters()).device
            pixels = self.processor.image_processor([load_image(image) for image in images], return_tensors="pt")
            features = model.get_vision_features(pixels["pixel_values"].to(device))
        finally:
            model.train(was_training)
        if len(features) != len(images):  # rows would shift onto other images' keys
            raise ValueError(
                f"The encoder returned {len(features)} feature rows for {len(images)} images: the cache "
                "stores one row per image; set vision_feature_cache: off for this encoder."
            )
        return features.to("cpu", self.dtype).contiguous()

    def _remove_stale_temporaries(self, shard: tuple[int, int]) -> None:
        # Called under the share's lock: a temporary file of this share belongs to a writer that was killed.
        for path in self.folder.glob(f".{shard[0]}-of-{shard[1]}-*.tmp"):
            path.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------------------------------

    def features(self, images) -> torch.Tensor:
        """`(num_images, image_seq_length, vision_dim)` for the given images, in order, in the cache's dtype."""
        keys = [self.key(image) for image in images]
        if any(key not in self._index for key in keys):
            self.refresh()  # written by another process since the last look
        located = []
        for image, key in zip(images, keys, strict=True):
            if key not in self._index:
                raise KeyError(f"No cached vision features for image {image!r}: call precompute() on it first.")
            located.append(self._index[key])
        if not located:
            raise ValueError("features() needs at least one image.")
        first = self._shards[located[0][0]]
        out = torch.empty((len(located), *first.row_shape), dtype=first.dtype)
        for target, (path, row) in zip(out, located, strict=True):
            self._shards[path].read_row(self._file(path), row, target)  # straight from the file into `out`
        return out

    def _file(self, path: Path):
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        if len(self._open) >= OPEN_SHARDS:
            self._open.popitem(last=False)[1].close()
        file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close() or when evicted)
        if hasattr(os, "posix_fadvise"):  # rows come in shuffled order, each large: read-ahead would waste the disk
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        self._open[path] = file
        return file

    def close(self) -> None:
        """Closes the shard files open for reading (reads reopen them)."""
        while getattr(self, "_open", None):
            self._open.popitem()[1].close()

    __del__ = close

    def __getstate__(self) -> dict:  # to spawned data-loader workers: without open files (they reopen them)
        return {**self.__dict__, "_open": OrderedDict()}


# --------------------------------------------------------------------------------------------------------------------
# The shard file: safetensors' layout (8-byte header length, JSON header, data), written and read in place
# --------------------------------------------------------------------------------------------------------------------


class _ShardLayout:
    """Where a shard's rows are: its keys, the data's byte offset, one row's shape, dtype and size."""

    def __init__(self, keys: list[str], data_start: int, row_shape: list[int], dtype: torch.dtype):
        self.keys, self.data_start, self.row_shape, self.dtype = keys, data_start, row_shape, dtype
        self.row_bytes = math.prod(row_shape) * torch.empty((), dtype=dtype).element_size()

    @classmethod
    def read(cls, path: Path) -> _ShardLayout:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
        metadata, tensor = header.get("__metadata__", {}), header.get("features", {})
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a llava-swap feature shard ({FORMAT}); remove it from the cache folder.")
        dtype = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}[tensor["dtype"]]
        layout = cls(json.loads(metadata["keys"]), 8 + length + tensor["data_offsets"][0], tensor["shape"][1:], dtype)
        expected = layout.data_start + len(layout.keys) * layout.row_bytes
        if path.stat().st_size != expected:
            raise ValueError(f"{path} holds {path.stat().st_size} bytes, not {expected}: remove the damaged shard.")
        return layout

    def read_row(self, file, row: int, out: torch.Tensor) -> None:
        """Reads one row into `out` (contiguous, of the row's shape and dtype): one copy, from the kernel to `out`.
        At an explicit offset where the OS offers it (`preadv`): a file position shared with forked data-loader
        workers is never moved."""
        buffer = memoryview(out.view(-1).view(torch.uint8).numpy())
        start, filled = self.data_start + row * self.row_bytes, 0
        while filled < self.row_bytes:  # a read may return less than asked
            if hasattr(os, "preadv"):
                count = os.preadv(file.fileno(), [buffer[filled:]], start + filled)
            else:
                file.seek(start + filled)
                count = file.readinto(buffer[filled:])
            if not count:
                raise OSError(f"{file.name} ends inside row {row}: remove the damaged shard.")
            filled += count


class _ShardWriter:
    """Streams rows into a temporary shard file whose header (the keys, the final shape) is written first, then
    renames it into place once every row is there."""

    def __init__(self, folder: Path, shard: tuple[int, int], keys: list[str], row_shape, dtype: torch.dtype):
        name = f"{shard[0]}-of-{shard[1]}-{uuid.uuid4().hex[:12]}"
        self.final = folder / f"shard-{name}.safetensors"
        self.temporary = folder / f".{name}.tmp"
        self.remaining, self.dtype, self.row_shape = len(keys), dtype, tuple(row_shape)
        row_bytes = math.prod(row_shape) * torch.empty((), dtype=dtype).element_size()
        header = {
            "__metadata__": {"format": FORMAT, "keys": json.dumps(keys)},
            "features": {
                "dtype": SAFETENSORS_DTYPES[dtype],
                "shape": [len(keys), *row_shape],
                "data_offsets": [0, len(keys) * row_bytes],
            },
        }
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header so the data starts 8-byte aligned
        self.file = open(self.temporary, "wb")  # noqa: SIM115 (closed by commit or discard)
        try:
            self.file.write(struct.pack("<Q", len(encoded)) + encoded)
        except BaseException:
            self.discard()
            raise

    def append(self, rows: torch.Tensor) -> None:
        if tuple(rows.shape[1:]) != self.row_shape or rows.dtype != self.dtype or len(rows) > self.remaining:
            raise ValueError(f"Rows {tuple(rows.shape)} {rows.dtype} do not fit shard {self.final.name}.")
        self.file.write(rows.contiguous().view(torch.uint8).numpy().tobytes())
        self.remaining -= len(rows)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.final)

    def discard(self) -> None:
        self.file.close()
        self.temporary.unlink(missing_ok=True)


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


__all__ = ["InsufficientDiskSpace", "VisionFeatureCache", "cache_dtype", "encoder_identity", "image_key"]
