"""Training throughput: llava-swap's default path vs what a user does today without it, same model and data.

    python benchmarks/train_throughput.py [--samples 512] [--batch-size 8] [--rounds 2]

(a) baseline: transformers' native `LlavaForConditionalGeneration` (the same tiny LLaMA-3-style LM + CLIP, the same
    initial weights, exported with `export_hf_llava`) trained by TRL's SFTTrainer with TRL's own vision collator
    (assistant-only loss through the chat template's generation markers);
(b) llava-swap: `training.run_recipe`, one finetune stage: frozen-encoder features cached, no pixels or template
    rendering in the training loop, length-grouped batches.
Both train one epoch on the same rows (VQA-Scene questions and seismic descriptions mixed: short and long answers, as
in real LLaVA data), same batch size, learning rate and seed. Each run is a fresh process (so peak RSS is its own);
the two alternate for `--rounds` rounds. Prints samples/s (best round), peak RSS, the epoch's mean training loss (a
mean of per-batch means: it differs because llava-swap batches similar lengths together) and, what should agree, the
trained models' token-weighted loss on the same fixed rows; then the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def prepare(work: Path, samples: int) -> None:
    """Tiny backbones, the initial model in both formats, and the mixed training rows (LLaVA JSON)."""
    from llava_swap import build_vlm, export_hf_llava, tiny
    from llava_swap.tasks import get_task

    model, processor = build_vlm(
        tiny.save_language_model("llama3", work / "lm"), tiny.save_vision_model("clip", work / "clip")
    )
    model.save_pretrained(work / "initial")
    processor.save_pretrained(work / "initial")
    export_hf_llava(model, processor, work / "initial-native")
    rows = []
    for task in ("vqa_scene", "seismic_description"):
        folder = work / "data" / task
        get_task(task).generate(folder, n_train=samples // 2, n_val=1, n_test=1, seed=0, image_size=32)
        for record in json.loads((folder / "train.json").read_text()):
            rows.append({**record, "image": f"{task}/{record['image']}"})
    (work / "data" / "train.json").write_text(json.dumps(rows))


def run_baseline(work: Path, batch_size: int) -> dict:
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    from llava_swap.data import load_llava_json

    model = LlavaForConditionalGeneration.from_pretrained(work / "initial-native")
    processor = AutoProcessor.from_pretrained(work / "initial-native")
    model.model.vision_tower.requires_grad_(False)  # frozen encoder, as in LLaVA's stage 2
    records = load_llava_json(work / "data" / "train.json", work / "data").records
    rows = [
        {"images": [Image.open(r.images[0]).convert("RGB")], "messages": _plain_messages(r.messages)} for r in records
    ]
    args = SFTConfig(
        output_dir=str(work / "out-baseline"),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        learning_rate=2e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        seed=0,
        data_seed=0,
        max_length=512,
        assistant_only_loss=True,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    result = trainer.train()
    trainer.save_model(str(work / "out-baseline" / "final"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "runtime": result.metrics["train_runtime"],
        "samples": len(rows),
        "tokens": trainer.state.num_input_tokens_seen or _count_tokens(trainer),
        "final_loss": losses[-1],
        "mean_loss": result.training_loss,
        "losses": losses,
    }


def _plain_messages(messages):
    """TRL's collator puts the images into the first user turn itself; give it plain text content."""
    plain = []
    for message in messages:
        text = "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")
        plain.append({"role": message["role"], "content": text})
    return plain


def _count_tokens(trainer) -> int:
    return int(sum(e.get("num_tokens", 0) for e in trainer.state.log_history[-1:]))


def run_llava_swap(work: Path, batch_size: int) -> dict:
    from llava_swap.training import Recipe, run_recipe

    recipe = Recipe.from_dict(
        {
            "output_dir": str(work / "out-llava-swap"),
            "report_to": [],
            "model": {"init_from": str(work / "initial")},
            "data": {"train": str(work / "data" / "train.json"), "image_root": str(work / "data"), "task": None},
            "stages": [
                {
                    "name": "finetune",
                    "stage": "finetune",
                    "data": "train",
                    "language_model": "full",
                    "learning_rate": 2e-3,
                    "num_train_epochs": 1,
                    "per_device_train_batch_size": batch_size,
                    "max_length": 512,
                    "logging_steps": 10,
                    "save_steps": 100000,
                }
            ],
        }
    )
    start = time.perf_counter()
    summary = run_recipe(recipe)
    stage = summary["stages"]["finetune"]
    history = json.loads((work / "out-llava-swap" / "finetune" / "final" / "stage_summary.json").read_text())
    return {
        "runtime": stage["train_runtime"],
        "samples": stage["train_samples_seen"],
        "tokens": None,
        "final_loss": stage["final_loss"],
        "mean_loss": stage["train_loss"],
        "losses": [],
        "with_setup": time.perf_counter() - start,
        "cache": history.get("vision_feature_cache"),
    }


def heldout_loss(model, work: Path, count: int = 64) -> float:
    """Token-weighted loss of a trained model on the same fixed rows, built the same way for both paths."""
    import torch

    from llava_swap import LlavaSwapProcessor
    from llava_swap.collator import IGNORE_INDEX, LlavaSwapCollator
    from llava_swap.data import load_llava_json

    processor = LlavaSwapProcessor.from_pretrained(work / "initial")
    rows = [r.to_row() for r in load_llava_json(work / "data" / "train.json", work / "data").records[-count:]]
    collate = LlavaSwapCollator(processor)
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = collate(rows[start : start + 8])
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def child(mode: str, work: Path, batch_size: int) -> None:
    import torch

    torch.manual_seed(0)
    result = run_baseline(work, batch_size) if mode == "baseline" else run_llava_swap(work, batch_size)
    if mode == "baseline":
        from transformers import LlavaForConditionalGeneration

        trained = LlavaForConditionalGeneration.from_pretrained(work / "out-baseline" / "final")
    else:
        from llava_swap import LlavaSwapForCausalLM

        trained = LlavaSwapForCausalLM.from_pretrained(work / "out-llava-swap")
    result["heldout_loss"] = heldout_loss(trained, work)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("baseline", "llava_swap"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.work), args.batch_size)
        return
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        prepare(work, args.samples)
        results: dict[str, list[dict]] = {"baseline": [], "llava_swap": []}
        for _ in range(args.rounds):
            for mode in ("baseline", "llava_swap"):
                for folder in ("out-baseline", "out-llava-swap"):
                    subprocess.run(["rm", "-rf", str(work / folder)], check=True)
                output = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--work",
                        str(work),
                        "--batch-size",
                        str(args.batch_size),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                results[mode].append(json.loads(output.split("RESULT ", 1)[1].splitlines()[0]))
    print(
        f"train throughput: {args.samples} samples, batch {args.batch_size}, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, {platform.machine()}"
    )
    print(f"{'path':<12} {'samples/s':>10} {'peak RSS MB':>12} {'mean loss':>10} {'held-out loss':>14}")
    best = {}
    for mode, runs in results.items():
        rate = max(run["samples"] / run["runtime"] for run in runs)
        best[mode] = rate
        print(
            f"{mode:<12} {rate:>10.1f} {max(r['peak_rss_mb'] for r in runs):>12.0f} {runs[-1]['mean_loss']:>10.4f} "
            f"{runs[-1]['heldout_loss']:>14.4f}"
        )
    print(f"ratio llava_swap / baseline: {best['llava_swap'] / best['baseline']:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
