"""Family detection, chat templates, pad and stop tokens: on the tiny backbones and on the real LLaMA tokenizers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from _helpers import two_turn_messages
from llava_swap import detect_family, tiny
from llava_swap.answer_spans import has_generation_markers, with_list_content
from llava_swap.families import load_template, resolve_template

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
SMOLLM_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
# Chat formats of checkpoints that ship their own template (built by `own_template_lm`), as (template, tokens added).
OWN_TEMPLATES = {
    # Phi-3-mini: a LLaMA tokenizer with its own turn tokens; the tokenizer adds BOS, the template closes with eos.
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
        "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}"
        "{% endif %}",
        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    ),
    # Mistral-7B-Instruct: [INST] turns, an answer closed by eos.
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}"
        "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        (),
    ),
    # ChatML (Qwen-style), written its own way.
    "chatml_own": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ("<|im_start|>", "<|im_end|>"),
    ),
}
# The exact text each format renders for the 2-turn conversation of `two_turn_messages`.
EXPECTED_CHAT = {
    "vicuna_v1": (
        "<s>" + VICUNA_SYSTEM + " USER: <image>\nWhat colour is it? ASSISTANT: It is red.</s>"
        "USER: How many circles? ASSISTANT: Two.</s>"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat colour is it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is red.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow many circles?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nTwo.<|eot_id|>"
    ),
    "gemma": (
        "<bos><start_of_turn>user\n<image>\nWhat colour is it?<end_of_turn>\n"
        "<start_of_turn>model\nIt is red.<end_of_turn>\n"
        "<start_of_turn>user\nHow many circles?<end_of_turn>\n"
        "<start_of_turn>model\nTwo.<end_of_turn>\n"
    ),
    "chatml": (
        "<|im_start|>user\n<image>\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\nIt is red.<|im_end|>\n"
        "<|im_start|>user\nHow many circles?<|im_end|>\n<|im_start|>assistant\nTwo.<|im_end|>\n"
    ),
    "phi3": (
        "<|user|>\n<image>\nWhat colour is it?<|end|>\n<|assistant|>\nIt is red.<|end|>\n"
        "<|user|>\nHow many circles?<|end|>\n<|assistant|>\nTwo.<|end|>\n</s>"
    ),
    "mistral": "<s>[INST] <image>\nWhat colour is it? [/INST]It is red.</s>[INST] How many circles? [/INST]Two.</s>",
}
EXPECTED_CHAT["smollm2"] = SMOLLM_SYSTEM + EXPECTED_CHAT["chatml"]
EXPECTED_CHAT["chatml_own"] = EXPECTED_CHAT["chatml"]
# What the assistant-token mask must select: each answer with its end-of-turn token, nothing else.
EXPECTED_SUPERVISED = {
    "vicuna_v1": [" It is red.</s>", " Two.</s>"],
    "llama3": ["It is red.<|eot_id|>", "Two.<|eot_id|>"],
    "gemma": ["It is red.<end_of_turn>", "Two.<end_of_turn>"],
    "chatml": ["It is red.<|im_end|>", "Two.<|im_end|>"],
    "phi3": ["It is red.<|end|>", "Two.<|end|>"],
    "mistral": ["It is red.</s>", "Two.</s>"],
}
EXPECTED_SUPERVISED["smollm2"] = EXPECTED_SUPERVISED["chatml_own"] = EXPECTED_SUPERVISED["chatml"]
GENERATION_PROMPT_END = {
    "vicuna_v1": "USER: How many circles? ASSISTANT:",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<start_of_turn>model\n",
    "chatml": "<|im_start|>assistant\n",
    "phi3": "<|user|>\nHow many circles?<|end|>\n<|assistant|>\n",
    "mistral": "[INST] How many circles? [/INST]",
}
GENERATION_PROMPT_END["smollm2"] = GENERATION_PROMPT_END["chatml_own"] = GENERATION_PROMPT_END["chatml"]
STOP_TOKENS = {
    "vicuna_v1": ["</s>"],
    "llama3": ["<|eot_id|>", "<|end_of_text|>"],
    "gemma": ["<end_of_turn>", "<eos>"],
    "chatml": ["<|im_end|>"],
    "phi3": ["<|end|>", "</s>"],
    "mistral": ["</s>"],
}
STOP_TOKENS["smollm2"] = STOP_TOKENS["chatml_own"] = STOP_TOKENS["chatml"]
# (template name, chat format) of each tiny family: base checkpoints get a shipped template, Gemma-it keeps its own.
TINY_FAMILY_TEMPLATE = {
    "llama1": ("vicuna_v1", "vicuna_v1"),
    "llama2": ("vicuna_v1", "vicuna_v1"),
    "llama3": ("llama3", "llama3"),
    "gemma": ("checkpoint", "gemma"),
}


@pytest.fixture(scope="session")
def own_template_lm(tiny_lm, tmp_path_factory):
    """`own_template_lm(format)` -> a tiny LLaMA-2 chat checkpoint whose tokenizer ships the `OWN_TEMPLATES` format
    (its turn tokens added as special tokens, with embedding rows)."""
    root = tmp_path_factory.mktemp("own_template_lm")
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            template, added = OWN_TEMPLATES[name]
            source, target = tiny_lm("llama2"), root / name
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source)
            if added:
                tokenizer.add_special_tokens({"additional_special_tokens": list(added)})
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            tokenizer.chat_template = template
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
            cache[name] = target
        return cache[name]

    return get


def _supervised_spans(processor, messages) -> tuple[list[str], list[int]]:
    """Texts of the token runs that the template's {% generation %} marks select, and the token ids."""
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0].tolist(), out["assistant_masks"][0].tolist()
    return [_span_text(processor.tokenizer, run) for run in _selected_runs(ids, mask)], ids


