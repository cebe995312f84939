"""An LLM from a GGUF file: built, trained a step with llava-swap's trainer, saved as an ordinary checkpoint.

The GGUF files are written here, offline, from the tiny checkpoints (`gguf_files.write_gguf`), in the layout
llama.cpp produces; transformers reads them with the `gguf` package (`pip install "llava-swap[gguf]"`).
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer

from _helpers import two_turn_messages
from gguf_files import write_gguf, write_lfm2_gguf
from llava_swap import LlavaSwapForCausalLM, build_vlm
from llava_swap.backbones import GGUF_MIN_TRANSFORMERS

pytest.importorskip("gguf")
READS_GGUF_TOKENIZERS = Version(transformers.__version__) >= Version(GGUF_MIN_TRANSFORMERS)
needs_gguf_tokenizers = pytest.mark.skipif(
    not READS_GGUF_TOKENIZERS, reason=f"transformers < {GGUF_MIN_TRANSFORMERS} reads GGUF tokenizers wrongly"
)

TEXTS = ["The seismogram shows two small circles", "How many red squares? 12, or 3.5 in 2024.\n  Then: none!"]


@pytest.fixture(scope="module")
def gguf_lm(tiny_lm, tmp_path_factory):
    """`gguf_lm(family)` -> (directory holding only `model.gguf`, the tiny checkpoint it was written from)."""
    root = tmp_path_factory.mktemp("gguf")
    made = {}

    def get(family: str):
        if family not in made:
            # A directory of its own: beside a tokenizer.json, transformers would read that instead of the GGUF's.
            made[family] = write_gguf(tiny_lm(family), root / family / "model.gguf").parent, tiny_lm(family)
        return made[family]

    return get


@needs_gguf_tokenizers
@pytest.mark.parametrize("family", ["llama2", "llama3"])
def test_gguf_llm_builds_with_the_checkpoints_tokens_and_logits(gguf_lm, tiny_vision, family):
    directory, original = gguf_lm(family)
    model, processor = build_vlm(directory, tiny_vision("clip"), gguf_file="model.gguf")
    assert model.config.llm_family == family
    reference_tokenizer = AutoTokenizer.from_pretrained(original)
    reference = AutoModelForCausalLM.from_pretrained(original)
    vocabulary = reference.config.vocab_size
    for text in TEXTS:
        ids = reference_tokenizer(text, return_tensors="pt").input_ids
        assert processor.tokenizer(text).input_ids == ids[0].tolist()  # the GGUF's tokenizer is the checkpoint's
        with torch.no_grad():
            ours, theirs = model(input_ids=ids).logits[..., :vocabulary], reference(input_ids=ids).logits
        assert (ours - theirs).abs().max().item() <= 1e-5
    assert getattr(model.config.text_config, "quantization_config", None) is None
    # Every token has an embedding row, including any the GGUF tokenizer adds (LLaMA-3's <|endoftext|>).
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer)


@needs_gguf_tokenizers
def test_gguf_built_model_trains_and_saves_as_an_ordinary_checkpoint(gguf_lm, tiny_vision, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    from llava_swap.collator import LlavaSwapCollator
    from llava_swap.trainer import LlavaSwapSFTTrainer

    directory, _ = gguf_lm("llama3")
    model, processor = build_vlm(directory, tiny_vision("clip"), gguf_file="model.gguf")
    rows = [{"id": str(i), "images": [], "messages": two_turn_messages()} for i in range(2)]
    for row in rows:  # the image part stays a placeholder: image rows need `images`
        row["images"] = [row["messages"][0]["content"][0].pop("image")]
    args = SFTConfig(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    before = model.lm_head.weight.detach().clone()
    trainer = LlavaSwapSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=LlavaSwapCollator(processor),
        processing_class=processor,
    )
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.lm_head.weight)  # the step changed the LLM

    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "quantization_config" not in json.dumps(config)
    reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path / "saved")
    inputs = processor.apply_chat_template(two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


@needs_gguf_tokenizers
def test_gguf_of_an_architecture_on_transformers_newer_gguf_loader(tiny_lm, tiny_vision, tmp_path):
    """LFM2 loads through transformers' GGUF quantizer (5.24), which keeps weights packed unless told otherwise: the
    model is still an ordinary one, with the checkpoint's logits, and saves and reloads."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm("llama3"))
    config = Lfm2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention"],
        block_auto_adjust_ff_dim=False,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    reference = Lfm2ForCausalLM(config).eval()
    reference.save_pretrained(tmp_path / "lfm2")
    tokenizer.save_pretrained(tmp_path / "lfm2")
    directory = write_lfm2_gguf(tmp_path / "lfm2", tmp_path / "gguf" / "model.gguf").parent

    model, processor = build_vlm(directory, tiny_vision("clip"), gguf_file="model.gguf")
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits[..., : config.vocab_size], reference(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-5
    model.save_pretrained(tmp_path / "saved")
    with torch.no_grad():
        reloaded = LlavaSwapForCausalLM.from_pretrained(tmp_path / "saved")(input_ids=ids).logits
    assert torch.equal(reloaded, model(input_ids=ids).logits)


def test_gguf_mistakes_are_refused_before_loading(gguf_lm, tiny_vision):
    directory, _ = gguf_lm("llama2")
    if not READS_GGUF_TOKENIZERS:
        with pytest.raises(ImportError, match=rf"reads GGUF tokenizers wrongly.*transformers>={GGUF_MIN_TRANSFORMERS}"):
            build_vlm(directory, tiny_vision("clip"), gguf_file="model.gguf")
        return
    with pytest.raises(
        FileNotFoundError, match=r"gguf_file='modle.gguf' is not in .*GGUF files there: \['model.gguf'\]"
    ):
        build_vlm(directory, tiny_vision("clip"), gguf_file="modle.gguf")
    with pytest.raises(ValueError, match="gguf_file and quantization_config"):
        build_vlm(directory, tiny_vision("clip"), gguf_file="model.gguf", quantization_config=object())
