"""Counterfactual image dependence on real tiny models: a model that cannot see the image scores exactly 0, one that
can does not; the counterfactual images (blank, another item's) are what they claim to be; results are plain JSON."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from llava_swap.analysis.image_dependence import blank_image, image_dependence, other_images, relevancy_blank_share
from llava_swap.tasks import get_task


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqa_scene")
    task = get_task("vqa_scene")
    task.generate(folder, n_train=4, n_val=1, n_test=8, seed=0, image_size=32)
    return [record.to_row() for record in task.load(folder, "test").records]


@pytest.fixture(scope="module")
def model_and_processor(built):
    return built("llama3", "clip")


@pytest.fixture(scope="module")
def blind_model(model_and_processor):
    """The same model with every projector weight and bias zeroed: every image reaches the LM as the same zeros."""
    model = copy.deepcopy(model_and_processor[0])
    with torch.no_grad():
        for parameter in model.multi_modal_projector.parameters():
            parameter.zero_()
    return model


def test_zeroed_projector_has_no_image_dependence(blind_model, model_and_processor, rows):
    result = image_dependence(blind_model, model_and_processor[1], rows, seed=0)
    for name in ("blank", "other"):
        summary = result["summary"][name]
        assert abs(summary["estimate"]) < 0.01  # the acceptance criterion
        assert abs(summary["low"]) < 0.01 and abs(summary["high"]) < 0.01
        # Same batches, same zeros in place of every image: identical probabilities, not just close ones.
        assert np.allclose(result["real"], result[name], rtol=0, atol=1e-7)
        assert summary["p_value"] == 1.0


def test_image_dependence_sees_a_model_that_reads_the_image(model_and_processor, rows):
    model, processor = model_and_processor
    result = image_dependence(model, processor, rows, seed=0)
    real = np.asarray(result["real"])
    # An untrained tiny model gives every answer ~1/vocab (~5e-4), so absolute gaps are ~1e-5; relative gaps of
    # about 1% are the signal (the blind model above has exactly none).
    for name in ("blank", "other"):
        relative = np.abs(real - np.asarray(result[name])) / real
        assert (relative > 0).all(), name
        assert relative.max() > 1e-3, name
        assert result["summary"][name]["estimate"] != 0.0
    assert result["ids"] == [row["id"] for row in rows]
    assert all(own != other for own, other in zip(result["ids"], result["other_ids"], strict=True))


def test_results_are_json_serialisable(model_and_processor, rows):
    model, processor = model_and_processor
    result = image_dependence(model, processor, rows[:4], seed=1, batch_size=2)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert set(result) == {"n", "seed", "ids", "other_ids", "real", "blank", "other", "summary"}
    assert set(result["summary"]) == {"blank", "other"}
    assert {"estimate", "low", "high", "p_value", "test"} <= set(result["summary"]["blank"])
    assert len(result["real"]) == len(result["blank"]) == len(result["other"]) == result["n"] == 4


def test_other_images_is_a_seeded_derangement(rows, tmp_path):
    swapped = other_images(rows, seed=0)
    assert all(new != row["images"] for row, new in zip(rows, swapped, strict=True))
    assert sorted(image for images in swapped for image in images) == sorted(row["images"][0] for row in rows)
    assert other_images(rows, seed=0) == swapped
    assert any(other_images(rows, seed=seed) != swapped for seed in range(1, 5))

    # A byte-identical copy of a row's image under another path is never given to that row.
    twin = tmp_path / "twin.png"
    shutil.copyfile(rows[0]["images"][0], twin)
    with_twin = rows[:3] + [{**rows[3], "images": [str(twin)]}]
    for seed in range(20):
        got = other_images(with_twin, seed=seed)
        assert got[0] != [str(twin)] and got[3] != rows[0]["images"]
        assert all(new != row["images"] for row, new in zip(with_twin, got, strict=True))

    with pytest.raises(ValueError, match="only row"):
        other_images(rows[:1], seed=0)


def test_blank_image_is_uniform_background():
    image = Image.new("RGB", (40, 30), (250, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((2, 2, 12, 12), fill=(255, 0, 0))
    draw.ellipse((20, 5, 35, 20), fill=(0, 0, 255))
    blank = blank_image(image)
    assert blank.size == image.size and blank.mode == image.mode
    assert blank.getcolors() == [(40 * 30, (250, 240, 230))]

    grey = Image.new("L", (8, 8), 17)
    grey.putpixel((0, 0), 200)
    assert blank_image(grey).getcolors() == [(64, 17)]


def test_blank_image_of_a_task_image_path(rows):
    path = rows[0]["images"][0]
    with Image.open(path) as opened:
        original = opened.copy()
    background = max(original.getcolors(maxcolors=original.width * original.height))[1]
    blank = blank_image(path)
    assert blank.size == original.size and blank.mode == original.mode
    assert blank.getcolors() == [(original.width * original.height, background)]
    assert blank.tobytes() != original.tobytes()  # the scene had something drawn on it


def test_relevancy_blank_share(model_and_processor, rows):
    model, processor = model_and_processor
    share = relevancy_blank_share(model, processor, rows[:2])
    assert isinstance(share, float) and 0.0 <= share <= 1.0
    assert relevancy_blank_share(model, processor, rows[:2]) == share
    assert relevancy_blank_share(model, processor, []) is None  # nothing explained (relevancy_examples: 0)


def test_the_blank_control_explains_the_logits_it_is_given(model_and_processor, rows):
    from llava_swap.analysis import relevancy as relevancy_module

    model, processor = model_and_processor
    explained = []
    original = relevancy_module.relevancy

    def recording(model, inputs, target_token=None):
        result = original(model, inputs, target_token)
        explained.append(result["target_token"])
        return result

    relevancy_module.relevancy = recording
    try:
        relevancy_blank_share(model, processor, rows[:2], target_tokens=[5, 7])
    finally:
        relevancy_module.relevancy = original
    assert explained == [5, 7]


def test_given_real_probabilities_are_used_and_checked(model_and_processor, rows):
    model, processor = model_and_processor
    computed = image_dependence(model, processor, rows, seed=0)
    reused = image_dependence(model, processor, rows, seed=0, real=computed["real"])
    assert reused["summary"] == computed["summary"]
    with pytest.raises(ValueError, match="got 1 real-image probabilities for"):
        image_dependence(model, processor, rows, real=[0.5])
