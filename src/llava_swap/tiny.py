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

The tokenizers are trained with the ``tokenizers`` library on an English corpus generated in code (shapes, colours,
counting questions and seismology), so their vocabularies are small (about 2000 tokens) but realistic.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
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
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.utils import logging as hf_logging

LANGUAGE_FAMILIES: tuple[str, ...] = ("llama1", "llama2", "llama3", "gemma")
VISION_KINDS: tuple[str, ...] = ("clip", "siglip", "dinov2")

_SEED = 20240521
_SPIECE_SPACE = "▁"  # SentencePiece's visible space (U+2581)
# The pre-tokenizer regex of LLaMA-3 (tiktoken's cl100k-style pattern), verbatim from Meta-Llama-3-8B.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
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
# Training corpus
# --------------------------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Split a compact word list; "_" joins the words of a multi-word entry."""
    return [word.replace("_", " ") for word in text.split()]


_COLOURS = _words("red green blue yellow orange purple black white grey brown pink cyan magenta violet golden silver")
_SHAPES = _words("circle square triangle rectangle star hexagon ellipse diamond cross line arrow heart oval polygon")
_OBJECTS = _words("ball box cup car tree house dog cat bird flower chair table book lamp boat kite clock apple")
_SIZES = _words("small large tiny big medium huge thin wide narrow long short tall bright dark striped dotted")
_POSITIONS = _words(
    "on_the_left on_the_right at_the_top at_the_bottom in_the_centre in_the_middle near_the_corner above_the_line "
    "below_the_square next_to_the_circle behind_the_triangle between_the_two_stars inside_the_box outside_the_frame "
    "under_the_table beside_the_tree"
)
_COUNTS = _words("zero one two three four five six seven eight nine ten eleven twelve twenty several many few")
_SEISMIC = _words(
    "trace traces arrival arrivals P_wave S_wave surface_wave amplitude frequency station stations event events "
    "coordinates magnitude epicentre hypocentre depth latitude longitude waveform seismogram spectrogram "
    "earthquake aftershock foreshock tremor noise signal channel component sensor seismometer network phase "
    "onset peak window sample samples velocity displacement acceleration polarity azimuth distance fault "
    "rupture catalogue detection picker residual travel_time sampling_rate bandpass filter"
)
_SCENES = _words(
    "park garden kitchen street beach forest office classroom desert mountain river harbour laboratory observatory "
    "village city field bridge museum station_hall"
)
_VERBS = _words("shows records detects contains displays measures reveals marks picks locates filters estimates")
_QUESTIONS = (
    "What colour is the {size} {shape}?",
    "How many {shape}s are there in the image?",
    "Is the {colour} {shape} {position}?",
    "Where is the {size} {colour} {object}?",
    "Which shape is {position}?",
    "Count the {colour} objects in the picture.",
    "Describe the {object} {position}.",
    "What is the {seismic} at station {station}?",
    "When does the {seismic} reach the station?",
    "How many {seismic} are visible in this trace?",
    "Is there a P wave arrival before {number} seconds?",
    "What are the coordinates of the event?",
    "Please describe this photograph in detail.",
    "Can you tell me what happens after the first arrival?",
)
_ANSWERS = (
    "The {size} {shape} is {colour}.",
    "There are {count} {shape}s.",
    "Yes, the {colour} {object} is {position}.",
    "No, it is {position}.",
    "The {shape} {position} is {size} and {colour}.",
    "I can see {count} {colour} {object}s and {count2} {shape}s.",
    "The {seismic} {verb} a peak of {number} at {frequency} Hz.",
    "Station {station} {verb} the S wave at {number} s, {count} seconds after the P wave.",
    "The event is located at ({lat}, {lon}) with a depth of {depth} km and magnitude {magnitude}.",
    "The amplitude is {number} and the dominant frequency is {frequency} Hz.",
    "Answer: {count}.",
    "It's {colour}; they're {size}, and we'll count {count2} of them!",
    "A photograph of a {size} {colour} {object} {position} in a {scene}.",
    "This picture was taken in the {scene}, where {count} people were walking slowly.",
    "The seismologist noticed that the {seismic} became stronger during the night.",
    "Because the instrument was calibrated yesterday, the measurement should be reliable.",
    "Although the weather changed quickly, everyone remained comfortable and curious.",
)
_LETTERS = "ABCDEFGHKLMNPRSTWXYZ"


