"""The real vLLM (CPU build, its own environment: tests/harnesses/vllm/setup.sh) serves what `export_hf_llava` writes.

For CLIP and SigLIP towers and every shipped template (vicuna_v1, llama2_chat, llama3, gemma, chatml, and a
checkpoint's own ChatML): vLLM loads the export as it is, tokenizes the rendered prompt as transformers does (one BOS,
the image expanded), and its greedy tokens equal plain transformers' up to and including the family's end-of-turn
token, where both stop (vLLM reads generation_config.json). The tiny LLMs get head_dim 64, which vLLM's CPU attention takes (not the tiny 16).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

from _helpers import chat_image
from harnesses import harness_python
from llava_swap import build_vlm, export_hf_llava, tiny

pytestmark = pytest.mark.vllm

MAX_TOKENS = 12
# Runs in vLLM's environment; LLM(...) starts worker processes, hence the __main__ guard.
VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from PIL import Image
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        spec = json.load(open(sys.argv[1]))
        llm = LLM(model=spec["model"], dtype="float32", max_model_len=512, max_num_seqs=2, seed=0,
                  limit_mm_per_prompt={"image": 1}, enforce_eager=True)
        requests = [{"prompt": prompt, "multi_modal_data": {"image": Image.open(image).convert("RGB")}}
                    for prompt, image in zip(spec["prompts"], spec["images"])]
        outputs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=spec["max_tokens"]))
        json.dump([{"prompt_ids": list(o.prompt_token_ids), "ids": list(o.outputs[0].token_ids),
                    "finish_reason": o.outputs[0].finish_reason} for o in outputs], open(sys.argv[2], "w"))
    """
)


def _language_model(family: str, path, shared_tokenizers):
    """A tiny LLM of `family` with head_dim 64; chatml is SmolLM2-Instruct's real tokenizer on a tiny config."""
    if family != "chatml":
        return tiny.save_language_model(family, path, head_dim=64)
    source = shared_tokenizers / "smollm2-instruct"
    if not (source / "tokenizer.json").exists():
        reason = f"SmolLM2's tokenizer not found at {source} (../shared is absent in a user's clone)"
        if os.environ.get("LLAVA_SWAP_REQUIRE_HARNESSES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    config = AutoConfig.from_pretrained(source, head_dim=64)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def _ends_turn_early(model, processor, inputs, end_of_turn: int) -> None:
    """Makes the random model end its answer: the end-of-turn token's LM-head row becomes a slightly longer copy of
    the row of a token greedy decoding picks, so the end of turn wins there instead (retried where the head is tied
    to the embeddings, which the prompt reads too)."""
    head = model.get_output_embeddings().weight
    for step in range(2, 8):
        with torch.no_grad():
            tokens = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)[
                0, inputs["input_ids"].shape[1] :
            ]
            if end_of_turn in tokens.tolist():
                return
            head[end_of_turn] = head[tokens[step]] * 1.05
    raise AssertionError("could not make the tiny model end its turn")


# Every shipped template, and a checkpoint's own (SmolLM2-Instruct's ChatML); each tower three times.
CASES = [
    ("llama2", "clip", "vicuna_v1"),
    ("llama2", "siglip", "llama2_chat"),
    ("llama3", "siglip", "llama3"),
    ("gemma", "clip", "gemma"),
    ("chatml", "siglip", "chatml"),
    ("chatml", "clip", None),
]


@pytest.mark.parametrize(("family", "kind", "template"), CASES)
def test_vllm_serves_the_export_with_transformers_greedy_tokens(family, kind, template, tmp_path):
    from conftest import SHARED_TOKENIZERS

    python = harness_python("LLAVA_SWAP_VLLM_PYTHON", "vLLM")
    lm = _language_model(family, tmp_path / "lm", SHARED_TOKENIZERS)
    model, processor = build_vlm(lm, tiny.save_vision_model(kind, tmp_path / "vision"), template=template)
    assert processor.chat_template_name == (template or "checkpoint")
    end_of_turn = model.generation_config.eos_token_id[0]  # the template's end of turn comes first
    images = [chat_image(seed) for seed in (1, 2)]
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
        for image, question in zip(images, ("What colour is the shape?", "How many circles are there?"), strict=True)
    ]
    first = processor.apply_chat_template(
        conversations[0], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    _ends_turn_early(model, processor, first, end_of_turn)
    export = export_hf_llava(model, processor, tmp_path / "native")

    native = LlavaForConditionalGeneration.from_pretrained(export, dtype=torch.float32)
    native_processor = AutoProcessor.from_pretrained(export)
    expected = []
    for conversation in conversations:
        inputs = native_processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            tokens = native.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)[0].tolist()
        prompt_length = inputs["input_ids"].shape[1]
        answer = tokens[prompt_length:]
        stops = set(model.generation_config.eos_token_id)
        length = next((i + 1 for i, token in enumerate(answer) if token in stops), len(answer))
        expected.append({"prompt_ids": tokens[:prompt_length], "ids": answer[:length]})
    assert expected[0]["ids"][-1] == end_of_turn  # the premise: transformers ends the first answer at the end of turn

    for index, image in enumerate(images):
        image.save(tmp_path / f"image{index}.png")
    prompts = [
        native_processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
    ]
    spec = {"model": str(export), "prompts": prompts, "max_tokens": MAX_TOKENS}
    spec["images"] = [str(tmp_path / f"image{index}.png") for index in range(len(images))]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "serve.py").write_text(VLLM_SCRIPT)
    result = subprocess.run(
        [python, str(tmp_path / "serve.py"), str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    served = json.loads((tmp_path / "out.json").read_text())

    for ours, theirs in zip(expected, served, strict=True):
        assert theirs["prompt_ids"] == ours["prompt_ids"]  # one BOS, the image expanded as transformers does
        assert theirs["ids"] == ours["ids"]
    assert served[0]["finish_reason"] == "stop" and served[0]["ids"][-1] == end_of_turn
