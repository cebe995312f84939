"""Export to transformers' native llava format, loaded in a process that never imports llava_swap; and import back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from _helpers import two_turn_messages
from llava_swap import LlavaSwapForCausalLM, export_hf_llava

# Runs in a fresh interpreter: plain transformers only. It must not even be able to import llava_swap by accident.
NATIVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["llava_swap"] = None  # any import of llava_swap now fails
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration
    from PIL import Image

    export_dir, inputs_path, out_path = sys.argv[1:4]
    model = AutoModelForImageTextToText.from_pretrained(export_dir)
    assert type(model) is LlavaForConditionalGeneration, type(model)
    processor = AutoProcessor.from_pretrained(export_dir)
    assert type(processor).__name__ == "LlavaProcessor", type(processor)
    inputs = torch.load(inputs_path)
    image = Image.open(inputs.pop("image_path"))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What colour is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    torch.save({"logits": logits, "generated": generated, "prompt_ids": prompt["input_ids"]}, out_path)
    """
)


@pytest.mark.parametrize(("family", "kind"), [("llama3", "clip"), ("llama2", "siglip"), ("gemma", "dinov2")])
def test_export_loads_in_plain_transformers_with_equal_logits(built, tmp_path, family, kind):
    model, processor = built(family, kind)
    export_dir = export_hf_llava(model, processor, tmp_path / "native")
    config = json.loads((export_dir / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert "llava_swap" not in (export_dir / "config.json").read_text()

    image = two_turn_messages()[0]["content"][0]["image"]
    image.save(tmp_path / "image.png")
    inputs = processor.apply_chat_template(two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt")
    torch.save({**inputs, "image_path": str(tmp_path / "image.png")}, tmp_path / "inputs.pt")
    script = tmp_path / "native.py"
    script.write_text(NATIVE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    native = torch.load(tmp_path / "out.pt")

    prompt = processor.apply_chat_template(
        two_turn_messages()[:1], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        ours = model(**inputs).logits
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(native["prompt_ids"], prompt["input_ids"])  # same processor behaviour
    assert (native["logits"] - ours).abs().max().item() <= 1e-5
    assert torch.equal(native["generated"], generated)


def test_native_checkpoint_loads_into_llava_swap(built, tmp_path):
    from transformers import LlavaForConditionalGeneration

    model, processor = built("gemma", "clip")
    export_dir = export_hf_llava(model, processor, tmp_path / "native")
    native = LlavaForConditionalGeneration.from_pretrained(export_dir)
    ours = LlavaSwapForCausalLM.from_pretrained(export_dir)
    assert ours.config.model_type == "llava_swap" and ours.config.projector_type == "mlp2x_gelu"
    inputs = processor.apply_chat_template(two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(ours(**inputs).logits, native(**inputs).logits)


# The llava-hf layout, what vLLM's llava loader reads: the tower under its standalone checkpoint's prefix.
LLAVA_HF_PREFIXES = {
    "clip": (
        "vision_tower.vision_model.",
        "language_model.model.",
        "language_model.lm_head.",
        "multi_modal_projector.",
    ),
    "siglip": (
        "vision_tower.vision_model.",
        "language_model.model.",
        "language_model.lm_head.",
        "multi_modal_projector.",
    ),
    "dinov2": ("vision_tower.", "language_model.model.", "language_model.lm_head.", "multi_modal_projector."),
}


@pytest.mark.parametrize(("family", "kind"), [("llama3", "clip"), ("llama2", "siglip"), ("gemma", "dinov2")])
def test_saved_and_exported_checkpoints_use_the_llava_hf_layout(built, tmp_path, family, kind):
    """What we save is what llava-hf checkpoints hold, so a config rewrite alone makes it native."""
    from safetensors import safe_open

    model, processor = built(family, kind)
    model.save_pretrained(tmp_path / "ours")
    export_hf_llava(model, processor, tmp_path / "native")
    with (
        safe_open(tmp_path / "ours" / "model.safetensors", "pt") as ours,
        safe_open(tmp_path / "native" / "model.safetensors", "pt") as native,
    ):
        assert set(ours.keys()) == set(native.keys())
        assert all(torch.equal(ours.get_tensor(key), native.get_tensor(key)) for key in ours.keys())  # noqa: SIM118
        names = list(native.keys())  # noqa: SIM118
    assert all(name.startswith(LLAVA_HF_PREFIXES[kind]) for name in names), names
    tower = [name for name in names if name.startswith("vision_tower.")]
    assert len(tower) == sum(1 for _ in model.vision_tower.state_dict())
    if kind != "dinov2":
        assert all(name.startswith("vision_tower.vision_model.") for name in tower)


def test_sharded_checkpoint_gets_the_layout_in_every_shard_and_the_index(built, tmp_path):
    model, _ = built("llama3", "clip")
    model.save_pretrained(tmp_path, max_shard_size="200KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 1
    assert all(name.startswith(LLAVA_HF_PREFIXES["clip"]) for name in index)
    from safetensors import safe_open

    for shard in set(index.values()):
        with safe_open(tmp_path / shard, "pt") as handle:
            assert {name for name, file in index.items() if file == shard} == set(handle.keys())
    reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(value, reloaded[key]) for key, value in model.state_dict().items())


def test_export_names_what_vllm_cannot_serve(built, tmp_path, caplog):
    from llava_swap.interop import serving_note

    model, processor = built("gemma", "dinov2")
    with caplog.at_level("INFO", logger="llava_swap.interop"):
        export_hf_llava(model, processor, tmp_path / "dinov2")
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "vLLM cannot" in caplog.records[0].getMessage() and "dinov2" in caplog.records[0].getMessage()
    assert "and vLLM serve" in serving_note("clip_vision_model") and "vLLM cannot" in serving_note("dinov2")


def test_linear_projector_cannot_be_exported(built, tmp_path):
    model, processor = built("llama3", "clip", projector="linear")
    with pytest.raises(ValueError, match="projector_type='linear' cannot be exported.*mlp2x_gelu"):
        export_hf_llava(model, processor, tmp_path / "native")
    assert not (tmp_path / "native").exists()


def test_cli_export(built, tmp_path):
    from llava_swap.cli import main

    model, processor = built("llama2", "clip")
    model.save_pretrained(tmp_path / "ours")
    processor.save_pretrained(tmp_path / "ours")
    assert main(["export", "--model", str(tmp_path / "ours"), "--out", str(tmp_path / "native")]) == 0
    assert json.loads((tmp_path / "native" / "config.json").read_text())["model_type"] == "llava"


@pytest.mark.parametrize(
    ("family", "end_of_turn"), [("llama3", "<|eot_id|>"), ("gemma", "<end_of_turn>"), ("llama2", "</s>")]
)
def test_export_tokenizer_ends_at_the_end_of_turn(built, tmp_path, family, end_of_turn):
    """A harness that stops at `tokenizer.eos_token_id` alone (lmms-eval's llava_hf) stops where answers end; the
    prompts, the training-time processor and generation_config's full stop list are unchanged."""
    from transformers import AutoProcessor, GenerationConfig

    model, processor = built(family, "clip")
    eos_before = processor.tokenizer.eos_token
    export_hf_llava(model, processor, tmp_path / "native")
    native = AutoProcessor.from_pretrained(tmp_path / "native")
    assert native.tokenizer.eos_token == end_of_turn
    assert processor.tokenizer.eos_token == eos_before  # the model's own processor is not touched
    stops = GenerationConfig.from_pretrained(tmp_path / "native").eos_token_id
    assert stops == model.generation_config.eos_token_id and native.tokenizer.eos_token_id == stops[0]
    messages = two_turn_messages()
    assert torch.equal(
        native.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")["input_ids"],
        processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")["input_ids"],
    )


def test_export_keeps_an_eos_the_template_renders(built, caplog):
    from llava_swap.interop import harness_tokenizer

    _, processor = built("llama3", "clip")
    # A template that closes the conversation with the tokenizer's eos (as some checkpoints' own do).
    renders_eos = processor.chat_template + "{%- if not add_generation_prompt -%}{{ eos_token }}{%- endif -%}"
    with caplog.at_level("WARNING", logger="llava_swap.interop"):
        assert harness_tokenizer(processor.tokenizer, renders_eos).eos_token == processor.tokenizer.eos_token
    assert "renders eos_token" in caplog.text


@pytest.mark.parametrize("family", ["llama3", "llama2", "gemma"])
def test_export_tokenizer_gives_a_rendered_prompt_one_bos(built, tmp_path, family):
    """lmms-eval's llava_hf renders the template as text and tokenizes it with special tokens: the ids must be the
    ones transformers' apply_chat_template gives (one BOS, written by the template)."""
    from transformers import AutoProcessor

    model, processor = built(family, "clip")
    export_hf_llava(model, processor, tmp_path / "native")
    native = AutoProcessor.from_pretrained(tmp_path / "native")
    messages = two_turn_messages()[:1]
    text = native.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = messages[0]["content"][0]["image"]
    by_text = native(images=[image], text=text, return_tensors="pt")["input_ids"]
    by_template = native.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )["input_ids"]
    assert torch.equal(by_text, by_template)
    assert int((by_text[0] == native.tokenizer.bos_token_id).sum()) == 1
