"""`tiny:clip-pretrained`: the tiny CLIP taught to see the synthetic tasks' images, built offline and cached.

A frozen random encoder cannot tell a circle from a square or left from right, so with it no LLM can learn VQA-Scene
and a study compares backbones on a task nobody can solve. This module pretrains the tiny CLIP of `tiny:clip` on
images drawn by the task generators from their own random stream, leaving out the few kinds of image that repeat
(scenes of one shape), so that no image of a task's splits is among them; supervised by the factors each generator
drew (data, not branches: `TASK_IMAGES`):

* per patch token: the shape, colour, both together, grid row and column of the scene object covering most of the patch, and
  whether the patch holds the seismic event's disc; what a token says is about its own region, as LLaVA's projector
  reads tokens one by one;
* per image, from the mean of the patch tokens (an attention head can read a mean): the number of shapes, the count
  per colour, the colour of the one shape of each kind and the kind of the one shape of each colour, the column of
  each coloured shape (0 when absent), the leftmost and rightmost shape, the seismic record's trace count, amplitude and frequency classes,
  P and S arrival times, and the event's coordinates.

Linear heads read both of the last two layers (LLaVA reads the second to last, `vision_feature_layer=-2`) and are
dropped afterwards: the checkpoint is an ordinary `CLIPVisionModel` with the `tiny:clip` config and image processor.
Training is seeded and runs in about a minute on 2 CPU cores; the result is cached under `cache_dir()` (keyed by
`build_key`: the settings, the starting config and `VERSION`) and copied from there, so a study builds it once per
machine. It is deterministic on one machine; CPU float arithmetic may differ in the last bits elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

VERSION = 2  # bump when the data, targets or training change: the cache key includes it
CACHE_ENV = "LLAVA_SWAP_CACHE"
IGNORE = -100
PATCHES = 4  # patches per side: 32 px images in 8 px patches
READ_LAYERS = (-2, -1)


@dataclass(frozen=True)
class PretrainingSettings:
    """How the encoder is pretrained; every field is part of the cache key."""

    scenes: int = 8000  # VQA-Scene images
    seismic: int = 2000  # images of each seismic task
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0


@dataclass(frozen=True)
class Target:
    """One supervised factor: read per patch token or from the image's mean token; `classes` 0 is a regression."""

    level: str  # "patch" or "image"
    classes: int


# --------------------------------------------------------------------------------------------------------------------
# What each task's images teach
# --------------------------------------------------------------------------------------------------------------------


def _scene_targets(meta: Mapping, image_size: int) -> dict:
    from ..tasks.vqa_scene import COLOURS, SHAPES

    colours, cell = sorted(COLOURS), image_size / PATCHES
    objects = meta["objects"]
    patch = {name: [0] * PATCHES**2 for name in ("shape", "colour", "kind", "row", "column")}  # 0: no object
    for index in range(PATCHES**2):
        top, left = divmod(index, PATCHES)
        box = (left * cell, top * cell, (left + 1) * cell, (top + 1) * cell)
        overlaps = [_overlap(box, obj["box"]) for obj in objects]
        if overlaps and max(overlaps) > 0:
            obj = objects[int(np.argmax(overlaps))]
            patch["shape"][index] = 1 + SHAPES.index(obj["shape"])
            patch["colour"][index] = 1 + colours.index(obj["colour"])
            # Colour and shape together: the mean token then says which coloured shapes exist ("a green triangle?").
            patch["kind"][index] = 1 + colours.index(obj["colour"]) * len(SHAPES) + SHAPES.index(obj["shape"])
            patch["row"][index], patch["column"][index] = 1 + obj["row"], 1 + obj["col"]
    columns = [obj["col"] for obj in objects]

    def extreme(edge: int) -> int:
        at_edge = [obj for obj in objects if obj["col"] == edge]
        return 1 + SHAPES.index(at_edge[0]["shape"]) if len(at_edge) == 1 else 0  # 0: none or a tie

    image = {
        "count": len(objects),
        "leftmost": extreme(min(columns)),
        "rightmost": extreme(max(columns)),
        **{f"count_{c}": sum(obj["colour"] == c for obj in objects) for c in colours},
        # What a scene question asks, readable from the mean token: the colour of the one shape of a kind, the
        # kind of the one shape of a colour, and the grid column of each coloured shape (presence and order at once).
        **{f"colour_of_{k}": _class(_unique(objects, shape=k), "colour", colours) for k in SHAPES},
        **{f"shape_of_{c}": _class(_unique(objects, colour=c), "shape", SHAPES) for c in colours},
        **{
            f"column_of_{c}_{k}": _class(_unique(objects, colour=c, shape=k), "col", (0, 1, 2))
            for c in colours
            for k in SHAPES
        },
    }
    return {**{f"patch_{k}": v for k, v in patch.items()}, **image}