def _selected_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """Runs of consecutive tokens whose mask is 1."""
    runs, current = [], []
    for token, selected in zip(ids, mask, strict=True):
        if selected:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def _span_text(tokenizer, span: list[int]) -> str:
    """The text of a token run, leading space included (SentencePiece decoders strip it from a standalone run)."""
    pieces = tokenizer.convert_ids_to_tokens(span)
    if any(piece.startswith("▁") for piece in pieces):
        return "".join(pieces).replace("▁", " ")
    return tokenizer.decode(span)


def _check_chat(model, processor, chat_format: str) -> None:
    """The rendered chat is `chat_format` with the image in it; the mask selects each answer and its end-of-turn
    token; BOS once; the image expanded; generation stops at the end-of-turn token."""
    tokenizer = processor.tokenizer
    messages = two_turn_messages()
    assert processor.apply_chat_template(messages) == EXPECTED_CHAT[chat_format]
    prompt = processor.apply_chat_template(messages[:3], add_generation_prompt=True)
    assert prompt.endswith(GENERATION_PROMPT_END[chat_format])

    spans, ids = _supervised_spans(processor, messages)
    assert spans == EXPECTED_SUPERVISED[chat_format]
    # BOS exactly once, at the start (ChatML writes none: its "bos" is the turn opener); every image placeholder
    # expanded to the model's count.
    if not chat_format.startswith(("chatml", "smollm2")):
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(model.config.image_token_id) == model.config.image_seq_length
    expected_stops = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS[chat_format]]
    assert model.generation_config.eos_token_id[: len(expected_stops)] == expected_stops

    # Generation ends at the end-of-turn token: made the likeliest next token, it is the only one written.
    inputs = processor.apply_chat_template(
        messages[:3], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    end = expected_stops[0]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, sequence_bias={(end,): 1e4})
    assert out[0, inputs["input_ids"].shape[1] :].tolist() == [end]


@pytest.mark.parametrize("family", ["llama1", "llama2", "llama3", "gemma"])
def test_tiny_family_detected_and_templated(built, family):
    model, processor = built(family, "clip")
    template, chat_format = TINY_FAMILY_TEMPLATE[family]
    assert model.config.llm_family == family
    assert model.config.chat_template_name == template == processor.chat_template_name
    _check_chat(model, processor, chat_format)


@pytest.mark.parametrize(
    ("chat_format", "family"), [("phi3", "llama2"), ("mistral", "llama2"), ("chatml_own", "chatml")]
)
def test_chat_checkpoint_keeps_its_own_template(own_template_lm, tiny_vision, chat_format, family):
    """Phi-3, Mistral [INST] and ChatML written by the checkpoint, without {% generation %} markers: used as they are,
    with no override, answers found by rendering sentinels."""
    from llava_swap import build_vlm

    path = own_template_lm(chat_format)
    assert not has_generation_markers(AutoTokenizer.from_pretrained(path).chat_template)
    model, processor = build_vlm(path, tiny_vision("clip"))
    assert (model.config.llm_family, processor.chat_template_name) == (family, "checkpoint")
    _check_chat(model, processor, chat_format)


