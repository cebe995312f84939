"""Interoperation with transformers' native llava format (`LlavaForConditionalGeneration` + `LlavaProcessor`).

The native format is what vLLM, SGLang and plain transformers serve. Our parameter names are the native ones, so an
export rewrites the config and saves through the native class itself (a strict state-dict load proves every tensor
found its place), and an import converts the config alone. What the native format cannot express (a projector other
than a 2-layer MLP) is refused with the reason, never approximated.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from .configuration_llava_swap import LlavaSwapConfig
from .modeling_llava_swap import LlavaSwapForCausalLM
from .processing_llava_swap import LlavaSwapProcessor

NATIVE_TIED_EMBEDDING = "model.language_model.embed_tokens.weight"  # what LlavaForConditionalGeneration ties


def llava_swap_config_to_native(config: LlavaSwapConfig) -> LlavaConfig:
    """The native `LlavaConfig` equivalent to `config`; raises if the native format cannot express it."""
    if config.projector_type != "mlp2x_gelu":
        raise ValueError(
            f"projector_type={config.projector_type!r} cannot be exported: transformers' native llava format only has "
            "the 2-layer MLP projector ('mlp2x_gelu'). Keep this model in the llava_swap format "
            "(save_pretrained), which LlavaSwapForCausalLM and the Auto classes load after `import llava_swap`."
        )
    if config.vision_feature_select_strategy == "default" and config.num_vision_prefix_tokens != 1:
        raise ValueError(
            f"The native format's 'default' strategy drops exactly one token, but {config.vision_config.model_type} "
            f"has {config.num_vision_prefix_tokens}: use vision_feature_select_strategy='full' before exporting."
        )
    return LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_hidden_act=config.projector_hidden_act,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        multimodal_projector_bias=config.projector_bias,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
    )


def native_config_to_llava_swap(config: LlavaConfig) -> LlavaSwapConfig:
    """Reads a native llava config (e.g. llava-hf/llava-1.5-7b-hf, Intel/llava-gemma-2b) as a `LlavaSwapConfig`."""
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(
            f"vision_feature_layer={layer!r}: features concatenated from several layers are not supported; "
            "llava-swap reads one vision layer."
        )
    return LlavaSwapConfig(
        vision_config=config.vision_config,
        text_config=config.text_config,
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_type="mlp2x_gelu",
        projector_hidden_act=config.projector_hidden_act,
        projector_bias=getattr(config, "multimodal_projector_bias", True),
        vision_feature_layer=layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        pad_token_id=getattr(config, "pad_token_id", None),
    )


def export_hf_llava(model: LlavaSwapForCausalLM, processor: LlavaSwapProcessor, out_dir: str | os.PathLike) -> Path:
    """Writes `model` and `processor` in transformers' native llava format.

    The result loads with `LlavaForConditionalGeneration` / `AutoModelForImageTextToText` and `AutoProcessor` in a
    process that never imports llava_swap, and gives the same logits and greedy generations.
    """
    out = Path(out_dir)
    native_config = llava_swap_config_to_native(model.config)
    tied_to = model._tied_weights_keys.get("lm_head.weight")
    if native_config.tie_word_embeddings and tied_to != NATIVE_TIED_EMBEDDING:
        raise ValueError(
            f"The LM head is tied to {tied_to!r}, but the native llava format ties it to {NATIVE_TIED_EMBEDDING!r} "
            "only: this LLM cannot be exported natively; keep it in the llava_swap format (save_pretrained)."
        )
    with torch.device("meta"):
        native = LlavaForConditionalGeneration(native_config)
    # Same parameter names by construction: a strict load fails loudly if that ever stops being true.
    native.load_state_dict(model.state_dict(), strict=True, assign=True)
    native.generation_config = model.generation_config
    native.save_pretrained(out)
    LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        image_token=processor.image_token,
        num_additional_image_tokens=processor.num_additional_image_tokens,
    ).save_pretrained(out)
    return out


__all__ = ["export_hf_llava", "llava_swap_config_to_native", "native_config_to_llava_swap"]
