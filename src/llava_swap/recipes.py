"""Training recipes: the schema of a recipe YAML (model, data, stages), its checks, and the resolved plan.

A `Recipe` names the backbones, the data and the stages. Stage `pretrain` trains the projector alone on captions;
stage `finetune` trains the projector and the LLM (full, LoRA or QLoRA) on instructions. A stage's training
settings are TRL's `SFTConfig` (transformers' `TrainingArguments`): any of its fields may be written in a stage and is
handed to it, checked by it; only what a stage means to llava-swap (`STAGE_FIELDS`) is ours. Every field is checked
when the recipe is read, before anything loads: unknown names (with the closest match), types, values the library
refuses, stage indices. Backbone names `tiny:<family>` / `tiny:<kind>` and a missing data path mean the offline tiny
default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import os
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

STAGES = ("pretrain", "finetune")


LANGUAGE_TUNING = ("full", "lora", "qlora", "frozen")
# feature_cache.CACHE_DTYPES' names, plus auto; spelled out so that reading a recipe does not import torch
# (tests/test_performance.py checks the two agree).
CACHE_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    language_model: str = field(default="tiny:llama3", metadata={"help": "LLM: Hub id, local dir or tiny:<family>."})
    vision_model: str = field(
        default="tiny:clip", metadata={"help": "Vision encoder: Hub id, local dir or tiny:<kind>."}
    )
    projector: str = field(default="mlp2x_gelu", metadata={"help": "mlp2x_gelu (LLaVA-1.5) or linear."})
    vision_feature_layer: int = field(default=-2, metadata={"help": "Vision hidden state fed to the projector."})
    family: str | None = field(default=None, metadata={"help": "Override the detected LLM family."})
    template: str | None = field(default=None, metadata={"help": "Chat template name or Jinja string."})
    gguf_file: str | None = field(
        default=None, metadata={"help": "The LLM is this GGUF file in language_model (needs llava-swap[gguf])."}
    )
    torch_dtype: str | None = field(default=None, metadata={"help": "e.g. bfloat16; default: the LLM's dtype."})
    init_from: str | None = field(default=None, metadata={"help": "Start from a saved llava-swap model (stage 1)."})


@dataclass
class DataConfig:
    train: str | None = field(
        default=None,
        metadata={
            "help": "Finetuning data: a LLaVA JSON file, a dataset folder from Dataset.save_to_disk, or "
            "hf:<dataset id>[:<split>] (images + messages columns); None: synthetic."
        },
    )
    pretrain: str | None = field(default=None, metadata={"help": "LLaVA JSON of captions for stage 1."})
    eval: str | None = field(default=None, metadata={"help": "LLaVA JSON of held-out items."})
    image_root: str | dict[str, str] | None = field(
        default=None, metadata={"help": "Folder image paths are relative to; or one per split {pretrain, train, eval}."}
    )
    on_bad_record: str = field(default="error", metadata={"help": "error (stop, naming it) or skip (count, list)."})
    image_check: str = field(
        default="verify",
        metadata={"help": "How images are checked before training: verify (read whole) or header (fast; opens only)."},
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={
            "help": "Processes that tokenize and check the rows before training; None: one per CPU core (shared by "
            "a node's ranks, at most 16) from 20,000 rows, else 1."
        },
    )
    task: str | None = field(
        default="shapes",
        metadata={"help": "Task that scores the held-out items (and generates synthetic data); None: exact match."},
    )
    synthetic_train: int = field(default=1200, metadata={"help": "Synthetic training items when train is None."})
    synthetic_test: int = field(default=120, metadata={"help": "Synthetic held-out items."})
    synthetic_image_size: int = field(default=32, metadata={"help": "Side of the synthetic images, in pixels."})
    eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many items."})
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the generation-based evaluation."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Also evaluate every N training steps on a held-out subset (logged)."}
    )
    eval_steps_samples: int = field(default=32, metadata={"help": "Size of that subset."})

    def image_root_for(self, split: str) -> str | None:
        """The image folder of one split (`image_root` may be one folder or one per split)."""
        return self.image_root.get(split) if isinstance(self.image_root, dict) else self.image_root


@dataclass
class StageConfig:
    name: str = field(default="finetune", metadata={"help": "Folder name of the stage's outputs."})
    stage: str = field(default="finetune", metadata={"help": "pretrain (projector only) or finetune."})
    data: str = field(default="train", metadata={"help": "Which split trains this stage: pretrain or train."})
    language_model: str = field(default="full", metadata={"help": "full, lora, qlora or frozen."})
    train_vision_tower: bool = field(default=False, metadata={"help": "Unfreeze the vision encoder."})
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "If set, gradient accumulation = global / (per-device batch x processes), checked exact."},
    )
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: int | None = 2048
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch samples of similar length together, image and text-only samples apart (LLaVA's "
            "group_by_modality_length). It changes how tokens weigh in each batch's mean loss; padding_free saves "
            "the padding without that."
        },
    )
    padding_free: bool = field(
        default=True,
        metadata={"help": "With cached vision features: each batch as one unpadded sequence (same loss, no padding)."},
    )
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    dataloader_num_workers: int = 0
    training_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Any other SFTConfig / TrainingArguments field (optim, max_grad_norm, warmup_steps, "
            "eval_strategy, deepspeed, fsdp, run_name, ...); may also be written directly in the stage."
        },
    )

    def sft_config_kwargs(self) -> dict[str, Any]:
        """The stage's settings that are SFTConfig fields: the named ones above, then `training_args`."""
        named = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in STAGE_FIELDS}
        if "warmup_steps" not in self.training_args:  # transformers 5: a float in [0, 1) is a ratio of the steps
            named["warmup_steps"] = self.warmup_ratio
        return {**named, **self.training_args}


