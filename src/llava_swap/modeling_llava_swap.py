"""`LlavaSwapForCausalLM`: transformers' llava, with any projector depth and precomputed vision features.

Everything else (the image merge and its count check, cache, SDPA, generation, loss, outputs) is inherited from
`LlavaForConditionalGeneration`, so each transformers release brings its llava changes here too. Added: a projector of
any depth with llava's module names; `image_features=` (the encoder's selected layer, e.g. from a frozen encoder's
cache) in place of `pixel_values`; an error for `<image>` tokens given no image; `from_pretrained` of native llava
checkpoints; `save_pretrained` in the llava-hf tensor layout (`checkpoint_layout`); and `load_state_dict` of a file's
tensors as they are on disk, renamed as `from_pretrained` renames them, which the Trainer's resume uses.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)

from . import checkpoint_layout, compat
from .configuration_llava_swap import LlavaSwapConfig, vision_kind
from .projector import LlavaSwapProjector


class LlavaSwapPreTrainedModel(LlavaPreTrainedModel):
    config_class = LlavaSwapConfig
    config: LlavaSwapConfig


class LlavaSwapModel(LlavaSwapPreTrainedModel, LlavaModel):
    """`LlavaModel` with our projector and precomputed vision features."""

    def __init__(self, config: LlavaSwapConfig):
        # LlavaModel.__init__ builds its fixed 2-layer projector; ours has its module names at any depth.
        PreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaSwapProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What `get_image_features` feeds the projector (and a frozen encoder's cache stores), `(images, tokens, dim)`."""
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        features = outputs.hidden_states[self.config.vision_feature_layer]  # (images, prefix + patches, vision_dim)
        return features[:, self.config.vision_tokens_dropped :]

    def project(self, image_features: torch.Tensor) -> torch.Tensor:
        """Precomputed vision features through the projector: `(images, tokens, text_hidden)`."""
        return self.multi_modal_projector(image_features.to(self.multi_modal_projector.linear_1.weight.dtype))

    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, image_features=None, **kwargs):
        pre_encoded = (kwargs.get("mm_encoder_outputs") or {}).get("image")  # generate encodes images first (5.24+)
        if image_features is not None:
            if pixel_values is not None or pre_encoded is not None:
                raise ValueError("Pass pixel_values or precomputed image_features, not both.")
            # Project and merge here, with llava's own count check, and hand llava the merged embeddings.
            if inputs_embeds is None:
                inputs_embeds = self.get_input_embeddings()(input_ids)
            projected = self.project(image_features).to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=projected)
            inputs_embeds, input_ids = inputs_embeds.masked_scatter(mask, projected), None
        elif pixel_values is None and pre_encoded is None:
            self._refuse_image_tokens_without_image(input_ids, inputs_embeds, kwargs)
        return super().forward(input_ids=input_ids, pixel_values=pixel_values, inputs_embeds=inputs_embeds, **kwargs)

    def _refuse_image_tokens_without_image(self, input_ids, inputs_embeds, forward_kwargs) -> None:
        # While prefilling, <image> tokens without an image would silently run on the <image> embedding.
        if compat.cache_length(forward_kwargs) > 0:
            return
        if input_ids is not None:
            found = int((input_ids == self.config.image_token_id).sum())
        else:  # embeddings only: find the image tokens by their embedding, as llava does
            image_embedding = self.get_input_embeddings().weight[self.config.image_token_id]
            found = int((inputs_embeds == image_embedding.to(inputs_embeds.dtype)).all(-1).sum())
        if found:
            raise ValueError(
                f"The text holds {found} <image> tokens but no image was given: pass pixel_values (or image_features), "
                f"one image per <image> marker (LlavaSwapProcessor expands each to {self.config.image_seq_length})."
            )


# What save_pretrained(push_to_hub=True, ...) hands on to push_to_hub.
_PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr", "tags")


