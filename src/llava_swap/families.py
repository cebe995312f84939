"""What differs between LLM families, as data: detection, chat template, pad token and stop tokens.

One table (`FAMILIES`) says how to recognise each family from a checkpoint's own config and tokenizer (never from
its path), which chat template its base and chat variants use, and which reserved token can serve as padding. A
second table (`TEMPLATES`) says where each template's assistant turn ends, which is also where generation must stop.
Code elsewhere reads these tables; there is no per-family branch anywhere else in the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from transformers import PretrainedConfig, PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class TemplateSpec:
    """A chat template shipped in `llava_swap/templates/`; `end_of_turn` ends an answer (None: the tokenizer's eos)."""

    name: str
    end_of_turn: str | None


@dataclass(frozen=True)
class Family:
    """How to recognise an LLM family and how to talk to it."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family (empty: any)
    marker_tokens: tuple[str, ...]  # all must be in the tokenizer's vocabulary
    base_template: str
    chat_template: str | None  # None: the family has no chat format of ours; a chat checkpoint's own is used
    pad_candidates: tuple[str, ...] = ()  # used as pad, in order, when the tokenizer has none
    max_context: int | None = None  # LLaMA-1 (2048) vs LLaMA-2 (4096) share the tokenizer, not the context
    min_context: int | None = None


TEMPLATES = {
    spec.name: spec
    for spec in (
        TemplateSpec("vicuna_v1", end_of_turn=None),
        TemplateSpec("llama2_chat", end_of_turn=None),
        TemplateSpec("llama3", end_of_turn="<|eot_id|>"),
        TemplateSpec("gemma", end_of_turn="<end_of_turn>"),
        TemplateSpec("chatml", end_of_turn="<|im_end|>"),
    )
}

_SENTENCEPIECE_LLAMA = ("<s>", "</s>", "<unk>")
# Detection tries these in order; the first family whose model type, marker tokens and context length all match wins.
FAMILIES = {
    family.name: family
    for family in (
        Family("gemma", ("gemma", "gemma2", "gemma3_text"), ("<start_of_turn>", "<end_of_turn>"), "gemma", "gemma"),
        Family(
            "llama3",
            ("llama",),
            ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "llama3",
            "llama3",
            # LLaMA-3.1 reserves a pad token; LLaMA-3.0 has the same slot under a reserved name.
            pad_candidates=("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"),
        ),
        # ChatML is a format, not an architecture (Qwen2/2.5/3, SmolLM2 on LLaMA, ...): recognised by its turn tokens.
        Family("chatml", (), ("<|im_start|>", "<|im_end|>"), "chatml", "chatml"),
        # LLaVA pads LLaMA-1/2 with <unk>: byte fallback means the tokenizer never emits it for real text.
        Family("llama2", ("llama",), _SENTENCEPIECE_LLAMA, "vicuna_v1", "llama2_chat", ("<unk>",), min_context=4096),
        # LLaMA-1 had no chat release; LLaMA-1-shaped chat models (TinyLlama-chat, ...) bring their own template.
        Family("llama1", ("llama",), _SENTENCEPIECE_LLAMA, "vicuna_v1", None, ("<unk>",), max_context=2048),
        Family("other", (), (), "vicuna_v1", None),
    )
}


@dataclass(frozen=True)
class DetectedFamily:
    """The family of a checkpoint and whether it is a chat (instruction-tuned) variant."""

    name: str
    is_chat: bool

    @property
    def template(self) -> str | None:
        """Name of the family's template for this variant; None: use the checkpoint's own chat template."""
        family = FAMILIES[self.name]
        return family.chat_template if self.is_chat else family.base_template


def detect_family(
    config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, override: str | None = None
) -> DetectedFamily:
    """Recognises the LLM family from the checkpoint's config and tokenizer (`override` names it explicitly).

    A tokenizer that ships a chat template marks a chat variant (LLaMA-2-chat, LLaMA-3-Instruct, Gemma-it).
    """
    is_chat = bool(getattr(tokenizer, "chat_template", None))
    if override is not None:
        if override not in FAMILIES:
            raise ValueError(f"Unknown LLM family {override!r}: use one of {sorted(FAMILIES)}, or None to detect it.")
        return DetectedFamily(override, is_chat)
    vocab = tokenizer.get_vocab()
    context = getattr(config, "max_position_embeddings", None)
    for family in FAMILIES.values():
        if family.model_types and config.model_type not in family.model_types:
            continue
        if not all(token in vocab for token in family.marker_tokens):
            continue
        if family.min_context is not None and (context is None or context < family.min_context):
            continue
        if family.max_context is not None and (context is None or context > family.max_context):
            continue
        return DetectedFamily(family.name, is_chat)
    raise AssertionError("unreachable: the 'other' family matches every checkpoint")


@cache
def load_template(name: str) -> str:
    """The Jinja source of a shipped chat template, self-contained (the shared content macro prepended)."""
    if name not in TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}: use one of {sorted(TEMPLATES)} or pass a Jinja string.")
    folder = resources.files("llava_swap") / "templates"
    return (folder / "_render_content.jinja").read_text() + (folder / f"{name}.jinja").read_text()


def resolve_template(
    template: str | None, detected: DetectedFamily, tokenizer: PreTrainedTokenizerBase
) -> tuple[str, str]:
    """Picks the chat template: `(name, jinja source)`.

    `template` may be a shipped template's name or a Jinja string. Without it: the family's template; for a chat
    checkpoint of a family without one of ours (other, llama1), the tokenizer's own, which must mark assistant turns
    with {% generation %} for assistant-only loss: if it does not, an error asks for an explicit template rather than
    silently training in a format the checkpoint was not tuned on.
    """
    if template is None:
        template = detected.template
        if template is None:
            own = getattr(tokenizer, "chat_template", None)
            if isinstance(own, str) and has_generation_markers(own):
                return "tokenizer", own
            raise ValueError(
                f"This {detected.name!r}-family chat checkpoint ships its own chat template, without "
                "{% generation %} markers around assistant turns, so answers could not be supervised alone. Pass "
                f"template= one of {sorted(TEMPLATES)} (LLaVA used 'vicuna_v1'), or its own template with the "
                "markers added."
            )
    if template in TEMPLATES:
        return template, load_template(template)
    if "{%" not in template and "{{" not in template:
        raise ValueError(f"Unknown chat template {template!r}: use one of {sorted(TEMPLATES)} or pass a Jinja string.")
    if not has_generation_markers(template):
        raise ValueError(
            "The chat template passed has no {% generation %} ... {% endgeneration %} around assistant content; "
            "add them so training can supervise the answers only."
        )
    return "custom", template


def stop_tokens(
    template_name: str, tokenizer: PreTrainedTokenizerBase, extra_ids: int | list[int] | None = None
) -> list[int]:
    """Token ids that end generation: the template's end-of-turn token, the tokenizer's eos, then `extra_ids` (the
    checkpoint's own generation eos ids: LLaMA-3-Instruct stops at <|eot_id|> and <|end_of_text|>)."""
    spec = TEMPLATES.get(template_name)
    candidates = [spec.end_of_turn] if spec is not None and spec.end_of_turn else []
    candidates.append(tokenizer.eos_token)
    ids: list[int] = []
    for token in candidates:
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"Stop token {token!r} of template {template_name!r} is not in the tokenizer's vocabulary."
            )
        if token_id not in ids:
            ids.append(token_id)
    extra_ids = [extra_ids] if isinstance(extra_ids, int) else list(extra_ids or [])
    ids += [token_id for token_id in extra_ids if token_id not in ids]
    if not ids:
        raise ValueError(
            "The tokenizer has no eos token and the template no end-of-turn token: generation could not stop."
        )
    return ids


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, family: str, chat_template: str, end_of_turn: str | None = None
) -> int:
    """Adds `<image>` as a special token, gives the tokenizer a pad token and the chat template, in place.

    Pad policy: keep an existing pad unless it is an end token (the eos, or the template's `end_of_turn`: SmolLM2 and
    Qwen pad with theirs, and a pad that is also the token answers end with is one filter away from erasing that end
    from the labels, so the model would never learn to stop); else the family's reserved token; else add `<pad>`.
    Returns how many tokens were added to the vocabulary (the caller resizes the embeddings by that much).
    """
    before = len(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None or tokenizer.pad_token in {tokenizer.eos_token, end_of_turn}:
        vocab = tokenizer.get_vocab()
        reserved = next((token for token in FAMILIES[family].pad_candidates if token in vocab), None)
        if reserved is not None:
            tokenizer.pad_token = reserved
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.chat_template = chat_template
    return len(tokenizer) - before


_GENERATION_OPEN = re.compile(r"\{%-?\s*generation\s*-?%\}")
_GENERATION_CLOSE = re.compile(r"\{%-?\s*endgeneration\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    """Whether a Jinja chat template wraps assistant content in {% generation %} ... {% endgeneration %}."""
    return bool(_GENERATION_OPEN.search(template) and _GENERATION_CLOSE.search(template))


__all__ = [
    "FAMILIES",
    "IMAGE_TOKEN",
    "TEMPLATES",
    "DetectedFamily",
    "Family",
    "detect_family",
    "has_generation_markers",
    "load_template",
    "prepare_tokenizer",
    "resolve_template",
    "stop_tokens",
]