@pytest.mark.parametrize(
    ("name", "family", "is_chat", "template"),
    [
        ("llama2", "llama2", False, "vicuna_v1"),
        ("llama3", "llama3", False, "llama3"),
        ("llama3-instruct", "llama3", True, None),  # a chat checkpoint keeps its own template
        ("smollm2-instruct", "chatml", True, None),
    ],
)
def test_real_tokenizer_family_detection(real_lm, name, family, is_chat, template):
    path = real_lm(name)
    detected = detect_family(AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path))
    assert (detected.name, detected.is_chat, detected.template) == (family, is_chat, template)


@pytest.mark.parametrize("name", ["llama2", "llama3", "llama3-instruct"])
def test_real_tokenizer_build_template_and_stop_tokens(real_lm, tiny_vision, name):
    from llava_swap import build_vlm

    model, processor = build_vlm(real_lm(name), tiny_vision("clip"))
    template = {"llama2": "vicuna_v1", "llama3": "llama3", "llama3-instruct": "checkpoint"}[name]
    assert processor.chat_template_name == template
    _check_chat(model, processor, "vicuna_v1" if name == "llama2" else "llama3")
    tokenizer = processor.tokenizer
    # Exactly one token added (<image>); the pad is a token the vocabulary already reserves.
    assert len(tokenizer) == AutoTokenizer.from_pretrained(real_lm(name)).__len__() + 1
    assert model.config.text_config.vocab_size == len(tokenizer)
    expected_pad = "<unk>" if name == "llama2" else "<|reserved_special_token_0|>"
    assert tokenizer.pad_token == expected_pad
    if name == "llama3-instruct":  # the checkpoint's own eos ids are kept after the template's
        assert model.generation_config.eos_token_id == [128009, 128001]


