"""Never pay twice for the frozen encoder; waste no padding; and prove both change nothing but speed."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from _helpers import chat_image
from llava_swap.collator import LlavaSwapCollator
from llava_swap.feature_cache import VisionFeatureCache
from llava_swap.training import Recipe, default_recipe, run_recipe


def _rows(tmp_path, count=6, distinct=4):
    rows = []
    for index in range(count):
        path = tmp_path / f"image-{index % distinct}.png"
        if not path.exists():
            chat_image(index % distinct).save(path)
        question = "What colour is it?" + " Please answer." * index  # different lengths: padding to remove
        rows.append(
            {
                "id": f"r{index}",
                "images": [str(path)],
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "red " * (index + 1)}]},
                ],
            }
        )
    return rows


def test_cached_and_packed_batches_give_the_pixel_batch_loss(built, tmp_path):
    model, processor = built("llama3", "clip")
    rows = _rows(tmp_path)
    cache = VisionFeatureCache(tmp_path / "cache", model, processor)
    assert cache.precompute(model, [image for row in rows for image in row["images"]], progress=False) == 4
    pixels = LlavaSwapCollator(processor)(rows)
    cached = LlavaSwapCollator(processor, feature_cache=cache)(rows)
    packed = LlavaSwapCollator(processor, feature_cache=cache, padding_free=True)(rows)
    assert "pixel_values" not in cached and cached["image_features"].shape == (6, 16, 64)
    assert torch.equal(cached["input_ids"], pixels["input_ids"]) and torch.equal(cached["labels"], pixels["labels"])
    assert packed["input_ids"].shape == (1, int(pixels["attention_mask"].sum()))  # not one padding token
    with torch.no_grad():
        reference = model(**pixels).loss
        assert abs(model(**cached).loss - reference) <= 1e-5
        assert abs(model(**packed).loss - reference) <= 1e-5


def test_cache_is_invalidated_by_another_encoder_or_layer(built, tmp_path):
    (clip, processor), (layer_minus_1, _), (siglip, siglip_processor) = (
        built("llama3", "clip"),
        built("llama3", "clip", vision_feature_layer=-1),
        built("llama3", "siglip"),
    )
    rows = _rows(tmp_path, count=2, distinct=2)
    images = [image for row in rows for image in row["images"]]
    folders = set()
    for model, model_processor in ((clip, processor), (layer_minus_1, processor), (siglip, siglip_processor)):
        cache = VisionFeatureCache(tmp_path / "cache", model, model_processor)
        assert cache.precompute(model, images, progress=False) == 2  # nothing reused across settings
        folders.add(cache.folder)
    assert len(folders) == 3
    again = VisionFeatureCache(tmp_path / "cache", clip, processor)
    assert again.precompute(clip, images, progress=False) == 0  # same setting: every image found
    with torch.no_grad():
        pixels = processor.image_processor([chat_image(0)], return_tensors="pt")["pixel_values"]
        assert torch.equal(again.features([images[0]])[0], clip.get_vision_features(pixels)[0])
    chat_image(7).save(tmp_path / "image-new.png")
    with pytest.raises(KeyError, match="precompute"):
        again.features([str(tmp_path / "image-new.png")])


def test_shards_are_safetensors_files_indexed_by_their_own_headers(built, tmp_path):
    """Rows go into shards of about `shard_bytes`, each a safetensors file that safetensors itself reads, with the
    image keys in its metadata: a fresh reader finds every row, and disk per image is the features' size."""
    from safetensors import safe_open

    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=7, distinct=7)]
    one_image = 16 * 64 * 4  # 16 tokens x 64 features in float32
    cache = VisionFeatureCache(tmp_path / "cache", model, processor, shard_bytes=3 * one_image)
    assert cache.precompute(model, images, batch_size=2, progress=False) == 7
    shards = sorted(cache.folder.glob("shard-*.safetensors"))
    assert len(shards) == 3 and not list(cache.folder.glob("*.tmp"))  # 3 + 3 + 1 rows, no leftovers
    data = sum(path.stat().st_size for path in shards)
    assert 7 * one_image < data < 7 * one_image * 1.5  # rows, plus a header of keys per shard
    fresh = VisionFeatureCache(tmp_path / "cache", model, processor)
    with torch.no_grad():
        pixels = processor.image_processor([Image.open(path) for path in images], return_tensors="pt")
        expected = model.get_vision_features(pixels["pixel_values"])
    assert len(fresh) == 7 and torch.equal(fresh.features(images), expected)
    by_key = {fresh.key(image): image for image in images}
    for path in shards:  # each shard's rows are the features of the images its keys name, in order
        with safe_open(str(path), framework="pt") as shard:
            named = [by_key.pop(key) for key in json.loads(shard.metadata()["keys"])]
            assert torch.equal(shard.get_tensor("features"), fresh.features(named))
    assert by_key == {}


