"""LlavaSwapForCausalLM on every tiny LLM family x vision encoder: loss, save/load, generation, features, speed paths."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from _helpers import chat_image, two_turn_messages
from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor, tiny

COMBINATIONS = list(itertools.product(tiny.LANGUAGE_FAMILIES, tiny.VISION_KINDS))


def _inputs(processor, messages=None, **kwargs):
    messages = two_turn_messages() if messages is None else messages
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt", **kwargs)


@pytest.mark.parametrize(("family", "kind"), COMBINATIONS)
def test_loss_save_load_and_generation(built, tmp_path, family, kind):
    model, processor = built(family, kind)
    inputs = _inputs(processor)
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)

    with torch.no_grad():
        output = model(**inputs, labels=inputs["input_ids"])
    assert torch.isfinite(output.loss) and output.loss > 0
    assert output.logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    for loader in (LlavaSwapForCausalLM, AutoModelForCausalLM, AutoModelForImageTextToText):
        reloaded = loader.from_pretrained(tmp_path)
        assert type(reloaded) is LlavaSwapForCausalLM
        with torch.no_grad():
            assert torch.equal(reloaded(**inputs).logits, output.logits)
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    assert type(reprocessor) is LlavaSwapProcessor
    assert reprocessor.chat_template == processor.chat_template
    assert reprocessor.llm_family == family
    assert torch.equal(_inputs(reprocessor)["input_ids"], inputs["input_ids"])

    prompt = _inputs(processor, two_turn_messages()[:3], add_generation_prompt=True)
    with torch.no_grad():
        cached = model.generate(**prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = model.generate(**prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape[1] > prompt["input_ids"].shape[1]
    assert torch.equal(cached, uncached)


def test_precomputed_vision_features_equal_pixels(built):
    model, processor = built("llama3", "clip")
    inputs = _inputs(processor)
    with torch.no_grad():
        features = model.get_vision_features(inputs["pixel_values"])
        assert features.shape == (1, model.config.image_seq_length, model.config.vision_config.hidden_size)
        from_pixels = model(**inputs).logits
        pixel_values = inputs.pop("pixel_values")
        from_features = model(**inputs, image_features=features).logits
    assert torch.equal(from_pixels, from_features)
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, pixel_values=pixel_values, image_features=features)


@pytest.mark.parametrize(("strategy_kind", "expected"), [("clip", 16), ("siglip", 16), ("dinov2", 16)])
def test_image_token_count_follows_the_encoder(built, strategy_kind, expected):
    model, processor = built("llama2", strategy_kind)
    assert model.config.image_seq_length == expected
    # CLIP and DINOv2 have a CLS token that "default" drops; SigLIP has none and keeps all.
    strategy = "full" if strategy_kind == "siglip" else "default"
    assert model.config.vision_feature_select_strategy == processor.vision_feature_select_strategy == strategy


def test_image_token_mismatch_names_both_counts(built):
    model, processor = built("llama3", "clip")
    inputs = _inputs(processor)
    inputs["pixel_values"] = torch.cat([inputs["pixel_values"]] * 2)  # two images for one <image>
    with pytest.raises(ValueError, match=r"16 <image> tokens but 2 image\(s\) x 16 tokens = 32"):
        model(**inputs)


def test_linear_projector_and_feature_layer(built):
    model, processor = built("llama3", "siglip", projector="linear", vision_feature_layer=-1)
    assert model.config.projector_type == "linear"
    assert not hasattr(model.multi_modal_projector, "linear_2")
    with torch.no_grad():
        loss = model(**_inputs(processor), labels=_inputs(processor)["input_ids"]).loss
    assert torch.isfinite(loss)


def test_feature_layer_selects_a_different_hidden_state(built):
    (penultimate, processor), (last, _) = built("llama3", "clip"), built("llama3", "clip", vision_feature_layer=-1)
    pixels = _inputs(processor)["pixel_values"]
    with torch.no_grad():
        assert not torch.allclose(penultimate.get_vision_features(pixels), last.get_vision_features(pixels))
        hidden = penultimate.vision_tower(pixels, output_hidden_states=True).hidden_states
        assert torch.equal(penultimate.get_vision_features(pixels), hidden[-2][:, 1:])


def test_batched_left_padded_generation_matches_single(built):
    model, processor = built("llama3", "clip")
    conversations = [two_turn_messages(chat_image(seed))[:1] for seed in range(2)]
    conversations[1][0]["content"][1]["text"] = "Describe the picture in a few more words please."
    processor.tokenizer.padding_side = "left"
    try:
        batch = processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
        )
    finally:
        processor.tokenizer.padding_side = "right"
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=5, do_sample=False)
        for row, conversation in enumerate(conversations):
            single_inputs = _inputs(processor, conversation, add_generation_prompt=True)
            single = model.generate(**single_inputs, max_new_tokens=5, do_sample=False)
            assert batched[row, -5:].tolist() == single[0, -5:].tolist()


def test_sdpa_attention_and_gradient_checkpointing(tiny_lm, tiny_vision, tmp_path):
    from llava_swap import build_vlm

    model, processor = build_vlm(tiny_lm("llama3"), tiny_vision("clip"))
    model.save_pretrained(tmp_path)
    model = LlavaSwapForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.language_model.config._attn_implementation == "sdpa"
    inputs = _inputs(processor)

    model.train()
    torch.manual_seed(0)
    reference = model(**inputs, labels=inputs["input_ids"]).loss
    reference.backward()
    reference_grad = model.multi_modal_projector.linear_1.weight.grad.clone()
    model.zero_grad()

    model.gradient_checkpointing_enable()
    assert model.language_model.gradient_checkpointing
    torch.manual_seed(0)
    checkpointed = model(**inputs, labels=inputs["input_ids"]).loss
    checkpointed.backward()
    assert torch.allclose(checkpointed, reference)
    assert torch.allclose(model.multi_modal_projector.linear_1.weight.grad, reference_grad, atol=1e-6)


def test_tied_embeddings_survive_save_and_load(built, tmp_path):
    model, _ = built("gemma", "clip")
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)


def test_build_is_reproducible(tiny_lm, tiny_vision):
    from llava_swap import build_vlm

    first, _ = build_vlm(tiny_lm("llama2"), tiny_vision("clip"), seed=3)
    second, _ = build_vlm(tiny_lm("llama2"), tiny_vision("clip"), seed=3)
    other, _ = build_vlm(tiny_lm("llama2"), tiny_vision("clip"), seed=4)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(
        a["model.multi_modal_projector.linear_1.weight"], c["model.multi_modal_projector.linear_1.weight"]
    )


def test_new_embedding_rows_start_near_the_existing_mean(built, tiny_lm):
    model, processor = built("llama3", "clip")
    original = AutoModelForCausalLM.from_pretrained(tiny_lm("llama3")).get_input_embeddings().weight
    embeddings = model.get_input_embeddings().weight
    new_rows = embeddings[original.shape[0] :]
    assert new_rows.shape[0] == 1  # <image> only: the pad is a reserved token of the vocabulary
    assert torch.equal(embeddings[: original.shape[0]], original)
    # Sampled from N(mean, cov) of the old rows: far closer to the mean than an arbitrary old row is on average.
    mean = original.mean(0)
    assert (new_rows[0] - mean).norm() < 3 * (original - mean).norm(dim=1).mean()
