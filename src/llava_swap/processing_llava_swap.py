"""`LlavaSwapProcessor`: image processor + tokenizer + chat template of a llava-swap model.

It is transformers' `LlavaProcessor` (each `<image>` marker expands to the number of tokens the vision encoder yields
per image, derived from the patch size and the encoder's CLS token), with the LLM family and template name recorded
and one fix: a prompt rendered by a chat template already starts with BOS, so tokenizing it does not add a second.
"""

from __future__ import annotations

from transformers import LlavaProcessor


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

    def image_seq_length(self, height: int, width: int) -> int:
        """Number of `<image>` tokens one image of this (processed) size expands to."""
        tokens = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return tokens - (1 if self.vision_feature_select_strategy == "default" else 0)


__all__ = ["LlavaSwapProcessor"]