def test_the_cache_stores_the_stated_dtype(built, tmp_path):
    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=2, distinct=2)]
    full = VisionFeatureCache(tmp_path / "cache", model, processor)
    half = VisionFeatureCache(tmp_path / "cache", model, processor, dtype="bfloat16")
    assert full.folder != half.folder and half.folder.name.endswith("-bfloat16-shards1")
    full.precompute(model, images, progress=False)
    half.precompute(model, images, progress=False)
    assert half.features(images).dtype == torch.bfloat16
    assert torch.equal(half.features(images), full.features(images).to(torch.bfloat16))
    with pytest.raises(ValueError, match="cache_dtype='int8'"):
        VisionFeatureCache(tmp_path / "cache", model, processor, dtype="int8")


def test_cache_dtype_follows_the_encoder_and_mixed_precision():
    from llava_swap import feature_cache, recipes
    from llava_swap.feature_cache import cache_dtype

    assert set(recipes.CACHE_DTYPES) == {"auto", *feature_cache.CACHE_DTYPES}  # what a recipe accepts, the cache stores

    assert cache_dtype("auto", torch.float32) == torch.float32
    assert cache_dtype("auto", torch.float32, "bf16") == torch.bfloat16
    assert cache_dtype("auto", torch.float32, "fp16") == torch.float16
    assert cache_dtype("auto", torch.bfloat16) == torch.bfloat16
    assert cache_dtype("float32", torch.bfloat16, "bf16") == torch.float32


class _Interrupted(RuntimeError):
    pass


class _DiesAfter:
    """The model, whose encoder stops the process's work (an exception, as a kill would) after `batches` batches."""

    def __init__(self, model, batches: int):
        self.model, self.batches = model, batches

    def __getattr__(self, name):
        return getattr(self.model, name)

    def get_vision_features(self, pixel_values):
        if self.batches == 0:
            raise _Interrupted
        self.batches -= 1
        return self.model.get_vision_features(pixel_values)


def test_an_interrupted_precompute_resumes_without_encoding_finished_shards_again(built, tmp_path):
    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=9, distinct=9)]
    one_image = 16 * 64 * 4
    cache = VisionFeatureCache(tmp_path / "cache", model, processor, shard_bytes=2 * one_image)
    with pytest.raises(_Interrupted):  # the probe, then batches of 2: rows 0-4 encoded, shards {0,1} {2,3} written
        cache.precompute(_DiesAfter(model, batches=3), images, batch_size=2, progress=False)
    assert len(list(cache.folder.glob("shard-*.safetensors"))) == 2 and not list(cache.folder.glob("*.tmp"))
    resumed = VisionFeatureCache(tmp_path / "cache", model, processor, shard_bytes=2 * one_image)
    assert resumed.precompute(model, images, batch_size=2, progress=False) == 5  # only the rows no shard holds
    reference = VisionFeatureCache(tmp_path / "reference", model, processor)
    reference.precompute(model, images, progress=False)
    assert torch.equal(resumed.features(images), reference.features(images))


