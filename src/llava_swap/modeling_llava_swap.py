"""`LlavaSwapForCausalLM`: a vision encoder, a projector and any causal LM, composed LLaVA style.

The module tree and parameter names are those of transformers' native `LlavaForConditionalGeneration`
(`model.vision_tower`, `model.multi_modal_projector.linear_{1,2}`, `model.language_model`, `lm_head`), so a checkpoint
with the default projector converts to the native format by rewriting its config alone, and native checkpoints load
here unchanged. What this model adds: projector choices, a forward that takes precomputed vision features in place of
pixels (so a frozen encoder's output can be cached), an explicit image-token count check, and the lineage of its
backbones in the config. Both backbones are built with `AutoModel.from_config`: no class per LLM family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput

from .configuration_llava_swap import LlavaSwapConfig, projector_depth


@dataclass
class LlavaSwapCausalLMOutput(ModelOutput):
    """Output of [`LlavaSwapForCausalLM`]: the usual causal-LM fields plus the projected image features."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


class LlavaSwapProjector(nn.Module):
    """Maps vision features to the LM's embedding space: `linear_1` [-> act -> `linear_2` ...] (native llava names)."""

    def __init__(self, config: LlavaSwapConfig):
        super().__init__()
        depth = projector_depth(config.projector_type)
        sizes = [config.vision_config.hidden_size] + [config.text_config.hidden_size] * depth
        for index in range(depth):
            setattr(self, f"linear_{index + 1}", nn.Linear(sizes[index], sizes[index + 1], bias=config.projector_bias))
        self.depth = depth
        self.act = ACT2FN[config.projector_hidden_act]

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear_1(image_features)
        for index in range(2, self.depth + 1):
            hidden_states = getattr(self, f"linear_{index}")(self.act(hidden_states))
        return hidden_states