def _unique(objects: list[dict], **fields) -> dict | None:
    """The one object with these field values; None when there is none or there are several."""
    found = [obj for obj in objects if all(obj[key] == value for key, value in fields.items())]
    return found[0] if len(found) == 1 else None


def _class(obj: dict | None, key: str, values) -> int:
    """1 + the position of `obj[key]` in `values`; 0 for no object (class 0 means "none" in every scene target)."""
    return 0 if obj is None else 1 + list(values).index(obj[key])


def _description_targets(meta: Mapping, image_size: int) -> dict:
    from ..tasks.seismic_description import AMPLITUDE_CLASSES, DURATION_S, FREQUENCY_CLASSES

    facts = meta["facts"]
    return {
        "traces": facts["num_traces"] - 1,
        "amplitude": sorted(AMPLITUDE_CLASSES).index(facts["amplitude_class"]),
        "frequency": sorted(FREQUENCY_CLASSES).index(facts["frequency_class"]),
        "p_arrival": facts["p_arrival_s"] / DURATION_S,
        "s_arrival": facts["s_arrival_s"] / DURATION_S,
    }


def _coordinate_targets(meta: Mapping, image_size: int) -> dict:
    x, y = meta["target"]["x"], meta["target"]["y"]
    cell = PATCHES / 1.0
    event = [0] * PATCHES**2
    event[min(PATCHES - 1, int(y * cell)) * PATCHES + min(PATCHES - 1, int(x * cell))] = 1
    return {"patch_event": event, "event_x": x, "event_y": y}


def _overlap(a, b) -> float:
    """Area shared by box `a` (left, top, right, bottom; exclusive) and pixel box `b` (inclusive corners)."""
    width = min(a[2], b[2] + 1) - max(a[0], b[0])
    height = min(a[3], b[3] + 1) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def _targets_table() -> dict[str, Target]:
    from ..tasks.seismic_description import AMPLITUDE_CLASSES, FREQUENCY_CLASSES
    from ..tasks.vqa_scene import COLOURS, MAX_OBJECTS, SHAPES

    none_or = 1  # class 0 of a patch or extreme target means "no object"
    return {
        "patch_shape": Target("patch", none_or + len(SHAPES)),
        "patch_colour": Target("patch", none_or + len(COLOURS)),
        "patch_kind": Target("patch", none_or + len(COLOURS) * len(SHAPES)),
        "patch_row": Target("patch", none_or + 3),
        "patch_column": Target("patch", none_or + 3),
        "patch_event": Target("patch", 2),
        "count": Target("image", MAX_OBJECTS + 1),
        **{f"count_{c}": Target("image", MAX_OBJECTS + 1) for c in sorted(COLOURS)},
        **{f"colour_of_{k}": Target("image", none_or + len(COLOURS)) for k in SHAPES},
        **{f"shape_of_{c}": Target("image", none_or + len(SHAPES)) for c in sorted(COLOURS)},
        # 0: absent (or several), else 1 + its grid column: presence and left/right order at once
        **{f"column_of_{c}_{k}": Target("image", none_or + 3) for c in sorted(COLOURS) for k in SHAPES},
        "leftmost": Target("image", none_or + len(SHAPES)),
        "rightmost": Target("image", none_or + len(SHAPES)),
        "traces": Target("image", 4),
        "amplitude": Target("image", len(AMPLITUDE_CLASSES)),
        "frequency": Target("image", len(FREQUENCY_CLASSES)),
        "p_arrival": Target("image", 0),
        "s_arrival": Target("image", 0),
        "event_x": Target("image", 0),
        "event_y": Target("image", 0),
    }


