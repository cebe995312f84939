"""`tiny:clip-pretrained`: a deterministic, cached encoder whose features say what the synthetic images show."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessorPil, CLIPVisionModel

from llava_swap import tiny
from llava_swap.tiny import _VISION_SPECS
from llava_swap.tiny import pretraining as P

QUICK = P.PretrainingSettings(scenes=48, seismic=16, steps=3, batch_size=16)


def _digests(folder) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_pretraining_is_deterministic_and_writes_a_plain_clip(tmp_path):
    first = P.pretrain_clip(tmp_path / "a", QUICK)
    second = P.pretrain_clip(tmp_path / "b", QUICK)
    assert _digests(first) == _digests(second)
    model = CLIPVisionModel.from_pretrained(first)
    assert model.config.to_dict() | {"_name_or_path": ""} == CLIPVisionModel.from_pretrained(
        tiny.save_vision_model("clip", tmp_path / "random")
    ).config.to_dict() | {"_name_or_path": ""}
    random_state = CLIPVisionModel.from_pretrained(tmp_path / "random").state_dict()
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, random_state[name])]
    assert changed, "three steps of training changed no weight"


def test_the_cache_builds_once_and_copies(tmp_path, monkeypatch):
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "cache"))
    first = P.save_pretrained_clip(tmp_path / "one", QUICK)
    (cached,) = [path for path in (tmp_path / "cache" / "tiny").iterdir() if path.is_dir()]
    stamp = {path.name: path.stat().st_mtime_ns for path in cached.iterdir()}
    second = P.save_pretrained_clip(tmp_path / "two", QUICK)
    assert _digests(first) == _digests(second) == _digests(cached)
    assert {path.name: path.stat().st_mtime_ns for path in cached.iterdir()} == stamp  # not rebuilt
    other = P.save_pretrained_clip(tmp_path / "three", P.PretrainingSettings(scenes=32, seismic=8, steps=2))
    assert _digests(other) != _digests(first)  # other settings, another cache entry
    assert len([path for path in (tmp_path / "cache" / "tiny").iterdir() if path.is_dir()]) == 2


def test_scene_targets_name_what_covers_each_patch():
    from llava_swap.tasks.vqa_scene import COLOURS, SHAPES

    # A large red square filling the top-left grid cell (pixels 1..9) and a small blue circle in the bottom right.
    objects = [
        {"shape": "square", "colour": "red", "size": "large", "row": 0, "col": 0, "box": [1, 1, 9, 9]},
        {"shape": "circle", "colour": "blue", "size": "small", "row": 2, "col": 2, "box": [25, 25, 30, 30]},
    ]
    targets = P._scene_targets({"objects": objects}, 32)
    colours = sorted(COLOURS)
    assert targets["patch_shape"][0] == 1 + SHAPES.index("square")
    assert targets["patch_colour"][0] == 1 + colours.index("red")
    assert targets["patch_shape"][15] == 1 + SHAPES.index("circle")
    assert targets["patch_row"][15] == targets["patch_column"][15] == 3
    assert targets["patch_shape"][6] == 0  # an empty patch
    assert targets["count"] == 2 and targets["count_red"] == 1 and targets["count_green"] == 0
    assert targets["leftmost"] == 1 + SHAPES.index("square") and targets["rightmost"] == 1 + SHAPES.index("circle")


def test_an_unknown_kind_lists_the_pretrained_one(tmp_path):
    with pytest.raises(ValueError, match="clip-pretrained"):
        tiny.save_vision_model("vit", tmp_path)


def _probe_accuracy(encoder, pixels, labels, patch: bool) -> float:
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        tokens = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    features = tokens.reshape(-1, tokens.shape[-1]) if patch else tokens.mean(1)
    target = labels.reshape(-1) if patch else labels
    features, target = features.numpy(), target.numpy()
    half = len(target) // 2
    probe = LogisticRegression(max_iter=2000).fit(features[:half], target[:half])
    return float(probe.score(features[half:], target[half:]))


@pytest.mark.slow
def test_the_default_pretrained_encoder_sees_shapes_counts_and_seismic_classes(tmp_path, monkeypatch):
    """The full build (about a minute), probed linearly on images it never saw: it reads shape, count and the
    seismic amplitude class clearly better than the random tiny CLIP at the layer LLaVA reads."""
    monkeypatch.setenv(P.CACHE_ENV, os.environ.get(P.CACHE_ENV, str(P.cache_dir())))
    pretrained = CLIPVisionModel.from_pretrained(tiny.save_vision_model("clip-pretrained", tmp_path / "p")).eval()
    random_clip = CLIPVisionModel.from_pretrained(tiny.save_vision_model("clip", tmp_path / "r")).eval()
    processor = CLIPImageProcessorPil(**_VISION_SPECS["clip"].processor)
    held_out = P.PretrainingSettings(scenes=800, seismic=400, seed=12345)  # another stream: unseen images
    pixels, targets = P._dataset(held_out, 32, processor.image_mean, processor.image_std)
    scenes = targets["count"] != P.IGNORE
    description = targets["amplitude"] != P.IGNORE
    for name, rows, patch in (
        ("patch_shape", scenes, True),
        ("count", scenes, False),
        ("amplitude", description, False),
    ):
        gained = _probe_accuracy(pretrained, pixels[rows], targets[name][rows], patch)
        baseline = _probe_accuracy(random_clip, pixels[rows], targets[name][rows], patch)
        assert gained > baseline + 0.05, (name, gained, baseline)
    assert np.isfinite(gained)


def test_pretraining_leaves_out_the_scenes_that_repeat():
    """Scenes of one shape are few and would include the tasks' test images: none is drawn for pretraining."""
    processor = CLIPImageProcessorPil(**_VISION_SPECS["clip"].processor)
    _, targets = P._dataset(QUICK, 32, processor.image_mean, processor.image_std)
    counts = targets["count"][targets["count"] != P.IGNORE]
    assert len(counts) > 0 and int(counts.min()) >= 2


def test_a_rebuilt_encoder_changes_the_study_fingerprint(tmp_path, monkeypatch):
    from llava_swap.study import default_study, variant_key, variant_recipe

    assert tiny.build_key("clip") is None and tiny.build_key("clip-pretrained") == P.build_key()
    study = default_study()
    data = {"train": tmp_path / "train.json", "pretrain": tmp_path / "pretrain.json"}
    for path in data.values():
        path.write_text("[]")
    recipe = variant_recipe(study, study.variants[0], data, tmp_path, seed=0)
    before = variant_key(recipe, data)
    monkeypatch.setattr(P, "VERSION", P.VERSION + 1)
    assert variant_key(recipe, data) != before
