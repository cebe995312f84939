"""Trainer callbacks of a llava-swap stage: checkpoint completion markers, a clean stop on Ctrl-C, and periodic task
evaluation."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback

from .checkpoints import CHECKPOINT_DONE


class CheckpointCompleted(TrainerCallback):
    """Marks `checkpoint-N` complete once every process has written its part: a barrier, then an atomic marker."""

    def on_save(self, args, state, control, **kwargs):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.barrier()
        if (torch.distributed.get_rank() if distributed else 0) == 0:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            temporary = folder / f".{CHECKPOINT_DONE}.tmp"
            temporary.write_text(json.dumps({"global_step": state.global_step}))
            os.replace(temporary, folder / CHECKPOINT_DONE)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after a step, with a checkpoint to resume from (`checkpoint`)."""

    def __init__(self, checkpoint: str):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C during training finishes the current step, saves a checkpoint and stops, so the run resumes exactly
    where it stopped (`stopped_at` is that step). A second Ctrl-C stops at once. Every process stops at the same
    step: the request is agreed across processes at each step's end."""

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self._previous = signal.signal(signal.SIGINT, self._request)

    def on_step_end(self, args, state, control, **kwargs):
        requested = torch.tensor([int(self.requested)], device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(requested, op=torch.distributed.ReduceOp.MAX)
        if requested.item():
            control.should_save = control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _request(self, signum, frame):
        if self.requested:  # the second Ctrl-C
            raise KeyboardInterrupt
        self.requested = True
        logging.getLogger(__name__).warning("Ctrl-C: stopping after this step and saving a checkpoint (again: now)")


class TaskEvaluation(TrainerCallback):
    """Evaluates a held-out subset every `data.eval_steps` steps and logs the task metrics and ECE (TensorBoard).

    It evaluates on rank 0 and adds the metrics to the Trainer's next log; it never calls `trainer.log` itself: that
    would replace the step's loss log, and in DDP leave the ranks' collectives out of step. Set `trainer` once the
    trainer exists, and put the callback first so the reporting callbacks see its metrics.
    """

    def __init__(self, processor, rows, recipe):
        from .tasks import get_task

        self.processor, self.recipe = processor, recipe
        self.task = get_task(recipe.data.task) if recipe.data.task else None
        self.subset = list(rows)[: recipe.data.eval_steps_samples]
        self.trainer = None
        self.pending: dict[str, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        data = self.recipe.data
        if not self.subset or state.global_step % data.eval_steps or not state.is_world_process_zero:
            return
        from .evaluation import evaluate_rows

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        result = evaluate_rows(model, self.processor, self.subset, self.task, data.eval_batch_size, progress=False)
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


__all__ = ["CheckpointCompleted", "TaskEvaluation"]
