"""LLaVA's connector from vision features to the LLM's embeddings: `linear` (LLaVA-1), `mlp2x_gelu` (LLaVA-1.5, and
transformers' `LlavaMultiModalProjector`), or an `mlp{N}x_gelu` of any depth, all with llava's module names
(`linear_1`, `linear_2`, ...) so checkpoints stay in the native layout."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration_llava_swap import LlavaSwapConfig, projector_depth


class LlavaSwapProjector(nn.Module):
    """Vision features -> LM embeddings: `linear_1` [-> act -> `linear_2` ...]; at depth 2 it is llava's projector."""

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


__all__ = ["LlavaSwapProjector"]