def test_llama1_and_llama2_differ_only_by_config(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama1"))
    assert detect_family(AutoConfig.from_pretrained(tiny_lm("llama1")), tokenizer).name == "llama1"
    assert detect_family(AutoConfig.from_pretrained(tiny_lm("llama2")), tokenizer).name == "llama2"


def test_family_override_and_unknown_family(tiny_lm):
    config, tokenizer = AutoConfig.from_pretrained(tiny_lm("llama2")), AutoTokenizer.from_pretrained(tiny_lm("llama2"))
    assert detect_family(config, tokenizer, override="llama1").name == "llama1"
    with pytest.raises(ValueError, match=r"Unknown LLM family 'llama9'.*llama3"):
        detect_family(config, tokenizer, override="llama9")


def test_detection_ignores_the_path(tiny_lm, tmp_path):
    """A LLaMA-3 checkpoint in a directory named like LLaMA-2 is still LLaMA-3."""
    import shutil

    misleading = tmp_path / "Llama-2-7b-hf"
    shutil.copytree(tiny_lm("llama3"), misleading)
    detected = detect_family(AutoConfig.from_pretrained(misleading), AutoTokenizer.from_pretrained(misleading))
    assert detected.name == "llama3"


def test_chat_checkpoint_keeps_its_own_template_and_base_gets_the_familys(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("gemma"))
    assert tokenizer.chat_template and not has_generation_markers(tokenizer.chat_template)  # Google's: no markers
    detected = detect_family(AutoConfig.from_pretrained(tiny_lm("gemma")), tokenizer)
    chat = resolve_template(None, detected, tokenizer)
    assert (chat.name, chat.source, chat.end_of_turn) == (
        "checkpoint",
        with_list_content(tokenizer.chat_template),
        "<end_of_turn>",
    )
    assert resolve_template("gemma", detected, tokenizer).source == load_template("gemma")  # ours, by name
    base = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    chat = resolve_template(None, detect_family(AutoConfig.from_pretrained(tiny_lm("llama3")), base), base)
    assert (chat.name, chat.source, chat.end_of_turn) == ("llama3", load_template("llama3"), "<|eot_id|>")


# Templates that cannot be trained on, and what the error says.
UNUSABLE_TEMPLATES = [
    ("{% for m in messages %}{{ m.content }}{% endfor %}", r"no special token after answer 1.*learn to stop"),
    (
        "{% for m in messages %}{{ m.content | upper if m.role == 'assistant' else m.content }}{{ eos_token }}"
        "{% endfor %}",
        r"changes the text at answer 1",
    ),
    ("{{ raise_exception('System prompt required') }}", r"fails on a plain user/assistant exchange.*System prompt"),
    ("{% for m in messages if m.role == 'user' %}{{ m.content }}{% endfor %}", r"not render assistant message 1"),
    (
        "{% for m in messages %}{% generation %}{{ m.role }}{% endgeneration %}: {{ m.content }}</s>{% endfor %}",
        r"no special token after answer 1 \('user' is followed by",
    ),
    (  # list content only, with its own image marker: string text would vanish
        "{% for m in messages %}{% for part in m.content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}"
        "{% endfor %}{{ eos_token }}{% endfor %}",
        r"does not render a user's text as given",
    ),
]


@pytest.mark.parametrize(("template", "message"), UNUSABLE_TEMPLATES)
def test_template_that_cannot_be_trained_on_is_refused_before_loading(tiny_lm, template, message):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    detected = detect_family(AutoConfig.from_pretrained(tiny_lm("llama3")), tokenizer)
    with pytest.raises(ValueError, match=message) as error:
        resolve_template(template, detected, tokenizer)
    assert "template=" in str(error.value)


def test_answers_of_one_conversation_must_close_with_one_token(built):
    """StableLM-alpha style: an answer is closed by the next turn's opener, the last one by eos. Generation stops at
    one token, so such answers are refused, not supervised with a token the model would not stop at."""
    from llava_swap.answer_spans import render_with_answer_spans

    _, processor = built("llama3", "clip")
    template = with_list_content(
        "{% for m in messages %}{% if m.role == 'user' %}<|start_header_id|>{{ m.content }}{% else %}"
        "<|end_header_id|>{{ m.content }}{% endif %}{% endfor %}{{ eos_token }}"
    )
    one_turn = two_turn_messages()[:2]
    ((text, spans),) = render_with_answer_spans([one_turn], template, processor.tokenizer)
    assert [text[a:b] for a, b in spans] == ["It is red.<|end_of_text|>"]
    with pytest.raises(ValueError, match=r"closes its answers with different tokens.*<\|start_header_id\|>"):
        render_with_answer_spans([two_turn_messages()], template, processor.tokenizer)


def test_marked_template_without_its_closing_token_is_closed_for_it(tiny_lm):
    """{% generation %} blocks around the content only (common in the wild): the closing token after the block is
    supervised too, as for templates without markers."""
    from llava_swap.answer_spans import render_with_answer_spans

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    marked = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}<|eot_id|>{% endfor %}"
    detected = detect_family(AutoConfig.from_pretrained(tiny_lm("llama3")), tokenizer)
    assert resolve_template(marked, detected, tokenizer).end_of_turn == "<|eot_id|>"
    ((text, spans),) = render_with_answer_spans(
        [[{"role": "assistant", "content": "Yes."}]], with_list_content(marked), tokenizer
    )
    assert [text[a:b] for a, b in spans] == ["Yes.<|eot_id|>"]


def test_continued_final_answer_is_supervised_without_a_closing_token(own_template_lm, tiny_vision):
    from llava_swap import build_vlm

    _, processor = build_vlm(own_template_lm("phi3"), tiny_vision("clip"))
    messages = two_turn_messages()
    messages[-1] = {"role": "assistant", "content": [{"type": "text", "text": "Two"}]}
    out = processor.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        continue_final_message=True,
        return_tensors="pt",
    )
    ids, mask = out["input_ids"][0].tolist(), out["assistant_masks"][0].tolist()
    runs = [_span_text(processor.tokenizer, run) for run in _selected_runs(ids, mask)]
    assert runs == ["It is red.<|end|>", "Two"]


