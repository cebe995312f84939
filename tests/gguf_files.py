"""Write a tiny LLaMA-architecture checkpoint as a GGUF file, for the tests of loading LLMs from GGUF.

``write_gguf`` converts a ``save_pretrained`` directory (safetensors + fast tokenizer, such as the ones
``llava_swap.tiny.save_language_model`` writes for ``"llama2"`` and ``"llama3"``) into the single-file layout
llama.cpp produces: F32 tensors under llama.cpp's names, the architecture in ``llama.*`` metadata keys and the
tokenizer in ``tokenizer.ggml.*`` keys. transformers reads such a file back with
``from_pretrained(directory, gguf_file=name)``. Only what the tiny checkpoints use is supported (plain RoPE, no
biases, a BPE tokenizer); anything else raises rather than being written wrongly.

Support code, not a test module: it needs the ``gguf`` package, so callers should ``pytest.importorskip("gguf")``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

_ARCH = "llama"
# The pre-tokenizer regex of LLaMA-3; a byte-level tokenizer splitting text with it is llama.cpp's "llama-bpe".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# transformers name (after "model.layers.N.") -> llama.cpp name (after "blk.N.").
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def write_gguf(model_dir: str | os.PathLike, path: str | os.PathLike) -> pathlib.Path:
    """Convert the LLaMA checkpoint in ``model_dir`` into an F32 GGUF file at ``path``; return ``path``.

    Put the file in a directory of its own: next to a ``tokenizer.json``, ``AutoTokenizer.from_pretrained(directory,
    gguf_file=...)`` silently builds the tokenizer from that file instead of from the GGUF metadata.
    """
    import gguf  # optional: only the GGUF tests need it

    model_dir = pathlib.Path(model_dir)
    out = pathlib.Path(path)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    _check_supported(config)

    writer = gguf.GGUFWriter(out, arch=_ARCH)
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_architecture(writer, config)
    _add_tokenizer(writer, tokenizer, config.vocab_size, gguf.TokenType)
    for name, tensor in _gguf_tensors(model_dir, config):
        writer.add_tensor(name, tensor)
    return _write_out(writer, out)


def _write_out(writer: Any, out: pathlib.Path) -> pathlib.Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _check_supported(config: PretrainedConfig) -> None:
    """Refuse what this writer would get wrong instead of writing a file that loads into a different model."""
    if config.model_type != "llama":
        raise ValueError(f"only LLaMA checkpoints are supported, not {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise NotImplementedError("llama checkpoints with biases are not supported")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"rope_type {rope['rope_type']!r} is not supported, only 'default'")


def _rope_theta(config: PretrainedConfig) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _add_architecture(writer: Any, config: PretrainedConfig) -> None:
    """The ``llama.*`` keys transformers turns back into a ``LlamaConfig`` (and llama.cpp builds its graph from)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    # RoPE rotates the whole head, so its dimension count is the head size; transformers reads it as head_dim.
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // config.num_attention_heads:
        # llama.cpp assumes hidden_size / heads unless told otherwise.
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _permute_for_llama_cpp(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from transformers' RoPE layout to llama.cpp's.

    transformers rotates each head's first half against its second half (``rotate_half``); llama.cpp, like Meta's
    original checkpoints, rotates adjacent pairs (0, 1), (2, 3), ... So within each head, rows ``i`` and
    ``i + head_dim / 2`` become rows ``2i`` and ``2i + 1``. transformers' GGUF loader applies the inverse
    (``LlamaTensorProcessor``), which is why a GGUF without it loads with scrambled attention.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _gguf_tensors(model_dir: pathlib.Path, config: PretrainedConfig) -> list[tuple[str, np.ndarray]]:
    """Every weight of the checkpoint as ``(llama.cpp name, float32 array)``, q/k permuted."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    weights: dict[str, np.ndarray] = {}
    for file in files:
        weights.update(load_file(file))
    if config.tie_word_embeddings:
        # llama.cpp marks tied embeddings by leaving out output.weight; transformers reads that back as tied.
        weights.pop("lm_head.weight", None)

    tensors = []
    for hf_name, array in weights.items():
        gguf_name = _GLOBAL_TENSORS.get(hf_name)
        if gguf_name is None:
            prefix, layer, leaf = _split_layer_name(hf_name)
            if prefix != "model.layers" or leaf not in _LAYER_TENSORS:
                raise ValueError(f"no llama.cpp name for tensor {hf_name!r}")
            gguf_name = f"blk.{layer}.{_LAYER_TENSORS[leaf]}"
        array = np.ascontiguousarray(array, dtype=np.float32)
        if gguf_name.endswith("attn_q.weight"):
            array = _permute_for_llama_cpp(array, config.num_attention_heads)
        elif gguf_name.endswith("attn_k.weight"):
            array = _permute_for_llama_cpp(array, config.num_key_value_heads)
        tensors.append((gguf_name, np.ascontiguousarray(array)))
    return tensors


def _split_layer_name(name: str) -> tuple[str, str, str]:
    """``"model.layers.3.mlp.up_proj.weight"`` -> ``("model.layers", "3", "mlp.up_proj.weight")``."""
    parts = name.split(".")
    return ".".join(parts[:2]), parts[2] if len(parts) > 2 else "", ".".join(parts[3:])


def _add_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerBase, vocab_size: int, token_type: Any) -> None:
    """The ``tokenizer.ggml.*`` keys: the vocabulary in id order, its merges, and the special token ids."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model["type"] != "BPE":
        raise NotImplementedError(f"only BPE tokenizers are supported, not {model['type']}")
    pre_tokenizers = list(_nodes(backend.get("pre_tokenizer")))
    byte_level = any(node.get("type") == "ByteLevel" for node in pre_tokenizers)
    if not byte_level and not model.get("byte_fallback"):
        raise NotImplementedError("a BPE tokenizer must be byte-level or SentencePiece-style with byte fallback")
    splits = [node["pattern"].get("Regex") for node in pre_tokenizers if node.get("type") == "Split"]
    if byte_level and splits != [_LLAMA3_SPLIT]:
        raise NotImplementedError("byte-level tokenizers are only supported with LLaMA-3's split regex")

    tokens = [None] * len(tokenizer)
    for token, index in tokenizer.get_vocab().items():
        tokens[index] = token
    if any(token is None for token in tokens):
        raise ValueError("the tokenizer's ids are not contiguous")
    specials = {added["content"] for added in backend["added_tokens"] if added["special"]}
    unk = tokenizer.unk_token
    types = []
    for token in tokens:
        if token == unk:
            types.append(token_type.UNKNOWN)
        elif token in specials:
            types.append(token_type.CONTROL)  # matched whole and never produced from text by merges
        elif not byte_level and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(token_type.BYTE)  # the byte-fallback tokens <0x00>..<0xFF>
        else:
            types.append(token_type.NORMAL)
    # An embedding matrix larger than the vocabulary gets placeholder tokens, as llama.cpp's converter writes them.
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(token_type.UNUSED)

    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    if any(merge.count(" ") != 1 for merge in merges):
        raise ValueError("a merge holds a literal space, which the GGUF 'left right' merge format cannot express")

    if byte_level:
        # llama.cpp's BPE tokenizer; "llama-bpe" names the LLaMA-3 split regex, which both llama.cpp and
        # transformers rebuild from this name since the file has no room for the regex itself.
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        # SentencePiece ranks merges by the score of the merged piece: learned pieces follow BPE order, so -id
        # ranks earlier merges first; specials and bytes are never merge results and score 0.
        writer.add_token_scores([-float(i) if t == token_type.NORMAL else 0.0 for i, t in enumerate(types)])
        writer.add_add_space_prefix(_prepends_space(backend))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # llama.cpp's SentencePiece tokenizer needs only the scores, but transformers rebuilds a BPE: given the trained
    # merges it is exact by construction, while merges it derives from the scores need not match them.
    writer.add_token_merges(merges)

    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and with_specials[:1] == [tokenizer.bos_token_id])
    writer.add_add_eos_token(len(with_specials) > len(plain) and with_specials[-1:] == [tokenizer.eos_token_id])
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a ``tokenizer.json`` component, nested ``Sequence`` members included."""
    if isinstance(tree, dict):
        yield tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)


def _prepends_space(backend: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer adds a dummy "▁" before the text (LLaMA does, Gemma does not)."""
    pre = backend.get("pre_tokenizer") or {}
    return pre.get("type") == "Metaspace" and pre.get("prepend_scheme", "always") != "never"


