"""LLaVA's two-stage recipe on TRL's SFTTrainer: a recipe -> its data and model -> each stage -> a trained model.

`run_recipe` is the whole run, in order: resolve the backbones and data (`data.sources`), build or load the model,
check every row against each stage, evaluate before training, run each stage (`stages` says what it trains,
`callbacks` mark checkpoints and evaluate during training, `checkpoints` says where to resume), evaluate after
training, and write the final model and `train_summary.json`. The schema of a recipe is in `recipes`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from .callbacks import CheckpointCompleted, StopOnInterrupt, TaskEvaluation, TrainingInterrupted
from .checkpoints import STAGE_DONE, checkpoint_state, complete_checkpoints, load_checkpoint_weights, resume_point
from .data.sources import count_skipped, load_split, resolve_data, write_skipped
from .distributed import log_once, no_accelerator, sharded
from .recipes import (
    DataConfig,
    ModelConfig,
    Recipe,
    StageConfig,
    accumulation_steps,
    default_recipe,
    describe_plan,
    sft_config,
)
from .records import StageSummary, TrainingSummary
from .run_folder import check_output_dir, start_output_dir
from .stages import (
    LORA_TARGETS,
    check_lengths,
    feature_cache_plan,
    prepare_stage_model,
    qlora_config,
    quantized,
    stage_feature_cache,
    trainable_parameters,
)

logger = logging.getLogger(__name__)

TRAINING_COLUMNS = ("id", "source", "images", "messages", "length", "tokens", "supervised")


def run_recipe(
    recipe: Recipe,
    resume_from_checkpoint: str | bool | None = None,
    overwrite_output_dir: bool = False,
    allow_recipe_change: bool = False,
) -> TrainingSummary:
    """Trains every stage of `recipe` and returns the summary written to `train_summary.json`.

    An output folder that already holds trained work is refused unless `resume_from_checkpoint` continues it (with
    the recipe it was started with, unless `allow_recipe_change`) or `overwrite_output_dir` replaces it.
    """
    from accelerate import PartialState

    state = PartialState(cpu=no_accelerator())
    out = Path(recipe.output_dir)
    start = time.perf_counter()
    # Every process checks before any writes (the same folder, the same answer), then the main one starts it.
    changes = check_output_dir(
        out, recipe.to_dict(), bool(resume_from_checkpoint), overwrite_output_dir, allow_recipe_change
    )
    state.wait_for_everyone()
    if state.is_main_process:
        start_output_dir(out, recipe.to_dict(), overwrite_output_dir, bool(resume_from_checkpoint))
        for change in changes:
            logger.warning(f"resumed with a changed recipe: {change['field']} {change['was']!r} -> {change['now']!r}")
    state.wait_for_everyone()
    with state.main_process_first():  # the main process writes backbones and data; the others then read them
        language_source, vision_source = _resolve_backbones(recipe, out)
        splits = resolve_data(recipe, out)
    loaded = {name: load_split(path, recipe.data.image_root_for(name), recipe.data) for name, path in splits.items()}
    if recipe.data.task and "eval" in loaded:  # held-out items must carry what the task scores against
        from .tasks import get_task

        loaded["eval"] = get_task(recipe.data.task).keep_own(loaded["eval"], recipe.data.on_bad_record)
    model, processor = _initial_model(recipe, language_source, vision_source)
    # The records are not used again: their rows take their messages as they are, not copies
    rows = {name: [record.to_row(copy=False) for record in data.records] for name, data in loaded.items()}
    skipped = {name: data.skipped for name, data in loaded.items()}
    del loaded
    for stage in recipe.stages:
        rows[stage.data], dropped = check_lengths(
            rows[stage.data], processor, stage, recipe.data.on_bad_record, recipe.data.dataset_num_proc
        )
        skipped[stage.data] = skipped[stage.data] + dropped
    if state.is_main_process:
        write_skipped(out, skipped)
    eval_rows = rows.get("eval", [])[: recipe.data.eval_samples]
    use_cache, why = feature_cache_plan(recipe, rows, state.num_processes)
    log_once(logger, why)

    if not quantized(model):
        model.to(state.device)  # evaluate where training will run (the Trainer would move it there anyway)
    eval_before = _evaluate(model, processor, eval_rows, recipe, state, "before training", out / "eval_before")
    stages: dict[str, StageSummary] = {}
    for stage in recipe.stages:
        done = out / stage.name / "final" / STAGE_DONE
        if resume_from_checkpoint and done.exists():  # finished before the interruption: take its weights
            from .modeling_llava_swap import LlavaSwapForCausalLM

            model = LlavaSwapForCausalLM.from_pretrained(done.parent)
            stages[stage.name] = StageSummary.from_dict(json.loads(done.read_text()))
            log_once(logger, f"[{stage.name}] already complete: loaded {done.parent}")
            continue
        model, stage_summary, trainer = _run_stage(
            model, processor, stage, rows[stage.data], recipe, out, resume_from_checkpoint, eval_rows, use_cache
        )
        stages[stage.name] = stage_summary
    final_model = model
    if sharded(state):  # FSDP / ZeRO-3: no rank holds whole weights; evaluate what was saved instead
        from .modeling_llava_swap import LlavaSwapForCausalLM

        final_dir = out / recipe.stages[-1].name / "final"
        final_model = (
            LlavaSwapForCausalLM.from_pretrained(final_dir).to(state.device) if state.is_main_process else None
        )
    eval_after = _evaluate(final_model, processor, eval_rows, recipe, state, "after training", out / "eval")

    train_time = sum(s.train_runtime for s in stages.values())
    # Samples per second of what ran in this process's lifetime (a resumed run counts its own part only).
    samples_here = sum(s.train_samples_per_second * s.train_runtime for s in stages.values())
    summary = TrainingSummary(
        recipe=recipe.to_dict(),
        stages=stages,
        skipped_records=count_skipped(skipped),
        eval_before=eval_before,
        eval=eval_after,
        train_runtime=train_time,
        total_runtime=time.perf_counter() - start,
        samples_per_second=samples_here / train_time if train_time else 0.0,
        final_loss=stages[recipe.stages[-1].name].final_loss,
        trainable_parameters={name: s.trainable_parameters for name, s in stages.items()},
        output_dir=str(out),
        recipe_changes=changes,
    )
    if state.is_main_process:
        # The last stage's final weights, written by every rank together (gathered under FSDP / ZeRO-3).
        final_dir = out / recipe.stages[-1].name / "final"
        for item in final_dir.iterdir():
            if item.is_file() and item.name != STAGE_DONE:
                shutil.copy2(item, out / item.name)
        summary.write(out / "train_summary.json")
    state.wait_for_everyone()
    return summary


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


def _initial_model(recipe: Recipe, language_source: str, vision_source: str):
    from .backbones import build_vlm
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .processing_llava_swap import LlavaSwapProcessor

    model_config = recipe.model
    quantization = qlora_config(recipe)
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
        gguf_file=model_config.gguf_file,
    )


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


def _run_stage(
    model, processor, stage: StageConfig, rows, recipe: Recipe, out: Path, resume, eval_rows=(), use_cache=True
):
    from accelerate import PartialState
    from datasets import Dataset

    from .collator import LlavaSwapCollator
    from .trainer import LlavaSwapSFTTrainer

    stage_dir = out / stage.name
    cache = stage_feature_cache(model, processor, stage, rows, recipe, out, enabled=use_cache)
    model = prepare_stage_model(model, stage)
    counts = trainable_parameters(model)
    log_once(
        logger,
        f"[{stage.name}] stage={stage.stage} language_model={stage.language_model} "
        f"vision_tower={'trained' if stage.train_vision_tower else 'frozen'}; trainable parameters: "
        + ", ".join(f"{part} {count:,}" for part, count in counts.items()),
    )
    args = sft_config(stage, recipe, PartialState().num_processes, use_cpu=no_accelerator())
    trainer = LlavaSwapSFTTrainer(
        model=model,
        args=args,
        # What the collator and the length-grouped sampler read; not the records' meta, which training never reads
        # and whose values Arrow would have to fit one type per key across the whole data set
        train_dataset=Dataset.from_list([{key: row[key] for key in TRAINING_COLUMNS if key in row} for row in rows]),
        data_collator=LlavaSwapCollator(
            processor, max_length=stage.max_length, feature_cache=cache, padding_free=stage.padding_free
        ),
        processing_class=processor,
        callbacks=[CheckpointCompleted(), interrupt := StopOnInterrupt()],
    )
    if recipe.data.eval_steps and eval_rows and not sharded(PartialState()):
        evaluation = TaskEvaluation(processor, list(eval_rows), recipe)
        evaluation.trainer = trainer
        trainer.callback_handler.callbacks.insert(0, evaluation)
    checkpoint = resume_point(stage_dir, resume)
    epoch_before = checkpoint_state(checkpoint).get("epoch", 0.0)
    if checkpoint and args.max_steps > 0 and checkpoint_state(checkpoint).get("global_step", 0) >= args.max_steps:
        # The stage had finished and was killed while writing final/: take the weights, do not train another step.
        load_checkpoint_weights(model, checkpoint)
        trainer.state = trainer.state.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        metrics, training_loss = {"train_runtime": 0.0}, None
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics, training_loss = result.metrics, result.training_loss
        if interrupt.stopped_at is not None:
            raise TrainingInterrupted(str(stage_dir / f"checkpoint-{interrupt.stopped_at}"))
    if stage.language_model in ("lora", "qlora"):
        model = model.merge_and_unload()
    model.requires_grad_(False)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # Samples actually drawn: epochs (fractional) times the data, so a partial last batch is not over-counted.
    seen_here = round((trainer.state.epoch - epoch_before) * len(rows))
    runtime = metrics.get("train_runtime", 0.0)
    summary = StageSummary(
        stage=stage.stage,
        language_model=stage.language_model,
        train_runtime=runtime,
        train_samples_seen=round(trainer.state.epoch * len(rows)),
        train_samples_per_second=seen_here / runtime if runtime else 0.0,
        final_loss=losses[-1] if losses else training_loss,
        train_loss=training_loss,
        global_step=trainer.state.global_step,
        world_size=trainer.args.world_size,
        trainable_parameters=counts,
        resumed_from=checkpoint,
        vision_feature_cache=None if cache is None else {"folder": str(cache.folder), "encoded": cache.encoded_total},
        eval_history=[
            {key: value for key, value in entry.items() if key.startswith("eval_") or key in ("step", "loss")}
            for entry in trainer.state.log_history
            if any(key.startswith("eval_") for key in entry)
        ],
    )
    final = stage_dir / "final"
    if stage.language_model in ("lora", "qlora"):
        if trainer.is_world_process_zero():
            model.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # every rank takes part: gathers FSDP / ZeRO-3 shards before writing
    if trainer.is_world_process_zero():
        processor.save_pretrained(final)
        # Written last: a stage whose final folder lacks it was interrupted while saving and will run again.
        (final / STAGE_DONE).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    trainer.accelerator.wait_for_everyone()
    return model, summary, trainer


__all__ = [
    "LORA_TARGETS",
    "DataConfig",
    "ModelConfig",
    "Recipe",
    "StageConfig",
    "accumulation_steps",
    "complete_checkpoints",
    "default_recipe",
    "describe_plan",
    "no_accelerator",
    "run_recipe",
    "trainable_parameters",
]