# What a stage means to llava-swap; every other field of a stage is an SFTConfig field (the named ones carry LLaVA's
# defaults, `training_args` holds the rest).
STAGE_FIELDS = (
    "name",
    "stage",
    "data",
    "language_model",
    "train_vision_tower",
    "global_batch_size",
    "group_by_length",
    "padding_free",
    "gradient_checkpointing",
    "warmup_ratio",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "training_args",
)
# SFTConfig fields llava-swap sets itself, and where a recipe sets them instead.
MANAGED_TRAINING_ARGS = {
    "output_dir": "the recipe's output_dir (each stage writes to <output_dir>/<stage name>)",
    "seed": "the recipe's seed",
    "data_seed": "the recipe's seed",
    "report_to": "the recipe's report_to",
    "use_cpu": "chosen from the machine",
    "train_sampling_strategy": "the stage's group_by_length",
    "length_column_name": "llava-swap's token counts",
    "remove_unused_columns": "llava-swap's collator",
    "dataset_kwargs": "llava-swap's collator",
    "activation_checkpointing": "the stage's gradient_checkpointing",
    "resume_from_checkpoint": "--resume_from_checkpoint on the command line",
}


@dataclass
class Recipe:
    name: str = "default"
    output_dir: str = "outputs/default"
    seed: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    vision_feature_cache: str | None = field(
        default="auto",
        metadata={
            "help": "Cache frozen-encoder features? auto: when the images pass through the frozen encoder more than "
            "once in all (at <output_dir>/feature_cache); on: always, there; a folder: always, there (shared by "
            "several runs, e.g. a study's); off: run the encoder on every batch."
        },
    )
    vision_feature_cache_dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype the cache stores: auto (the encoder's; bfloat16/float16 for a float32 encoder trained "
            "under bf16/fp16 mixed precision), float32, bfloat16 or float16."
        },
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe") -> Recipe:
        values = dict(values)
        nested = {
            "model": _build(ModelConfig, values.pop("model", {}) or {}, f"{source}: model"),
            "data": _build(DataConfig, values.pop("data", {}) or {}, f"{source}: data"),
            "stages": [
                _build_stage(stage, f"{source}: stages[{index}]")
                for index, stage in enumerate(_as_list(values.pop("stages", []), f"{source}: stages"))
            ],
        }
        recipe = _build(cls, {**values, **nested}, source)
        recipe.validate(source)
        return recipe

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Recipe:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Recipe {path} does not exist; the shipped ones are in recipes/configs/.")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {}, str(path))

    def validate(self, source: str = "recipe") -> None:
        if not self.stages:
            raise ValueError(f"{source}: no stages; list at least one under 'stages:' (pretrain and/or finetune).")
        for index, stage in enumerate(self.stages):
            where = f"{source}: stages[{index}] ({stage.name})"
            if stage.stage not in STAGES:
                raise ValueError(f"{where}: stage={stage.stage!r}; use one of {STAGES}.")
            if stage.language_model not in LANGUAGE_TUNING:
                raise ValueError(f"{where}: language_model={stage.language_model!r}; use one of {LANGUAGE_TUNING}.")
            if stage.stage == "pretrain" and stage.language_model != "frozen":
                raise ValueError(f"{where}: a pretrain stage trains the projector only; set language_model: frozen.")
            if stage.data not in ("pretrain", "train"):
                raise ValueError(f"{where}: data={stage.data!r}; use 'pretrain' or 'train'.")
            _check_with_sft_config(stage, where, self)
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: stage names {names} repeat; each stage needs a folder of its own.")
        if self.data.on_bad_record not in ("error", "skip"):
            raise ValueError(f"{source}: data.on_bad_record={self.data.on_bad_record!r}; use 'error' or 'skip'.")
        if self.vision_feature_cache_dtype not in CACHE_DTYPES:
            raise ValueError(
                f"{source}: vision_feature_cache_dtype={self.vision_feature_cache_dtype!r}; use one of {CACHE_DTYPES}."
            )
        if self.data.image_check not in ("verify", "header"):
            raise ValueError(f"{source}: data.image_check={self.data.image_check!r}; use 'verify' or 'header'.")
        processes = self.data.dataset_num_proc
        if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
            raise ValueError(
                f"{source}: data.dataset_num_proc={processes!r}; use a positive number of processes, or leave it "
                "unset to use the CPU's cores."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_override(self, assignment: str) -> Recipe:
        """A copy with one field set from `KEY=VALUE` (dotted path, stage by index; the value is YAML). A stage may
        be given any SFTConfig field this way, e.g. `stages.1.optim=adafactor`."""
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r}: write KEY=VALUE, e.g. stages.1.learning_rate=1e-4.")
        key, value = assignment.split("=", 1)
        values = self.to_dict()
        for stage in values["stages"]:  # flat, as written in a YAML file, so an override of either form lands
            stage.update(stage.pop("training_args"))
        target, parts = values, key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise ValueError(
                        f"--set {assignment!r}: {where!r}: the recipe has {len(target)} stage(s), numbered 0 to "
                        f"{len(target) - 1}."
                    )
                target = target[int(part)]
            elif isinstance(target, dict) and isinstance(target.get(part), (dict, list)):
                target = target[part]
            else:
                raise ValueError(
                    f"--set {assignment!r}: {where!r} is not a section of the recipe{_suggest(part, target)}."
                )
        last = parts[-1]
        if isinstance(target, list):
            raise ValueError(
                f"--set {assignment!r}: {key!r} is a stage; set one of its fields: {key}.learning_rate=..."
            )
        # A stage takes any SFTConfig field, checked (with a suggestion) when the recipe is rebuilt below.
        if last not in target and not any(target is stage for stage in values["stages"]):
            raise ValueError(f"--set {assignment!r}: {key!r} is not a field of the recipe{_suggest(last, target)}.")
        target[last] = yaml.safe_load(value)
        return Recipe.from_dict(values, f"recipe with --set {assignment}")


