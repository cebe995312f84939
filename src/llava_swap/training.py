"""LLaVA's two-stage recipe on TRL's SFTTrainer: a recipe (YAML) -> stages -> a trained model and its summary.

A `Recipe` names the backbones, the data and the stages. Stage `pretrain` trains the projector alone on captions;
stage `finetune` trains the projector and the LLM (full, LoRA or QLoRA, target modules limited to the LLM) on
instructions; the vision tower stays frozen unless a stage says otherwise. Freezing is explicit in the recipe and
printed at the start of each stage. Every stage saves full trainer state (resumable) and its final weights; the run
writes the final model, TensorBoard logs and `train_summary.json` into the output directory.

Backbone names `tiny:<family>` / `tiny:<kind>` and a missing data path mean the offline tiny default, so the recipe
with no arguments trains on a CPU in minutes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune")
STAGE_DONE = "stage_summary.json"
LANGUAGE_TUNING = ("full", "lora", "qlora", "frozen")
# LoRA adapters go on the LLM's linear layers only: a bare name list would also hit CLIP's q_proj/k_proj/v_proj.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


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
        root = _image_root(data, split)
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


# --------------------------------------------------------------------------------------------------------------------
# Running a recipe


def run_recipe(recipe: Recipe, resume_from_checkpoint: str | bool | None = None) -> dict[str, Any]:
    """Trains every stage of `recipe` and returns the summary written to `train_summary.json`."""
    from accelerate import PartialState

    state = PartialState(cpu=no_accelerator())
    out = Path(recipe.output_dir)
    start = time.perf_counter()
    with state.main_process_first():  # the main process writes backbones and data; the others then read them
        language_source, vision_source = _resolve_backbones(recipe, out)
        splits = _resolve_data(recipe, out)
    loaded = {name: load_split(path, _image_root(recipe.data, name), recipe.data) for name, path in splits.items()}
    if recipe.data.task and "eval" in loaded:  # held-out items must carry what the task scores against
        from .tasks import get_task

        loaded["eval"] = get_task(recipe.data.task).keep_own(loaded["eval"], recipe.data.on_bad_record)
    model, processor = _initial_model(recipe, language_source, vision_source)
    rows = {name: [record.to_row() for record in data.records] for name, data in loaded.items()}
    skipped = {name: data.skipped for name, data in loaded.items()}
    for stage in recipe.stages:
        rows[stage.data], dropped = _check_lengths(rows[stage.data], processor, stage, recipe.data.on_bad_record)
        skipped[stage.data] = skipped[stage.data] + dropped
    if state.is_main_process:
        _write_skipped(out, skipped)
    eval_rows = rows.get("eval", [])[: recipe.data.eval_samples]

    summary: dict[str, Any] = {"recipe": recipe.to_dict(), "stages": {}, "skipped_records": _count(skipped)}
    if not _quantized(model):
        model.to(state.device)  # evaluate where training will run (the Trainer would move it there anyway)
    summary["eval_before"] = _evaluate(
        model, processor, eval_rows, recipe, state, "before training", out / "eval_before"
    )
    for stage in recipe.stages:
        done = out / stage.name / "final" / STAGE_DONE
        if resume_from_checkpoint and done.exists():  # finished before the interruption: take its weights
            from .modeling_llava_swap import LlavaSwapForCausalLM

            model = LlavaSwapForCausalLM.from_pretrained(done.parent)
            summary["stages"][stage.name] = json.loads(done.read_text())
            _say(f"[{stage.name}] already complete: loaded {done.parent}")
            continue
        model, stage_summary, trainer = _run_stage(
            model, processor, stage, rows[stage.data], recipe, out, resume_from_checkpoint, eval_rows
        )
        summary["stages"][stage.name] = stage_summary
    final_model = model
    if _sharded(state):  # FSDP / ZeRO-3: no rank holds whole weights; evaluate what was saved instead
        from .modeling_llava_swap import LlavaSwapForCausalLM

        final_dir = out / recipe.stages[-1].name / "final"
        final_model = (
            LlavaSwapForCausalLM.from_pretrained(final_dir).to(state.device) if state.is_main_process else None
        )
    summary["eval"] = _evaluate(final_model, processor, eval_rows, recipe, state, "after training", out / "eval")

    runtime = time.perf_counter() - start
    stage_summaries = list(summary["stages"].values())
    train_time = sum(s["train_runtime"] for s in stage_summaries)
    # Samples per second of what ran in this process's lifetime (a resumed run counts its own part only).
    samples_here = sum(s["train_samples_per_second"] * s["train_runtime"] for s in stage_summaries)
    summary.update(
        train_runtime=train_time,
        total_runtime=runtime,
        samples_per_second=samples_here / train_time if train_time else 0.0,
        final_loss=stage_summaries[-1]["final_loss"],
        trainable_parameters={name: s["trainable_parameters"] for name, s in summary["stages"].items()},
        output_dir=str(out),
    )
    if state.is_main_process:
        # The last stage's final weights, written by every rank together (gathered under FSDP / ZeRO-3).
        final_dir = out / recipe.stages[-1].name / "final"
        for item in final_dir.iterdir():
            if item.is_file() and item.name != STAGE_DONE:
                shutil.copy2(item, out / item.name)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    state.wait_for_everyone()
    return summary


def _load_checkpoint_weights(model, checkpoint: str) -> None:
    """A Trainer checkpoint's weights into the model being trained: adapters into a PEFT model, else everything."""
    from .modeling_llava_swap import LlavaSwapForCausalLM

    folder = Path(checkpoint)
    if (folder / "adapter_model.safetensors").exists():  # LoRA / QLoRA: adapters and the projector
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    if not (folder / "config.json").exists():
        raise ValueError(
            f"{folder} holds no full model to read (an FSDP or DeepSpeed shard checkpoint?): resume it with "
            "--resume_from_checkpoint under the same launcher configuration it was written with."
        )
    saved = LlavaSwapForCausalLM.from_pretrained(folder, dtype=model.dtype)
    model.load_state_dict(saved.state_dict(), strict=True)


