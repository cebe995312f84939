"""Tiny, deterministic, offline Hugging Face checkpoints that mimic real LLM families and vision encoders.

They are the fixtures of the test suite and the embedded default of the tool: every function here writes an ordinary
``save_pretrained`` directory (safetensors, float32, well under 5 MB) that loads back with the ``Auto*`` classes, and
writes byte-identical files on every call. Nothing is downloaded. The architectures are tiny, but everything that
downstream code depends on is faithful to the real checkpoints:

* ``llama1`` / ``llama2`` (huggyllama/llama-7b, meta-llama/Llama-2-7b-hf): SentencePiece-style BPE with byte
  fallback, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2 then the 256 byte tokens, ``<s>`` prepended, no pad token, no
  chat template; they differ in context length, RMSNorm epsilon and the generation config's pad id.
* ``llama3`` (meta-llama/Meta-Llama-3-8B): tiktoken-style byte-level BPE with the LLaMA-3 split regex, the
  special tokens after the learned vocabulary in the LLaMA-3.1 order, ``<|begin_of_text|>`` prepended, no pad
  token, GQA and rope theta 500000.
* ``gemma`` (google/gemma-2b-it): SentencePiece-style BPE without the dummy prefix space, ``<pad>``/``<eos>``/
  ``<bos>``/``<unk>``/``<mask>``/turn tokens first, Gemma's chat template, tied embeddings, multi-query attention.
* ``clip`` / ``siglip`` / ``dinov2``: vision towers with 32x32 images in 8x8 patches and their image processors.
* ``clip-pretrained``: the ``clip`` tower pretrained to see the synthetic tasks' images (``pretraining.py``); the
  study's default encoder, so that its tasks are learnable. Deterministic, built once (about a minute) and cached.

The tokenizers are trained with the ``tokenizers`` library on an English corpus generated in code (shapes, colours,
counting questions and seismology), so their vocabularies are small (about 2000 tokens) but realistic.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    BitImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    GemmaConfig,
    GemmaForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.utils import logging as hf_logging

from .vocabulary import SEED, TokenizerSpec, build_tokenizer, bytelevel_tokenizer, sentencepiece_tokenizer

LANGUAGE_FAMILIES: tuple[str, ...] = ("llama1", "llama2", "llama3", "gemma")
VISION_KINDS: tuple[str, ...] = ("clip", "siglip", "dinov2")
# Trained rather than only initialised (pretraining.py): built once per machine, then copied from a cache.
PRETRAINED_VISION_KINDS: tuple[str, ...] = ("clip-pretrained",)

# The chat template of google/gemma-2b-it, verbatim.
_GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# LLaMA-3.1's first eleven special tokens, in id order; the rest are numbered reserved tokens.
_LLAMA3_NAMED_SPECIALS = (
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
)
_LLAMA3_SPECIALS = _LLAMA3_NAMED_SPECIALS + tuple(
    f"<|reserved_special_token_{i}|>" for i in range(3, 3 + 16 - len(_LLAMA3_NAMED_SPECIALS))
)


# --------------------------------------------------------------------------------------------------------------------
# Language models
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LanguageSpec:
    """One LLM family: its tokenizer, model class and config; token ids are given by token so they follow the vocab."""

    tokenizer: TokenizerSpec
    model_cls: type[PreTrainedModel]
    config_cls: type[PretrainedConfig]
    config: Mapping[str, Any]
    config_tokens: Mapping[str, str | None]  # config field -> special token whose id it holds
    generation_tokens: Mapping[str, str | None]  # generation_config.json field -> special token


_LLAMA_TOKENIZER = TokenizerSpec(
    builder=sentencepiece_tokenizer,
    learned_size=1800,
    specials=("<unk>", "<s>", "</s>"),
    bos="<s>",
    eos="</s>",
    unk="<unk>",
    unlearned_chars="\n",
)
_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}
_LLAMA_CONFIG_TOKENS = {"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": None}

_LANGUAGE_SPECS: dict[str, _LanguageSpec] = {
    # huggyllama/llama-7b
    "llama1": _LanguageSpec(
        tokenizer=_LLAMA_TOKENIZER,
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        config={**_LLAMA_CONFIG, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6},
        config_tokens=_LLAMA_CONFIG_TOKENS,
        generation_tokens={"bos_token_id": "<s>", "eos_token_id": "</s>"},
    ),
    # meta-llama/Llama-2-7b-hf: longer context, larger epsilon, and a generation config that pads with <unk> (0).
    "llama2": _LanguageSpec(
        tokenizer=_LLAMA_TOKENIZER,
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        config={**_LLAMA_CONFIG, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        config_tokens=_LLAMA_CONFIG_TOKENS,
        generation_tokens={"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<unk>"},
    ),
    # meta-llama/Meta-Llama-3-8B (base): no pad token and no chat template, although the reserved tokens exist.
    "llama3": _LanguageSpec(
        tokenizer=TokenizerSpec(
            builder=bytelevel_tokenizer,
            learned_size=2000,
            specials=_LLAMA3_SPECIALS,
            bos="<|begin_of_text|>",
            eos="<|end_of_text|>",
            model_max_length=8192,
        ),
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        config={
            "hidden_size": 64,
            "intermediate_size": 224,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        },
        config_tokens={"bos_token_id": "<|begin_of_text|>", "eos_token_id": "<|end_of_text|>", "pad_token_id": None},
        generation_tokens={"bos_token_id": "<|begin_of_text|>", "eos_token_id": "<|end_of_text|>"},
    ),
    # google/gemma-2b-it
    "gemma": _LanguageSpec(
        tokenizer=TokenizerSpec(
            builder=sentencepiece_tokenizer,
            learned_size=1800,
            specials=("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"),
            bos="<bos>",
            eos="<eos>",
            unk="<unk>",
            pad="<pad>",
            prepend_space=False,
            chat_template=_GEMMA_CHAT_TEMPLATE,
        ),
        model_cls=GemmaForCausalLM,
        config_cls=GemmaConfig,
        config={
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        },
        config_tokens={"bos_token_id": "<bos>", "eos_token_id": "<eos>", "pad_token_id": "<pad>"},
        generation_tokens={"bos_token_id": "<bos>", "eos_token_id": "<eos>", "pad_token_id": "<pad>"},
    ),
}


# --------------------------------------------------------------------------------------------------------------------
# Vision models
# --------------------------------------------------------------------------------------------------------------------

_VISION_SIZES: dict[str, int] = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_channels": 3,
}
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class _VisionSpec:
    """One vision tower: model and config classes, config fields, and the image processor that feeds it."""

    model_cls: type[PreTrainedModel]
    config_cls: type[PretrainedConfig]
    config: Mapping[str, Any]
    processor_cls: type
    processor: Mapping[str, Any]


_VISION_SPECS: dict[str, _VisionSpec] = {
    # openai/clip-vit-*: resize the shortest edge, centre-crop, CLIP statistics; CLS token + patches.
    "clip": _VisionSpec(
        model_cls=CLIPVisionModel,
        config_cls=CLIPVisionConfig,
        config={**_VISION_SIZES, "intermediate_size": 256},
        processor_cls=CLIPImageProcessorPil,
        processor={
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True,
            "image_mean": _CLIP_MEAN,
            "image_std": _CLIP_STD,
        },
    ),
    # google/siglip-*: plain resize to a square, mean/std 0.5; patches only, no CLS token.
    "siglip": _VisionSpec(
        model_cls=SiglipVisionModel,
        config_cls=SiglipVisionConfig,
        config={**_VISION_SIZES, "intermediate_size": 256},
        processor_cls=SiglipImageProcessorPil,
        processor={"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
    ),
    # facebook/dinov2-*: BiT processor (shortest edge, centre crop, ImageNet statistics); MLP width via mlp_ratio.
    "dinov2": _VisionSpec(
        model_cls=Dinov2Model,
        config_cls=Dinov2Config,
        config={**_VISION_SIZES, "mlp_ratio": 4},
        processor_cls=BitImageProcessorPil,
        processor={
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "image_mean": _IMAGENET_MEAN,
            "image_std": _IMAGENET_STD,
        },
    ),
}


# --------------------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------------------


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    """``table[name]``, or a ValueError that names the bad value and lists the valid ones."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid ones are: {', '.join(table)}")
    return table[name]


