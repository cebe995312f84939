"""Shared fixtures: offline mode, tiny backbones written once per session, real LLaMA tokenizers from ../shared."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub, datasets or evaluate: no test may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from llava_swap import tiny  # noqa: E402

# The real tokenizers live beside the project (../shared/tokenizers); a user's clone has none.
SHARED_TOKENIZERS = (
    Path(os.environ.get("LLAVA_SWAP_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "tokenizers"
)
REAL_TOKENIZERS = ("llama2", "llama3", "llama3-instruct")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """`tiny_lm(family)` -> directory of a tiny LLM checkpoint of that family (written once per session)."""
    root = tmp_path_factory.mktemp("tiny_lm")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = tiny.save_language_model(family, root / family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory):
    """`tiny_vision(kind)` -> directory of a tiny vision encoder checkpoint (clip, siglip, dinov2)."""
    root = tmp_path_factory.mktemp("tiny_vision")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = tiny.save_vision_model(kind, root / kind)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def real_lm(tmp_path_factory):
    """`real_lm(name)` -> a checkpoint with a real LLaMA tokenizer and config and random weights; skips without it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    root = tmp_path_factory.mktemp("real_lm")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        source = SHARED_TOKENIZERS / name
        if not (source / "tokenizer.json").exists():
            pytest.skip(f"real tokenizer {name!r} not found at {source} (../shared is absent in a user's clone)")
        if name not in cache:
            target = root / name
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
            model.save_pretrained(target)
            AutoTokenizer.from_pretrained(source).save_pretrained(target)
            GenerationConfig.from_pretrained(source).save_pretrained(target)
            cache[name] = target
        return cache[name]

    return get


@pytest.fixture(scope="session")
def built(tiny_lm, tiny_vision):
    """`built(family, kind, **build_kwargs)` -> (model, processor), built once per argument set."""
    from llava_swap import build_vlm

    cache: dict[tuple, tuple] = {}

    def get(family: str = "llama3", kind: str = "clip", **kwargs):
        key = (family, kind, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = build_vlm(tiny_lm(family), tiny_vision(kind), **kwargs)
        return cache[key]

    return get