def _sharded(state) -> bool:
    """Whether parameters are partitioned across processes (FSDP, DeepSpeed ZeRO-3)."""
    from accelerate.utils import DistributedType

    if state.distributed_type == DistributedType.FSDP:
        return True
    if state.distributed_type == DistributedType.DEEPSPEED:
        plugin = getattr(state, "deepspeed_plugin", None)
        return plugin is not None and plugin.zero_stage == 3
    return False


def _quantized(model) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model.language_model, "is_quantized", False))


def no_accelerator() -> bool:
    """True on a machine without GPU: accelerate then runs several processes as MULTI_CPU (gloo) data parallel;
    without `cpu=True` each process of `accelerate launch --multi_gpu` would silently train alone on all the data."""
    return not torch.accelerator.is_available()


def _resolve_backbones(recipe: Recipe, out: Path) -> tuple[str, str]:
    from . import tiny

    model = recipe.model
    if model.init_from:
        return model.language_model, model.vision_model
    language, vision = model.language_model, model.vision_model
    if language.startswith("tiny:"):
        language = str(tiny.save_language_model(language.split(":", 1)[1], out / "backbones" / language[5:]))
    if vision.startswith("tiny:"):
        vision = str(tiny.save_vision_model(vision.split(":", 1)[1], out / "backbones" / vision[5:]))
    return language, vision


