"""Swapping one backbone of a built model keeps the other bit-identical and rebuilds what depends on the new one."""

from __future__ import annotations

import pytest
import torch

from _helpers import two_turn_messages
from llava_swap import swap_language_model, swap_vision_model


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_swap_llama2_to_llama3_keeps_vision_tower_and_uses_llama3_template(built, tiny_lm):
    model, processor = built("llama2", "clip")
    vision_before = _state(model.vision_tower)
    new_model, new_processor = swap_language_model(model, tiny_lm("llama3"), processor=processor)

    _assert_same(_state(new_model.vision_tower), vision_before)
    assert new_model.vision_tower is not model.vision_tower  # a copy: training one never changes the other
    assert new_model.config.llm_family == "llama3" and new_processor.chat_template_name == "llama3"
    tokenizer = new_processor.tokenizer
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert new_model.generation_config.eos_token_id[0] == eot
    text = new_processor.apply_chat_template(two_turn_messages())
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>") and "</s>" not in text
    assert new_model.config.text_config.vocab_size == len(tokenizer)
    assert new_model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    # The old model is untouched.
    assert model.config.llm_family == "llama2" and processor.chat_template_name == "vicuna_v1"

    inputs = new_processor.apply_chat_template(
        two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.isfinite(new_model(**inputs, labels=inputs["input_ids"]).loss)


def test_swap_from_a_saved_directory(built, tiny_lm, tmp_path):
    model, processor = built("llama1", "siglip")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    new_model, new_processor = swap_language_model(tmp_path, tiny_lm("gemma"))
    _assert_same(_state(new_model.vision_tower), _state(model.vision_tower))
    assert (
        new_model.config.llm_family == "gemma" and new_processor.chat_template_name == "checkpoint"
    )  # Gemma-it: its own
    assert new_model.config.vision_feature_select_strategy == "full"


def test_keep_projector_only_when_sizes_match(built, tiny_lm):
    model, processor = built("llama1", "clip")
    # llama1 -> llama2: same hidden size, so the trained projector can carry over.
    kept, _ = swap_language_model(model, tiny_lm("llama2"), processor=processor, keep_projector=True)
    _assert_same(_state(kept.multi_modal_projector), _state(model.multi_modal_projector))
    fresh, _ = swap_language_model(model, tiny_lm("llama2"), processor=processor, keep_projector=False, seed=1)
    assert not torch.equal(fresh.multi_modal_projector.linear_1.weight, model.multi_modal_projector.linear_1.weight)


def test_keep_projector_with_mismatched_sizes_fails_loudly(tiny_lm, tiny_vision, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from llava_swap import build_vlm

    wider = tmp_path / "wider-llama3"
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    config = LlamaConfig.from_pretrained(tiny_lm("llama3"))
    config.hidden_size, config.head_dim = 96, 24
    AutoModelForCausalLM.from_config(config).save_pretrained(wider)
    tokenizer.save_pretrained(wider)
    model, processor = build_vlm(tiny_lm("llama3"), tiny_vision("clip"))
    with pytest.raises(ValueError, match=r"keep_projector=True.*linear_1.weight: kept \(64, 64\) vs new \(96, 64\)"):
        swap_language_model(model, wider, processor=processor, keep_projector=True)


def test_swap_vision_model_keeps_the_language_model(built, tiny_vision):
    model, processor = built("gemma", "clip")
    language_before = _state(model.language_model)
    new_model, new_processor = swap_vision_model(model, tiny_vision("dinov2"), processor=processor)
    _assert_same(_state(new_model.language_model), language_before)
    assert torch.equal(new_model.lm_head.weight, model.lm_head.weight)
    assert new_model.lm_head.weight.data_ptr() == new_model.get_input_embeddings().weight.data_ptr()  # still tied
    assert new_model.config.vision_config.model_type == "dinov2"
    assert new_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert new_processor.chat_template == processor.chat_template
    inputs = new_processor.apply_chat_template(
        two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.isfinite(new_model(**inputs, labels=inputs["input_ids"]).loss)


def test_swap_needs_the_processor_of_an_in_memory_model(built, tiny_lm):
    model, _ = built("llama2", "clip")
    with pytest.raises(ValueError, match="processor=..."):
        swap_language_model(model, tiny_lm("llama3"))
    assert model.config.llm_family == "llama2"  # the refused swap left the model as it was