def default_recipe() -> Recipe:
    """The embedded default: tiny LLaMA-3-style LM + tiny CLIP, synthetic VQA, stage 1 then stage 2, minutes on CPU."""
    return Recipe.from_dict(
        {
            "name": "default",
            "stages": [
                {
                    "name": "stage1-pretrain",
                    "stage": "pretrain",
                    "data": "pretrain",
                    "language_model": "frozen",
                    "learning_rate": 3e-3,
                    "num_train_epochs": 1,
                    "per_device_train_batch_size": 16,
                    "max_length": 256,
                    "logging_steps": 5,
                },
                {
                    "name": "stage2-finetune",
                    "stage": "finetune",
                    "data": "train",
                    "language_model": "full",
                    "learning_rate": 2e-3,
                    "num_train_epochs": 3,
                    "per_device_train_batch_size": 16,
                    "max_length": 256,
                    "logging_steps": 10,
                },
            ],
        },
        "default recipe",
    )


def _build(cls, values: dict[str, Any], where: str, extra: typing.Collection[str] = ()):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    for name in sorted(set(values) - known):
        raise ValueError(f"{where}: unknown field {name!r}{_suggest(name, [*known, *extra])}.")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _conform(value, hints[name], f"{where}: {name}") for name, value in values.items()})


