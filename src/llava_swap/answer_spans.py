"""Where the answers are in a rendered chat: the character spans that training supervises, for any chat template.

A template llava-swap ships marks assistant content with `{% generation %}` blocks, and transformers reports their
spans. A chat checkpoint's own template has no such marks, so the answers are located instead: the conversation is
rendered a second time with a unique sentinel in place of each answer, the text between sentinels is the template's
own scaffolding, and the real rendering must be that scaffolding with the answers (as the template wrote them) in
between. Each span then runs to the end of the special token that closes the answer (`<|im_end|>`, `<|end|>`,
`</s>`, ...), because a model that is never taught to write that token never learns to stop.

A template that rewrites answer text (drops reasoning, changes case, ...) or leaves an answer without a closing token
gives no honest span: that is an error naming the conversation and what to do, never a silently empty mask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from . import compat

IMAGE_TOKEN = "<image>"  # where an image goes in a prompt; each expands to the image's tokens in the processor
Span = tuple[int, int]
# Unlikely in real text, free of special-token strings, and unchanged by `trim`.
_SENTINEL = "LLAVASWAPANSWER{}END"
_FIX = (
    "Pass template= one of llava-swap's templates (llava_swap.families.TEMPLATES), or a Jinja template that renders "
    "every answer as given and closes it with a special token (eos, an end-of-turn token)."
)


@cache
def _list_content_prefix() -> str:
    # No trailing newline: the template that follows keeps its own leading whitespace.
    return (resources.files("llava_swap") / "templates" / "_list_content.jinja").read_text().rstrip("\n")


def with_list_content(template: str) -> str:
    """`template` preceded by a block that renders list-valued content as text (an image part as `<image>\\n`)."""
    prefix = _list_content_prefix()
    return template if template.startswith(prefix) else prefix + template


def render_with_answer_spans(
    conversations: Sequence[Sequence[dict]],
    template: str,
    tokenizer: PreTrainedTokenizerBase,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    **template_kwargs,
) -> list[tuple[str, list[Span]]]:
    """Each conversation rendered with `template`, and the `(start, end)` characters of its answers' supervised text:
    each answer and the special token that closes it, which must be the same for every answer of a conversation.
    `template_kwargs` (tools, documents, ...) reach the template as in `apply_chat_template`."""
    settings = {"add_generation_prompt": add_generation_prompt, "continue_final_message": continue_final_message}
    # A {% generation %} block may hold its closing token; a located answer is the answer's text alone.
    marked_by_template = has_generation_markers(template)
    if marked_by_template:
        prompts, marked = compat.render_with_generation_spans(
            list(conversations), template, **settings, **template_kwargs, **tokenizer.special_tokens_map
        )
    else:
        prompts = _render(tokenizer, template, conversations, **settings, **template_kwargs)
        scaffolds = _render(
            tokenizer,
            template,
            [_sentinel_answers(messages) for messages in conversations],
            **settings,
            **template_kwargs,
        )
        marked = [
            _locate(text, scaffold, [_as_text(m.get("content")) for m in messages if m["role"] == "assistant"], index)
            for index, (messages, text, scaffold) in enumerate(zip(conversations, prompts, scaffolds, strict=True))
        ]
    end_tokens = _closing_tokens(tokenizer)
    out = []
    for index, (messages, text, spans) in enumerate(zip(conversations, prompts, marked, strict=True)):
        final_is_open = continue_final_message and messages[-1]["role"] == "assistant"
        closed, closers = [], set()
        for number, (start, end) in enumerate(spans):
            closing = _closing_token(text, start, end, end_tokens, marked_by_template)
            if closing is None:
                if final_is_open and number == len(spans) - 1:
                    closed.append((start, end))  # the answer being continued has no end yet
                    continue
                raise ValueError(
                    f"Conversation {index}: the chat template puts no special token after answer {number + 1} "
                    f"({text[start:end][-60:]!r} is followed by {text[end : end + 30]!r}), so a model trained on it "
                    f"would never learn to stop. {_FIX}"
                )
            token, closing_end = closing
            closers.add(token)
            closed.append((start, closing_end))
        if len(closers) > 1:
            raise ValueError(
                f"Conversation {index}: the chat template closes its answers with different tokens {sorted(closers)}; "
                f"generation stops at one, so answers closed by another would teach the model not to stop. {_FIX}"
            )
        out.append((text, closed))
    return out


def end_of_turn_token(template: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The special token a template closes an answer with: the token generation must stop at. Fails, saying why,
    for a template that cannot be trained on."""
    probe = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}]
    try:
        (plain,) = _render(tokenizer, template, [probe])
        if "Hello." not in plain:
            raise ValueError(
                f"The chat template does not render a user's text as given (rendered: {plain!r}): it may take list "
                f"content only, with image markers of its own, or rewrite the text. {_FIX}"
            )
        ((text, spans),) = render_with_answer_spans([probe], template, tokenizer)
    except (TemplateError, TypeError) as error:  # the template's own raise_exception, or a Jinja error
        raise ValueError(
            f"The chat template fails on a plain user/assistant exchange ({type(error).__name__}: {error}). {_FIX}"
        ) from error
    except ValueError as error:
        if str(error).startswith("The chat template"):
            raise
        reason = str(error).removeprefix("Conversation 0: ")
        raise ValueError(f"The chat template cannot be used for training: {reason}") from error
    answer = text.find("Hi.", *spans[-1]) if spans else -1
    if answer < 0:
        raise ValueError(
            f"The chat template's {{% generation %}} blocks do not hold the answer (rendered: {text!r}). {_FIX}"
        )
    return _closing_token(text, answer, answer + len("Hi."), _closing_tokens(tokenizer), False)[0]


