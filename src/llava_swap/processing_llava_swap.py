"""`LlavaSwapProcessor`: image processor + tokenizer + chat template of a llava-swap model.

It is transformers' `LlavaProcessor` (each `<image>` marker expands to the number of tokens the vision encoder yields
per image, derived from the patch size and the encoder's CLS token), with the LLM family and template name recorded
and two fixes:
- a prompt rendered by a chat template already starts with BOS, so tokenizing it does not add a second;
- `apply_chat_template(..., return_assistant_tokens_mask=True)` computes the mask itself, from the template's
  {% generation %} spans and token offsets, so it is right whatever the transformers version (5.17 selects nothing
  once `<image>` is expanded), and it fails loudly when tokens and text cannot be aligned.
"""

from __future__ import annotations

import torch
from transformers import LlavaProcessor
from transformers.utils.chat_template_utils import render_jinja_template


class LlavaSwapProcessor(LlavaProcessor):
    r"""
    Processor of [`LlavaSwapForCausalLM`].

    Args:
        image_processor: the vision encoder's image processor (CLIP, SigLIP or DINOv2).
        tokenizer: the LLM's tokenizer, with `<image>` and a pad token added (see `llava_swap.build_vlm`).
        patch_size (`int`): the vision encoder's patch size.
        vision_feature_select_strategy (`str`): `"default"` (the CLS token is dropped) or `"full"`.
        chat_template (`str`): Jinja chat template marking assistant turns with `{% generation %}`.
        image_token (`str`): the image placeholder, `"<image>"`.
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
        conversations = conversation if batched else [conversation]
        prompts, spans = render_jinja_template(
            conversations=conversations,
            chat_template=chat_template or self.chat_template,
            return_assistant_tokens_mask=True,
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
            continue_final_message=kwargs.get("continue_final_message", False),
            **self.tokenizer.special_tokens_map,
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
        masks = [
            self._assistant_mask(prompt, prompt_spans, row, attention[index] if attention else None, per_image, index)
            for index, (prompt, prompt_spans, row) in enumerate(zip(prompts, spans, rows, strict=True))
        ]
        out["assistant_masks"] = torch.tensor(masks, dtype=torch.long) if as_tensor else masks
        return out

    def _assistant_mask(self, prompt, spans, row, attention_row, per_image, index) -> list[int]:
        """1 for each token of `row` whose text lies inside a {% generation %} span of `prompt`."""
        encoding = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        expanded_ids, expanded_mask = [], []
        for token, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
            inside = int(end > start and any(start < span_end and end > span_start for span_start, span_end in spans))
            copies = per_image if token == self.image_token_id else 1  # an image's tokens are never supervised
            expanded_ids += [token] * copies
            expanded_mask += [0 if token == self.image_token_id else inside] * copies
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

    def image_seq_length(self, height: int, width: int) -> int:
        """Number of `<image>` tokens one image of this (processed) size expands to."""
        tokens = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return tokens - (1 if self.vision_feature_select_strategy == "default" else 0)


__all__ = ["LlavaSwapProcessor"]