def test_records_a_checkpoint_template_refuses_are_named_and_follow_on_bad_record(built):
    """Gemma-it's own template refuses a system message; LLaMA-2-chat-style ones refuse roles out of turn; Qwen3's
    rewrites answers holding </think>. Such a record is reported by id (skipped or stopping the run, as the recipe
    says), never a bare template error mid-training."""
    import types

    from llava_swap.stages import check_lengths

    _, processor = built("gemma", "clip")
    assert processor.chat_template_name == "checkpoint"
    ok = {"id": "ok", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    system = {"id": "rec-42", "messages": [{"role": "system", "content": "Be brief."}, *ok["messages"]]}
    stage = types.SimpleNamespace(max_length=None)
    kept, dropped = check_lengths([ok, system], processor, stage, on_bad_record="skip")
    assert [row["id"] for row in kept] == ["ok"]
    assert [(record.id, record.problem) for record in dropped] == [
        ("rec-42", "record 'rec-42': the chat template cannot train on it: System role not supported (pass "
         "template= one of llava-swap's templates to train in another format, or fix or skip the record)")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="record 'rec-42': the chat template cannot train on it"):
        check_lengths([ok, system], processor, stage, on_bad_record="error")


def test_custom_template_by_name_or_jinja(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    detected = detect_family(AutoConfig.from_pretrained(tiny_lm("llama3")), tokenizer)
    with pytest.raises(ValueError, match="Unknown chat template 'vicuna_v9'"):
        resolve_template("vicuna_v9", detected, tokenizer)
    custom = "{% for m in messages %}{{ m.content }}{% if m.role == 'assistant' %}<|eot_id|>{% endif %}{% endfor %}"
    chat = resolve_template(custom, detected, tokenizer)
    assert (chat.name, chat.source, chat.end_of_turn) == ("custom", with_list_content(custom), "<|eot_id|>")
    assert with_list_content(chat.source) == chat.source  # applied once
    assert all(has_generation_markers(load_template(name)) for name in ("vicuna_v1", "llama2_chat", "llama3", "gemma"))


def test_template_override_by_name(built):
    model, processor = built("llama2", "clip", template="llama2_chat")
    text = processor.apply_chat_template(two_turn_messages())
    assert (
        text
        == "<s>[INST] <image>\nWhat colour is it? [/INST] It is red. </s><s>[INST] How many circles? [/INST] Two. </s>"
    )
    spans, _ = _supervised_spans(processor, two_turn_messages())
    assert spans == [" It is red. </s>", " Two. </s>"]


def test_unknown_role_fails_loudly(built):
    _, processor = built("llama3", "clip")
    with pytest.raises(Exception, match="Unknown role 'tool'"):
        processor.apply_chat_template([{"role": "tool", "content": "42"}])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_assistant_masks_in_a_padded_batch(built, padding_side):
    """Masks stay on the answers whichever side is padded; an image-free row works beside an image row."""
    _, processor = built("llama3", "clip")
    conversations = [
        two_turn_messages(),
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    ]
    out = processor.apply_chat_template(
        conversations,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": padding_side},
    )
    assert out["input_ids"].shape == out["assistant_masks"].shape
    expected = [EXPECTED_SUPERVISED["llama3"], ["Hello!<|eot_id|>"]]
    for row in range(2):
        ids = out["input_ids"][row][out["attention_mask"][row] == 1].tolist()
        mask = out["assistant_masks"][row][out["attention_mask"][row] == 1].tolist()
        assert [processor.tokenizer.decode(run) for run in _selected_runs(ids, mask)] == expected[row]
        assert out["assistant_masks"][row][out["attention_mask"][row] == 0].sum() == 0  # never on padding


def test_assistant_mask_survives_truncation(built):
    _, processor = built("llama3", "clip")
    full = processor.apply_chat_template(
        two_turn_messages(), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    length = full["input_ids"].shape[1] - 3  # cut into the last answer
    cut = processor.apply_chat_template(
        two_turn_messages(),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"truncation": True, "max_length": length},
    )
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, :length])
    assert torch.equal(cut["assistant_masks"][0], full["assistant_masks"][0, :length])