class _TwoRowsPerImage(_DiesAfter):
    def get_vision_features(self, pixel_values):
        return self.model.get_vision_features(pixel_values).repeat(2, 1, 1)  # e.g. a multi-crop encoder


def test_an_encoder_giving_several_rows_per_image_is_refused(built, tmp_path):
    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=2, distinct=2)]
    cache = VisionFeatureCache(tmp_path / "cache", model, processor)
    with pytest.raises(ValueError, match="2 feature rows for 1 images"):
        cache.precompute(_TwoRowsPerImage(model, batches=9), images, progress=False)
    assert len(cache) == 0


def test_a_precompute_killed_mid_shard_leaves_nothing_a_reader_sees(built, tmp_path):
    """A writer killed outright (no cleanup) leaves a temporary file: readers never index it, and the next precompute
    of that share removes it."""
    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=3, distinct=3)]
    cache = VisionFeatureCache(tmp_path / "cache", model, processor)
    (cache.folder / ".0-of-1-deadbeef0000.tmp").write_bytes(b"half a shard")
    assert len(cache) == 0
    assert cache.precompute(model, images, progress=False) == 3
    assert not list(cache.folder.glob("*.tmp")) and len(cache) == 3


CONCURRENT_JOB = """
import json, sys, torch
from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor
from llava_swap.feature_cache import VisionFeatureCache
model_dir, root, images, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
model, processor = LlavaSwapForCausalLM.from_pretrained(model_dir), LlavaSwapProcessor.from_pretrained(model_dir)
cache = VisionFeatureCache(root, model, processor, shard_bytes=16 * 64 * 4)
encoded = cache.precompute(model, images, batch_size=1, progress=False)
torch.save(cache.features(images), out)
print(json.dumps({"encoded": encoded}))
"""


def test_concurrent_jobs_share_one_cache_without_partial_reads_or_double_work(built, tmp_path):
    """Two study jobs fill one cache at once (separate processes): they take turns, so every image is encoded once in
    all, both read identical features, and a reader polling the folder meanwhile only ever finds whole shards."""
    import subprocess
    import sys

    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=24, distinct=24)]
    root, model_dir = tmp_path / "cache", tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONCURRENT_JOB,
                str(model_dir),
                str(root),
                json.dumps(images),
                str(tmp_path / f"{i}.pt"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    reader = VisionFeatureCache(root, model, processor)
    while any(job.poll() is None for job in jobs):
        reader.refresh()  # raises on a shard whose size does not match its header
    outputs = [json.loads(job.communicate()[0]) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0]
    assert sorted(output["encoded"] for output in outputs) == [0, 24]
    first, second = (torch.load(tmp_path / f"{i}.pt") for i in range(2))
    assert torch.equal(first, second) and len(reader) == 24 and torch.equal(reader.features(images), first)


def test_a_full_disk_is_refused_before_anything_is_written(built, tmp_path, monkeypatch):
    import shutil

    from llava_swap.feature_cache import InsufficientDiskSpace

    model, processor = built("llama3", "clip")
    images = [row["images"][0] for row in _rows(tmp_path, count=4, distinct=4)]
    cache = VisionFeatureCache(tmp_path / "cache", model, processor)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))  # a nearly full disk
    with pytest.raises(
        InsufficientDiskSpace, match=r"of 4 images needs 0\.00 GB in .*-shards1, and its disk has 0\.00 GB"
    ):
        cache.precompute(model, images, progress=False)
    assert not list(cache.folder.iterdir()) or all(p.suffix == ".lock" for p in cache.folder.iterdir())