def _resolve_data(recipe: Recipe, out: Path) -> dict[str, str | Path]:
    data = recipe.data
    needed = {stage.data for stage in recipe.stages}
    given = {"train": data.train, "pretrain": data.pretrain, "eval": data.eval}
    if all(given[name] for name in needed):
        return {name: path for name, path in given.items() if path}
    if any(given.values()):
        missing = sorted(name for name in needed if not given[name])
        raise ValueError(f"The recipe names some data files but not {missing}: give every split its stages use.")
    from .tasks import get_task

    if data.task is None:
        raise ValueError("Synthetic data needs a task: set data.task (e.g. shapes, vqa_scene) or give data files.")
    else:
        paths = get_task(data.task).generate(
            out / "data",
            n_train=data.synthetic_train,
            n_val=max(data.synthetic_test // 2, 1),
            n_test=data.synthetic_test,
            seed=recipe.seed,
            image_size=data.synthetic_image_size,
        )
    return {"train": paths["train"], "pretrain": paths["pretrain"], "eval": paths["test"]}


def load_split(path: str | os.PathLike, image_root: str | None, data: DataConfig):
    """One split as validated records: LLaVA JSON, a saved `datasets` folder, or `hf:<id>[:<split>]`."""
    from .data import load_hf_dataset, load_llava_json

    text = str(path)
    if text.startswith("hf:"):
        from datasets import load_dataset

        name, _, split = text[3:].partition(":")
        dataset = load_dataset(name, split=split or "train")
        return load_hf_dataset(dataset, on_bad_record=data.on_bad_record, name=text)
    if Path(text).is_dir():
        from datasets import load_from_disk

        return load_hf_dataset(load_from_disk(text), on_bad_record=data.on_bad_record, name=text)
    return load_llava_json(text, image_root, on_bad_record=data.on_bad_record)


def _image_root(data: DataConfig, split: str) -> str | None:
    return data.image_root.get(split) if isinstance(data.image_root, dict) else data.image_root


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


def _initial_model(recipe: Recipe, language_source: str, vision_source: str):
    from .backbones import build_vlm
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .processing_llava_swap import LlavaSwapProcessor

    model_config = recipe.model
    quantization = _qlora_config(recipe)
    if model_config.init_from:
        extra = {} if quantization is None else {"quantization_config": quantization}
        model = LlavaSwapForCausalLM.from_pretrained(model_config.init_from, **extra)
        return model, LlavaSwapProcessor.from_pretrained(model_config.init_from)
    return build_vlm(
        language_source,
        vision_source,
        projector=model_config.projector,
        vision_feature_layer=model_config.vision_feature_layer,
        template=model_config.template,
        torch_dtype=model_config.torch_dtype,
        family=model_config.family,
        seed=recipe.seed,
        quantization_config=quantization,
    )


def _qlora_config(recipe: Recipe):
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


def _check_lengths(rows, processor, stage: StageConfig, on_bad_record: str):
    from .collator import check_rows
    from .data import SkippedRecord

    failures = check_rows(rows, processor, stage.max_length)
    if failures and on_bad_record == "error":
        raise failures[0][1]
    failed = {id(row) for row, _ in failures}
    dropped = [SkippedRecord(row["id"], row.get("source", ""), str(error)) for row, error in failures]
    return [row for row in rows if id(row) not in failed], dropped


def _say(message: str) -> None:
    """Reports progress once per run, not once per process."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        logger.info(message)


def _write_skipped(out: Path, skipped: dict[str, list]) -> None:
    everything = [dataclasses.asdict(item) | {"split": split} for split, items in skipped.items() for item in items]
    if everything:
        out.mkdir(parents=True, exist_ok=True)
        (out / "skipped_records.json").write_text(json.dumps(everything, indent=2))
        _say(f"skipped {len(everything)} bad record(s): listed in {out / 'skipped_records.json'}")


def _count(skipped: dict[str, list]) -> dict[str, int]:
    return {split: len(items) for split, items in skipped.items()}


def _evaluate(model, processor, rows, recipe: Recipe, state, when: str, out: Path | None = None) -> dict[str, Any]:
    from .evaluation import evaluate_rows, write_results
    from .tasks import get_task

    if not rows:
        return {}
    metrics: dict[str, Any] = {}
    if state.is_main_process:  # generation on held-out items is cheap; one process does it
        task = get_task(recipe.data.task) if recipe.data.task else None
        result = evaluate_rows(model, processor, rows, task, batch_size=recipe.data.eval_batch_size)
        metrics = result.metrics
        if out is not None:
            write_results(result, out, extra={"task": recipe.data.task, "when": when})
        headline = metrics.get("accuracy", metrics["mean_score"])
        about = recipe.data.task or "exact match"
        logger.info(f"accuracy {when}: {headline:.1%} on {metrics['n']} held-out items ({about})")
    state.wait_for_everyone()
    return metrics


def _task_eval_callback(processor, rows, recipe: Recipe):
    """Evaluates a held-out subset every `data.eval_steps` steps and logs the task metrics and ECE (TensorBoard)."""
    from transformers import TrainerCallback

    from .evaluation import evaluate_rows
    from .tasks import get_task

    task = get_task(recipe.data.task) if recipe.data.task else None
    subset = rows[: recipe.data.eval_steps_samples]

    class TaskEvaluation(TrainerCallback):
        """Evaluates on rank 0 and adds the metrics to the Trainer's next log (never calls `trainer.log` itself:
        that would replace the step's loss log, and in DDP leave the ranks' collectives out of step)."""

        trainer = None  # set once the trainer exists
        pending: dict[str, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if not subset or state.global_step % recipe.data.eval_steps or not state.is_world_process_zero:
                return
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            result = evaluate_rows(model, processor, subset, task, recipe.data.eval_batch_size, progress=False)
            self.pending = {
                f"eval_{name}": value
                for name, value in {**result.metrics, **result.metrics.get("calibration", {})}.items()
                if isinstance(value, (int, float)) and value is not None
            }
            control.should_log = True  # report at this step, with the loss

        def on_log(self, args, state, control, logs=None, **kwargs):
            # Runs before the reporting callbacks (it is first in the list): TensorBoard sees the metrics, and the
            # entry the Trainer just appended to its history gets them too.
            if self.pending and logs is not None:
                logs.update(self.pending)
                if state.log_history and state.log_history[-1].get("step") == state.global_step:
                    state.log_history[-1].update(self.pending)
                self.pending = {}

    return TaskEvaluation()


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


def _prepare_stage_model(model, stage: StageConfig):
    """Freezes and unfreezes parts as the stage says (and wraps the LLM in LoRA when asked)."""
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    model.vision_tower.requires_grad_(stage.train_vision_tower)
    if stage.language_model == "full":
        model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    elif stage.language_model in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if stage.language_model == "qlora":  # the LLM was loaded in 4 bits (see _qlora_config)
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


def _feature_cache(model, processor, stage: StageConfig, rows, recipe: Recipe, out: Path):
    """The stage's vision feature cache, filled with every distinct image of its rows, or None if the encoder
    trains in this stage (its features change) or caching is off."""
    from accelerate import PartialState

    from .feature_cache import VisionFeatureCache

    setting = recipe.vision_feature_cache
    if stage.train_vision_tower or setting in (None, "none", "off") or _quantized(model):
        return None
    root = out / "feature_cache" if setting == "auto" else Path(setting)
    state = PartialState()
    with state.main_process_first():  # the main process encodes; the others then find every file on disk
        cache = VisionFeatureCache(root, model, processor)
        cache.precompute(model, [image for row in rows for image in (row.get("images") or [])])
    return cache


def _run_stage(model, processor, stage: StageConfig, rows, recipe: Recipe, out: Path, resume, eval_rows=()):
    from accelerate import PartialState
    from datasets import Dataset
    from trl import SFTConfig

    from .collator import LlavaSwapCollator
    from .trainer import LlavaSwapSFTTrainer

    stage_dir = out / stage.name
    cache = _feature_cache(model, processor, stage, rows, recipe, out)
    model = _prepare_stage_model(model, stage)
    counts = trainable_parameters(model)
    _say(
        f"[{stage.name}] stage={stage.stage} language_model={stage.language_model} "
        f"vision_tower={'trained' if stage.train_vision_tower else 'frozen'}; trainable parameters: "
        + ", ".join(f"{part} {count:,}" for part, count in counts.items())
    )
    args = SFTConfig(
        output_dir=str(stage_dir),
        seed=recipe.seed,
        data_seed=recipe.seed,
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps,
        per_device_train_batch_size=stage.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation_steps(stage, PartialState().num_processes),
        use_cpu=no_accelerator(),
        lr_scheduler_type=stage.lr_scheduler_type,
        warmup_steps=stage.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=stage.weight_decay,
        bf16=stage.bf16,
        **_checkpointing_kwargs(stage.gradient_checkpointing),
        max_length=stage.max_length,
        train_sampling_strategy="group_by_length" if stage.group_by_length else "random",
        length_column_name="length",  # token counts that check_rows computed, image tokens included
        logging_steps=stage.logging_steps,
        save_strategy="steps",
        save_steps=stage.save_steps,
        save_total_limit=stage.save_total_limit,
        report_to=recipe.report_to,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_num_workers=stage.dataloader_num_workers,
        disable_tqdm=False,
    )
    trainer = LlavaSwapSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=LlavaSwapCollator(
            processor, max_length=stage.max_length, feature_cache=cache, padding_free=stage.padding_free
        ),
        processing_class=processor,
        callbacks=[_completion_callback()],
    )
    if recipe.data.eval_steps and eval_rows and not _sharded(PartialState()):
        evaluation = _task_eval_callback(processor, list(eval_rows), recipe)
        evaluation.trainer = trainer
        trainer.callback_handler.callbacks.insert(0, evaluation)
    checkpoint = _resume_point(stage_dir, resume)
    epoch_before = _checkpoint_state(checkpoint).get("epoch", 0.0)
    if checkpoint and stage.max_steps > 0 and _checkpoint_state(checkpoint).get("global_step", 0) >= stage.max_steps:
        # The stage had finished and was killed while writing final/: take the weights, do not train another step.
        _load_checkpoint_weights(model, checkpoint)
        trainer.state = trainer.state.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        metrics, training_loss = {"train_runtime": 0.0}, None
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics, training_loss = result.metrics, result.training_loss
    if stage.language_model in ("lora", "qlora"):
        model = model.merge_and_unload()
    model.requires_grad_(False)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # Samples actually drawn: epochs (fractional) times the data, so a partial last batch is not over-counted.
    seen_here = round((trainer.state.epoch - epoch_before) * len(rows))
    runtime = metrics.get("train_runtime", 0.0)
    summary = {
        "stage": stage.stage,
        "language_model": stage.language_model,
        "train_runtime": runtime,
        "train_samples_seen": round(trainer.state.epoch * len(rows)),
        "train_samples_per_second": seen_here / runtime if runtime else 0.0,
        "final_loss": losses[-1] if losses else training_loss,
        "train_loss": training_loss,
        "global_step": trainer.state.global_step,
        "world_size": trainer.args.world_size,
        "trainable_parameters": counts,
        "resumed_from": checkpoint,
        "vision_feature_cache": None
        if cache is None
        else {"folder": str(cache.folder), "encoded": cache.encoded_images},
        "eval_history": [
            {key: value for key, value in entry.items() if key.startswith("eval_") or key in ("step", "loss")}
            for entry in trainer.state.log_history
            if any(key.startswith("eval_") for key in entry)
        ],
    }
    final = stage_dir / "final"
    if stage.language_model in ("lora", "qlora"):
        if trainer.is_world_process_zero():
            model.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # every rank takes part: gathers FSDP / ZeRO-3 shards before writing
    if trainer.is_world_process_zero():
        processor.save_pretrained(final)
        # Written last: a stage whose final folder lacks it was interrupted while saving and will run again.
        (final / STAGE_DONE).write_text(json.dumps(summary, indent=2, default=str))
    trainer.accelerator.wait_for_everyone()
    return model, summary, trainer


def _checkpoint_state(checkpoint: str | None) -> dict:
    path = Path(checkpoint) / "trainer_state.json" if checkpoint else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def _checkpointing_kwargs(enabled: bool) -> dict[str, bool]:
    """transformers 5.18+ renamed gradient_checkpointing to activation_checkpointing; pass whichever exists."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


