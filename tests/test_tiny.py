"""Tests for ``llava_swap.tiny``: the tiny offline checkpoints that stand in for real LLMs and vision encoders."""

from __future__ import annotations

import os

# Everything here must work without a network; fail fast rather than try one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hashlib
import json
import pathlib
import random

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

# transformers 5.17 without torchvision exports a placeholder for ``transformers.AutoImageProcessor``; the class
# itself, imported from its module, works in every supported version.
from transformers.models.auto.image_processing_auto import AutoImageProcessor

from llava_swap.tiny import LANGUAGE_FAMILIES, VISION_KINDS, save_language_model, save_vision_model

ALL = [*LANGUAGE_FAMILIES, *VISION_KINDS]
QUESTION = "What colour is the small circle?"

# family -> (bos, eos, unk, pad, {token: id} that the real checkpoints fix)
SPECIALS = {
    "llama1": (
        "<s>",
        "</s>",
        "<unk>",
        None,
        {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "<0x0A>": 13, "<0xFF>": 258},
    ),
    "llama2": (
        "<s>",
        "</s>",
        "<unk>",
        None,
        {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "<0x0A>": 13, "<0xFF>": 258},
    ),
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>", None, None, {}),
    "gemma": (
        "<bos>",
        "<eos>",
        "<unk>",
        "<pad>",
        {
            "<pad>": 0,
            "<eos>": 1,
            "<bos>": 2,
            "<unk>": 3,
            "<mask>": 4,
            "<start_of_turn>": 5,
            "<end_of_turn>": 6,
            "<0x00>": 7,
            "<0xFF>": 262,
        },
    ),
}
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_3|>",
    "<|reserved_special_token_4|>",
    "<|reserved_special_token_5|>",
    "<|reserved_special_token_6|>",
    "<|reserved_special_token_7|>",
]


def _save(name: str, path: pathlib.Path) -> pathlib.Path:
    return save_language_model(name, path) if name in LANGUAGE_FAMILIES else save_vision_model(name, path)


def _digests(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: _save(name, root / name) for name in ALL}


@pytest.fixture(scope="module")
def tiny_tokenizers(tiny_dirs: dict[str, pathlib.Path]) -> dict:
    return {family: AutoTokenizer.from_pretrained(tiny_dirs[family]) for family in LANGUAGE_FAMILIES}


# --- files ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_byte_identical_across_calls(name: str, tiny_dirs: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    again = _save(name, tmp_path / "nested" / name)  # also checks that missing parents are created
    assert again == tmp_path / "nested" / name
    first, second = _digests(tiny_dirs[name]), _digests(again)
    assert "model.safetensors" in first
    assert first == second