def _corpus() -> Iterator[str]:
    """Yield a deterministic, varied English corpus: questions and answers about shapes and seismic traces."""
    # A private Random: the caller's global RNG state is left alone, and the stream is fixed by the seed.
    rng = random.Random(_SEED)

    def number() -> str:
        return rng.choice((f"{rng.random():.2f}", f"{rng.uniform(0, 100):.1f}", str(rng.randrange(0, 2000))))

    for i in range(4000):
        slots = {
            "colour": rng.choice(_COLOURS),
            "shape": rng.choice(_SHAPES),
            "object": rng.choice(_OBJECTS),
            "size": rng.choice(_SIZES),
            "position": rng.choice(_POSITIONS),
            "count": rng.choice(_COUNTS + [str(n) for n in range(13)]),
            "count2": rng.choice(_COUNTS),
            "seismic": rng.choice(_SEISMIC),
            "verb": rng.choice(_VERBS),
            "scene": rng.choice(_SCENES),
            "station": f"{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}{rng.randrange(10, 99)}",
            "number": number(),
            "frequency": f"{rng.uniform(0.5, 40):.1f}",
            "lat": f"{rng.uniform(-90, 90):.3f}",
            "lon": f"{rng.uniform(-180, 180):.3f}",
            "depth": f"{rng.uniform(0, 700):.1f}",
            "magnitude": f"{rng.uniform(1, 8):.1f}",
        }
        question = rng.choice(_QUESTIONS).format(**slots)
        answer = rng.choice(_ANSWERS).format(**slots)
        # Vary the layout so that newlines, capitals and chat role words are seen too.
        yield (
            question,
            f"USER: {question}\nASSISTANT: {answer}",
            f"user\n{question}\nmodel\n{answer}",
            f"{question} {answer}",
            answer.upper(),
            answer.capitalize(),
        )[i % 6]


# --------------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TokenizerSpec:
    """How one family's tokenizer is laid out; ``builder`` picks SentencePiece-style or byte-level BPE."""

    builder: Callable[[_TokenizerSpec], Tokenizer]
    learned_size: int  # at most this many tokens learned by BPE (characters and merges), besides specials and bytes
    specials: tuple[str, ...]  # all special tokens, in id order (before or after the learned vocabulary)
    bos: str
    eos: str
    unk: str | None = None
    pad: str | None = None
    # SentencePiece-style: LLaMA adds a dummy "▁" before the text, Gemma does not.
    prepend_space: bool = True
    # Characters kept out of the learned vocabulary, so that they encode as byte tokens ("\n" is <0x0A> in LLaMA).
    unlearned_chars: str = ""
    chat_template: str | None = None
    model_max_length: int | None = None


# SentencePiece splits pieces at whitespace, at letter/punctuation boundaries and (LLaMA, Gemma) between digits.
_SPIECE_PIECE = r"▁?\p{L}+|▁?[^\p{L}\p{N}▁]+|\p{N}|▁"


def _train_bpe(
    pre_tokenizer: pre_tokenizers.PreTokenizer, size: int, alphabet: list[str], unlearned: str = ""
) -> tuple[list[str], list[tuple[str, str]]]:
    """Train a BPE on the generated corpus; return its vocabulary (in id order) and merges."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=alphabet, show_progress=False)
    drop = str.maketrans(dict.fromkeys(unlearned, " "))
    tokenizer.train_from_iterator((text.translate(drop) for text in _corpus()), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"], key=model["vocab"].__getitem__)
    return vocab, [tuple(m) for m in model["merges"]]


def _sentencepiece_tokenizer(spec: _TokenizerSpec) -> Tokenizer:
    """A BPE laid out like a SentencePiece model converted by transformers: specials, 256 byte tokens, pieces."""
    training_split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(_SPIECE_SPACE, prepend_scheme="first" if spec.prepend_space else "never"),
            pre_tokenizers.Split(Regex(_SPIECE_PIECE), behavior="isolated"),
        ]
    )
    learned, merges = _train_bpe(training_split, spec.learned_size, [], spec.unlearned_chars)
    ordered = [*spec.specials, *(f"<0x{b:02X}>" for b in range(256)), *learned]
    vocab = {token: i for i, token in enumerate(ordered)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=spec.unk, fuse_unk=True, byte_fallback=True))
    decoder_steps = [decoders.Replace(_SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.prepend_space:
        # LLaMA: "▁" is prepended to the whole text (no split) and that one space is stripped again when decoding.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(_SPIECE_SPACE, prepend_scheme="first", split=False)
        decoder_steps.append(decoders.Strip(" ", 1, 0))
    else:
        # Gemma: spaces become "▁" in the normalizer; nothing is prepended or split.
        tokenizer.normalizer = normalizers.Replace(" ", _SPIECE_SPACE)
    tokenizer.decoder = decoders.Sequence(decoder_steps)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials])
    tokenizer.post_processor = _prepend_bos(tokenizer, spec.bos, pair_bos_type_id=1)
    return tokenizer


def _bytelevel_tokenizer(spec: _TokenizerSpec) -> Tokenizer:
    """A tiktoken-style byte-level BPE like LLaMA-3's: learned vocabulary first, special tokens after it."""
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    # The byte alphabet comes out of a hash set; sort it so that training is reproducible.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    learned, merges = _train_bpe(pre_tokenizer, spec.learned_size, alphabet, spec.unlearned_chars)
    vocab = {token: i for i, token in enumerate(learned)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials])
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            _prepend_bos(tokenizer, spec.bos, pair_bos_type_id=0),
        ]
    )
    return tokenizer