@pytest.mark.parametrize(("setting", "falls_back"), [("auto", True), ("on", False)])
def test_a_stage_on_a_full_disk_encodes_on_the_fly_under_auto_and_stops_under_on(
    built, tmp_path, monkeypatch, caplog, setting, falls_back
):
    import logging
    import shutil

    from llava_swap.feature_cache import InsufficientDiskSpace
    from llava_swap.stages import stage_feature_cache

    model, processor = built("llama3", "clip")
    rows = _rows(tmp_path, count=4, distinct=4)
    recipe = default_recipe().to_dict()
    recipe["vision_feature_cache"] = setting
    recipe = Recipe.from_dict(recipe)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    stage = recipe.stages[1]
    if falls_back:
        with caplog.at_level(logging.INFO, logger="llava_swap.stages"):
            assert stage_feature_cache(model, processor, stage, rows, recipe, tmp_path / "out") is None
        assert "vision feature cache: off (auto: the disk cannot hold it)" in caplog.text
    else:
        with pytest.raises(InsufficientDiskSpace, match="needs .* GB in .*free"):
            stage_feature_cache(model, processor, stage, rows, recipe, tmp_path / "out")


def test_encoder_runs_once_per_distinct_image_across_epochs_stages_and_backbones(tmp_path):
    from torch.nn.modules.module import register_module_forward_hook
    from transformers import CLIPVisionModel

    calls = []

    def count_encoded_images(module, inputs, output):  # a global forward hook: every model run_recipe builds
        if isinstance(module, CLIPVisionModel):
            calls.append(output.last_hidden_state.shape[0])

    hook = register_module_forward_hook(count_encoded_images)
    try:
        distinct = _train_two_backbones_on_one_cache(tmp_path)
    finally:
        hook.remove()
    # 2 + 3 epochs over 24 images in two stages, twice: every distinct image went through the encoder exactly once.
    assert sum(calls) == distinct and 0 < distinct <= 24


def _train_two_backbones_on_one_cache(tmp_path) -> int:
    shared_cache = tmp_path / "shared-cache"
    distinct = None
    for backbone in ("tiny:llama2", "tiny:llama3"):  # two backbones of a study, one cache
        recipe = default_recipe().to_dict()
        recipe.update(output_dir=str(tmp_path / backbone[5:]), report_to=[], vision_feature_cache=str(shared_cache))
        recipe["model"]["language_model"] = backbone
        recipe["data"].update(synthetic_train=24, synthetic_test=4, eval_samples=0)
        recipe["stages"][0].update(num_train_epochs=2, per_device_train_batch_size=8)
        recipe["stages"][1].update(num_train_epochs=3, per_device_train_batch_size=8)
        summary = run_recipe(Recipe.from_dict(recipe))
        if distinct is None:
            distinct = sum(len(_shard_keys(path)) for path in shared_cache.rglob("shard-*.safetensors"))
        assert all(stage.global_step > 0 for stage in summary.stages.values())
    return distinct


def _shard_keys(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as shard:
        return json.loads(shard.metadata()["keys"])


def _trainer(model, processor, rows, tmp_path, **settings):
    from datasets import Dataset
    from trl import SFTConfig

    from llava_swap.trainer import LlavaSwapSFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        **settings,
    )
    collate = LlavaSwapCollator(processor)
    return LlavaSwapSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate, processing_class=processor
    )


def _losses_and_grads(trainer, model, batch):
    """(loss, gradients, positions through the LM head module) from llava-swap's compute_loss, then from TRL's."""
    from trl import SFTTrainer

    projected, results = [], []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: projected.append(i[0].shape[-2]))
    labelled = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()))
    for compute_loss in (trainer.compute_loss, lambda *a, **k: SFTTrainer.compute_loss(trainer, *a, **k)):
        model.zero_grad()
        projected.clear()
        loss = compute_loss(model, dict(batch), num_items_in_batch=labelled)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, list(projected)))
    hook.remove()
    (ours, our_grads, our_projected), (trls, trl_grads, _) = results
    assert abs(float(ours) - float(trls)) <= 1e-6
    assert our_grads.keys() == trl_grads.keys()
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    return our_projected


