"""`LlavaSwapLmms`: lmms-eval's `--model llava_swap`, generating exactly as `llava-swap evaluate` does.

lmms-eval's own `llava_hf` runs one item at a time, stops at `tokenizer.eos_token_id` only, never applies a task's
`until`, and turns a failed generation into an empty answer (scored, silently, as wrong). This model loads a
llava-swap folder or any native llava checkpoint, generates through `llava_swap.evaluation.generate_answers` (batches
with left padding, greedy, stopping at every id of generation_config), cuts each answer at the task's `until`
strings, and lets every error propagate.

    lmms-eval eval --model llava_swap --model_args pretrained=outputs/default,device=cpu --batch_size 16 ...
"""

from __future__ import annotations

import os

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

# Generation settings a task may pass that greedy decoding honours as they are; anything else is refused, by name.
_GREEDY = {"do_sample": (False, None), "temperature": (0, 0.0, None), "num_beams": (1, None), "top_p": (None, 1, 1.0)}
_HANDLED = {"until", "max_new_tokens", *_GREEDY}


class LlavaSwapLmms(lmms):
    """A llava-swap (or native llava) checkpoint for lmms-eval's `generate_until` tasks."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = 64,
        **unexpected,
    ):
        super().__init__()
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1:  # lmms-eval would hand every process every request
            raise ValueError(
                f"llava_swap runs in one process ({processes} were launched): run lmms-eval without accelerate launch."
            )
        unexpected = {key: value for key, value in unexpected.items() if value is not None}
        unexpected.pop("max_batch_size", None)  # lmms-eval passes it to every model
        if unexpected:
            raise ValueError(
                f"llava_swap: unknown --model_args {sorted(unexpected)}; it takes pretrained, device, dtype, "
                "batch_size, max_new_tokens."
            )
        from transformers import AutoProcessor

        from ..modeling_llava_swap import LlavaSwapForCausalLM

        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype_kwargs = {} if dtype in (None, "auto") else {"dtype": getattr(torch, dtype)}
        self.model = LlavaSwapForCausalLM.from_pretrained(pretrained, **dtype_kwargs).to(self._device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from ..evaluation import generate_answers

        settings = [self._settings(request) for request in requests]
        answers: list[str | None] = [None] * len(requests)
        # One generate call per max_new_tokens: tasks of one run may differ.
        for max_new_tokens in sorted({max_new for max_new, _ in settings}):
            indexes = [i for i, (max_new, _) in enumerate(settings) if max_new == max_new_tokens]
            rows = [self._row(requests[i]) for i in indexes]
            generations = generate_answers(
                self.model, self.processor, rows, self.batch_size, max_new_tokens, progress=False
            )
            for index, generation in zip(indexes, generations, strict=True):
                answers[index] = _cut_at(generation.text, settings[index][1])
        return answers

    def _settings(self, request: Instance) -> tuple[int, list[str]]:
        gen_kwargs = dict(request.args[1] or {})
        unknown = sorted(set(gen_kwargs) - _HANDLED)
        sampled = sorted(
            key for key, allowed in _GREEDY.items() if key in gen_kwargs and gen_kwargs[key] not in allowed
        )
        if unknown or sampled:
            raise ValueError(
                f"llava_swap generates greedily and takes max_new_tokens and until only; task {request.args[4]!r} "
                f"asks for {unknown + [f'{key}={gen_kwargs[key]!r}' for key in sampled]}."
            )
        until = gen_kwargs.get("until") or []
        return int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)), [until] if isinstance(until, str) else until

    def _row(self, request: Instance) -> dict:
        """The conversation `llava-swap evaluate` would build: the images first, then the task's text."""
        context, _, doc_to_visual, doc_id, task, split = request.args
        images = list(doc_to_visual(self.task_dict[task][split][doc_id]) or [])
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": context}]
        return {"messages": [{"role": "user", "content": content}], "images": images}

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("llava_swap runs generate_until tasks only (no loglikelihood / multiple choice).")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("llava_swap runs single-round generate_until tasks only.")


def _cut_at(text: str, until: list[str]) -> str:
    """`text` up to the first of the `until` strings, as a task's stop strings mean."""
    cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
    return text[:cut]


__all__ = ["LlavaSwapLmms"]
