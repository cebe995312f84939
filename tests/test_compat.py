"""Staying compatible: saved checkpoints of earlier releases, and every upstream internal `llava_swap.compat` names."""

from __future__ import annotations

import copy
import importlib
import inspect
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from _helpers import chat_image
from llava_swap import LlavaSwapForCausalLM, compat
from llava_swap.checkpoint_layout import NATIVE_LAYOUT, to_module_name

RELEASE_0_1 = Path(__file__).parent / "fixtures" / "llava_swap-0.1.0.dev0"


def test_checkpoint_saved_by_0_1_loads_and_computes_what_it_did():
    """A model saved by 0.1.0.dev0 (our own modeling file) gives the same logits and generation today."""
    expected = load_file(RELEASE_0_1 / "expected.safetensors")
    model = AutoModelForImageTextToText.from_pretrained(RELEASE_0_1 / "checkpoint", dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(RELEASE_0_1 / "checkpoint")
    assert type(model) is LlavaSwapForCausalLM
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": chat_image(3)},
                {"type": "text", "text": "What shape is in the image?"},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(inputs["input_ids"][0], expected["input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -4:]
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert (logits - expected["logits_last4"]).abs().max().item() <= 1e-5
    assert torch.equal(generated[0, inputs["input_ids"].shape[1] :], expected["generated"])


def _llava_hf_name(name_in_0_1: str) -> str:
    """0.1.0.dev0 wrote the CLIP tower as transformers 5 names it; llava-hf (and vLLM) put it under `vision_model.`."""
    return name_in_0_1.replace("vision_tower.", "vision_tower.vision_model.", 1)


def test_saving_writes_the_llava_hf_layout_with_the_tensors_of_0_1(tmp_path):
    model = LlavaSwapForCausalLM.from_pretrained(RELEASE_0_1 / "checkpoint")
    model.save_pretrained(tmp_path)
    with (
        safe_open(RELEASE_0_1 / "checkpoint" / "model.safetensors", "pt") as before,
        safe_open(tmp_path / "model.safetensors", "pt") as now,
    ):
        assert set(now.keys()) == {_llava_hf_name(key) for key in before.keys()}  # noqa: SIM118
        assert {key.split(".")[0] for key in now.keys()} == {  # noqa: SIM118
            "language_model",
            "vision_tower",
            "multi_modal_projector",
        }
        assert all(torch.equal(now.get_tensor(_llava_hf_name(key)), before.get_tensor(key)) for key in before.keys())  # noqa: SIM118
    reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(value, reloaded[key]) for key, value in model.state_dict().items())


def test_load_state_dict_takes_the_on_disk_layout():
    """What transformers' Trainer does on resume: the checkpoint file's tensors straight into the model."""
    model = LlavaSwapForCausalLM.from_pretrained(RELEASE_0_1 / "checkpoint")
    on_disk = load_file(RELEASE_0_1 / "checkpoint" / "model.safetensors")
    assert not set(on_disk) & set(model.state_dict())  # nothing would match by name alone
    for parameter in model.parameters():
        parameter.data.zero_()
    result = model.load_state_dict(on_disk, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= set(model._tied_weights_keys)
    reference = LlavaSwapForCausalLM.from_pretrained(RELEASE_0_1 / "checkpoint").state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize(("family", "kind"), [("gemma", "dinov2"), ("llama2", "siglip")])
def test_load_state_dict_of_a_saved_file_restores_every_tensor(built, tmp_path, family, kind):
    """The Trainer's resume: a file's tensors straight into the model, every one placed (transformers 5.25 renames
    DINOv2's attention on load, so prefixes alone would drop its q/k/v), and module names pass through unchanged."""
    model, _ = built(family, kind)
    model.save_pretrained(tmp_path)
    on_disk = load_file(tmp_path / "model.safetensors")
    assert compat.checkpoint_names_to_modules(model, model.state_dict()) == {key: key for key in model.state_dict()}
    fresh = copy.deepcopy(model)
    for parameter in fresh.parameters():
        parameter.data.zero_()
    fresh.load_state_dict(on_disk, strict=True)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in fresh.state_dict().items())


def test_load_state_dict_restores_tied_weights_from_a_file(built, tmp_path):
    """Gemma ties its head to its embeddings: the file keeps one copy, and a strict load still succeeds."""
    model, _ = built("gemma", "clip")
    model.save_pretrained(tmp_path)
    on_disk = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in on_disk and "language_model.lm_head.weight" not in on_disk
    fresh = copy.deepcopy(model)
    for parameter in fresh.parameters():
        parameter.data.zero_()
    fresh.load_state_dict(on_disk, strict=True)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in fresh.state_dict().items())


def test_to_module_name_renames_only_the_on_disk_prefixes():
    on_disk = {
        "language_model.model.layers.0.mlp.up_proj.weight": 1,
        "language_model.lm_head.weight": 2,
        "vision_tower.vision_model.embeddings.patch_embedding.weight": 3,
        "multi_modal_projector.linear_1.bias": 4,
        "model.language_model.norm.weight": 5,  # already a module name
        "vision_tower.encoder.layers.0.mlp.fc1.weight": 6,  # as 0.1.0.dev0 and transformers 5 write it
    }
    renamed = {to_module_name(name): value for name, value in on_disk.items()}
    assert renamed == {
        "model.language_model.layers.0.mlp.up_proj.weight": 1,
        "lm_head.weight": 2,
        "model.vision_tower.embeddings.patch_embedding.weight": 3,
        "model.multi_modal_projector.linear_1.bias": 4,
        "model.language_model.norm.weight": 5,
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight": 6,
    }
    assert len(NATIVE_LAYOUT) == 4


@pytest.mark.parametrize(
    "symbol",
    [
        compat.CHECKPOINT_LAYOUT,
        compat.WEIGHT_RENAMING,
        compat.RENDER_TEMPLATE,
        compat.CONVERSION_MAPPING,
        compat.RENAME_SOURCE_KEY,
    ],
)
def test_transformers_internals_are_where_compat_says(symbol):
    module, name = symbol
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} moved: update llava_swap/compat.py"