def _prepend_bos(tokenizer: Tokenizer, bos: str, pair_bos_type_id: int) -> processors.TemplateProcessing:
    """The post-processor of LLaMA and Gemma: BOS before each sequence, no EOS (the type id of the second BOS of a
    pair is 1 in the SentencePiece conversions and 0 in LLaMA-3's)."""
    return processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos}:{pair_bos_type_id} $B:1",
        special_tokens=[(bos, tokenizer.token_to_id(bos))],
    )


def _build_tokenizer(spec: _TokenizerSpec) -> PreTrainedTokenizerFast:
    """Wrap the family's ``tokenizers`` pipeline in a transformers tokenizer with its special tokens declared."""
    limits = {} if spec.model_max_length is None else {"model_max_length": spec.model_max_length}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=spec.builder(spec),
        bos_token=spec.bos,
        eos_token=spec.eos,
        unk_token=spec.unk,
        pad_token=spec.pad,
        # transformers ignores (and warns about) space clean-up for BPE tokenizers; keep decoding exact.
        clean_up_tokenization_spaces=False,
        **limits,
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer


# --------------------------------------------------------------------------------------------------------------------
# Language models
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LanguageSpec:
    """One LLM family: its tokenizer, model class and config; token ids are given by token so they follow the vocab."""

    tokenizer: _TokenizerSpec
    model_cls: type[PreTrainedModel]
    config_cls: type[PretrainedConfig]
    config: Mapping[str, Any]
    config_tokens: Mapping[str, str | None]  # config field -> special token whose id it holds
    generation_tokens: Mapping[str, str | None]  # generation_config.json field -> special token


_LLAMA_TOKENIZER = _TokenizerSpec(
    builder=_sentencepiece_tokenizer,
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
        tokenizer=_TokenizerSpec(
            builder=_bytelevel_tokenizer,
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
        tokenizer=_TokenizerSpec(
            builder=_sentencepiece_tokenizer,
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
        torch.random.default_generator.manual_seed(_SEED)
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


def save_language_model(family: str, path: str | os.PathLike) -> pathlib.Path:
    """Write a tiny causal LM of ``family`` (one of ``LANGUAGE_FAMILIES``) with its tokenizer to ``path``."""
    spec: _LanguageSpec = _lookup(_LANGUAGE_SPECS, family, "language family")
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(spec.tokenizer)

    def ids(tokens: Mapping[str, str | None]) -> dict[str, int | None]:
        return {key: None if tok is None else tokenizer.convert_tokens_to_ids(tok) for key, tok in tokens.items()}

    config = spec.config_cls(**spec.config, vocab_size=len(tokenizer), **ids(spec.config_tokens))
    _save_model(spec.model_cls, config, out)
    # Written after the model so that it replaces the one save_pretrained derives from the model config.
    GenerationConfig(**ids(spec.generation_tokens)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_vision_model(kind: str, path: str | os.PathLike) -> pathlib.Path:
    """Write a tiny vision encoder of ``kind`` (one of ``VISION_KINDS``) with its image processor to ``path``."""
    spec: _VisionSpec = _lookup(_VISION_SPECS, kind, "vision kind")
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _save_model(spec.model_cls, spec.config_cls(**spec.config), out)
    spec.processor_cls(**spec.processor).save_pretrained(out)
    return out


__all__ = ["LANGUAGE_FAMILIES", "VISION_KINDS", "save_language_model", "save_vision_model"]