def _render(tokenizer, template: str, conversations, **settings) -> list[str]:
    return tokenizer.apply_chat_template(list(conversations), chat_template=template, tokenize=False, **settings)


def _as_text(content) -> str:
    """Message content as the list-content block renders it."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        IMAGE_TOKEN + "\n" if part.get("type") == "image" else part.get("text", "")
        for part in content
        if part.get("type") in ("image", "text")
    )


def _sentinel_answers(messages: Sequence[dict]) -> list[dict]:
    out, number = [], 0
    for message in messages:
        if message["role"] == "assistant":
            message = {**message, "content": _SENTINEL.format(number)}
            number += 1
        out.append(message)
    return out


def _locate(text: str, scaffold: str, answers: list[str], index: int) -> list[Span]:
    """Spans of the answers in `text`, given the same conversation rendered with sentinel answers (`scaffold`)."""
    pieces, position = [], 0
    for number in range(len(answers)):
        sentinel = _SENTINEL.format(number)
        found = scaffold.find(sentinel, position)
        if found < 0 or scaffold.count(sentinel) != 1:
            raise ValueError(
                f"Conversation {index}: the chat template does not render assistant message {number + 1} exactly "
                f"once, so its answer cannot be supervised. {_FIX}"
            )
        pieces.append(scaffold[position:found])
        position = found + len(sentinel)
    pieces.append(scaffold[position:])

    spans = []
    if not text.startswith(pieces[0]):
        raise _rewritten(index, 0, text, pieces[0])
    cursor = len(pieces[0])
    for number, answer in enumerate(answers):
        follows = pieces[number + 1]
        # The template may trim an answer; anything else it does to the text makes the answer unlocatable.
        for candidate in dict.fromkeys((answer, answer.strip(), answer.lstrip(), answer.rstrip())):
            end = cursor + len(candidate)
            if text.startswith(candidate, cursor) and text.startswith(follows, end):
                spans.append((cursor, end))
                cursor = end + len(follows)
                break
        else:
            raise _rewritten(index, number + 1, text[cursor:], answer)
    if cursor != len(text):
        raise _rewritten(index, len(answers) + 1, text[cursor:], "")
    return spans


def _rewritten(index: int, number: int, found: str, expected: str) -> ValueError:
    where = "before the first answer" if number == 0 else f"at answer {number}"
    return ValueError(
        f"Conversation {index}: the chat template changes the text {where} (expected {expected[:60]!r}, found "
        f"{found[:60]!r}), so answer tokens cannot be located for the loss. {_FIX}"
    )


def _closing_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Special and added tokens that may close an answer, longest first (so `<|im_end|>` wins over a prefix)."""
    tokens = {token.content for token in tokenizer.added_tokens_decoder.values()} | set(tokenizer.all_special_tokens)
    tokens.discard(IMAGE_TOKEN)
    return sorted((token for token in tokens if token), key=len, reverse=True)


def _closing_token(
    text: str, start: int, end: int, tokens: Iterable[str], may_hold_closer: bool
) -> tuple[str, int] | None:
    """`(token, end)` of the special token that closes the answer spanning `[start, end)`: the span's own last
    token (when the span may hold it), else the one right after it, whitespace between allowed."""
    inside = text[start:end].rstrip()
    own = next((token for token in tokens if inside.endswith(token)), None) if may_hold_closer else None
    if own is not None:
        return own, end
    after = _WHITESPACE.match(text, end).end()
    return next(((token, after + len(token)) for token in tokens if text.startswith(token, after)), None)


_WHITESPACE = re.compile(r"\s*")
_GENERATION_OPEN = re.compile(r"\{%-?\s*generation\s*-?%\}")
_GENERATION_CLOSE = re.compile(r"\{%-?\s*endgeneration\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    """Whether a Jinja chat template wraps assistant content in {% generation %} ... {% endgeneration %}."""
    return bool(_GENERATION_OPEN.search(template) and _GENERATION_CLOSE.search(template))


__all__ = [
    "IMAGE_TOKEN",
    "end_of_turn_token",
    "has_generation_markers",
    "render_with_answer_spans",
    "with_list_content",
]
