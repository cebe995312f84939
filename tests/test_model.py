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


def test_image_token_mismatch_fails_loudly(built):
    """transformers' own count check, on pixels and on precomputed features alike."""
    model, processor = built("llama3", "clip")
    inputs = _inputs(processor)
    pixel_values = torch.cat([inputs.pop("pixel_values")] * 2)  # two images for one <image>
    with pytest.raises(ValueError, match=r"Image features and image tokens do not match, tokens: 16"):
        model(**inputs, pixel_values=pixel_values)
    features = model.get_vision_features(pixel_values)
    with pytest.raises(ValueError, match=r"Image features and image tokens do not match, tokens: 16, features: 32"):
        model(**inputs, image_features=features)


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


_SAVED: list[int] = []


def _count_saved(tensor):
    _SAVED.append(tensor.numel())
    return tensor


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
    with torch.autograd.graph.saved_tensors_hooks(_count_saved, lambda tensor: tensor):
        _SAVED.clear()
        reference = model(**inputs, labels=inputs["input_ids"]).loss
    kept_without = len(_SAVED)
    reference.backward()
    reference_grad = model.multi_modal_projector.linear_1.weight.grad.clone()
    model.zero_grad()

    model.gradient_checkpointing_enable()
    assert model.language_model.gradient_checkpointing
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(_count_saved, lambda tensor: tensor):
        _SAVED.clear()
        checkpointed = model(**inputs, labels=inputs["input_ids"]).loss
    # The decoder layers' activations are recomputed in the backward pass instead of kept from the forward
    assert len(_SAVED) < kept_without / 2
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
    # Sampled from N(mean, 1e-5 cov) of the old rows: far closer to the mean than any old row (a copied row, or a
    # fresh N(0, 0.02) row, sits about as far out as the average old row).
    mean = original.mean(0)
    assert (new_rows[0] - mean).norm() < 0.05 * (original - mean).norm(dim=1).mean()


def test_markers_without_an_image_fail_loudly(built):
    model, processor = built("llama3", "clip")
    inputs = _inputs(processor)
    inputs.pop("pixel_values")
    with pytest.raises(ValueError, match=r"The text holds 16 <image> tokens but no image was given"):
        model(**inputs)


def test_generate_from_inputs_embeds(built):
    model, processor = built("llama3", "clip")
    prompt = _inputs(processor, two_turn_messages()[:1], add_generation_prompt=True)
    with torch.no_grad():
        from_ids = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        embeds = model.get_input_embeddings()(prompt["input_ids"])
        from_embeds = model.generate(
            inputs_embeds=embeds,
            attention_mask=prompt["attention_mask"],
            pixel_values=prompt["pixel_values"],
            max_new_tokens=6,
            do_sample=False,
        )
    assert from_embeds[0].tolist() == from_ids[0, prompt["input_ids"].shape[1] :].tolist()


def test_generate_from_precomputed_features(built):
    model, processor = built("llama3", "clip")
    prompt = _inputs(processor, two_turn_messages()[:1], add_generation_prompt=True)
    with torch.no_grad():
        reference = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        features = model.get_vision_features(prompt.pop("pixel_values"))
        for use_cache in (True, False):
            generated = model.generate(
                **prompt, image_features=features, max_new_tokens=6, do_sample=False, use_cache=use_cache
            )
            assert torch.equal(generated, reference)


def test_beam_search_and_several_sequences_from_features_equal_pixels(built):
    """Two images in one prompt: each beam and returned sequence must get both images, in order, on either path."""
    model, processor = built("llama3", "clip")
    content = [{"type": "image", "image": chat_image(seed)} for seed in (0, 1)] + [{"type": "text", "text": "Same?"}]
    prompt = _inputs(processor, [{"role": "user", "content": content}], add_generation_prompt=True)
    settings = {"max_new_tokens": 6, "do_sample": False, "num_beams": 3, "num_return_sequences": 2}
    with torch.no_grad():
        from_pixels = model.generate(**prompt, **settings)
        features = model.get_vision_features(prompt.pop("pixel_values"))
        from_features = model.generate(**prompt, image_features=features, **settings)
        swapped = model.generate(**prompt, image_features=features.flip(0), **settings)
    assert from_pixels.shape[0] == 2 and torch.equal(from_features, from_pixels)
    assert not torch.equal(swapped, from_pixels)  # the order of the images matters, so the check can fail


