"""Batched evaluation vs one item at a time: same model, same items, same greedy answers; items per second.

    python benchmarks/eval_throughput.py [--model DIR] [--task vqa_scene] [--items 64] [--batch-size 16]

Without --model it builds the tiny default (LLaMA-3-style LM + CLIP, llava_swap.tiny) offline. Generation runs to the
task's max_new_tokens or the stop token. Prints a table and the speed-up; the goal on 2 CPU cores is >= 3x at batch 16.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor, build_vlm, tiny  # noqa: E402
from llava_swap.evaluation import evaluate_rows  # noqa: E402
from llava_swap.tasks import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved model folder; default: the tiny default, untrained")
    parser.add_argument("--task", default="vqa_scene")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        if args.model:
            model = LlavaSwapForCausalLM.from_pretrained(args.model)
            processor = LlavaSwapProcessor.from_pretrained(args.model)
        else:
            model, processor = build_vlm(
                tiny.save_language_model("llama3", work / "lm"), tiny.save_vision_model("clip", work / "clip")
            )
        task = get_task(args.task)
        task.generate(work / "data", n_train=1, n_val=1, n_test=args.items, seed=0, image_size=64)
        rows = [record.to_row() for record in task.load(work / "data", "test").records]

        evaluate_rows(model, processor, rows[:2], task, batch_size=2, progress=False)  # warm-up
        timings = {}
        answers = {}
        for label, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
            start = time.perf_counter()
            result = evaluate_rows(model, processor, rows, task, batch_size=batch_size, progress=False)
            timings[label] = time.perf_counter() - start
            answers[label] = [record["prediction"] for record in result.records]

    single, batched = timings.values()
    same = list(answers.values())[0] == list(answers.values())[1]
    print(
        f"eval throughput: {args.task}, {len(rows)} items, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'mode':<16} {'seconds':>8} {'items/s':>9}")
    for label, seconds in timings.items():
        print(f"{label:<16} {seconds:>8.2f} {len(rows) / seconds:>9.1f}")
    print(f"speed-up: {single / batched:.2f}x (goal >= 3x); identical answers: {same}")


if __name__ == "__main__":
    main()
