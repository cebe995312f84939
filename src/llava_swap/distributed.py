"""What changes when a run spans processes: whether there is an accelerator, whether weights are sharded, who reports.

accelerate decides the process layout; these helpers read it so the rest of the package asks one question each.
"""

from __future__ import annotations

import logging

import torch


def no_accelerator() -> bool:
    """True on a machine without GPU: accelerate then runs several processes as MULTI_CPU (gloo) data parallel;
    without `cpu=True` each process of `accelerate launch --multi_gpu` would silently train alone on all the data."""
    return not torch.accelerator.is_available()


def sharded(state) -> bool:
    """Whether parameters are partitioned across processes (FSDP, DeepSpeed ZeRO-3)."""
    from accelerate.utils import DistributedType

    if state.distributed_type == DistributedType.FSDP:
        return True
    if state.distributed_type == DistributedType.DEEPSPEED:
        plugin = getattr(state, "deepspeed_plugin", None)
        return plugin is not None and plugin.zero_stage == 3
    return False


def log_once(logger: logging.Logger, message: str) -> None:
    """Reports progress once per run, from the main process, not once per process."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        logger.info(message)


__all__ = ["log_once", "no_accelerator", "sharded"]
