"""Checkpoints a run can trust: completion markers, the point to resume from, and a checkpoint's weights.

transformers writes straight into `checkpoint-N`, so a process killed mid-save leaves a folder that looks like a
checkpoint. `callbacks.CheckpointCompleted` writes `CHECKPOINT_DONE` last; a stage's `final/` folder gets
`STAGE_DONE` last. Resuming trusts marked folders only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .distributed import log_once

logger = logging.getLogger(__name__)

STAGE_DONE = "stage_summary.json"  # in <stage>/final/, written after the weights: the stage is complete
CHECKPOINT_DONE = "checkpoint_complete.json"  # in <stage>/checkpoint-N/, written after every process saved


def complete_checkpoints(stage_dir: Path) -> list[Path]:
    """The stage's checkpoints that were completely written, oldest first."""
    if not stage_dir.exists():
        return []
    marked = [path for path in stage_dir.glob("checkpoint-*") if (path / CHECKPOINT_DONE).exists()]
    return sorted(marked, key=lambda path: int(path.name.split("-")[-1]))


def resume_point(stage_dir: Path, resume) -> str | None:
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
        log_once(logger, f"ignoring {partial}: interrupted while saving (no {CHECKPOINT_DONE})")
    return str(complete[-1]) if complete else None


def checkpoint_state(checkpoint: str | None) -> dict:
    """The Trainer's `trainer_state.json` of a checkpoint (empty without one)."""
    path = Path(checkpoint) / "trainer_state.json" if checkpoint else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def load_checkpoint_weights(model, checkpoint: str) -> None:
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


__all__ = [
    "CHECKPOINT_DONE",
    "STAGE_DONE",
    "checkpoint_state",
    "complete_checkpoints",
    "load_checkpoint_weights",
    "resume_point",
]
