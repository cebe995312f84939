"""Bad input: every error names the offending value and says what to do; nothing is silently patched."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig

from llava_swap import LlavaSwapConfig, build_vlm


def test_missing_path(tiny_vision, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=f"language_model='{missing}' does not exist"):
        build_vlm(missing, tiny_vision("clip"))
    with pytest.raises(FileNotFoundError, match="vision_model='./nowhere' does not exist"):
        build_vlm(tmp_path, "./nowhere")


def test_directory_without_config(tiny_vision, tmp_path):
    with pytest.raises(OSError, match="no loadable config.json"):
        build_vlm(tmp_path, tiny_vision("clip"))


def test_hub_id_offline_says_so(tiny_vision):
    with pytest.raises(OSError, match="language_model='meta-llama/Meta-Llama-3-8B'.*offline"):
        build_vlm("meta-llama/Meta-Llama-3-8B", tiny_vision("clip"))


def test_backbones_in_the_wrong_slots(tiny_lm, tiny_vision):
    with pytest.raises(
        ValueError, match="is a clip_vision_model checkpoint, a vision encoder: pass it as vision_model"
    ):
        build_vlm(tiny_vision("clip"), tiny_vision("clip"))
    with pytest.raises(
        ValueError, match="'llama' checkpoint, not a supported vision encoder.*pass it as language_model"
    ):
        build_vlm(tiny_lm("llama3"), tiny_lm("llama3"))


def test_not_a_causal_lm(tiny_vision, tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="'vit' checkpoint, which transformers cannot load as a causal language model"):
        build_vlm(tmp_path, tiny_vision("clip"))


def test_unknown_family_and_projector(tiny_lm, tiny_vision):
    with pytest.raises(ValueError, match="Unknown LLM family 'llama4'"):
        build_vlm(tiny_lm("llama3"), tiny_vision("clip"), family="llama4")
    with pytest.raises(ValueError, match="Unknown projector_type 'mlp2x_relu'"):
        build_vlm(tiny_lm("llama3"), tiny_vision("clip"), projector="mlp2x_relu")


def test_vision_feature_layer_out_of_range(tiny_lm, tiny_vision):
    with pytest.raises(ValueError, match=r"vision_feature_layer=-5 is out of range.*\[-3, 2\]"):
        build_vlm(tiny_lm("llama3"), tiny_vision("clip"), vision_feature_layer=-5)
    with pytest.raises(ValueError, match=r"vision_feature_layer=0 selects the patch embeddings.*e\.g\. -2"):
        build_vlm(tiny_lm("llama3"), tiny_vision("clip"), vision_feature_layer=0)


def _config(**kwargs) -> LlavaSwapConfig:
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)
    return LlavaSwapConfig(
        **{"vision_config": vision, "text_config": text, "image_token_id": 99, "image_seq_length": 16, **kwargs}
    )


def test_inconsistent_configs():
    assert _config().image_seq_length == 16
    with pytest.raises(ValueError, match="image_token_id=100 is outside the language model's vocabulary"):
        _config(image_token_id=100)
    with pytest.raises(ValueError, match="image_seq_length=0"):
        _config(image_seq_length=0)
    with pytest.raises(ValueError, match="vision_feature_select_strategy='cls_only' is unknown"):
        _config(vision_feature_select_strategy="cls_only")
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.raises(ValueError, match="siglip_vision_model has none: use 'full'"):
        _config(vision_config=siglip)
    with pytest.raises(ValueError, match="'gpt2' is not a supported vision encoder"):
        _config(vision_config={"model_type": "gpt2"})


def test_processor_size_must_match_a_fixed_resolution_encoder(tiny_lm, tiny_vision, tmp_path):
    import json
    import shutil

    broken = tmp_path / "clip-64"
    shutil.copytree(tiny_vision("clip"), broken)
    path = broken / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    settings["crop_size"] = {"height": 64, "width": 64}
    path.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="outputs 64x64 images but the encoder was built for 32x32"):
        build_vlm(tiny_lm("llama3"), broken)


def test_text_without_image_markers_but_with_pixels(built):
    model, processor = built("llama3", "clip")
    ids = processor.tokenizer("no image here", return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="Image features and image tokens do not match, tokens: 0"):
        model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32))