CHECKPOINT_DONE = "checkpoint_complete.json"


def _completion_callback():
    """A TrainerCallback that marks a checkpoint complete once every process has written its part.

    transformers writes straight into `checkpoint-N`, so a process killed mid-save leaves a folder that looks like a
    checkpoint. The marker is written last, atomically, after a barrier; resuming only trusts marked checkpoints.
    """
    from transformers import TrainerCallback

    class CheckpointCompleted(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            if distributed:
                torch.distributed.barrier()
            if (torch.distributed.get_rank() if distributed else 0) == 0:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                temporary = folder / f".{CHECKPOINT_DONE}.tmp"
                temporary.write_text(json.dumps({"global_step": state.global_step}))
                os.replace(temporary, folder / CHECKPOINT_DONE)

    return CheckpointCompleted()


def complete_checkpoints(stage_dir: Path) -> list[Path]:
    """The stage's checkpoints that were completely written, oldest first."""
    if not stage_dir.exists():
        return []
    marked = [path for path in stage_dir.glob("checkpoint-*") if (path / CHECKPOINT_DONE).exists()]
    return sorted(marked, key=lambda path: int(path.name.split("-")[-1]))


def _resume_point(stage_dir: Path, resume) -> str | None:
    """`resume` True: the stage's newest complete checkpoint (if any); a path: that checkpoint."""
    if not resume:
        return None
    if isinstance(resume, str) and resume.lower() not in ("true", "1", "yes"):
        if Path(resume).resolve().parent != stage_dir.resolve():
            return None  # a checkpoint of another stage: this one starts from that stage's result
        if not (Path(resume) / CHECKPOINT_DONE).exists():
            raise ValueError(f"{resume} is not a completely written checkpoint (no {CHECKPOINT_DONE}); pass another.")
        return resume
    complete = complete_checkpoints(stage_dir)
    for partial in sorted(set(stage_dir.glob("checkpoint-*")) - set(complete)) if stage_dir.exists() else []:
        _say(f"ignoring {partial}: interrupted while saving (no {CHECKPOINT_DONE})")
    return str(complete[-1]) if complete else None


__all__ = [
    "LORA_TARGETS",
    "DataConfig",
    "ModelConfig",
    "Recipe",
    "StageConfig",
    "accumulation_steps",
    "default_recipe",
    "describe_plan",
    "run_recipe",
    "trainable_parameters",
]