def test_trainer_loss_projects_only_answer_positions_and_equals_trls(built, tmp_path):
    import copy

    model, processor = built("llama3", "clip")
    model = copy.deepcopy(model)  # the trainer patches the model's forward; keep the shared fixture untouched
    rows = _rows(tmp_path)
    trainer = _trainer(model, processor, rows, tmp_path)
    model.train()
    cache = VisionFeatureCache(tmp_path / "cache", model, processor)
    cache.precompute(model, [image for row in rows for image in row["images"]], progress=False)
    for padding_free in (True, False):  # packed from the feature cache; padded rows from pixels
        collate = LlavaSwapCollator(processor, feature_cache=cache if padding_free else None, padding_free=padding_free)
        batch = collate(rows)
        projected = _losses_and_grads(trainer, model, batch)
        if padding_free:  # a single row: exactly the labelled positions reach the LM head
            assert projected == [int((batch["labels"][:, 1:] != -100).sum())]
        else:  # padded rows share one index list: the positions labelled in any row, fewer than the sequence
            assert projected == [int((batch["labels"][:, 1:] != -100).any(dim=0).sum())]
            assert projected[0] < batch["input_ids"].shape[1] - 1
    metrics = trainer._metrics["train"]  # ours then TRL's, per batch: the logged metrics agree too
    for name in ("entropy", "mean_token_accuracy"):
        assert len(metrics[name]) == 4
        assert metrics[name][0] == pytest.approx(metrics[name][1], abs=1e-5)
        assert metrics[name][2] == pytest.approx(metrics[name][3], abs=1e-5)


def test_trainer_leaves_large_logits_and_prompt_learning_to_trl(built, tmp_path, monkeypatch):
    import copy

    from peft import PromptTuningConfig, get_peft_model

    from llava_swap import trainer as trainer_module

    model, processor = built("llama3", "clip")
    rows = _rows(tmp_path)
    batch = LlavaSwapCollator(processor)(rows)
    # Logits past the budget: TRL's chunked kernel scores the batch (it uses the head's weight, not the module)
    plain = copy.deepcopy(model)
    trainer = _trainer(plain, processor, rows, tmp_path)
    plain.train()
    monkeypatch.setattr(trainer_module, "LOGITS_BUDGET", 0)
    assert _losses_and_grads(trainer, plain, batch) == []
    monkeypatch.undo()
    assert _losses_and_grads(trainer, plain, batch) != []
    # Prompt tuning prepends virtual tokens and shifts the labels inside the forward: TRL's path, PEFT's own loss
    prompted = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    trainer = _trainer(prompted, processor, rows, tmp_path)
    prompted.train()
    assert _losses_and_grads(trainer, prompted, batch) == []
    with torch.no_grad():
        reference = prompted(**batch).loss
        assert abs(float(trainer.compute_loss(prompted, dict(batch))) - float(reference)) <= 1e-6


def test_length_grouping_keeps_modalities_apart_and_every_sample_once():
    from llava_swap.sampler import modality_length_grouped_indices

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 600, (403,), generator=generator).tolist()
    has_image = [index % 3 != 0 for index in range(403)]  # 268 with an image, 135 text-only
    order = modality_length_grouped_indices(lengths, has_image, 8, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(403))
    batches = [order[start : start + 8] for start in range(0, 403, 8)]
    mixed = [b for b, batch in enumerate(batches) if len({has_image[i] for i in batch}) > 1]
    # 268 = 33 x 8 + 4 and 135 = 16 x 8 + 7: 49 pure batches, then the 11 leftovers, one mixed batch among them
    assert mixed == [49] and len(batches) == 51
    spread = sum(max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in batches[:49])
    shuffled = torch.randperm(403, generator=generator).tolist()
    random_spread = sum(
        max(lengths[i] for i in shuffled[s : s + 8]) - min(lengths[i] for i in shuffled[s : s + 8])
        for s in range(0, 392, 8)
    )
    assert spread < random_spread / 5  # similar lengths in each batch
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first: an OOM shows at once
    again = modality_length_grouped_indices(lengths, has_image, 8, torch.Generator().manual_seed(1))
    other = modality_length_grouped_indices(lengths, has_image, 8, torch.Generator().manual_seed(2))
    assert again == order and other != order
    with pytest.raises(ValueError, match="403 lengths but 2 modality flags"):
        modality_length_grouped_indices(lengths, [True, False], 8)