@pytest.mark.parametrize(
    "symbol", [compat.TRAINER_SAMPLER_HOOK, compat.INIT_WEIGHTS, compat.ATTN_IMPLEMENTATION, compat.REMOVE_QUANTIZATION]
)
def test_transformers_hooks_are_where_compat_says(symbol):
    module, owner, name = symbol
    assert hasattr(getattr(importlib.import_module(module), owner), name), f"{owner}.{name} moved: see compat.py"


def test_hooks_behave_as_compat_uses_them(built):
    from transformers import Trainer

    model, _ = built("llama3", "clip")
    assert list(inspect.signature(Trainer._get_train_sampler).parameters)[:2] == ["self", "train_dataset"]
    assert compat.attn_implementation(model.language_model) == "sdpa"
    projector = copy.deepcopy(model.multi_modal_projector)
    torch.nn.init.zeros_(projector.linear_1.weight)
    torch.nn.init.ones_(projector.linear_1.bias)
    compat.init_module(model, projector)  # normal(0, 0.02) weights, zero biases
    assert projector.linear_1.bias.abs().sum() == 0 and 0.01 < projector.linear_1.weight.std() < 0.03


def test_internal_signatures_are_what_compat_calls():
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.utils.chat_template_utils import render_jinja_template

    assert {"model_type_or_class_name", "mapping", "overwrite"} <= set(
        inspect.signature(register_checkpoint_conversion_mapping).parameters
    )
    from transformers.core_model_loading import WeightRenaming

    assert {"source_patterns", "target_patterns"} <= set(inspect.signature(WeightRenaming).parameters)
    assert {"conversations", "chat_template", "return_assistant_tokens_mask"} <= set(
        inspect.signature(render_jinja_template).parameters
    )
    prompts, spans = compat.render_with_generation_spans(
        [[{"role": "assistant", "content": "hi"}]],
        "{% for m in messages %}A: {% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}",
    )
    assert prompts == ["A: hi"] and [list(map(tuple, row)) for row in spans] == [[(3, 5)]]


def test_trl_keeps_its_metrics_where_compat_writes_them(tmp_path, built):
    """TRL's SFTTrainer logs `_metrics` and counts `_total_train_tokens`; the labelled-positions loss feeds both."""
    from datasets import Dataset
    from trl import SFTConfig

    from llava_swap.trainer import LlavaSwapSFTTrainer

    model, processor = built("llama3", "clip")
    model = copy.deepcopy(model)  # the trainer patches the model it is given: keep the shared fixture untouched
    args = SFTConfig(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, dataset_kwargs={"skip_prepare_dataset": True}
    )
    trainer = LlavaSwapSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list([{"messages": []}]), processing_class=processor
    )
    assert compat.trl_metrics_available(trainer), "TRL renamed SFTTrainer._metrics/_total_train_tokens: see compat.py"
    compat.record_trl_metrics(trainer, "train", trained_tokens=7, entropy=0.5)
    compat.record_trl_metrics(trainer, "train", trained_tokens=3, entropy=1.5)
    assert trainer._metrics["train"]["entropy"] == [0.5, 1.5]
    assert trainer._metrics["train"]["num_tokens"] == [10]
    trainer.model.train()  # TRL logs the metrics of the mode the model is in
    trainer.log({"loss": 1.0})  # and averages them into the logged entry
    assert trainer.state.log_history[-1]["entropy"] == 1.0 and trainer.state.log_history[-1]["num_tokens"] == 10


def test_cache_length_reads_either_argument_name():
    from transformers import DynamicCache, LlamaConfig

    cache = DynamicCache(config=LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=1))
    assert compat.cache_length({}) == 0
    assert compat.cache_length({"past_key_values": cache}) == compat.cache_length({"cache": cache}) == 0
    cache.update(torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 3, 8), 0)
    assert compat.cache_length({"past_key_values": cache}) == compat.cache_length({"cache": cache}) == 3


def test_models_load_without_hub_kernels_unless_asked(tiny_lm, tiny_vision, tmp_path, monkeypatch):
    """transformers 5.25 kernelizes every from_pretrained by default (kernels fetched from the Hub on a GPU):
    llava-swap keeps the torch implementations, for the LLM, the vision encoder and our own model, unless
    USE_HUB_KERNELS is set true."""
    import transformers

    from llava_swap import build_vlm
    from llava_swap.modeling_llava_swap import use_hub_kernels

    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    asked = []
    for name in ("AutoModelForCausalLM", "CLIPVisionModel"):  # what build_vlm loads the two backbones with
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def recording(klass, *args, _original=original, **kwargs):
            asked.append((klass.__name__, kwargs.get("use_kernels")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    model, _ = build_vlm(tiny_lm("llama3"), tiny_vision("clip"))
    assert asked == [("AutoModelForCausalLM", False), ("CLIPVisionModel", False)]
    model.save_pretrained(tmp_path)
    assert getattr(LlavaSwapForCausalLM.from_pretrained(tmp_path), "use_kernels", False) is False
    assert not use_hub_kernels()
    for value, expected in (("YES", True), ("1", True), ("y", True), ("no", False), ("", False)):
        monkeypatch.setenv("USE_HUB_KERNELS", value)
        assert use_hub_kernels() is expected
