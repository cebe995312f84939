"""From a LLaVA JSON file to the first training batch: how long each step takes, scaled to LLaVA-665k.

    python benchmarks/data_start.py [--records 20000] [--turns 4] [--workdir DIR]

Writes a LLaVA-format JSON of `--records` multi-turn conversations (LLaVA-665k's shape: one image, a few question and
answer turns of a few dozen words each) over a small pool of real PNG files, then times what `run_recipe` does
before its first step, on the tiny LLaMA-3 (byte-level BPE) with its chat template:

* load and check: `load_llava_json` with `image_check="header"` (every record built and validated, its image opened);
* rows: `Record.to_row(copy=False)` for every record (training drops the records);
* tokenize and check: `check_lengths` (chat template, tokens, assistant mask, "would it train on nothing") for
  every row, as each stage does before training;
* dataset: `datasets.Dataset.from_list` of the checked rows' training columns, as the trainer receives them;
* first batch: the collator on the first 16 rows (tokens taken from the check, no pixels: the cached-feature path).

Prints seconds, records per second and the time scaled linearly to 665,000 records (the first batch's does not grow
with the data), the memory that the check's tokens and masks add per record (tracemalloc, on the first 1,000
records, in a pass of its own), and the last line `after the check, 665k: <seconds> s` (rows + dataset + first
batch). `check_lengths` uses its default worker processes (`data.dataset_num_proc` unset): one per core from 20,000
rows, so the tokenizing time falls with the cores of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

LLAVA_665K = 665_000
MEMORY_SAMPLE = 1000  # records whose checked rows' memory is measured
PER_RECORD = ("load and check", "rows", "tokenize and check", "dataset")  # steps that grow with the data
WORDS = (
    "the",
    "a",
    "of",
    "shape",
    "image",
    "colour",
    "red",
    "blue",
    "left",
    "right",
    "there",
    "is",
    "what",
    "where",
    "how",
    "many",
    "small",
    "large",
    "circle",
    "square",
    "triangle",
    "object",
    "scene",
    "picture",
    "shows",
    "appears",
    "top",
    "bottom",
    "middle",
    "centre",
    "near",
    "next",
    "to",
    "above",
    "below",
)


def write_data(work: Path, records: int, turns: int, images: int = 64, seed: int = 0) -> Path:
    """A LLaVA JSON of `records` conversations of `turns` question/answer pairs over `images` PNG files."""
    from PIL import Image

    rng = random.Random(seed)
    (work / "images").mkdir(parents=True, exist_ok=True)
    for index in range(images):
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (32, 32), colour).save(work / "images" / f"{index:03d}.png")

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."

    entries = []
    for index in range(records):
        conversation = []
        for turn in range(turns):
            question = sentence(6, 16)
            conversation.append({"from": "human", "value": ("<image>\n" + question) if turn == 0 else question})
            conversation.append({"from": "gpt", "value": sentence(8, 40)})
        entries.append(
            {"id": f"r{index}", "image": f"images/{rng.randrange(images):03d}.png", "conversations": conversation}
        )
    path = work / "data.json"
    path.write_text(json.dumps(entries))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--turns", type=int, default=4, help="question/answer pairs per conversation")
    parser.add_argument("--workdir", default=None, help="where the data and tiny model go (default: a temp folder)")
    args = parser.parse_args(argv)

    from datasets import Dataset

    from llava_swap import build_vlm, tiny
    from llava_swap.collator import LlavaSwapCollator
    from llava_swap.data import load_llava_json
    from llava_swap.recipes import StageConfig
    from llava_swap.stages import check_lengths
    from llava_swap.training import TRAINING_COLUMNS

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        _, processor = build_vlm(
            tiny.save_language_model("llama3", work / "lm"), tiny.save_vision_model("clip", work / "clip")
        )
        path = write_data(work, args.records, args.turns)
        stage = StageConfig(max_length=2048)
        times: dict[str, float] = {}

        def timed(name, work):
            start = time.perf_counter()
            result = work()
            times[name] = time.perf_counter() - start
            return result

        loaded = timed("load and check", lambda: load_llava_json(path, image_check="header"))
        rows = timed("rows", lambda: [record.to_row(copy=False) for record in loaded.records])
        checked, _ = timed("tokenize and check", lambda: check_lengths(rows, processor, stage, "error"))
        # Memory in a separate pass over a sample: tracemalloc slows every allocation, so it stays out of the timing.
        sample = rows[:MEMORY_SAMPLE]
        tracemalloc.start()
        kept = check_lengths(sample, processor, stage, "error")
        held = tracemalloc.get_traced_memory()[0] / len(sample)
        tracemalloc.stop()
        del kept
        dataset = timed(
            "dataset",
            lambda: Dataset.from_list([{key: row[key] for key in TRAINING_COLUMNS if key in row} for row in checked]),
        )
        collator = LlavaSwapCollator(processor, max_length=stage.max_length, feature_cache=_NoImages())
        timed("first batch", lambda: collator([dataset[index] for index in range(16)]))

    tokens = sum(len(row["tokens"]) for row in checked)
    print(f"{args.records} records, {args.turns} turns each, {tokens / len(checked):.0f} tokens per record (mean)")
    print("| step | seconds | records/s | at 665k (s) |\n|---|---|---|---|")
    for name, seconds in times.items():
        if name in PER_RECORD:
            scaled = seconds * LLAVA_665K / args.records
            print(f"| {name} | {seconds:.2f} | {args.records / seconds:,.0f} | {scaled:.1f} |")
        else:
            print(f"| {name} | {seconds:.2f} | - | {seconds:.1f} |")
    print(f"tokens and masks held: {held:,.0f} bytes per record ({held * LLAVA_665K / 2**30:.2f} GiB at 665k)")
    after = sum(times[name] for name in ("rows", "dataset")) * LLAVA_665K / args.records + times["first batch"]
    print(f"tokenize and check, 665k: {times['tokenize and check'] * LLAVA_665K / args.records:.1f} s")
    print(f"after the check, 665k: {after:.1f} s")
    sys.stdout.flush()


class _NoImages:
    """The collator's feature cache, for rows whose images are not wanted here: zero features of the right count."""

    def features(self, images):
        import torch

        return torch.zeros(len(images), 1, 1)


if __name__ == "__main__":
    main()
