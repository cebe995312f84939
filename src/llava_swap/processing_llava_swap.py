"""`LlavaSwapProcessor`: image processor + tokenizer + chat template of a llava-swap model.

It is transformers' `LlavaProcessor` (each `<image>` marker expands to the number of tokens the vision encoder yields
per image, derived from the patch size and the encoder's CLS token), with the LLM family and template name recorded
and two fixes:
- a prompt rendered by a chat template already starts with BOS, so tokenizing it does not add a second;
- `apply_chat_template(..., return_assistant_tokens_mask=True)` computes the mask itself, from the answers' character
  spans (`answer_spans.py`: {% generation %} blocks, or located in a checkpoint's own template) and token offsets, so
  it is right for any template and whatever the transformers version (5.17 selects nothing once `<image>` is
  expanded), and it fails loudly when tokens and text cannot be aligned.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlavaProcessor

from .answer_spans import render_with_answer_spans

# apply_chat_template arguments that steer tokenization or the processor; the others (tools, documents,
# enable_thinking, date_string, ...) are the template's, and reach it when the answer spans are rendered too.
_NOT_FOR_THE_TEMPLATE = {
    "tokenize",
    "return_dict",
    "return_tensors",
    "return_assistant_tokens_mask",
    "processor_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "padding",
    "padding_side",
    "truncation",
    "max_length",
    "pad_to_multiple_of",
}


class LlavaSwapProcessor(LlavaProcessor):
    r"""
    Processor of [`LlavaSwapForCausalLM`].

    Args:
        image_processor: the vision encoder's image processor (CLIP, SigLIP or DINOv2).
        tokenizer: the LLM's tokenizer, with `<image>` and a pad token added (see `llava_swap.build_vlm`).
        patch_size (`int`): the vision encoder's patch size.
        vision_feature_select_strategy (`str`): `"default"` (the CLS token is dropped) or `"full"`.
        chat_template (`str`): Jinja chat template (see `llava_swap.families.resolve_template`).
        image_token (`str`): the image token, `"<image>"`.
        num_additional_image_tokens (`int`): tokens the encoder adds before its patches (1 for a CLS token).
        llm_family (`str`): the LLM family the tokenizer belongs to (lineage).
        chat_template_name (`str`): the name of the chat template (lineage).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=0,
        llm_family=None,
        chat_template_name=None,
        **kwargs,
    ):
        self.llm_family = llm_family
        self.chat_template_name = chat_template_name
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    def __call__(self, images=None, text=None, **kwargs):
        bos = self.tokenizer.bos_token
        if text is not None and bos and "add_special_tokens" not in kwargs:
            texts = [text] if isinstance(text, str) else text
            if texts and all(isinstance(item, str) and item.startswith(bos) for item in texts):
                kwargs["add_special_tokens"] = False  # the template already wrote BOS
        return super().__call__(images=images, text=text, **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        if not kwargs.get("return_assistant_tokens_mask"):
            return super().apply_chat_template(conversation, chat_template, **kwargs)
        if not (kwargs.get("tokenize") and kwargs.get("return_dict")):
            raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True.")
        out = super().apply_chat_template(
            conversation, chat_template, **{**kwargs, "return_assistant_tokens_mask": False}
        )
        batched = isinstance(conversation[0], (list, tuple))
        rendered = self._render(
            conversation if batched else [conversation],
            chat_template,
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
            continue_final_message=kwargs.get("continue_final_message", False),
            **{key: value for key, value in kwargs.items() if key not in _NOT_FOR_THE_TEMPLATE},
        )
        pixel_values = out.get("pixel_values")
        per_image = self.image_seq_length(*pixel_values.shape[-2:]) if pixel_values is not None else 0
        ids = out["input_ids"]
        as_tensor = isinstance(ids, torch.Tensor)
        rows = ids.tolist() if as_tensor else ids
        if rows and isinstance(rows[0], int):  # a single unpadded sequence
            rows = [rows]
        attention = out.get("attention_mask")
        attention = attention.tolist() if isinstance(attention, torch.Tensor) else attention
        masks = []
        for index, ((prompt, spans), row) in enumerate(zip(rendered, rows, strict=True)):
            expanded_ids, expanded_mask = self._tokenize_rendered(prompt, spans, per_image)
            expanded_ids, expanded_mask = expanded_ids.tolist(), expanded_mask.astype(int).tolist()
            masks.append(_place_mask(expanded_ids, expanded_mask, row, attention[index] if attention else None, index))
        out["assistant_masks"] = torch.tensor(masks, dtype=torch.long) if as_tensor else masks
        return out

    def tokenize_conversation(
        self, messages: list[dict], add_generation_prompt: bool = False, chat_template: str | None = None
    ) -> tuple[list[int], list[int]]:
        """Token ids of one conversation, each `<image>` expanded, and its assistant mask: without touching pixels.

        What the model will see, cheaply: for checking a data set (lengths, truncation, supervised tokens) before
        training, without decoding a single image.
        """
        ((ids, mask),) = self.tokenize_conversations([messages], add_generation_prompt, chat_template)
        return ids.tolist(), mask.astype(int).tolist()

    def tokenize_conversations(
        self, conversations: list[list[dict]], add_generation_prompt: bool = False, chat_template: str | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`tokenize_conversation` for many conversations at once, as compact arrays: int32 token ids and a bool
        assistant mask per conversation. The tokenizer encodes the batch in one call (a fast tokenizer spreads it
        over the CPU's cores); a conversation the template refuses raises for the whole batch."""
        rendered = self._render(conversations, chat_template, add_generation_prompt, False)
        if not rendered:
            return []
        encoding = self.tokenizer(
            [prompt for prompt, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
        )
        per_image = self.num_image_tokens
        return [
            self._expand(ids, offsets, spans, per_image)
            for ids, offsets, (_, spans) in zip(
                encoding["input_ids"], encoding["offset_mapping"], rendered, strict=True
            )
        ]

    @property
    def num_image_tokens(self) -> int:
        """Number of `<image>` tokens each image expands to, from the image processor's output size."""
        return self.image_seq_length(*processed_image_size(self.image_processor))

    def image_seq_length(self, height: int, width: int) -> int:
        """Number of `<image>` tokens one image of this (processed) size expands to."""
        tokens = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return tokens - (1 if self.vision_feature_select_strategy == "default" else 0)

    def _render(self, conversations, chat_template, add_generation_prompt, continue_final_message, **template_kwargs):
        """`[(prompt text, answer spans)]`: the template's text and the character spans of the answers."""
        return render_with_answer_spans(
            conversations,
            chat_template or self.chat_template,
            self.tokenizer,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            **template_kwargs,
        )

    def _tokenize_rendered(self, prompt: str, spans, per_image: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of a rendered prompt with each image expanded, and True for tokens inside a generation span."""
        encoding = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        return self._expand(encoding["input_ids"], encoding["offset_mapping"], spans, per_image)

    def _expand(self, ids, offsets, spans, per_image: int) -> tuple[np.ndarray, np.ndarray]:
        """Each image token repeated `per_image` times, and the mask of the tokens that overlap an answer span by
        at least one character (an image's tokens never do)."""
        ids = np.asarray(ids, dtype=np.int32)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(len(ids), 2)
        starts, ends = offsets[:, 0], offsets[:, 1]
        if spans:
            bounds = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
            overlaps = (starts[:, None] < bounds[None, :, 1]) & (ends[:, None] > bounds[None, :, 0])
            inside = (ends > starts) & overlaps.any(axis=1)
        else:
            inside = np.zeros(len(ids), dtype=bool)
        image = ids == self.image_token_id
        copies = np.where(image, per_image, 1)
        return np.repeat(ids, copies), np.repeat(inside & ~image, copies)


def _place_mask(expanded_ids, expanded_mask, row, attention_row, index) -> list[int]:
    """Aligns a conversation's tokens with a processed (padded, maybe truncated) row and returns the row's mask."""
    positions = [i for i, keep in enumerate(attention_row or [1] * len(row)) if keep]
    real = [row[i] for i in positions]
    # The processor may have added special tokens in front, and truncation may have cut the end.
    for shift in range(min(3, len(real)) + 1):
        if real[shift:] == expanded_ids[: len(real) - shift]:
            mask = [0] * len(row)
            for offset, position in enumerate(positions[shift:]):
                mask[position] = expanded_mask[offset]
            return mask
    raise ValueError(
        f"Conversation {index}: the processor's tokens do not match the rendered chat template's tokens, so the "
        "assistant-token mask cannot be placed. Check that the text passed through the template unchanged and "
        "that each <image> marker has one image."
    )


def processed_image_size(image_processor) -> tuple[int, int]:
    """Height and width of the images an image processor outputs (its crop size when it crops, else its size)."""
    crop = getattr(image_processor, "crop_size", None)
    size = getattr(image_processor, "size", None)
    for candidate in ((crop if getattr(image_processor, "do_center_crop", False) else None), size):
        if candidate and "height" in candidate and "width" in candidate:
            return int(candidate["height"]), int(candidate["width"])
    raise ValueError(
        f"Cannot tell the processed image size from the image processor (size={size}, crop_size={crop}): set "
        "crop_size or size with height and width in preprocessor_config.json."
    )


__all__ = ["LlavaSwapProcessor", "processed_image_size"]