@contextlib.contextmanager
def _deterministic_init() -> Iterator[None]:
    """Seed weight init without touching the caller's RNG, default dtype or default device."""
    dtype = torch.get_default_dtype()
    # Weights are made on the CPU, so only its generator is forked and seeded (torch.manual_seed would reseed CUDA too).
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(SEED)
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(dtype)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hide the "Writing model shards" bar of a one-file save, restoring the caller's setting afterwards."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _save_model(model_cls: type[PreTrainedModel], config: PretrainedConfig, path: pathlib.Path) -> None:
    with _deterministic_init():
        model = model_cls(config).to(torch.float32).eval()
    with _no_progress_bars():
        model.save_pretrained(path)


def save_language_model(family: str, path: str | os.PathLike, **config_overrides: Any) -> pathlib.Path:
    """Write a tiny causal LM of ``family`` (one of ``LANGUAGE_FAMILIES``) with its tokenizer to ``path``.

    ``config_overrides`` change fields of its config, e.g. ``head_dim=64``: vLLM's CPU attention takes 32, 64, 80, ...
    but not the tiny default of 16."""
    spec: _LanguageSpec = _lookup(_LANGUAGE_SPECS, family, "language family")
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.tokenizer)

    def ids(tokens: Mapping[str, str | None]) -> dict[str, int | None]:
        return {key: None if tok is None else tokenizer.convert_tokens_to_ids(tok) for key, tok in tokens.items()}

    config = spec.config_cls(
        **{**spec.config, **config_overrides}, vocab_size=len(tokenizer), **ids(spec.config_tokens)
    )
    _save_model(spec.model_cls, config, out)
    # Written after the model so that it replaces the one save_pretrained derives from the model config.
    GenerationConfig(**ids(spec.generation_tokens)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_key(kind: str) -> str | None:
    """What a trained kind (``PRETRAINED_VISION_KINDS``) was built from, as a hash; None for the others, which are
    only initialised. Fingerprints of runs that use one include it, so a rebuilt encoder is never mixed in."""
    if kind not in PRETRAINED_VISION_KINDS:
        return None
    from .pretraining import build_key as pretraining_key

    return pretraining_key()


def save_vision_model(kind: str, path: str | os.PathLike) -> pathlib.Path:
    """Write a tiny vision encoder of ``kind`` (``VISION_KINDS`` or ``PRETRAINED_VISION_KINDS``) with its image
    processor to ``path``."""
    if kind in PRETRAINED_VISION_KINDS:
        from .pretraining import save_pretrained_clip

        return save_pretrained_clip(path)
    spec: _VisionSpec = _lookup({**_VISION_SPECS, **dict.fromkeys(PRETRAINED_VISION_KINDS)}, kind, "vision kind")
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _save_model(spec.model_cls, spec.config_cls(**spec.config), out)
    spec.processor_cls(**spec.processor).save_pretrained(out)
    return out


__all__ = [
    "LANGUAGE_FAMILIES",
    "PRETRAINED_VISION_KINDS",
    "VISION_KINDS",
    "build_key",
    "save_language_model",
    "save_vision_model",
]
