"""Relevancy maps: where does the first answer token come from, the image patches or the text?

Chefer et al. (2021), "Generic Attention-model Explainability", as LLaVA-Gemma used it: for each layer, the
attention probabilities weighted by their gradient with respect to the answer's logit, positive part, averaged over
heads (A-bar = E_h[(grad * A)+]), propagated through the layers as R <- R + A-bar R starting from the identity. The
row of R at the position that predicts the first answer token gives each input token's relevance; the image tokens'
share of it says whether the model looks at the image at all, and reshaped to the patch grid it is a heat map.
"""

from __future__ import annotations

import contextlib
import math

import torch

from .. import compat


@contextlib.contextmanager
def _eager_attention(model):
    """Attention probabilities with gradients need the eager implementation; restore whatever was there."""
    previous = compat.attn_implementation(model.language_model)
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def relevancy(model, inputs: dict, target_token: int | None = None) -> dict:
    """Relevance of every input token for the model's next token after `inputs` (the first answer token).

    Args:
        model: a `LlavaSwapForCausalLM`.
        inputs: one prompt (batch 1) from `processor.apply_chat_template(..., add_generation_prompt=True,
            tokenize=True, return_dict=True, return_tensors="pt")`.
        target_token: the token whose logit is explained; default the greedy first answer token.

    Returns:
        `{"token_relevance": [float] per input token, "image_map": [[float]] (patch grid, or None without an image),
        "image_share": share of the relevance on image tokens, "text_share", "target_token": int}`.
        Relevance excludes the position's own identity term so that the shares describe what was attended to.
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"relevancy explains one prompt at a time; got a batch of {inputs['input_ids'].shape[0]}.")
    was_training = model.training
    model.eval()
    with _eager_attention(model), torch.enable_grad():
        outputs = model(**inputs, output_attentions=True)
        attentions = outputs.attentions  # per layer (1, heads, seq, seq)
        for attention in attentions:
            attention.retain_grad()
        logits = outputs.logits[0, -1]
        target = int(logits.argmax()) if target_token is None else int(target_token)
        model.zero_grad(set_to_none=True)
        logits[target].backward()
        sequence = inputs["input_ids"].shape[1]
        relevance = torch.eye(sequence, dtype=torch.float64)
        for attention in attentions:
            # On the CPU in float64: a long propagation stays exact, and the maps are small.
            weighted = (attention.grad * attention.detach()).clamp(min=0).mean(dim=1)[0].double().cpu()  # (seq, seq)
            relevance = relevance + weighted @ relevance
    model.zero_grad(set_to_none=True)
    model.train(was_training)

    row = relevance[-1].clone()
    row[-1] -= 1.0  # drop the identity: the share should be about what the position attended to
    row = row.clamp(min=0)
    is_image = (inputs["input_ids"][0] == model.config.image_token_id).cpu()
    total = float(row.sum()) or 1.0
    image_share = float(row[is_image].sum()) / total
    image_map = None
    if is_image.any():
        patches = row[is_image]
        side = math.isqrt(patches.numel())
        if side * side == patches.numel():  # one square image: show it as the encoder's patch grid
            image_map = patches.reshape(side, side).tolist()
    return {
        "token_relevance": row.tolist(),
        "image_map": image_map,
        "image_share": image_share,
        "text_share": 1.0 - image_share,
        "target_token": target,
    }


__all__ = ["relevancy"]
