"""What a stage trains: freezing per part, LoRA / QLoRA on the LLM, trainable-parameter counts, the frozen encoder's
feature cache, and the Trainer's checkpointing flag.

LLaVA's stage 1 trains the projector alone; stage 2 the projector and the LLM (in full, or through LoRA adapters on
the LLM's linear layers only); the vision tower trains only when a stage says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .distributed import log_once
from .recipes import Recipe, StageConfig

logger = logging.getLogger(__name__)

# LoRA adapters go on the LLM's linear layers only: a bare name list would also hit CLIP's q_proj/k_proj/v_proj.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def trainable_parameters(model) -> dict[str, int]:
    """Trainable parameter counts per part: vision tower, projector, language model (LoRA adapters included)."""
    parts = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = (
            "vision_tower"
            if "vision_tower" in name
            else "projector"
            if "multi_modal_projector" in name
            else "language_model"
        )
        parts[part] += parameter.numel()
    return parts


def prepare_stage_model(model, stage: StageConfig):
    """Freezes and unfreezes parts as the stage says (and wraps the LLM in LoRA when asked)."""
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    model.vision_tower.requires_grad_(stage.train_vision_tower)
    if stage.language_model == "full":
        model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    elif stage.language_model in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if stage.language_model == "qlora":  # the LLM was loaded in 4 bits (see qlora_config)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=stage.gradient_checkpointing)
            model.requires_grad_(False)
        lora = LoraConfig(
            r=stage.lora_r,
            lora_alpha=stage.lora_alpha,
            lora_dropout=stage.lora_dropout,
            target_modules=LORA_TARGETS,
            # Trained in full beside the adapters, and saved with them so a resumed run gets it back.
            modules_to_save=["multi_modal_projector"] + (["vision_tower"] if stage.train_vision_tower else []),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def qlora_config(recipe: Recipe):
    """4-bit NF4 loading for the LLM when a stage asks for QLoRA (QLoRA, Dettmers et al. 2023); checked up front."""
    if not any(stage.language_model == "qlora" for stage in recipe.stages):
        return None
    import importlib.util

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            "A stage uses language_model: qlora, which loads the LLM in 4 bits with bitsandbytes on a CUDA GPU; "
            "this machine has no CUDA GPU or no bitsandbytes. Use language_model: lora here."
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # The vision tower and projector stay in full precision; only the LLM's linear layers are quantized.
        llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
    )


def quantized(model) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model.language_model, "is_quantized", False))


CACHE_OFF = (None, "none", "off")


def feature_cache_plan(recipe: Recipe, rows: dict[str, list], processes: int) -> tuple[bool, str]:
    """Whether the run caches frozen-encoder features, and why (said in the log).

    `vision_feature_cache: auto` (the default) caches when the stages with a frozen encoder will show it the images
    more than once in all (epochs, or max_steps x global batch / rows, summed over stages): a cache costs one pass
    and disk, and pays from the second. `on` or a folder (a study's, shared by its runs) caches; `off` never does.
    """
    setting = recipe.vision_feature_cache
    if setting in CACHE_OFF:
        return False, "vision feature cache: off (recipe)"
    if setting != "auto":
        return True, f"vision feature cache: on (recipe: {setting})"
    passes = 0.0
    for stage in recipe.stages:
        if stage.train_vision_tower or not rows.get(stage.data):
            continue
        if stage.max_steps > 0:
            batch = (
                stage.global_batch_size
                or stage.per_device_train_batch_size * stage.gradient_accumulation_steps * processes
            )
            passes += stage.max_steps * batch / len(rows[stage.data])
        else:
            passes += stage.num_train_epochs
    if passes > 1:
        return True, f"vision feature cache: on (auto: the frozen encoder would see the images {passes:.3g} times)"
    return False, f"vision feature cache: off (auto: {passes:.3g} pass over the images; a cache pays from the second)"


def stage_feature_cache(model, processor, stage: StageConfig, rows, recipe: Recipe, out: Path, enabled: bool = True):
    """The stage's vision feature cache, filled with every distinct image of its rows, or None if the encoder
    trains in this stage (its features change), caching is off for the run (`feature_cache_plan`), or, under `auto`,
    the disk cannot hold it (said in the log; `on` or a folder raise instead, before anything is encoded)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .feature_cache import VisionFeatureCache, cache_dtype

    if not enabled or stage.train_vision_tower or quantized(model):
        return None
    setting = recipe.vision_feature_cache
    root = out / "feature_cache" if setting in ("auto", "on") else Path(setting)
    state = PartialState()
    mixed = "bf16" if stage.bf16 else "fp16" if stage.training_args.get("fp16") else None
    dtype = cache_dtype(recipe.vision_feature_cache_dtype, next(model.vision_tower.parameters()).dtype, mixed)
    cache = VisionFeatureCache(root, model, processor, dtype=dtype)
    images = [image for row in rows for image in (row.get("images") or [])]
    share = (state.process_index, state.num_processes)
    full = _disk_shortfall(cache, model, images, share, state)
    if full is not None:
        if setting != "auto":
            raise full
        log_once(logger, f"[{stage.name}] vision feature cache: off (auto: the disk cannot hold it) -- {full}")
        return None
    # Every process encodes its share of the distinct images (N processes: N times faster), then all wait until
    # every shard is on disk.
    cache.precompute(model, images, shard=share, check_space=False)
    state.wait_for_everyone()
    # What the processes encoded together (each distinct image once in all), for the stage summary.
    cache.encoded_total = (
        sum(gather_object([cache.encoded_images])) if state.num_processes > 1 else cache.encoded_images
    )
    return cache


def _disk_shortfall(cache, model, images, share, state):
    """InsufficientDiskSpace if the processes' shares together do not fit their disks, else None; the same answer
    on every process. Each looks before any writes; needs are summed per disk (host and device), since the processes
    of a node usually write to one. A process that fails while looking stops them all, rather than leaving the
    others waiting for it."""
    import socket

    from accelerate.utils import gather_object

    from .feature_cache import InsufficientDiskSpace

    try:
        count, need, free = cache.space(model, images, share)
        failure = None
    except Exception as error:  # noqa: BLE001 (re-raised below, once every process has heard of it)
        count, need, free, failure = 0, 0, 0, error
    disk = (socket.gethostname(), os.stat(cache.folder).st_dev)
    reports = [(disk, count, need, free, repr(failure) if failure else None)]
    if state.num_processes > 1:
        reports = gather_object(reports)
    if failure is not None:
        raise failure
    failed = [report[4] for report in reports if report[4]]
    if failed:
        raise RuntimeError(f"Another process failed while preparing the vision feature cache: {failed[0]}")
    for disk in {report[0] for report in reports}:
        on_disk = [report for report in reports if report[0] == disk]
        need, free = sum(report[2] for report in on_disk), min(report[3] for report in on_disk)
        if need > free:
            what = f"{sum(report[1] for report in on_disk)} images ({len(on_disk)} process(es) on this disk)"
            return InsufficientDiskSpace.at(cache.folder, need, free, what)
    return None


def check_lengths(rows, processor, stage: StageConfig, on_bad_record: str, num_proc: int | None = None):
    """The rows that fit the stage (max_length, image tokens, a supervised answer), and those dropped, as skipped
    records; with on_bad_record="error" the first misfit raises instead. `num_proc`: see `collator.check_rows`."""
    from .collator import check_rows
    from .data.records import SkippedRecord

    tokenized, failures = check_rows(rows, processor, stage.max_length, num_proc)
    if failures and on_bad_record == "error":
        raise failures[0][1]
    failed = {id(row) for row, _ in failures}
    dropped = [SkippedRecord(row["id"], row.get("source", ""), str(error)) for row, error in failures]
    return [row for row in tokenized if id(row) not in failed], dropped


__all__ = [
    "LORA_TARGETS",
    "check_lengths",
    "prepare_stage_model",
    "qlora_config",
    "quantized",
    "feature_cache_plan",
    "stage_feature_cache",
    "trainable_parameters",
]
