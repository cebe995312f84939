"""`LlavaSwapConfig`: the pure-data description of a LLaVA-style model built from two independent backbones.

A composite config, like transformers' `LlavaConfig`: a `text_config` (any causal LM) and a `vision_config` (CLIP,
SigLIP or DINOv2), plus what joins them (projector, feature layer, image tokens) and the lineage of the parts (which
checkpoints, which LLM family and chat template). It loads nothing and touches no network; it validates itself so a
bad value fails here, named, instead of as a shape error deep inside a forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from transformers import AutoConfig, PretrainedConfig


@dataclass(frozen=True)
class VisionKind:
    """A supported vision encoder family and how LLaVA reads its features."""

    name: str
    model_types: tuple[str, ...]  # as a full checkpoint (clip) or a vision-only one (clip_vision_model)
    vision_model_type: str  # model_type of the vision-only config the composed model keeps
    prefix_tokens: int  # tokens before the patch tokens (CLS): the "default" strategy drops them
    select_strategy: str  # LLaVA's choice: drop CLIP's CLS ("default"); SigLIP has none, so keep all ("full")
    fixed_resolution: bool  # position embeddings for exactly config.image_size (DINOv2 interpolates)
    model_class: str  # transformers class that loads the vision half from either kind of checkpoint
    # Where the tower's tensors sit under `vision_tower.` in llava-hf checkpoints (what vLLM and SGLang read): CLIP
    # and SigLIP keep their standalone checkpoints' `vision_model.` level, which transformers 5's module tree drops.
    checkpoint_prefix: str
    vllm_serves: bool  # vLLM's llava builds this tower (CLIP, SigLIP and Pixtral only, vLLM 0.32)


VISION_KINDS = {
    kind.name: kind
    for kind in (
        VisionKind(
            "clip",
            ("clip", "clip_vision_model"),
            "clip_vision_model",
            1,
            "default",
            True,
            "CLIPVisionModel",
            checkpoint_prefix="vision_model.",
            vllm_serves=True,
        ),
        VisionKind(
            "siglip",
            ("siglip", "siglip_vision_model"),
            "siglip_vision_model",
            0,
            "full",
            True,
            "SiglipVisionModel",
            checkpoint_prefix="vision_model.",
            vllm_serves=True,
        ),
        VisionKind(
            "dinov2", ("dinov2",), "dinov2", 1, "default", False, "Dinov2Model", checkpoint_prefix="", vllm_serves=False
        ),
    )
}


def vision_kind(model_type: str) -> VisionKind | None:
    """The vision kind a config's model_type belongs to, or None."""
    return next((kind for kind in VISION_KINDS.values() if model_type in kind.model_types), None)


SELECT_STRATEGIES = ("default", "full")
_MLP_PROJECTOR = re.compile(r"^mlp(\d+)x_gelu$")


def projector_depth(projector_type: str) -> int:
    """Number of linear layers of a projector type: `linear` -> 1, `mlp{N}x_gelu` -> N (LLaVA's naming)."""
    if projector_type == "linear":
        return 1
    match = _MLP_PROJECTOR.match(projector_type)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise ValueError(
        f"Unknown projector_type {projector_type!r}: use 'mlp2x_gelu' (LLaVA-1.5, the default), 'linear' (LLaVA-1), "
        "or 'mlp{N}x_gelu' for an N-layer MLP."
    )


def _as_config(value: Any, default_model_type: str | None, name: str) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        value = dict(value)
        model_type = value.pop("model_type", default_model_type)
        if model_type is None:
            raise ValueError(f"LlavaSwapConfig.{name} is a dict without 'model_type'; say which architecture it is.")
        return AutoConfig.for_model(model_type, **value)
    raise TypeError(f"LlavaSwapConfig.{name} must be a PretrainedConfig or a dict, got {type(value).__name__}.")