class LlavaSwapPreTrainedModel(PreTrainedModel):
    config_class = LlavaSwapConfig
    config: LlavaSwapConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # Backbones initialise themselves; here only the projector is ours (the LM's usual normal init).
        if isinstance(module, LlavaSwapProjector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            for index in range(1, module.depth + 1):
                linear = getattr(module, f"linear_{index}")
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
            return
        super()._init_weights(module)


class LlavaSwapModel(LlavaSwapPreTrainedModel):
    """Vision tower + projector + LM body (no head): merges image features into the token embeddings."""

    def __init__(self, config: LlavaSwapConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaSwapProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Selected vision-encoder hidden states, before the projector: `(num_images, image_seq_length, vision_dim)`.

        This is what a frozen encoder's cache stores; pass it back to `forward(image_features=...)`.
        """
        tower_dtype = next(self.vision_tower.parameters()).dtype
        outputs = self.vision_tower(pixel_values.to(tower_dtype), output_hidden_states=True, return_dict=True)
        features = outputs.hidden_states[self.config.vision_feature_layer]  # (images, prefix + patches, vision_dim)
        return features[:, self.config.vision_tokens_dropped :]

    def image_token_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`(batch, seq)` True where an `<image>` token sits."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        # Only embeddings given: find the image tokens by their embedding.
        image_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
        )
        return (inputs_embeds == image_embedding).all(-1)

    def merge_image_features(self, image_positions: torch.Tensor, inputs_embeds: torch.Tensor, projected: torch.Tensor):
        """Writes projected image features over the `<image>` token embeddings, after counting both."""
        self.check_image_count(int(image_positions.sum()), *projected.shape[:2])
        mask = image_positions.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, projected.to(inputs_embeds.dtype).reshape(-1))

    def check_image_count(self, num_image_tokens: int, num_images: int, tokens_per_image: int) -> None:
        if num_image_tokens != num_images * tokens_per_image:
            raise ValueError(
                f"Image features and image tokens do not match: the text holds {num_image_tokens} <image> tokens "
                f"but {num_images} image(s) x {tokens_per_image} tokens = {num_images * tokens_per_image} features "
                "were given. Build the inputs with LlavaSwapProcessor (it expands each <image> to "
                f"{self.config.image_seq_length} tokens) and pass exactly one image per <image> marker."
            )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if pixel_values is not None and image_features is not None:
            raise ValueError("Pass pixel_values or precomputed image_features, not both.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            image_features = self.get_vision_features(pixel_values)
        kwargs.pop("return_dict", None)  # always a ModelOutput inside; generate passes return_dict itself
        image_hidden_states = None
        prefilling = past_key_values is None or past_key_values.get_seq_length() == 0
        if image_features is not None or prefilling:  # while decoding, the image is in the cache already
            image_positions = self.image_token_mask(input_ids, inputs_embeds)
            if image_features is not None:
                projector_dtype = self.multi_modal_projector.linear_1.weight.dtype
                image_hidden_states = self.multi_modal_projector(image_features.to(projector_dtype))
                inputs_embeds = self.merge_image_features(image_positions, inputs_embeds, image_hidden_states)
            else:  # <image> tokens without an image would silently run on the <image> embedding
                self.check_image_count(int(image_positions.sum()), 0, self.config.image_seq_length)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        outputs["image_hidden_states"] = image_hidden_states
        return outputs


class LlavaSwapForCausalLM(LlavaSwapPreTrainedModel, GenerationMixin):
    """A LLaVA-style vision-language model whose LLM and vision encoder are any compatible checkpoints.

    Build one from pretrained parts with `llava_swap.build_vlm`, load a saved one (ours or a native transformers
    llava checkpoint) with `from_pretrained`, and generate like any transformers model:

    ```python
    >>> model = LlavaSwapForCausalLM.from_pretrained("path/to/model")
    >>> processor = AutoProcessor.from_pretrained("path/to/model")
    >>> inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
    ...                                        return_dict=True, return_tensors="pt")
    >>> model.generate(**inputs, max_new_tokens=32)
    ```
    """

    def __init__(self, config: LlavaSwapConfig):
        super().__init__(config)
        self.model = LlavaSwapModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # Tie to wherever this LM keeps its input embeddings (LLaMA and Gemma: embed_tokens).
        embedding_name = _module_name(self.model.language_model, self.model.language_model.get_input_embeddings())
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{embedding_name}.weight"}
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a llava-swap checkpoint, or a native transformers llava one (e.g. llava-hf/llava-1.5-7b-hf)."""
        from .interop import native_config_to_llava_swap

        if "config" not in kwargs:
            hub_kwargs = {
                key: kwargs[key]
                for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder", "trust_remote_code")
                if key in kwargs
            }
            config = _load_any_config(pretrained_model_name_or_path, **hub_kwargs)
            if config.model_type == "llava":
                kwargs["config"] = native_config_to_llava_swap(config)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> LlavaSwapProjector:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """See `LlavaSwapModel.get_vision_features`."""
        return self.model.get_vision_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LlavaSwapCausalLMOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_images, channels, height, width)`, *optional*):
            Images, one per `<image>` marker, in order of appearance.
        image_features (`torch.FloatTensor` of shape `(num_images, image_seq_length, vision_hidden_size)`, *optional*):
            Precomputed output of `get_vision_features`, in place of `pixel_values` (a frozen encoder's cache).
        labels (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
            Next-token targets; -100 marks positions without loss (image tokens, prompt, padding).
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_features=image_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (batch, seq, text_hidden)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LlavaSwapCausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.get("image_hidden_states"),
        )

    def prepare_inputs_for_generation(
        self,
        input_ids,
        past_key_values=None,
        attention_mask=None,
        inputs_embeds=None,
        image_features=None,
        is_first_iteration=False,
        **kwargs,
    ):
        # The parent passes pixel_values on the first forward only (later the image sits in the KV cache); our
        # precomputed features follow the same rule.
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["image_features"] = image_features
        return model_inputs


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}.")


def _load_any_config(path, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, **kwargs)


__all__ = ["LlavaSwapForCausalLM", "LlavaSwapModel", "LlavaSwapPreTrainedModel", "LlavaSwapProjector"]