def test_embeddings_with_image_tokens_but_no_image_fail_loudly(built):
    model, processor = built("llama3", "clip")
    inputs = _inputs(processor)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match=r"The text holds 16 <image> tokens but no image was given"):
        model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="not both"):
        model.generate(**inputs, image_features=model.get_vision_features(inputs["pixel_values"]), max_new_tokens=1)


def test_bf16_llm_with_fp32_encoder_is_one_dtype_and_reloads_exactly(tiny_lm, tiny_vision, tmp_path):
    from llava_swap import build_vlm, export_hf_llava

    bf16_lm = tmp_path / "bf16-llama3"
    AutoModelForCausalLM.from_pretrained(tiny_lm("llama3"), dtype=torch.bfloat16).save_pretrained(bf16_lm)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_lm("llama3")).save_pretrained(bf16_lm)
    model, processor = build_vlm(bf16_lm, tiny_vision("clip"))  # CLIP saved in float32
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model.save_pretrained(tmp_path / "vlm")
    reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path / "vlm")
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    from transformers import LlavaForConditionalGeneration

    native = LlavaForConditionalGeneration.from_pretrained(export_hf_llava(model, processor, tmp_path / "native"))
    inputs = _inputs(processor)
    with torch.no_grad():
        logits = model(**inputs).logits
        assert torch.equal(reloaded(**inputs).logits, logits)
        assert torch.equal(native(**inputs).logits, logits)


def test_dinov2_crop_smaller_than_its_config(tiny_lm, tiny_vision, tmp_path):
    """Like facebook/dinov2-base (config 518 px, processor crop 224): tokens follow what the processor outputs."""
    import json
    import shutil

    from llava_swap import build_vlm, export_hf_llava

    dinov2 = tmp_path / "dinov2-crop24"
    shutil.copytree(tiny_vision("dinov2"), dinov2)
    path = dinov2 / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    settings.update(crop_size={"height": 24, "width": 24}, size={"shortest_edge": 24})
    path.write_text(json.dumps(settings))
    model, processor = build_vlm(tiny_lm("gemma"), dinov2)
    assert model.config.image_seq_length == 9  # (24 / 8) ** 2 patches, CLS dropped
    inputs = _inputs(processor)
    assert inputs["pixel_values"].shape[-2:] == (24, 24)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs, labels=inputs["input_ids"]).loss)
    native = export_hf_llava(model, processor, tmp_path / "native")
    from transformers import LlavaForConditionalGeneration

    with torch.no_grad():
        diff = (LlavaForConditionalGeneration.from_pretrained(native)(**inputs).logits - model(**inputs).logits).abs()
    assert diff.max() <= 1e-5


def test_padded_vocabulary_keeps_its_size_and_gets_a_fresh_image_row(tiny_lm, tiny_vision, tmp_path):
    """Qwen/Phi-3 pad the embedding matrix beyond the tokenizer; <image> must not reuse an untrained spare row."""
    from transformers import AutoTokenizer

    from llava_swap import build_vlm

    padded = tmp_path / "padded-llama3"
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm("llama3"))
    vocabulary = lm.config.vocab_size
    lm.resize_token_embeddings(vocabulary + 32, mean_resizing=False)
    with torch.no_grad():
        lm.get_input_embeddings().weight[vocabulary:] = 7.0  # spare rows: obviously untrained
    lm.save_pretrained(padded)
    AutoTokenizer.from_pretrained(tiny_lm("llama3")).save_pretrained(padded)
    model, processor = build_vlm(padded, tiny_vision("clip"))
    assert model.config.text_config.vocab_size == vocabulary + 32
    image_row = model.get_input_embeddings().weight[model.config.image_token_id]
    assert model.config.image_token_id == vocabulary
    assert (image_row - lm.get_input_embeddings().weight[:vocabulary].mean(0)).abs().max() < 0.05
    assert torch.equal(
        model.get_input_embeddings().weight[vocabulary + 1 :], torch.full_like(image_row, 7.0).expand(31, -1)
    )


def test_llm_with_scaled_logits_is_refused(tiny_lm, tiny_vision, tmp_path):
    import json
    import shutil

    from llava_swap import build_vlm

    scaled = tmp_path / "granite-like"
    shutil.copytree(tiny_lm("llama3"), scaled)
    config = json.loads((scaled / "config.json").read_text())
    config["logits_scaling"] = 8.0
    (scaled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transforms its logits \(logits_scaling=8.0\)"):
        build_vlm(scaled, tiny_vision("clip"))