def test_trainer_groups_by_length_without_mixing_image_and_text_only_batches(built, tmp_path):
    from llava_swap.collator import check_rows
    from llava_swap.sampler import ModalityLengthGroupedSampler

    model, processor = built("llama3", "clip")
    rows = _rows(tmp_path, count=10)
    for index in range(6):  # text-only rows, LLaVA's language-only instructions
        question = [{"type": "text", "text": "Name a colour." + " Briefly." * index}]
        answer = [{"type": "text", "text": "blue " * (index + 1)}]
        rows.append(
            {
                "id": f"t{index}",
                "images": [],
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            }
        )
    rows, failures = check_rows(rows, processor, max_length=None)
    assert failures == [] and all(row["length"] == len(row["tokens"]) for row in rows)
    grouped = {"train_sampling_strategy": "group_by_length", "length_column_name": "length"}
    trainer = _trainer(model, processor, rows, tmp_path, per_device_train_batch_size=4, **grouped)
    assert isinstance(trainer._get_train_sampler(), ModalityLengthGroupedSampler)
    images_per_batch = [len(batch.get("pixel_values", [])) for batch in trainer.get_train_dataloader()]
    # 10 image rows and 6 text-only rows: 2 + 1 whole batches of one kind, then 2 + 2 leftovers together
    assert images_per_batch[:3] in ([4, 4, 0], [4, 0, 4], [0, 4, 4]) and images_per_batch[3] == 2


def test_processes_sharing_a_cache_encode_each_distinct_image_once_in_all(built, tmp_path):
    """Two processes fill one cache, each its share: every distinct image is encoded by exactly one of them, even
    when one has written its files before the other looks (shares are dealt before checking the disk)."""
    model, processor = built("llama3", "clip")
    rows = _rows(tmp_path, count=10, distinct=5)
    images = [row["images"][0] for row in rows]
    first = VisionFeatureCache(tmp_path / "cache", model, processor)
    second = VisionFeatureCache(tmp_path / "cache", model, processor)
    assert first.precompute(model, images, progress=False, shard=(0, 2)) == 3  # distinct images 0, 2, 4
    assert second.precompute(model, images, progress=False, shard=(1, 2)) == 2  # 1, 3
    assert first.encoded_images + second.encoded_images == 5
    assert VisionFeatureCache(tmp_path / "cache", model, processor).precompute(model, images, progress=False) == 0
    assert torch.equal(second.features(images), first.features(images))


@pytest.mark.parametrize(
    ("setting", "stages", "cached", "said"),
    [
        ("auto", None, True, "on (auto: the frozen encoder would see the images 4 times)"),  # the default recipe
        ("auto", [{"num_train_epochs": 1}], False, "off (auto: 1 pass over the images"),
        ("auto", [{"num_train_epochs": 1, "max_steps": 4, "per_device_train_batch_size": 5}], True, "2 times"),
        ("off", None, False, "off (recipe)"),
        ("shared/cache", [{"num_train_epochs": 1}], True, "on (recipe: shared/cache)"),
    ],
)
def test_the_cache_is_used_when_it_pays(setting, stages, cached, said):
    from llava_swap.stages import feature_cache_plan

    recipe = default_recipe().to_dict()
    recipe["vision_feature_cache"] = setting
    if stages is not None:
        recipe["stages"] = [{**recipe["stages"][1], **stage} for stage in stages]
    recipe = Recipe.from_dict(recipe)
    rows = {"train": [{}] * 10, "pretrain": [{}] * 10}
    decision, reason = feature_cache_plan(recipe, rows, processes=1)
    assert decision == cached
    assert said in reason