def _build_stage(values: dict[str, Any], where: str) -> StageConfig:
    """A stage from its mapping: our fields, and SFTConfig fields (written in the stage or under training_args)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}.")
    ours = {f.name for f in dataclasses.fields(StageConfig)}
    sft_hints = _sft_config_hints()
    given_args = values.get("training_args") or {}
    if not isinstance(given_args, dict):
        raise ValueError(f"{where}: training_args: expected a mapping, got {type(given_args).__name__}.")
    loose = {name: value for name, value in values.items() if name not in ours}
    training_args = {}
    for name, value in {**loose, **given_args}.items():
        if name in MANAGED_TRAINING_ARGS:
            raise ValueError(f"{where}: {name} is set by llava-swap from {MANAGED_TRAINING_ARGS[name]}.")
        if name not in sft_hints:
            raise ValueError(
                f"{where}: unknown field {name!r}{_suggest(name, [*ours, *sft_hints])}; a stage takes llava-swap's "
                "stage fields and any SFTConfig / TrainingArguments field."
            )
        training_args[name] = _conform(value, sft_hints[name], f"{where}: {name}")
    stage_values = {name: value for name, value in values.items() if name in ours and name != "training_args"}
    return _build(StageConfig, {**stage_values, "training_args": training_args}, where)


@cache
def _sft_config_hints() -> dict[str, Any]:
    """Field name -> type of TRL's SFTConfig, the fields a stage may set."""
    from trl import SFTConfig

    hints = typing.get_type_hints(SFTConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(SFTConfig) if f.init}


def sft_config(stage: StageConfig, recipe: Recipe, num_processes: int = 1, use_cpu: bool = True, check: bool = False):
    """The stage's `SFTConfig`: its SFTConfig fields, with what llava-swap manages (`MANAGED_TRAINING_ARGS`) set.

    `check=True` builds it only to have the library check the values, on any machine: the DeepSpeed file is not
    read and nothing is reported, and the ACCELERATE_* variables TrainingArguments sets for some options are undone.
    """
    from trl import SFTConfig

    kwargs = stage.sft_config_kwargs()
    if check:
        kwargs.pop("deepspeed", None)
    managed = {
        "output_dir": str(Path(recipe.output_dir) / stage.name),
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "report_to": [] if check else recipe.report_to,
        "use_cpu": use_cpu,
        "gradient_accumulation_steps": accumulation_steps(stage, num_processes),
        "train_sampling_strategy": "group_by_length" if stage.group_by_length else "random",
        "length_column_name": "length",  # token counts that check_rows computed, image tokens included
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        **checkpointing_kwargs(stage.gradient_checkpointing),
    }
    defaults = {"save_strategy": "steps", "disable_tqdm": False}
    saved = dict(os.environ) if check else None
    try:
        return SFTConfig(**{**defaults, **kwargs, **managed})
    finally:
        if saved is not None:
            os.environ.clear()
            os.environ.update(saved)


def checkpointing_kwargs(enabled: bool) -> dict[str, bool]:
    """transformers 5.18+ renamed gradient_checkpointing to activation_checkpointing; pass whichever exists."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def _check_with_sft_config(stage: StageConfig, where: str, recipe: Recipe) -> None:
    """Values the library refuses (an unknown optimizer or scheduler, clashing options) fail now, naming the stage."""
    try:
        sft_config(stage, recipe, check=True)
    except (ValueError, TypeError, ImportError) as error:
        raise ValueError(f"{where}: {' '.join(str(error).split())}") from None


def _as_list(values, where: str) -> list:
    if values is None:
        return []
    if not isinstance(values, list):
        raise ValueError(f"{where}: expected a list of stages, got {type(values).__name__}.")
    return values


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _conform(value, hint, where: str):
    """`value` checked against a field's type hint, so a wrong type fails when the recipe is read, not hours into a
    run. Numbers written as text (YAML reads `2e-5` as a string) become the field's number type."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (arg for arg in args if arg is not type(None)):
            with contextlib.suppress(ValueError):
                return _conform(value, option, where)
        raise ValueError(f"{where}={value!r}: expected {_describe(hint)}.")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}={value!r}: use one of {list(args)}.")
    expected = origin or hint
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(expected, type) and issubclass(expected, enum.Enum):
        allowed = [member.value for member in expected]
        if value in allowed or isinstance(value, expected):
            return value
        raise ValueError(f"{where}={value!r}: use one of {allowed}.")
    elif isinstance(expected, type):  # str, list, dict, ...
        if isinstance(value, expected):
            return value
    else:
        return value
    raise ValueError(f"{where}={value!r}: expected {_describe(hint)}.")


