"""Training recipes: the schema of a recipe YAML (model, data, stages), its checks, and the resolved plan.

A `Recipe` names the backbones, the data and the stages. Stage `pretrain` trains the projector alone on captions;
stage `finetune` trains the projector and the LLM (full, LoRA or QLoRA) on instructions. Every field is documented
in its `metadata["help"]`; unknown fields, bad values and numbers written as text fail here, naming the field.
Backbone names `tiny:<family>` / `tiny:<kind>` and a missing data path mean the offline tiny default.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("pretrain", "finetune")


LANGUAGE_TUNING = ("full", "lora", "qlora", "frozen")


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


@dataclass
class Recipe:
    name: str = "default"
    output_dir: str = "outputs/default"
    seed: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    vision_feature_cache: str | None = field(
        default="auto",
        metadata={
            "help": "Where frozen-encoder features are cached (auto: <output_dir>/feature_cache; a shared folder "
            "serves several runs, e.g. a study's backbones); none: run the encoder on every batch."
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
                _build(StageConfig, stage, f"{source}: stages[{index}]")
                for index, stage in enumerate(values.pop("stages", []) or [])
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
        if self.data.on_bad_record not in ("error", "skip"):
            raise ValueError(f"{source}: data.on_bad_record={self.data.on_bad_record!r}; use 'error' or 'skip'.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_override(self, assignment: str) -> Recipe:
        """A copy with one field set from `KEY=VALUE` (dotted path, list index allowed; the value is YAML)."""
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r}: write KEY=VALUE, e.g. stages.1.learning_rate=1e-4.")
        key, value = assignment.split("=", 1)
        values = self.to_dict()
        target, parts = values, key.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target.get(part)
            if target is None:
                raise ValueError(f"--set {assignment!r}: {key!r} is not a field of the recipe.")
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = yaml.safe_load(value)
        elif last not in target:
            raise ValueError(f"--set {assignment!r}: {key!r} is not a field of the recipe.")
        else:
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


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}.")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], f"{where}: {name}") for name, value in values.items()}
    return cls(**values)


def _coerce(value, hint, where: str):
    """YAML reads `2e-5` as a string (YAML 1.1 wants `2.0e-5`): numbers-as-text become the field's number type."""
    if isinstance(value, str) and float in typing.get_args(hint) + (hint,):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}={value!r} is not a number.") from None
    return value


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
            f"bf16 {stage.bf16}"
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
    "STAGES",
    "DataConfig",
    "ModelConfig",
    "Recipe",
    "StageConfig",
    "accumulation_steps",
    "default_recipe",
    "describe_plan",
]
