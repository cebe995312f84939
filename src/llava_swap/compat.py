"""Every transformers / TRL internal llava-swap touches beyond their public API, named in one place.

Each entry says what it is for and why no public path does the job. `tests/test_compat.py` checks each symbol
against the installed releases, so an upstream rename fails there, by name, instead of as a silent change in
behaviour somewhere else. The versions these were checked on are in README's Compatibility table.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

# transformers.conversion_mapping.register_checkpoint_conversion_mapping + core_model_loading.WeightRenaming:
# the on-disk tensor names of a model type, renamed on load and back on save. `from_pretrained(key_mapping=...)` is
# public but load-only; saving in the native layout has no other hook.
CHECKPOINT_LAYOUT = ("transformers.conversion_mapping", "register_checkpoint_conversion_mapping")
WEIGHT_RENAMING = ("transformers.core_model_loading", "WeightRenaming")
# transformers.conversion_mapping.get_model_conversion_mapping + core_model_loading.rename_source_key: the renaming
# `from_pretrained` applies to a checkpoint's tensor names (our layout's prefixes, CLIP's `vision_model.` level, and
# model-specific renames such as transformers 5.25's DINOv2 q/k/v). A state dict handed to `load_state_dict` (the
# Trainer's resume) needs the same, and no public API renames without loading from files.
CONVERSION_MAPPING = ("transformers.conversion_mapping", "get_model_conversion_mapping")
RENAME_SOURCE_KEY = ("transformers.core_model_loading", "rename_source_key")
# transformers.utils.chat_template_utils.render_jinja_template: a chat template's text with the character spans of
# its {% generation %} blocks. The public `apply_chat_template(return_assistant_tokens_mask=True)` gives token masks
# whose boundary rules changed between 5.17 and 5.24, and only before `<image>` is expanded; the spans let us place
# the mask ourselves, identically on every release.
RENDER_TEMPLATE = ("transformers.utils.chat_template_utils", "render_jinja_template")
# trl.SFTTrainer._metrics / ._total_train_tokens: where SFTTrainer keeps the per-step metrics its `log` averages
# (entropy, mean_token_accuracy, num_tokens). The labelled-positions loss computes them itself and must put them
# where TRL reads them; TRL has no public hook for a subclass's metrics.
TRL_METRICS = ("_metrics", "_total_train_tokens")
# transformers.Trainer._get_train_sampler: the Trainer's only sampler hook. `LlavaSwapSFTTrainer` overrides it for
# modality-pure length groups, as LLaVA's own trainer does; `get_train_dataloader` is public but would mean
# rebuilding the whole dataloader.
TRAINER_SAMPLER_HOOK = ("transformers", "Trainer", "_get_train_sampler")
# transformers.PreTrainedModel._init_weights: the documented per-module init of a model; a projector built fresh for
# swapped backbones is initialised with it (the public `init_weights` would re-initialise loaded backbones too).
INIT_WEIGHTS = ("transformers", "PreTrainedModel", "_init_weights")
# PretrainedConfig._attn_implementation: the attention a model runs; `set_attn_implementation` is the public setter,
# there is no public getter. Relevancy maps switch to eager attention and back.
ATTN_IMPLEMENTATION = ("transformers", "PretrainedConfig", "_attn_implementation")
# HfQuantizer.remove_quantization_config (a quantizer's method, reached through `model.hf_quantizer`): unmarks a model
# loaded from GGUF with every weight dequantized. GGUF's quantizer has no `dequantize()` (the public path), yet the
# model stays marked as quantized, so `save_pretrained` and the Trainer refuse it.
REMOVE_QUANTIZATION = ("transformers.quantizers.base", "HfQuantizer", "remove_quantization_config")


def _resolve(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def register_checkpoint_layout(model_type: str, renamings: Mapping[str, str]) -> None:
    """Makes `from_pretrained` rename on-disk tensor names (regex -> module path) for `model_type`, and saving undo it."""
    register, renaming = _resolve(*CHECKPOINT_LAYOUT), _resolve(*WEIGHT_RENAMING)
    mapping = [renaming(source_patterns=source, target_patterns=target) for source, target in renamings.items()]
    register(model_type, mapping, overwrite=True)


def checkpoint_names_to_modules(model, names) -> dict[str, str]:
    """Each checkpoint tensor name in `names` -> the module path `from_pretrained` would load it into."""
    renaming = _resolve(*WEIGHT_RENAMING)
    conversions = _resolve(*CONVERSION_MAPPING)(model)
    renamings = [entry for entry in conversions if isinstance(entry, renaming)]
    converters = [entry for entry in conversions if not isinstance(entry, renaming)]
    rename = _resolve(*RENAME_SOURCE_KEY)
    renamed = {}
    for name in names:
        renamed[name], converter = rename(name, renamings, converters)
        if converter is not None:  # a tensor split or merged on load: more than a name changes
            raise ValueError(
                f"The checkpoint tensor {name!r} is converted on load ({converter!r}), not only renamed: load the "
                "checkpoint folder with from_pretrained instead of its tensors with load_state_dict."
            )
    return renamed


def render_with_generation_spans(conversations: list, chat_template: str, **kwargs) -> tuple[list[str], list]:
    """`(prompts, spans)`: each conversation rendered, and the `(start, end)` characters of its generation blocks."""
    return _resolve(*RENDER_TEMPLATE)(
        conversations=conversations, chat_template=chat_template, return_assistant_tokens_mask=True, **kwargs
    )


def cache_length(forward_kwargs: Mapping[str, Any]) -> int:
    """Tokens already in the KV cache passed to a forward; the argument is `cache` from transformers 5.24 on,
    `past_key_values` before (public names both, renamed upstream)."""
    cache = forward_kwargs.get("cache", forward_kwargs.get("past_key_values"))
    return 0 if cache is None else int(cache.get_seq_length())


def init_module(model, module) -> None:
    """Initialises a module built for `model` (and its children) the way transformers initialises `model`'s own."""
    module.apply(getattr(model, INIT_WEIGHTS[2]))