def _describe(hint) -> str:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args) + (
            " or null" if len(args) < len(typing.get_args(hint)) else ""
        )
    name = getattr(typing.get_origin(hint) or hint, "__name__", str(hint))
    return {"float": "a number", "int": "an integer", "bool": "true or false", "str": "text"}.get(name, name)


def describe_plan(recipe: Recipe, num_processes: int | None = None) -> str:
    """The resolved plan of a recipe, for `--dry-run`: nothing is loaded or downloaded."""
    if num_processes is None:
        from accelerate import PartialState

        num_processes = PartialState().num_processes
    model = recipe.model
    lines = [
        f"recipe {recipe.name!r} -> {recipe.output_dir} (seed {recipe.seed}, {num_processes} process(es))",
        f"  language model: {model.init_from or model.language_model} (family: {model.family or 'detected at build'})",
        f"  vision encoder: {model.vision_model}, feature layer {model.vision_feature_layer}, projector {model.projector}",
        f"  dtype: {model.torch_dtype or 'as saved'}; template: {model.template or 'the family default'}",
    ]
    data = recipe.data
    for split in ("pretrain", "train", "eval"):
        path = getattr(data, split)
        root = data.image_root_for(split)
        lines.append(
            f"  data {split}: {path or 'synthetic VQA-Scene (offline)'}" + (f" (images in {root})" if root else "")
        )
    for stage in recipe.stages:
        accumulation = accumulation_steps(stage, num_processes)
        global_batch = stage.per_device_train_batch_size * accumulation * num_processes
        trained = ["projector"] + (["vision tower"] if stage.train_vision_tower else [])
        if stage.language_model != "frozen":
            trained.append(f"language model ({stage.language_model})")
        lines.append(
            f"  stage {stage.name}: {stage.stage} on {stage.data}; trains {', '.join(trained)}; lr {stage.learning_rate}, "
            f"{stage.lr_scheduler_type}, warmup {stage.warmup_ratio}, weight decay {stage.weight_decay}, "
            f"epochs {stage.num_train_epochs}, global batch {global_batch} = {stage.per_device_train_batch_size} x "
            f"{accumulation} accumulation x {num_processes} process(es), max length {stage.max_length}, "
            f"bf16 {stage.bf16}" + "".join(f", {name} {value}" for name, value in stage.training_args.items())
        )
    return "\n".join(lines)


def accumulation_steps(stage: StageConfig, world_size: int) -> int:
    """Gradient accumulation that makes the stage's global batch (LLaVA-1.5: 256 in stage 1, 128 in stage 2)."""
    if stage.global_batch_size is None:
        return stage.gradient_accumulation_steps
    per_step = stage.per_device_train_batch_size * world_size
    if stage.global_batch_size % per_step:
        raise ValueError(
            f"stage {stage.name!r}: global_batch_size={stage.global_batch_size} is not a multiple of "
            f"per_device_train_batch_size={stage.per_device_train_batch_size} x {world_size} process(es)."
        )
    return stage.global_batch_size // per_step


__all__ = [
    "LANGUAGE_TUNING",
    "MANAGED_TRAINING_ARGS",
    "STAGES",
    "STAGE_FIELDS",
    "DataConfig",
    "ModelConfig",
    "Recipe",
    "StageConfig",
    "accumulation_steps",
    "checkpointing_kwargs",
    "default_recipe",
    "describe_plan",
    "sft_config",
]
