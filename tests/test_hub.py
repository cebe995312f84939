"""Model cards from the training record; push and pull through the real huggingface_hub client on loopback."""

from __future__ import annotations

import os

import pytest
import torch
from huggingface_hub import ModelCard

from _helpers import two_turn_messages
from hub_server import hub_endpoint, hub_server_fixture  # noqa: F401
from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor
from llava_swap.hub import licence_of, push, render_card, write_card
from llava_swap.training import Recipe, default_recipe, run_recipe

SECTIONS = [
    "## How to use",
    "## Architecture and lineage",
    "## Training hyperparameters",
    "## Evaluation results",
    "## Calibration",
    "## Limitations",
    "## Citations",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    recipe = default_recipe().to_dict()
    recipe.update(output_dir=str(out), report_to=[])
    recipe["data"].update(synthetic_train=32, synthetic_test=8)
    recipe["stages"][0].update(max_steps=2, per_device_train_batch_size=8)
    recipe["stages"][1].update(max_steps=2, per_device_train_batch_size=8)
    run_recipe(Recipe.from_dict(recipe))
    return out


def _logits(model, processor):
    inputs = processor.apply_chat_template(two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def test_card_parses_back_with_metrics_and_every_section(trained):
    path = write_card(trained, repo_id="org/tiny-llava")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-text-to-text" and data["license"] == "apache-2.0"
    assert {"llava", "llava-swap", "llm-llama3"} <= set(data["tags"])
    results = data["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "shapes"
    assert {m["type"] for m in results["metrics"]} >= {"accuracy"}
    positions = [card.text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "stage1-pretrain (pretrain, language model frozen)" in card.text
    assert "arXiv:2604.10985" in card.text and "arXiv:2404.01331" in card.text
    assert 'from_pretrained("org/tiny-llava")' in card.text


def test_licence_and_base_model_follow_the_backbones():
    assert licence_of("meta-llama/Meta-Llama-3-8B") == "llama3"
    assert licence_of("google/gemma-2b-it") == "gemma"
    assert licence_of("openai/clip-vit-large-patch14-336") == "mit"
    assert licence_of("huggyllama/llama-7b") == "other"


def test_push_native_then_pull_gives_identical_logits(trained, hub_server):
    model, processor = LlavaSwapForCausalLM.from_pretrained(trained), LlavaSwapProcessor.from_pretrained(trained)
    expected = _logits(model, processor)
    with hub_endpoint(hub_server.url):
        chosen = push(trained, "org/tiny-native", token=hub_server.token, endpoint=hub_server.url)
        assert chosen == "native"
        from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

        native = AutoModelForImageTextToText.from_pretrained("org/tiny-native")
        assert type(native) is LlavaForConditionalGeneration
        ours = LlavaSwapForCausalLM.from_pretrained("org/tiny-native")
        pulled_processor = AutoProcessor.from_pretrained("org/tiny-native")
    assert torch.equal(_logits(native, pulled_processor), expected)
    assert torch.equal(_logits(ours, pulled_processor), expected)
    files = hub_server.files("org/tiny-native")
    assert "README.md" in files and "model.safetensors" in files
    card = files["README.md"].decode()
    assert "vllm serve org/tiny-native" in card
    assert not any(hub_server.token.encode() in content for content in files.values())


def test_push_llava_swap_format_when_native_cannot_express_it(tiny_lm, tiny_vision, tmp_path, hub_server):
    from llava_swap import build_vlm

    model, processor = build_vlm(tiny_lm("gemma"), tiny_vision("clip"), projector="linear")
    model.save_pretrained(tmp_path / "linear")
    processor.save_pretrained(tmp_path / "linear")
    expected = _logits(model, processor)
    with hub_endpoint(hub_server.url):
        with pytest.raises(ValueError, match="projector_type='linear' cannot be exported"):
            push(
                tmp_path / "linear", "org/tiny-linear", format="native", token=hub_server.token, endpoint=hub_server.url
            )
        assert (
            push(tmp_path / "linear", "org/tiny-linear", token=hub_server.token, endpoint=hub_server.url)
            == "llava_swap"
        )
        from transformers import AutoModelForImageTextToText, AutoProcessor

        pulled = AutoModelForImageTextToText.from_pretrained("org/tiny-linear")
        pulled_processor = AutoProcessor.from_pretrained("org/tiny-linear")
    assert type(pulled) is LlavaSwapForCausalLM and pulled.config.projector_type == "linear"
    assert torch.equal(_logits(pulled, pulled_processor), expected)
    assert "pip install llava-swap" in hub_server.files("org/tiny-linear")["README.md"].decode()


def test_push_errors_offline_and_unauthenticated(trained, hub_server, monkeypatch):
    # Offline (the test suite's own setting): a clear error, nothing sent.
    sent = len(hub_server.requests)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1"):
        push(trained, "org/offline", format="llava_swap", token=hub_server.token, endpoint=hub_server.url)
    assert len(hub_server.requests) == sent
    with hub_endpoint(hub_server.url):
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(PermissionError, match="hf auth login"):
            push(trained, "org/no-token", format="llava_swap", token="hf_wrong", endpoint=hub_server.url)


def test_render_card_without_training_record(tiny_lm, tiny_vision, tmp_path):
    from llava_swap import build_vlm

    model, processor = build_vlm(tiny_lm("llama2"), tiny_vision("siglip"))
    model.save_pretrained(tmp_path)
    card = render_card(tmp_path)
    assert "No evaluation was recorded" in card.text and "llm-llama2" in card.data.to_dict()["tags"]
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the fixture restored the suite's offline setting