def attn_implementation(model) -> str | None:
    """The attention implementation `model` runs (`"sdpa"`, `"eager"`, ...)."""
    return getattr(model.config, ATTN_IMPLEMENTATION[2])


def forget_quantization(model) -> None:
    """Removes the quantization marks (quantizer, config entry) of a model whose weights are plain tensors."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        getattr(quantizer, REMOVE_QUANTIZATION[2])(model)
    elif getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def generate_encodes_images_first(model) -> bool:
    """Whether `generate` encodes images before the first forward and hands them over as `mm_encoder_outputs`
    (transformers 5.24 on), told as transformers tells it: by the forward's signature."""
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def trl_metrics_available(trainer) -> bool:
    """Whether `trainer` keeps TRL's per-step metrics where `record_trl_metrics` writes them."""
    return all(hasattr(trainer, name) for name in TRL_METRICS)


def record_trl_metrics(trainer, mode: str, trained_tokens: int = 0, **values: float) -> None:
    """Appends `values` to the metrics TRL's `log` averages for `mode`, and counts `trained_tokens` (train only)."""
    metrics = trainer._metrics[mode]
    for name, value in values.items():
        metrics[name].append(value)
    if mode == "train":
        trainer._total_train_tokens += trained_tokens
    metrics["num_tokens"] = [trainer._total_train_tokens]


__all__ = [
    "ATTN_IMPLEMENTATION",
    "CHECKPOINT_LAYOUT",
    "CONVERSION_MAPPING",
    "INIT_WEIGHTS",
    "REMOVE_QUANTIZATION",
    "RENAME_SOURCE_KEY",
    "RENDER_TEMPLATE",
    "TRAINER_SAMPLER_HOOK",
    "TRL_METRICS",
    "WEIGHT_RENAMING",
    "attn_implementation",
    "cache_length",
    "checkpoint_names_to_modules",
    "forget_quantization",
    "generate_encodes_images_first",
    "init_module",
    "record_trl_metrics",
    "register_checkpoint_layout",
    "render_with_generation_spans",
    "trl_metrics_available",
]
