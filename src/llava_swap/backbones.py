"""Compose a vision-language model from pretrained backbones, and swap one backbone of a built model.

`build_vlm` loads an LLM (any `AutoModelForCausalLM` checkpoint) and a vision encoder (CLIP, SigLIP or DINOv2) by Hub
id or local directory, prepares the tokenizer for the LLM's family (`<image>` token, pad token, chat template, stop
tokens: see `families.py`), and joins them with a fresh projector. `swap_language_model` and `swap_vision_model`
replace one part of a built model and keep the other bit-identical. All three go through `_compose`, so a swapped
model is built exactly like a fresh one.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.image_processing_auto import (
    AutoImageProcessor,  # the top-level name needs torchvision in 5.17
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from . import compat
from .configuration_llava_swap import VISION_KINDS, LlavaSwapConfig, VisionKind, vision_kind
from .families import IMAGE_TOKEN, detect_family, prepare_tokenizer, resolve_template, stop_tokens
from .modeling_llava_swap import LlavaSwapForCausalLM, use_hub_kernels
from .processing_llava_swap import LlavaSwapProcessor, processed_image_size
from .projector import LlavaSwapProjector


@dataclass
class LanguageParts:
    """A causal LM split the way the composed model holds it: body, head, tokenizer, and how to talk to it."""

    body: nn.Module
    head: nn.Module
    generation_config: GenerationConfig
    tokenizer: object
    family: str
    template_name: str
    template: str
    source: str | None


@dataclass
class VisionParts:
    model: nn.Module
    image_processor: object
    kind: VisionKind
    source: str | None


def build_vlm(
    language_model: str | os.PathLike,
    vision_model: str | os.PathLike,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    template: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    family: str | None = None,
    seed: int = 0,
    quantization_config=None,
    gguf_file: str | None = None,
) -> tuple[LlavaSwapForCausalLM, LlavaSwapProcessor]:
    """Builds a LLaVA-style model from a pretrained LLM and a pretrained vision encoder.

    Args:
        language_model: Hub id or local directory of any causal LM checkpoint (LLaMA-1/2/3, Gemma, ...).
        vision_model: Hub id or local directory of a CLIP, SigLIP or DINOv2 checkpoint.
        projector: `"mlp2x_gelu"` (LLaVA-1.5), `"linear"` (LLaVA-1) or `"mlp{N}x_gelu"`.
        vision_feature_layer: which vision hidden state feeds the projector (-2: the penultimate layer, as LLaVA).
        template: a shipped chat template's name or a Jinja string; default: the LLM family's template.
        torch_dtype: dtype to load the backbones in (e.g. `torch.bfloat16`); default: as saved.
        family: override the detected LLM family (`llama1`, `llama2`, `llama3`, `gemma`, `other`).
        seed: seeds the new projector and any new embedding rows, so a build is reproducible.
        quantization_config: loads the LLM quantized (e.g. `BitsAndBytesConfig(load_in_4bit=True)` for QLoRA).
        gguf_file: the LLM is this GGUF file in `language_model` (a directory or Hub repo of GGUF files, as llama.cpp
            users share them; needs `pip install "llava-swap[gguf]"`). transformers dequantizes it; the model is an
            ordinary one from then on: it trains, saves and serves like any other.

    Returns:
        `(model, processor)`: save both with `save_pretrained` into one directory.
    """
    # Check both sources before loading either: a typo in the second should not cost loading the first.
    _check_source(language_model, "language_model")
    _check_source(vision_model, "vision_model")
    language = load_language_model(
        language_model,
        family=family,
        template=template,
        torch_dtype=torch_dtype,
        seed=seed,
        quantization_config=quantization_config,
        gguf_file=gguf_file,
    )
    vision = load_vision_model(vision_model, torch_dtype=torch_dtype)
    return _compose(language, vision, projector, vision_feature_layer, seed)


def swap_language_model(
    model: LlavaSwapForCausalLM | str | os.PathLike,
    language_model: str | os.PathLike,
    processor: LlavaSwapProcessor | None = None,
    keep_projector: bool = False,
    template: str | None = None,
    family: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    seed: int = 0,
    gguf_file: str | None = None,
) -> tuple[LlavaSwapForCausalLM, LlavaSwapProcessor]:
    """Rebuilds `model` on another LLM: the vision tower is kept bit-identical; tokenizer, template and projector are
    rebuilt for the new LLM. The projector's weights are kept only with `keep_projector=True`, and only if its sizes
    match (otherwise an error says why).

    `model` is a built model (then pass its `processor`, whose image processor is reused) or a saved model directory.
    `gguf_file` as in `build_vlm`.
    """
    model, processor = _model_and_processor(model, processor)
    language = load_language_model(
        language_model, family=family, template=template, torch_dtype=torch_dtype, seed=seed, gguf_file=gguf_file
    )
    vision = VisionParts(
        model=copy.deepcopy(model.model.vision_tower),
        image_processor=copy.deepcopy(processor.image_processor),
        kind=vision_kind(model.config.vision_config.model_type),
        source=model.config.vision_model_name_or_path,
    )
    projector_state = _projector_state(model) if keep_projector else None
    return _compose(
        language, vision, model.config.projector_type, model.config.vision_feature_layer, seed, projector_state
    )


def swap_vision_model(
    model: LlavaSwapForCausalLM | str | os.PathLike,
    vision_model: str | os.PathLike,
    processor: LlavaSwapProcessor | None = None,
    keep_projector: bool = False,
    vision_feature_layer: int | None = None,
    torch_dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> tuple[LlavaSwapForCausalLM, LlavaSwapProcessor]:
    """Rebuilds `model` on another vision encoder: the LLM (body, head, tokenizer, template) is kept bit-identical."""
    model, processor = _model_and_processor(model, processor)
    config = model.config
    language = LanguageParts(
        body=copy.deepcopy(model.model.language_model),
        head=copy.deepcopy(model.lm_head),
        generation_config=copy.deepcopy(model.generation_config),
        tokenizer=copy.deepcopy(processor.tokenizer),
        family=config.llm_family or "other",
        template_name=config.chat_template_name or "custom",
        template=processor.chat_template,
        source=config.language_model_name_or_path,
    )
    if config.tie_word_embeddings:  # deep-copied separately, so tie the copies again
        language.head.weight = language.body.get_input_embeddings().weight
    vision = load_vision_model(vision_model, torch_dtype=torch_dtype)
    layer = config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
    projector_state = _projector_state(model) if keep_projector else None
    return _compose(language, vision, config.projector_type, layer, seed, projector_state)


# LM config fields that make the CausalLM head more than `lm_head(hidden)`: the LLaVA architecture (and the native
# llava format) applies the plain head, so such a model would silently change. Value that means "off" in brackets.
HEAD_MODIFIERS = {"final_logit_softcapping": None, "logits_scaling": 1.0, "logit_scale": 1.0}


def load_language_model(
    source: str | os.PathLike,
    family: str | None = None,
    template: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    seed: int = 0,
    quantization_config=None,
    gguf_file: str | None = None,
) -> LanguageParts:
    """Loads a causal LM and its tokenizer and prepares the tokenizer for its family (see `families.py`)."""
    source = _check_source(source, "language_model")
    gguf = {} if gguf_file is None else {"gguf_file": _check_gguf(source, gguf_file, quantization_config)}
    config = _load_config(source, "language_model", **gguf)
    if vision_kind(config.model_type) is not None:
        raise ValueError(
            f"language_model={source!r} is a {config.model_type} checkpoint, a vision encoder: pass it as vision_model."
        )
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"language_model={source!r} is a {config.model_type!r} checkpoint, which transformers cannot load as a "
            "causal language model (AutoModelForCausalLM): pass a decoder LLM such as LLaMA or Gemma."
        )
    for name, neutral in HEAD_MODIFIERS.items():
        value = getattr(config, name, neutral)
        if value not in (neutral, None):
            raise ValueError(
                f"language_model={source!r} transforms its logits ({name}={value}); the LLaVA architecture (and "
                "transformers' native llava format) applies a plain LM head and would silently change its outputs. "
                "Use an LLM without it (LLaMA, Gemma-1, Mistral, ...)."
            )
    tokenizer = AutoTokenizer.from_pretrained(source, **gguf)
    detected = detect_family(config, tokenizer, override=family)
    chat = resolve_template(template, detected, tokenizer)
    old_vocabulary = len(tokenizer)
    prepare_tokenizer(tokenizer, detected.name, chat.source, chat.end_of_turn)
    quantization = {} if quantization_config is None else {"quantization_config": quantization_config}
    if gguf:  # every weight unpacked on load (transformers 5.24+ would otherwise keep them in GGUF blocks)
        quantization = {"quantization_config": transformers.GgufConfig(dequantize=True)}
    lm = AutoModelForCausalLM.from_pretrained(source, **_load_kwargs(torch_dtype), **quantization, **gguf)
    if gguf:
        lm = _as_ordinary_model(lm)
    _add_embedding_rows(lm, old_vocabulary, len(tokenizer), seed)
    lm.config.pad_token_id = tokenizer.pad_token_id
    generation_config = copy.deepcopy(lm.generation_config)
    generation_config.eos_token_id = stop_tokens(chat.end_of_turn, tokenizer, lm.generation_config.eos_token_id)
    generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        generation_config.bos_token_id = tokenizer.bos_token_id
    return LanguageParts(
        body=getattr(lm, lm.base_model_prefix),
        head=lm.get_output_embeddings(),
        generation_config=generation_config,
        tokenizer=tokenizer,
        family=detected.name,
        template_name=chat.name,
        template=chat.source,
        source=str(source),
    )


def _as_ordinary_model(lm: PreTrainedModel) -> PreTrainedModel:
    """A GGUF-loaded model (loaded dequantized: plain float tensors) made an ordinary one, in place: transformers
    keeps it marked as quantized, and then refuses to save it and the Trainer to train it."""
    compat.forget_quantization(lm)
    packed = [name for name, parameter in lm.named_parameters() if not parameter.is_floating_point()]
    if packed:
        raise RuntimeError(f"The GGUF model still holds packed weights after loading ({packed[:3]}): report this.")
    lm.config.architectures = [type(lm).__name__]
    return lm


# The oldest transformers whose GGUF tokenizers equal the checkpoint's own (ids, BOS, eos), found by bisection on the
# tiny LLaMA-2 and LLaMA-3 files the tests write; pyproject's `gguf` extra requires it too.
GGUF_MIN_TRANSFORMERS = "5.23"


def _check_gguf(source: str, gguf_file: str, quantization_config) -> str:
    """Refuses a GGUF request that cannot work, before anything loads."""
    if quantization_config is not None:
        raise ValueError(
            "gguf_file and quantization_config together: a GGUF file is dequantized on load; quantize the result "
            "for QLoRA by building from an ordinary checkpoint (save the GGUF-built model first)."
        )
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f'gguf_file={gguf_file!r} needs the gguf package: pip install "llava-swap[gguf]".')
    if Version(transformers.__version__).release < Version(GGUF_MIN_TRANSFORMERS).release:  # 5.23.0.dev0 counts
        raise ImportError(
            f"gguf_file={gguf_file!r}: transformers {transformers.__version__} reads GGUF tokenizers wrongly (no BOS; "
            f"before 5.18 also the wrong eos and splits), so the model would train on other tokens than it was "
            f'trained on. Upgrade: pip install "llava-swap[gguf]" (transformers>={GGUF_MIN_TRANSFORMERS}).'
        )
    if Path(source).is_dir() and not (Path(source) / gguf_file).is_file():
        present = sorted(path.name for path in Path(source).glob("*.gguf"))
        raise FileNotFoundError(
            f"gguf_file={gguf_file!r} is not in language_model={source!r} (GGUF files there: {present or 'none'})."
        )
    return gguf_file


def _add_embedding_rows(lm, old_vocabulary: int, new_vocabulary: int, seed: int) -> None:
    """Gives the token ids [old_vocabulary, new_vocabulary) embedding (and head) rows drawn from N(mean, cov) of the
    existing rows, as transformers' mean resizing does. Vocabularies padded beyond the tokenizer (Qwen, Phi-3) keep
    their size; their spare rows were never trained, so the new ids get fresh rows there too. A tokenizer longer
    than the embeddings (a GGUF tokenizer may add an `<|endoftext|>` the model never had) gets rows for all of its
    tokens beyond them."""
    old_vocabulary = min(old_vocabulary, lm.get_input_embeddings().num_embeddings)
    if new_vocabulary == old_vocabulary:
        return
    if new_vocabulary > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(new_vocabulary, mean_resizing=False)
    tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    matrices = [lm.get_input_embeddings().weight] + ([] if tied else [lm.get_output_embeddings().weight])
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for weight in matrices:
            existing = weight[:old_vocabulary].double()
            mean = existing.mean(0)
            centered = existing - mean
            covariance = centered.T @ centered / old_vocabulary
            try:  # a tiny covariance keeps the new rows near the mean while breaking symmetry between them
                sampler = torch.distributions.MultivariateNormal(mean, covariance_matrix=1e-5 * covariance)
                rows = sampler.sample((new_vocabulary - old_vocabulary,))
            except ValueError:  # covariance not positive definite (e.g. fewer rows than dimensions)
                rows = mean.expand(new_vocabulary - old_vocabulary, -1)
            weight[old_vocabulary:new_vocabulary] = rows.to(weight.dtype)


def load_vision_model(source: str | os.PathLike, torch_dtype: torch.dtype | str | None = None) -> VisionParts:
    """Loads a CLIP, SigLIP or DINOv2 vision encoder (a vision-only or a full CLIP/SigLIP checkpoint)."""
    source = _check_source(source, "vision_model")
    config = _load_config(source, "vision_model")
    kind = vision_kind(config.model_type)
    if kind is None:
        hint = (
            " It is a causal LM: pass it as language_model."
            if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            else ""
        )
        raise ValueError(
            f"vision_model={source!r} is a {config.model_type!r} checkpoint, not a supported vision encoder "
            f"(CLIP, SigLIP or DINOv2: model types {[t for k in VISION_KINDS.values() for t in k.model_types]}).{hint}"
        )
    # The vision-only class also reads a full CLIP/SigLIP checkpoint, keeping its vision half.
    model = getattr(transformers, kind.model_class).from_pretrained(source, **_load_kwargs(torch_dtype))
    image_processor = AutoImageProcessor.from_pretrained(source)
    return VisionParts(model=model, image_processor=image_processor, kind=kind, source=str(source))


def _compose(
    language: LanguageParts,
    vision: VisionParts,
    projector_type: str,
    vision_feature_layer: int,
    seed: int,
    projector_state: dict[str, torch.Tensor] | None = None,
) -> tuple[LlavaSwapForCausalLM, LlavaSwapProcessor]:
    tokenizer = language.tokenizer
    vision_config = vision.model.config
    try:
        height, width = processed_image_size(vision.image_processor)
    except ValueError as error:
        raise ValueError(f"vision_model={vision.source!r}: {error}") from error
    patch = vision_config.patch_size
    if vision.kind.fixed_resolution and (height, width) != (vision_config.image_size, vision_config.image_size):
        raise ValueError(
            f"vision_model={vision.source!r}: its image processor outputs {height}x{width} images but the encoder "
            f"was built for {vision_config.image_size}x{vision_config.image_size}; fix preprocessor_config.json."
        )
    prefix_tokens = vision.kind.prefix_tokens
    dropped = prefix_tokens if vision.kind.select_strategy == "default" else 0
    image_seq_length = (height // patch) * (width // patch) + prefix_tokens - dropped
    config = LlavaSwapConfig(
        vision_config=vision_config,
        text_config=language.body.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=image_seq_length,
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision.kind.select_strategy,
        llm_family=language.family,
        chat_template_name=language.template_name,
        language_model_name_or_path=language.source,
        vision_model_name_or_path=vision.source,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("meta"):  # the backbones exist already: build only the frame, then put them in
        model = LlavaSwapForCausalLM(config)
    # One dtype for the whole model (the LLM's: e.g. a bf16 LLaMA with an fp32 CLIP becomes bf16 throughout), so
    # the saved config's dtype describes every tensor and a reload or native export reproduces the same logits.
    dtype = language.head.weight.dtype
    model.model.vision_tower = vision.model.to(device=language.head.weight.device, dtype=dtype)
    model.model.language_model = language.body
    model.lm_head = language.head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = LlavaSwapProjector(config)
        compat.init_module(model, projector)  # transformers' init: the LM's normal(0, initializer_range)
    if projector_state is not None:
        _load_projector(projector, projector_state)
    model.model.multi_modal_projector = projector.to(device=language.head.weight.device, dtype=dtype)
    # One config object per part, shared by the parts, so attention settings and sizes never disagree.
    model.config.text_config = language.body.config
    model.config.vision_config = vision_config
    model.config.dtype = dtype
    model.generation_config = language.generation_config
    model.eval()

    processor = LlavaSwapProcessor(
        image_processor=vision.image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy=vision.kind.select_strategy,
        chat_template=language.template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=prefix_tokens,
        llm_family=language.family,
        chat_template_name=language.template_name,
    )
    return model, processor


def _projector_state(model: LlavaSwapForCausalLM) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.model.multi_modal_projector.state_dict().items()}


def _load_projector(projector: LlavaSwapProjector, state: dict[str, torch.Tensor]) -> None:
    own = projector.state_dict()
    mismatched = [
        f"{key}: kept {tuple(state[key].shape)} vs new {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    if set(own) != set(state) or mismatched:
        raise ValueError(
            "keep_projector=True, but the old projector does not fit the new backbones ("
            + ("; ".join(mismatched) or f"layers {sorted(state)} vs {sorted(own)}")
            + "). Use keep_projector=False to start from a fresh projector."
        )
    projector.load_state_dict(state)


def _model_and_processor(model, processor):
    if isinstance(model, (str, os.PathLike)):
        path = _check_source(model, "model")
        return LlavaSwapForCausalLM.from_pretrained(path), processor or LlavaSwapProcessor.from_pretrained(path)
    if processor is None:
        raise ValueError(
            "Pass the model's processor too (processor=...): the swap reuses its image processor/tokenizer."
        )
    return model, processor


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_source(source: str | os.PathLike, role: str) -> str:
    """A local directory, or something that can only be a Hub repo id; anything else is a missing path."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{role}={text!r} is a file; pass the checkpoint's directory or a Hub repo id.")
        return str(path)
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise FileNotFoundError(f"{role}={text!r} does not exist: pass an existing checkpoint directory or a Hub id.")
    return text


def _load_config(source: str, role: str, **kwargs) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())  # one line, whatever the library wrote
        where = (
            "a checkpoint directory with config.json"
            if Path(source).exists()
            else "a local directory, or a Hub id reachable from here (offline or without network: download it first)"
        )
        what = f"GGUF file {kwargs['gguf_file']!r}" if "gguf_file" in kwargs else "config.json"
        raise OSError(f"{role}={source!r}: no loadable {what} ({reason}). Pass {where}.") from error


def _load_kwargs(torch_dtype) -> dict:
    return {"use_kernels": use_hub_kernels()} | ({} if torch_dtype is None else {"dtype": torch_dtype})


__all__ = [
    "VISION_KINDS",
    "build_vlm",
    "load_language_model",
    "load_vision_model",
    "swap_language_model",
    "swap_vision_model",
]
