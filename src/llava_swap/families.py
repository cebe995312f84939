"""What differs between LLM families, as data: detection, base-checkpoint chat template, pad token and stop tokens.

One table (`FAMILIES`) says how to recognise each family from a checkpoint's own config and tokenizer (never from
its path), which of the chat templates shipped in `llava_swap/templates/` (`TEMPLATES`) its base checkpoints are
trained in, and which reserved token can serve as padding. A chat checkpoint keeps the format it was tuned in: its
own template (see `answer_spans.py` for how its answers are found without markers). Where an answer ends, which is
also where generation stops, is read off the template itself. Code elsewhere reads these tables; there is no
per-family branch anywhere else in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from .answer_spans import IMAGE_TOKEN, end_of_turn_token, with_list_content

# The chat templates llava-swap ships, each marking answers with {% generation %}.
TEMPLATES = ("vicuna_v1", "llama2_chat", "llama3", "gemma", "chatml")


@dataclass(frozen=True)
class Family:
    """How to recognise an LLM family and which template its base checkpoints use."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family (empty: any)
    marker_tokens: tuple[str, ...]  # all must be in the tokenizer's vocabulary
    base_template: str
    pad_candidates: tuple[str, ...] = ()  # used as pad, in order, when the tokenizer has none
    max_context: int | None = None  # LLaMA-1 (2048) vs LLaMA-2 (4096) share the tokenizer, not the context
    min_context: int | None = None


@dataclass(frozen=True)
class ChatTemplate:
    """The chat template a model is trained and prompted in."""

    name: str  # a shipped template's name, "checkpoint" (the checkpoint's own) or "custom" (passed as template=)
    source: str  # Jinja
    end_of_turn: str  # the token that closes an answer, where generation stops


_SENTENCEPIECE_LLAMA = ("<s>", "</s>", "<unk>")
# Detection tries these in order; the first family whose model type, marker tokens and context length all match wins.
FAMILIES = {
    family.name: family
    for family in (
        Family("gemma", ("gemma", "gemma2", "gemma3_text"), ("<start_of_turn>", "<end_of_turn>"), "gemma"),
        Family(
            "llama3",
            ("llama",),
            ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "llama3",
            # LLaMA-3.1 reserves a pad token; LLaMA-3.0 has the same slot under a reserved name.
            pad_candidates=("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"),
        ),
        # ChatML is a format, not an architecture (Qwen2/2.5/3, SmolLM2 on LLaMA, ...): recognised by its turn tokens.
        Family("chatml", (), ("<|im_start|>", "<|im_end|>"), "chatml"),
        # LLaVA pads LLaMA-1/2 with <unk>: byte fallback means the tokenizer never emits it for real text.
        Family("llama2", ("llama",), _SENTENCEPIECE_LLAMA, "vicuna_v1", ("<unk>",), min_context=4096),
        Family("llama1", ("llama",), _SENTENCEPIECE_LLAMA, "vicuna_v1", ("<unk>",), max_context=2048),
        Family("other", (), (), "vicuna_v1"),
    )
}


@dataclass(frozen=True)
class DetectedFamily:
    """The family of a checkpoint and whether it is a chat (instruction-tuned) variant."""

    name: str
    is_chat: bool

    @property
    def template(self) -> str | None:
        """The shipped template this checkpoint is trained in by default; None: a chat checkpoint, which keeps its own."""
        return None if self.is_chat else FAMILIES[self.name].base_template


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
) -> ChatTemplate:
    """Picks the chat template a model is trained and prompted in.

    `template` may be a shipped template's name or a Jinja string. Without it, a chat checkpoint keeps its own
    template (its format is what it was tuned in) and a base checkpoint gets its family's. A template llava-swap did
    not write is given list-content rendering, so images go where the conversation puts them. Fails here, before any
    weights load, when the template cannot be trained on (no token closes an answer, answers rewritten, ...).
    """
    if template is None and detected.is_chat:
        own = tokenizer.chat_template
        own = own.get("default") if isinstance(own, dict) else own
        name, source = ("checkpoint", with_list_content(own)) if own else (None, None)
    elif template is None or template in TEMPLATES:
        name = template or detected.template
        source = load_template(name)
    elif "{%" in template or "{{" in template:
        name, source = "custom", with_list_content(template)
    else:
        raise ValueError(f"Unknown chat template {template!r}: use one of {sorted(TEMPLATES)} or pass a Jinja string.")
    if source is None:
        raise ValueError(
            f"This chat checkpoint's tokenizer has no default chat template: pass template= one of {sorted(TEMPLATES)}."
        )
    return ChatTemplate(name, source, end_of_turn_token(source, tokenizer))


def stop_tokens(
    end_of_turn: str, tokenizer: PreTrainedTokenizerBase, extra_ids: int | list[int] | None = None
) -> list[int]:
    """Token ids that end generation: the template's end-of-turn token, the tokenizer's eos, then `extra_ids` (the
    checkpoint's own generation eos ids: LLaMA-3-Instruct stops at <|eot_id|> and <|end_of_text|>)."""
    ids: list[int] = []
    for token in (end_of_turn, tokenizer.eos_token):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"Stop token {token!r} is not a single token of the tokenizer's vocabulary.")
        if token_id not in ids:
            ids.append(token_id)
    extra_ids = [extra_ids] if isinstance(extra_ids, int) else list(extra_ids or [])
    return ids + [token_id for token_id in extra_ids if token_id not in ids]


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


__all__ = [
    "FAMILIES",
    "IMAGE_TOKEN",
    "TEMPLATES",
    "ChatTemplate",
    "DetectedFamily",
    "Family",
    "detect_family",
    "load_template",
    "prepare_tokenizer",
    "resolve_template",
    "stop_tokens",
]