class LlavaSwapConfig(PretrainedConfig):
    r"""
    Configuration of [`LlavaSwapForCausalLM`].

    Args:
        vision_config (`PretrainedConfig` or `dict`): config of the vision encoder (CLIP, SigLIP or DINOv2).
        text_config (`PretrainedConfig` or `dict`): config of the language model (any causal LM architecture).
        image_token_id (`int`): id of the `<image>` token in the tokenizer.
        image_seq_length (`int`): number of `<image>` tokens one image expands to; default: derived from the
            vision config's image and patch size (`build_vlm` passes what the image processor really yields).
        projector_type (`str`): `"mlp2x_gelu"` (LLaVA-1.5, default), `"linear"` (LLaVA-1) or `"mlp{N}x_gelu"`.
        projector_hidden_act (`str`): activation between the projector's linear layers.
        projector_bias (`bool`): whether the projector's linear layers have biases.
        vision_feature_layer (`int`): which hidden state of the vision encoder feeds the projector (-2 as LLaVA).
        vision_feature_select_strategy (`str`): `"default"` drops the encoder's CLS token, `"full"` keeps all.
        llm_family (`str`): family of the language model (llama1, llama2, llama3, gemma, other): lineage, not logic.
        chat_template_name (`str`): name of the chat template the model was built with.
        language_model_name_or_path, vision_model_name_or_path (`str`): where the backbones came from.
    """

    model_type = "llava_swap"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    vision_config: Any = None
    text_config: Any = None
    image_token_id: int | None = None
    image_seq_length: int | None = None
    projector_type: str = "mlp2x_gelu"
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    llm_family: str | None = None
    chat_template_name: str | None = None
    language_model_name_or_path: str | None = None
    vision_model_name_or_path: str | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.vision_config = _as_config(self.vision_config or {}, "clip_vision_model", "vision_config")
        self.text_config = _as_config(self.text_config or {}, "llama", "text_config")
        # The LM decides whether its head is tied to its embeddings (Gemma: yes, LLaMA: no).
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        super().__post_init__(**kwargs)
        self.validate_composition()

    def validate_composition(self) -> None:
        """Checks that the parts fit together; each error names the value and says what to do."""
        projector_depth(self.projector_type)
        if self.vision_feature_select_strategy not in SELECT_STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy={self.vision_feature_select_strategy!r} is unknown: use 'default' "
                "(drop the CLS token) or 'full' (keep every token)."
            )
        vision_type = self.vision_config.model_type
        kind = vision_kind(vision_type)
        if kind is None or vision_type != kind.vision_model_type:
            raise ValueError(
                f"vision_config.model_type={vision_type!r} is not a supported vision encoder config: use one of "
                f"{[k.vision_model_type for k in VISION_KINDS.values()]} (CLIP, SigLIP or DINOv2)."
            )
        if self.vision_feature_select_strategy == "default" and kind.prefix_tokens == 0:
            raise ValueError(
                f"vision_feature_select_strategy='default' drops a CLS token, but {vision_type} has none: "
                "use 'full' so no image patch is thrown away."
            )
        if self.vision_feature_layer == 0:
            raise ValueError(
                "vision_feature_layer=0 selects the patch embeddings before any encoder layer, which transformers' "
                "llava reads as 'no hidden states' (5.24): pick an encoder layer, e.g. -2 (LLaVA's choice) or 1."
            )
        num_states = self.vision_config.num_hidden_layers + 1  # embeddings + one per layer
        if not -num_states <= self.vision_feature_layer < num_states:
            raise ValueError(
                f"vision_feature_layer={self.vision_feature_layer} is out of range for a vision encoder with "
                f"{self.vision_config.num_hidden_layers} layers: pick a value in [{-num_states}, {num_states - 1}]."
            )
        patches = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        expected = patches + kind.prefix_tokens - self.vision_tokens_dropped
        if self.image_seq_length is None:
            self.image_seq_length = expected
        if self.image_seq_length < 1:
            raise ValueError(f"image_seq_length={self.image_seq_length} must be a positive number of image tokens.")
        if kind.fixed_resolution and self.image_seq_length != expected:
            raise ValueError(
                f"image_seq_length={self.image_seq_length}, but a {vision_type} with image_size "
                f"{self.vision_config.image_size} and patch_size {self.vision_config.patch_size} yields {expected} "
                f"tokens per image with strategy {self.vision_feature_select_strategy!r}: set image_seq_length={expected}."
            )
        vocab_size = self.text_config.vocab_size
        for name in ("image_token_id", "pad_token_id"):
            value = getattr(self, name, None)
            if value is not None and not 0 <= value < vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the language model's vocabulary (vocab_size={vocab_size}): resize "
                    "the embeddings after adding the token to the tokenizer."
                )

    @classmethod
    def from_native(cls, config: PretrainedConfig) -> LlavaSwapConfig:
        """Reads a native llava config (e.g. llava-hf/llava-1.5-7b-hf, Intel/llava-gemma-2b)."""
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(
                f"vision_feature_layer={layer!r}: features concatenated from several layers are not supported; "
                "llava-swap reads one vision layer."
            )
        return cls(
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

    def to_native(self) -> PretrainedConfig:
        """The equivalent native `LlavaConfig`; raises, naming the reason, where the native format cannot express it."""
        from transformers import LlavaConfig

        if self.projector_type != "mlp2x_gelu":
            raise ValueError(
                f"projector_type={self.projector_type!r} cannot be exported: transformers' native llava format only "
                "has the 2-layer MLP projector ('mlp2x_gelu'). Keep this model in the llava_swap format "
                "(save_pretrained), which LlavaSwapForCausalLM and the Auto classes load after `import llava_swap`."
            )
        if self.vision_feature_select_strategy == "default" and self.num_vision_prefix_tokens != 1:
            raise ValueError(
                f"The native format's 'default' strategy drops exactly one token, but {self.vision_config.model_type} "
                f"has {self.num_vision_prefix_tokens}: use vision_feature_select_strategy='full' before exporting."
            )
        return LlavaConfig(
            vision_config=self.vision_config.to_dict(),
            text_config=self.text_config.to_dict(),
            image_token_index=self.image_token_id,
            image_seq_length=self.image_seq_length,
            projector_hidden_act=self.projector_hidden_act,
            vision_feature_select_strategy=self.vision_feature_select_strategy,
            vision_feature_layer=self.vision_feature_layer,
            multimodal_projector_bias=self.projector_bias,
            tie_word_embeddings=self.tie_word_embeddings,
            pad_token_id=self.pad_token_id,
        )

    @property
    def num_vision_prefix_tokens(self) -> int:
        """Tokens before the patch tokens in the vision encoder's output (CLS for CLIP and DINOv2)."""
        return vision_kind(self.vision_config.model_type).prefix_tokens

    @property
    def vision_tokens_dropped(self) -> int:
        """Tokens the select strategy removes from each image's features."""
        return self.num_vision_prefix_tokens if self.vision_feature_select_strategy == "default" else 0


__all__ = ["VISION_KINDS", "LlavaSwapConfig", "VisionKind", "projector_depth", "vision_kind"]