# transformers name -> llama.cpp name, for LFM2 (a hybrid of short convolutions and attention).
_LFM2_RENAMES = (
    ("model.embed_tokens.", "token_embd."),
    ("model.embedding_norm.", "token_embd_norm."),
    ("model.layers.", "blk."),
    (".operator_norm.", ".attn_norm."),
    (".self_attn.q_proj.", ".attn_q."),
    (".self_attn.k_proj.", ".attn_k."),
    (".self_attn.v_proj.", ".attn_v."),
    (".self_attn.out_proj.", ".attn_output."),
    (".self_attn.q_layernorm.", ".attn_q_norm."),
    (".self_attn.k_layernorm.", ".attn_k_norm."),
    (".feed_forward.w1.", ".ffn_gate."),
    (".feed_forward.w3.", ".ffn_up."),
    (".feed_forward.w2.", ".ffn_down."),
    (".conv.in_proj.", ".shortconv.in_proj."),
    (".conv.out_proj.", ".shortconv.out_proj."),
    (".conv.conv.", ".shortconv.conv."),
)


def write_lfm2_gguf(model_dir: str | os.PathLike, path: str | os.PathLike) -> pathlib.Path:
    """Convert a tiny LFM2 checkpoint (tied embeddings, a byte-level BPE tokenizer) into an F32 GGUF file at `path`.

    LFM2 is one of the architectures transformers 5.24 loads through its newer GGUF quantizer, which keeps weights in
    GGUF blocks unless asked to dequantize; llama goes through the older loader.
    """
    import gguf

    model_dir, out = pathlib.Path(model_dir), pathlib.Path(path)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if config.model_type != "lfm2" or not config.tie_word_embeddings:
        raise ValueError(f"write_lfm2_gguf writes tied-embedding LFM2 checkpoints, not {config.model_type!r}.")
    attention_heads = [config.num_key_value_heads if kind == "full_attention" else 0 for kind in config.layer_types]
    writer = gguf.GGUFWriter(out, arch="lfm2")
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(attention_heads)  # 0 marks a convolution layer
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_uint32("lfm2.shortconv.l_cache", config.conv_L_cache)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer, config.vocab_size, gguf.TokenType)
    for name, tensor in load_file(model_dir / "model.safetensors").items():
        if name == "lm_head.weight":
            continue  # tied: llama.cpp reuses token_embd
        for before, after in _LFM2_RENAMES:
            name = name.replace(before, after)
        if name.endswith("shortconv.conv.weight"):
            tensor = tensor.squeeze(1)  # llama.cpp stores the depthwise kernel without its singleton axis
        writer.add_tensor(name, np.ascontiguousarray(tensor, dtype=np.float32))
    return _write_out(writer, out)