@dataclass(frozen=True)
class TaskImages:
    """What one task's generator contributes: the targets of an item, how many items, which items are kept."""

    targets: Callable[[Mapping, int], dict]
    count_setting: str  # the PretrainingSettings field giving the number of items drawn
    keep: Callable[[Mapping], bool] = lambda meta: True


TASK_IMAGES: dict[str, TaskImages] = {
    # Scenes of one shape are few enough (9 cells x 3 shapes x 6 colours x 2 sizes, plus the small shapes' offsets)
    # that a task's test image would often be drawn here too, and the encoder trained on what it shows. Scenes of
    # two or more shapes practically never repeat, and teach every target as well.
    "vqa_scene": TaskImages(_scene_targets, "scenes", keep=lambda meta: len(meta["objects"]) >= 2),
    "seismic_description": TaskImages(_description_targets, "seismic"),  # noise makes every image unique
    "seismic_coordinates": TaskImages(_coordinate_targets, "seismic"),  # 100 x 100 positions, random stations
}


# --------------------------------------------------------------------------------------------------------------------
# Data and training
# --------------------------------------------------------------------------------------------------------------------


def _dataset(settings: PretrainingSettings, image_size: int, mean, std) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pixel values (normalised as the CLIP processor does at the encoder's own size) and one tensor per target."""
    from ..tasks import get_task

    table = _targets_table()
    pixels, columns = [], {name: [] for name in table}
    for task, source in TASK_IMAGES.items():
        # A stream of its own, and only images that practically never repeat (TASK_IMAGES): not the images of a
        # task's train/val/test splits.
        rng = random.Random(f"encoder-pretraining-{task}-{settings.seed}")
        for item in get_task(task).module._items(rng, getattr(settings, source.count_setting), image_size):
            if not source.keep(item.meta):
                continue
            pixels.append(np.asarray(item.image.convert("RGB"), dtype=np.float32))
            values = source.targets(item.meta, image_size)
            for name, target in table.items():
                default = [IGNORE] * PATCHES**2 if target.level == "patch" else IGNORE
                columns[name].append(values.get(name, default if target.classes else float("nan")))
    array = (np.stack(pixels) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    targets = {
        name: torch.tensor(values, dtype=torch.long if table[name].classes else torch.float32)
        for name, values in columns.items()
    }
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), targets


class _Heads(nn.Module):
    """Linear read-outs of one layer: per patch token, and from the mean patch token."""

    def __init__(self, hidden: int, table: Mapping[str, Target]):
        super().__init__()
        self.table = dict(table)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, max(1, t.classes)) for name, t in table.items()})

    def loss(self, tokens: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        patches = tokens[:, 1:]  # CLIP's CLS token first; LLaVA drops it
        pooled = patches.mean(1)
        total = tokens.new_zeros(())
        for name, target in self.table.items():
            wanted = targets[name]
            if target.level == "patch":
                logits = self.heads[name](patches).flatten(0, 1)
                wanted = wanted.flatten()
            else:
                logits = self.heads[name](pooled)
            if target.classes:
                if (wanted != IGNORE).any():
                    total = total + nn.functional.cross_entropy(logits, wanted, ignore_index=IGNORE)
            else:
                known = ~wanted.isnan()
                if known.any():
                    total = total + 10.0 * nn.functional.mse_loss(logits[known, 0], wanted[known])
        return total


def pretrain_clip(path: str | os.PathLike, settings: PretrainingSettings | None = None) -> pathlib.Path:
    """Writes a tiny CLIP pretrained on the synthetic tasks' images to `path` (no cache: see `save_pretrained_clip`)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    from . import _VISION_SPECS, _deterministic_init, _no_progress_bars

    settings = settings or PretrainingSettings()
    spec = _VISION_SPECS["clip"]
    config = spec.config_cls(**spec.config)
    processor = CLIPImageProcessorPil(**spec.processor)
    pixels, targets = _dataset(settings, config.image_size, processor.image_mean, processor.image_std)
    with _deterministic_init():
        torch.random.default_generator.manual_seed(settings.seed)  # the CPU's only: the caller's CUDA RNG is untouched
        model = CLIPVisionModel(config).to(torch.float32)
        heads = nn.ModuleList(_Heads(config.hidden_size, _targets_table()) for _ in READ_LAYERS)
        parameters = [*model.parameters(), *heads.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.1
        )
        generator = torch.Generator().manual_seed(settings.seed)
        order = torch.randperm(len(pixels), generator=generator)
        position = 0
        model.train()
        for step in range(settings.steps):
            if position + settings.batch_size > len(order):
                order, position = torch.randperm(len(pixels), generator=generator), 0
            batch = order[position : position + settings.batch_size]
            position += settings.batch_size
            hidden = model(pixel_values=pixels[batch], output_hidden_states=True).hidden_states
            loss = sum(
                head.loss(hidden[layer], {name: values[batch] for name, values in targets.items()})
                for head, layer in zip(heads, READ_LAYERS, strict=True)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 250 == 0 or step == settings.steps - 1:
                logger.info(f"tiny:clip-pretrained step {step + 1}/{settings.steps}: loss {loss.item():.3f}")
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    (out / "pretraining.json").write_text(json.dumps({"version": VERSION, **asdict(settings)}, indent=1))
    return out


def cache_dir() -> pathlib.Path:
    """Where built encoders are kept: `$LLAVA_SWAP_CACHE`, else `$XDG_CACHE_HOME/llava_swap` (~/.cache/llava_swap)."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "llava_swap"


def save_pretrained_clip(path: str | os.PathLike, settings: PretrainingSettings | None = None) -> pathlib.Path:
    """`tiny:clip-pretrained` at `path`: copied from the cache, which is built first when missing.

    Concurrent callers (ranks of one launch, jobs of one study) wait on a file lock: one builds, the others copy.
    """
    from filelock import FileLock

    cached = cache_dir() / "tiny" / f"clip-pretrained-{build_key(settings)[:16]}"
    cached.parent.mkdir(parents=True, exist_ok=True)
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cached) + ".lock"):
        if not cached.exists():
            logger.info(f"Pretraining tiny:clip-pretrained on synthetic images (once per machine) into {cached}")
            # Built beside the cache and renamed into place: an interrupted build never looks finished.
            with tempfile.TemporaryDirectory(dir=cached.parent) as scratch:
                built = pretrain_clip(pathlib.Path(scratch) / "model", settings)
                built.rename(cached)
        # Copied under the lock too, each file through a temporary name: a process loading `out` (another rank that
        # got here first) never reads a half-written file.
        for item in cached.iterdir():
            if not (out / item.name).exists() or (out / item.name).read_bytes() != item.read_bytes():
                partial = out / f".{item.name}.partial"
                shutil.copy2(item, partial)
                os.replace(partial, out / item.name)
    return out


def build_key(settings: PretrainingSettings | None = None) -> str:
    """What the built encoder depends on: VERSION, the settings and the `tiny:clip` config and image processor it
    starts from. A study puts it in its runs' fingerprints, so a rebuilt encoder retrains them."""
    from . import _VISION_SPECS

    spec = _VISION_SPECS["clip"]
    identity = {
        "version": VERSION,
        **asdict(settings or PretrainingSettings()),
        "config": dict(spec.config),
        "processor": dict(spec.processor),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


__all__ = ["PretrainingSettings", "build_key", "cache_dir", "pretrain_clip", "save_pretrained_clip"]