@pytest.mark.parametrize("name", ALL)
def test_small_safetensors_float32(name: str, tiny_dirs: dict[str, pathlib.Path]) -> None:
    files = [p for p in tiny_dirs[name].rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024
    assert not any(p.suffix in {".bin", ".pt", ".pth"} for p in files)
    assert json.loads((tiny_dirs[name] / "config.json").read_text())["dtype"] == "float32"


def test_global_rng_untouched(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(1234)
    random.seed(1234)
    torch_state, python_state = torch.random.get_rng_state(), random.getstate()
    save_vision_model("siglip", tmp_path / "v")
    save_language_model("llama1", tmp_path / "l")
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == python_state


@pytest.mark.parametrize(
    ("func", "bad", "valid"),
    [(save_language_model, "llama4", LANGUAGE_FAMILIES), (save_vision_model, "vit", VISION_KINDS)],
)
def test_unknown_name_raises(func, bad: str, valid: tuple[str, ...], tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=bad) as info:
        func(bad, tmp_path)
    assert all(name in str(info.value) for name in valid)


# --- tiny_tokenizers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", LANGUAGE_FAMILIES)
def test_special_tokens(family: str, tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers[family]
    bos, eos, unk, pad = SPECIALS[family][:4]
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == (bos, eos, unk, pad)
    for token, expected in SPECIALS[family][4].items():
        assert tok.convert_tokens_to_ids(token) == expected, token
    assert 1500 <= len(tok) <= 2500
    # Byte tokens are ordinary vocabulary entries, special tokens are added special tokens.
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    assert not any(name.startswith("<0x") for name in added)
    assert all(t.special for t in added.values())


def test_llama3_special_tokens_follow_the_vocabulary(tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers["llama3"]
    first = len(tok) - len(LLAMA3_SPECIALS)
    assert tok.convert_tokens_to_ids(LLAMA3_SPECIALS) == list(range(first, len(tok)))
    assert sorted(t.content for t in tok.added_tokens_decoder.values()) == sorted(LLAMA3_SPECIALS)
    assert tok.pad_token is None and tok.chat_template is None  # the base model declares no pad token


@pytest.mark.parametrize("family", LANGUAGE_FAMILIES)
def test_bos_once_round_trip(family: str, tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers[family]
    ids = tok(QUESTION).input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert ids[-1] != tok.eos_token_id
    assert tok(QUESTION, add_special_tokens=False).input_ids == ids[1:]
    assert tok.decode(ids, skip_special_tokens=True) == QUESTION
    assert tok.decode(ids[1:]) == QUESTION
    text = "Station AB12 records 0.42 at 3.5 Hz.\nnaïve café"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


@pytest.mark.parametrize(
    ("family", "tokens"),
    [
        ("llama1", ["<s>", "</s>", "<unk>"]),
        ("llama2", ["<s>", "</s>", "<unk>"]),
        ("llama3", ["<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>", "<|begin_of_text|>"]),
        ("gemma", ["<end_of_turn>", "<start_of_turn>", "<eos>", "<bos>", "<pad>"]),
    ],
)
def test_special_tokens_in_text_are_single_ids(family: str, tokens: list[str], tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers[family]
    for token in tokens:
        assert tok(f"hi{token}there", add_special_tokens=False).input_ids.count(tok.convert_tokens_to_ids(token)) == 1
        assert tok(token, add_special_tokens=False).input_ids == [tok.convert_tokens_to_ids(token)]


@pytest.mark.parametrize("family", ["llama1", "llama2"])
def test_llama_sentencepiece_quirks(family: str, tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers[family]
    assert tok.convert_ids_to_tokens(tok("hi").input_ids)[1].startswith("▁")  # the dummy prefix space
    assert tok("a\nb", add_special_tokens=False).input_ids.count(13) == 1  # newline falls back to <0x0A>
    assert tok.chat_template is None


def test_gemma_chat_template(tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers["gemma"]
    assert not tok.convert_ids_to_tokens(tok("hi").input_ids)[1].startswith("▁")  # no dummy prefix space
    messages = [{"role": "user", "content": " Hi there "}, {"role": "assistant", "content": "Hello."}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[:2] == [2, 5] and ids.count(2) == 1 and ids.count(6) == 2


# --- configs and models ---------------------------------------------------------------------------------------------


def test_llama_configs(tiny_dirs: dict[str, pathlib.Path]) -> None:
    llama1, llama2, llama3 = (AutoConfig.from_pretrained(tiny_dirs[f]) for f in ("llama1", "llama2", "llama3"))
    assert (llama1.max_position_embeddings, llama1.rms_norm_eps) == (2048, 1e-6)
    assert (llama2.max_position_embeddings, llama2.rms_norm_eps) == (4096, 1e-5)
    for config in (llama1, llama2):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, None)
        assert config.num_key_value_heads == config.num_attention_heads
        assert config.rope_parameters["rope_theta"] == 10000.0
        assert not config.tie_word_embeddings
    assert llama3.num_key_value_heads < llama3.num_attention_heads
    assert llama3.rope_parameters["rope_theta"] == 500000.0
    assert llama3.max_position_embeddings == 8192 and llama3.pad_token_id is None
    assert not llama3.tie_word_embeddings
    generation = {f: GenerationConfig.from_pretrained(tiny_dirs[f]) for f in ("llama1", "llama2", "llama3")}
    assert (generation["llama1"].bos_token_id, generation["llama1"].eos_token_id) == (1, 2)
    assert generation["llama1"].pad_token_id is None and generation["llama2"].pad_token_id == 0
    assert generation["llama3"].eos_token_id == llama3.eos_token_id == llama3.bos_token_id + 1


def test_gemma_config(tiny_dirs: dict[str, pathlib.Path], tiny_tokenizers: dict) -> None:
    config = AutoConfig.from_pretrained(tiny_dirs["gemma"])
    assert config.model_type == "gemma" and config.tie_word_embeddings
    assert (config.pad_token_id, config.eos_token_id, config.bos_token_id) == (0, 1, 2)
    assert config.num_key_value_heads == 1 and config.hidden_activation == "gelu_pytorch_tanh"
    generation = GenerationConfig.from_pretrained(tiny_dirs["gemma"])
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (2, 1, 0)
    assert tiny_tokenizers["gemma"].chat_template


@pytest.mark.parametrize("family", LANGUAGE_FAMILIES)
def test_language_model_forward(family: str, tiny_dirs: dict[str, pathlib.Path], tiny_tokenizers: dict) -> None:
    tok = tiny_tokenizers[family]
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[family])
    assert model.config.vocab_size == len(tok)
    assert model.dtype == torch.float32
    ids = tok(QUESTION, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("kind", "tokens"), [("clip", 17), ("siglip", 16), ("dinov2", 17)])
def test_vision_model_forward(kind: str, tokens: int, tiny_dirs: dict[str, pathlib.Path]) -> None:
    config = AutoConfig.from_pretrained(tiny_dirs[kind])
    assert (config.image_size, config.patch_size, config.hidden_size) == (32, 8, 64)
    model = AutoModel.from_pretrained(tiny_dirs[kind])
    processor = AutoImageProcessor.from_pretrained(tiny_dirs[kind])
    pixels = processor(images=Image.new("RGB", (48, 40), (200, 40, 90)), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    assert hidden.shape == (1, tokens, 64)
    assert torch.isfinite(hidden).all()