class LlavaSwapForCausalLM(LlavaSwapPreTrainedModel, LlavaForConditionalGeneration):
    """A LLaVA-style vision-language model whose LLM and vision encoder are any compatible checkpoints.

    `LlavaForConditionalGeneration` whose `forward` and `generate` also take `image_features` (`(num_images,
    image_seq_length, vision_dim)`, from `get_vision_features`) in place of `pixel_values`. Build one with
    `llava_swap.build_vlm`, load one (ours or a native llava checkpoint) with `from_pretrained`.
    """

    def __init__(self, config: LlavaSwapConfig):
        # LlavaForConditionalGeneration.__init__ would build a LlavaModel (both backbones) only to be replaced.
        PreTrainedModel.__init__(self, config)
        self.model = LlavaSwapModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # Tie to wherever this LM keeps its input embeddings (llava assumes `embed_tokens`).
        language_model = self.model.language_model
        embeddings = next(
            name for name, part in language_model.named_modules() if part is language_model.get_input_embeddings()
        )
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{embeddings}.weight"}
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a llava-swap checkpoint, or a native transformers llava one (e.g. llava-hf/llava-1.5-7b-hf).

        Anything else (a plain LLM, a vision encoder, a folder without a model) is refused from its config, before a
        single weight is allocated, saying what it is.
        """
        kwargs.setdefault("use_kernels", use_hub_kernels())
        if "config" not in kwargs:
            hub_kwargs = ("cache_dir", "revision", "token", "local_files_only", "subfolder", "trust_remote_code")
            config = _vlm_config(pretrained_model_name_or_path, {k: kwargs[k] for k in hub_kwargs if k in kwargs})
            if config.model_type == "llava":
                kwargs["config"] = LlavaSwapConfig.from_native(config)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, is_main_process: bool = True, *args, push_to_hub: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`, with the tensors in the llava-hf layout (`checkpoint_layout`)."""
        hub_kwargs = {key: kwargs.pop(key) for key in _PUSH_KWARGS if key in kwargs}
        super().save_pretrained(save_directory, is_main_process, *args, **kwargs)
        if not is_main_process:
            return
        checkpoint_layout.write_disk_layout(
            save_directory, vision_kind(self.config.vision_config.model_type).checkpoint_prefix
        )
        if push_to_hub:  # transformers would upload before the layout is written: push_to_hub saves through here
            repo_id = hub_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, **hub_kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Also takes a checkpoint file's tensors as they are (on-disk names, no tied copy): the Trainer resumes so."""
        # Renamed as from_pretrained renames a file's tensors: every layout we ever wrote, and upstream's own renames.
        names = compat.checkpoint_names_to_modules(self, state_dict)
        state_dict = {names[name]: value for name, value in state_dict.items()}
        if self.config.tie_word_embeddings:  # files keep one copy of tied weights: the other is its source
            for tied, source in self._tied_weights_keys.items():
                if tied not in state_dict and source in state_dict:
                    state_dict[tied] = state_dict[source]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

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

    def generate(self, *args, image_features=None, **kwargs):
        """`GenerationMixin.generate`, also from precomputed `image_features`."""
        if image_features is not None and compat.generate_encodes_images_first(self):
            # transformers >= 5.24 encodes images before generating and copies them per beam and returned sequence
            # (and per chunk of a chunked prefill) by counting <image> tokens: hand it ours, projected, the same way.
            if kwargs.get("pixel_values") is not None:
                raise ValueError("Pass pixel_values or precomputed image_features, not both.")
            projected = list(self.model.project(image_features))  # what get_image_features returns: one per image
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=projected)}
        elif image_features is not None:
            kwargs["image_features"] = image_features
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, image_features=None, is_first_iteration=False, **kwargs
    ):
        # Like pixel_values: the first forward puts the image in the KV cache; later steps must not merge it again.
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["image_features"] = image_features
        return model_inputs


checkpoint_layout.register(LlavaSwapConfig.model_type)


def use_hub_kernels() -> bool:
    """Whether llava-swap loads models with transformers' Hub kernels: only where `USE_HUB_KERNELS=YES` is set.

    transformers 5.25 turned them on by default in `from_pretrained`, fetching each kernel from the Hub at its first
    use on a GPU: on an offline cluster that fails, and elsewhere a run's numerics would depend on what the Hub served
    that day, across the backbones a study compares. So llava-swap keeps the torch implementations (transformers'
    behaviour before 5.25) unless asked; `use_kernels=True` in `from_pretrained` asks for one model.
    """
    from transformers.utils.import_utils import is_env_variable_true

    return is_env_variable_true("USE_HUB_KERNELS")  # transformers' own reading of the variable, default off


def _vlm_config(source, hub_kwargs: dict):
    """The config of a saved vision-language model at `source`, or an error saying what is there instead."""
    from pathlib import Path

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    local = Path(source).expanduser()
    if not local.exists() and str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source} not found: no such folder.")
    if local.is_dir() and not (local / hub_kwargs.get("subfolder", "") / "config.json").exists():
        raise FileNotFoundError(f"{source} is a folder without config.json, not a saved model.")
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as error:
        if local.exists():
            raise
        from huggingface_hub import constants

        hub = "offline, the Hub was not consulted" if constants.HF_HUB_OFFLINE else "nor a Hub repo you can read"
        raise FileNotFoundError(f"{source} not found: no such folder here ({hub}).") from error
    if config.model_type in (LlavaSwapConfig.model_type, "llava"):
        return config
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        what = (
            f"a plain {config.model_type!r} language model: build a vision-language model from it with "
            "llava_swap.build_vlm(language_model=..., vision_model=...) or a recipe's model.language_model"
        )
    elif vision_kind(config.model_type) is not None:
        what = f"a {config.model_type!r} vision encoder: pass it as vision_model to llava_swap.build_vlm or a recipe"
    else:
        what = f"a {config.model_type!r} checkpoint"
    raise ValueError(f"{source} is not a llava-swap or llava model but {what}.")


__all__ = [
    "LlavaSwapForCausalLM",
    "LlavaSwapModel",
    "LlavaSwapPreTrainedModel",
    "LlavaSwapProjector",
    "use_hub_kernels",
]
