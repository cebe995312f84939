"""lmms-eval's entry point (`[project.entry-points."lmms_eval.models"]`): `--model llava_swap` in any lmms-eval run.

lmms-eval reads this at every start, so it names the class by path only and the class loads when a run asks for it
(importing the `llava_swap` package itself loads transformers, some seconds at each lmms-eval start).
"""

from __future__ import annotations


def manifests():
    """The models llava-swap registers with lmms-eval (its ModelManifest records)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id="llava_swap", simple_class_path="llava_swap.integrations.lmms_eval_model.LlavaSwapLmms")
    ]


__all__ = ["manifests"]