def _other_family_checkpoint(tiny_lm, tmp_path, chat_template):
    """A Mistral-architecture chat checkpoint with a ChatML-style template: family 'other'."""
    from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

    source = tiny_lm("llama2")
    llama = AutoModelForCausalLM.from_pretrained(source)
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    config = MistralConfig(**{name: getattr(llama.config, name) for name in fields}, num_key_value_heads=4, head_dim=16)
    mistral = MistralForCausalLM(config)
    mistral.load_state_dict(llama.state_dict())
    mistral.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_other_family_chat_checkpoint_uses_its_own_template_or_an_explicit_one(tiny_lm, tiny_vision, tmp_path):
    from llava_swap import build_vlm

    own = "{% for m in messages %}{{ m.role }}: {{ m.content }}</s>\n{% endfor %}"
    path = _other_family_checkpoint(tiny_lm, tmp_path / "own", own)
    model, processor = build_vlm(path, tiny_vision("clip"))
    assert (model.config.llm_family, processor.chat_template_name) == ("other", "checkpoint")
    assert processor.chat_template == with_list_content(own)
    assert _supervised_spans(processor, two_turn_messages())[0] == [" It is red.</s>", " Two.</s>"]
    model, processor = build_vlm(path, tiny_vision("clip"), template="vicuna_v1")
    assert (model.config.llm_family, processor.chat_template_name) == ("other", "vicuna_v1")

    marked = "{% for m in messages %}{% generation %}{{ m.content }}</s>{% endgeneration %}{% endfor %}"
    path = _other_family_checkpoint(tiny_lm, tmp_path / "marked", marked)
    _, processor = build_vlm(path, tiny_vision("clip"))
    assert processor.chat_template_name == "checkpoint" and processor.chat_template == with_list_content(marked)


TEXT_ONLY_LLMS = (
    [("tiny", family) for family in tiny.LANGUAGE_FAMILIES]
    + [("real", name) for name in ("llama2", "llama3", "llama3-instruct", "smollm2-instruct")]  # random weights
    + [("own", name) for name in OWN_TEMPLATES]
)


@pytest.mark.parametrize(("source", "name"), TEXT_ONLY_LLMS)
def test_text_only_prompts_give_the_llms_own_logits_and_continuation(
    tiny_lm, real_lm, own_template_lm, tiny_vision, source, name
):
    """Building a VLM around an LLM leaves the LLM itself alone: same logits over its vocabulary, same greedy text."""
    from llava_swap import build_vlm

    path = {"tiny": tiny_lm, "real": real_lm, "own": own_template_lm}[source](name)
    language_model = AutoModelForCausalLM.from_pretrained(path)
    model, _ = build_vlm(path, tiny_vision("clip"))
    ids = AutoTokenizer.from_pretrained(path)("The seismogram shows two small circles", return_tensors="pt").input_ids
    vocabulary = language_model.config.vocab_size
    settings = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, language_model(input_ids=ids).logits
        assert ours.shape[-1] >= vocabulary == theirs.shape[-1]
        assert (ours[..., :vocabulary] - theirs).abs().max().item() <= 1e-5
        continued = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
        expected = language_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
    assert continued.tolist() == expected.tolist()


def test_chatml_checkpoint_whose_pad_is_its_end_token(real_lm, tiny_vision):
    """SmolLM2-Instruct: ChatML, and pad == eos == <|im_end|>. It gets a pad of its own, so every answer keeps the
    <|im_end|> it ends with in its labels (the model learns to stop), while padding carries no label."""
    from _helpers import chat_image
    from llava_swap import build_vlm
    from llava_swap.collator import LlavaSwapCollator

    path = real_lm("smollm2-instruct")
    own = AutoTokenizer.from_pretrained(path)
    assert own.pad_token == own.eos_token == "<|im_end|>"
    model, processor = build_vlm(path, tiny_vision("clip"))
    assert (model.config.llm_family, processor.chat_template_name) == ("chatml", "checkpoint")
    _check_chat(model, processor, "smollm2")
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token == "<pad>" and len(tokenizer) == len(own) + 2  # <image> and <pad>: new rows
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id

    def row(row_id, answer):
        user = [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        return {"id": row_id, "images": [chat_image()], "messages": messages}

    batch = LlavaSwapCollator(processor)([row("short", "Red."), row("long", "It is a bright red circle, I think.")])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    labelled_ends = ((batch["labels"] == end) & (batch["input_ids"] == end)).sum(dim=1).tolist()
    assert labelled_ends == [1, 1]  # each answer's own <|im_end|>, not the user turn's
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["input_ids"][padding] == tokenizer.pad_token_id).all()
    assert (batch["labels"][padding] == -100).all()
