"""Training throughput: llava-swap's default path vs what a user does today without it, same model and data.

    python benchmarks/train_throughput.py [--samples 512] [--batch-size 8] [--rounds 2] [--scenarios single ...]

(a) baseline: transformers' native `LlavaForConditionalGeneration` (the same tiny LM + CLIP, the same initial weights,
    exported with `export_hf_llava`) trained by TRL's SFTTrainer with TRL's own vision collator (assistant-only loss
    through the chat template's generation markers);
(b) llava-swap: `training.run_recipe` with its defaults: frozen-encoder features cached, rows tokenized once before
    training, padding-free batches, only the answer positions projected through the LM head.
Both train one epoch per stage on the same rows (VQA-Scene questions and seismic descriptions mixed: short and long
answers, as in real LLaVA data), same batch size, order, learning rate and seed. Each run is a fresh process (so peak
RSS is its own); the two alternate for `--rounds` rounds. Scenarios: `single` (one finetuning run), `two-stage`
(projector pretraining then finetuning) and `study` (three backbones, both stages; llava-swap shares one feature
cache). Prints, best round of each: samples/s inside the Trainer's loop (`train_runtime`) and end to end (the whole
call: loading, data preparation, feature caching, training and saving), peak RSS, the mean training loss and the
trained models' token-weighted loss on the same fixed rows (both should agree), then the ratios.
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


SCENARIOS = {
    # name: (backbones, stages); stage 1 trains the projector alone, stage 2 the projector and the LLM
    "single": (("llama3",), ("finetune",)),
    "two-stage": (("llama3",), ("pretrain", "finetune")),
    "study": (("llama1", "llama2", "llama3"), ("pretrain", "finetune")),
}


def prepare(work: Path, samples: int, families) -> None:
    """Tiny backbones, each initial model in both formats, and the mixed training rows (LLaVA JSON)."""
    from llava_swap import build_vlm, export_hf_llava, tiny
    from llava_swap.tasks import get_task

    vision = tiny.save_vision_model("clip", work / "clip")
    for family in families:
        model, processor = build_vlm(tiny.save_language_model(family, work / f"lm-{family}"), vision)
        model.save_pretrained(work / f"initial-{family}")
        processor.save_pretrained(work / f"initial-{family}")
        export_hf_llava(model, processor, work / f"initial-native-{family}")
    rows = []
    for task in ("vqa_scene", "seismic_description"):
        folder = work / "data" / task
        get_task(task).generate(folder, n_train=samples // 2, n_val=1, n_test=1, seed=0, image_size=32)
        for record in json.loads((folder / "train.json").read_text()):
            rows.append({**record, "image": f"{task}/{record['image']}"})
    (work / "data" / "train.json").write_text(json.dumps(rows))


def run_baseline(work: Path, batch_size: int, family: str, stages) -> dict:
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    from llava_swap.data import load_llava_json

    model = LlavaForConditionalGeneration.from_pretrained(work / f"initial-native-{family}")
    processor = AutoProcessor.from_pretrained(work / f"initial-native-{family}")
    records = load_llava_json(work / "data" / "train.json", work / "data").records
    rows = [
        {"images": [Image.open(r.images[0]).convert("RGB")], "messages": _plain_messages(r.messages)} for r in records
    ]
    runtime, samples, mean_loss = 0.0, 0, None
    for stage in stages:
        model.requires_grad_(False)  # the encoder stays frozen, as in LLaVA's stages 1 and 2
        model.model.multi_modal_projector.requires_grad_(True)
        if stage == "finetune":
            model.model.language_model.requires_grad_(True)
            model.lm_head.requires_grad_(True)
        args = SFTConfig(
            output_dir=str(work / "out-baseline" / stage),
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
        runtime += result.metrics["train_runtime"]
        samples += len(rows)
        mean_loss = result.training_loss
    trainer.save_model(str(work / "out-baseline" / f"final-{family}"))
    return {"runtime": runtime, "samples": samples, "mean_loss": mean_loss}


def _plain_messages(messages):
    """TRL's collator puts the images into the first user turn itself; give it plain text content."""
    plain = []
    for message in messages:
        text = "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")
        plain.append({"role": message["role"], "content": text})
    return plain


def run_llava_swap(work: Path, batch_size: int, family: str, stages) -> dict:
    from llava_swap.training import Recipe, run_recipe

    settings = {
        "data": "train",
        "learning_rate": 2e-3,
        "num_train_epochs": 1,
        "per_device_train_batch_size": batch_size,
        "max_length": 512,
        "logging_steps": 10,
        "save_steps": 100000,
    }
    recipe = Recipe.from_dict(
        {
            "output_dir": str(work / "out-llava-swap" / family),
            "report_to": [],
            "vision_feature_cache": str(work / "out-llava-swap" / "feature_cache"),  # shared by a study's backbones
            "model": {"init_from": str(work / f"initial-{family}")},
            "data": {"train": str(work / "data" / "train.json"), "image_root": str(work / "data"), "task": None},
            "stages": [
                {
                    **settings,
                    "name": stage,
                    "stage": stage,
                    "language_model": "full" if stage == "finetune" else "frozen",
                }
                for stage in stages
            ],
        }
    )
    summary = run_recipe(recipe)
    ran = list(summary.stages.values())
    return {
        "runtime": sum(stage.train_runtime for stage in ran),
        "samples": sum(stage.train_samples_seen for stage in ran),
        "mean_loss": ran[-1].train_loss,
    }


def heldout_loss(model, work: Path, family: str, count: int = 64) -> float:
    """Token-weighted loss of a trained model on the same fixed rows, built the same way for both paths."""
    import torch

    from llava_swap import LlavaSwapProcessor
    from llava_swap.collator import IGNORE_INDEX, LlavaSwapCollator
    from llava_swap.data import load_llava_json

    processor = LlavaSwapProcessor.from_pretrained(work / f"initial-{family}")
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


def child(mode: str, work: Path, batch_size: int, scenario: str) -> None:
    import torch
    import trl  # noqa: F401  (imports are not part of either path's time)

    import llava_swap.training  # noqa: F401

    families, stages = SCENARIOS[scenario]
    totals = {"runtime": 0.0, "wall": 0.0, "samples": 0, "mean_loss": [], "heldout_loss": []}
    for family in families:
        torch.manual_seed(0)
        run = run_baseline if mode == "baseline" else run_llava_swap
        started = time.perf_counter()
        result = run(work, batch_size, family, stages)
        totals["wall"] += time.perf_counter() - started
        if mode == "baseline":
            from transformers import LlavaForConditionalGeneration

            trained = LlavaForConditionalGeneration.from_pretrained(work / "out-baseline" / f"final-{family}")
        else:
            from llava_swap import LlavaSwapForCausalLM

            trained = LlavaSwapForCausalLM.from_pretrained(work / "out-llava-swap" / family)
        totals["runtime"] += result["runtime"]
        totals["samples"] += result["samples"]
        totals["mean_loss"].append(result["mean_loss"])
        totals["heldout_loss"].append(heldout_loss(trained, work, family))
    totals["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(totals))


# TRL's assistant-only loss for vision data, which the baseline trains with, needs this transformers release
BASELINE_NEEDS_TRANSFORMERS = (5, 18)


def baseline_supported() -> bool:
    from importlib.metadata import version

    return tuple(int(part) for part in version("transformers").split(".")[:2]) >= BASELINE_NEEDS_TRANSFORMERS


def main() -> None:
    if not baseline_supported():
        sys.exit(
            "train_throughput.py: the baseline (TRL's SFTTrainer, assistant-only loss on vision data) needs transformers "
            ">= 5.18; install a newer transformers to compare."
        )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--child", choices=("baseline", "llava_swap"), help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.work), args.batch_size, args.scenario)
        return
    print(
        f"train throughput: {args.samples} samples per training, batch {args.batch_size}, best of {args.rounds} "
        f"rounds, {os.cpu_count()} cores, {platform.machine()}"
    )
    print(
        f"{'scenario':<10} {'path':<11} {'train samples/s':>16} {'end-to-end':>11} {'peak RSS MB':>12} "
        f"{'mean loss':>10} {'held-out':>9} {'ratio':>6} {'ratio e2e':>9}"
    )
    families = sorted({family for scenario in args.scenarios for family in SCENARIOS[scenario][0]})
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        prepare(work, args.samples, families)
        for scenario in args.scenarios:
            results: dict[str, list[dict]] = {"baseline": [], "llava_swap": []}
            for _ in range(args.rounds):
                for mode in ("baseline", "llava_swap"):
                    for folder in ("out-baseline", "out-llava-swap"):
                        subprocess.run(["rm", "-rf", str(work / folder)], check=True)
                    command = [sys.executable, __file__, "--child", mode, "--work", str(work)]
                    command += ["--batch-size", str(args.batch_size), "--scenario", scenario]
                    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                    results[mode].append(json.loads(output.split("RESULT ", 1)[1].splitlines()[0]))
            rates = {mode: max(r["samples"] / r["runtime"] for r in runs) for mode, runs in results.items()}
            walls = {mode: max(r["samples"] / r["wall"] for r in runs) for mode, runs in results.items()}
            for mode, runs in results.items():
                last = runs[-1]
                print(
                    f"{scenario:<10} {mode:<11} {rates[mode]:>16.1f} {walls[mode]:>11.1f} "
                    f"{max(r['peak_rss_mb'] for r in runs):>12.0f} "
                    f"{sum(last['mean_loss']) / len(last['mean_loss']):>10.4f} "
                    f"{sum(last['heldout_loss']) / len(last['heldout_loss']):>9.4f} "
                    f"{rates[mode] / rates['baseline']:>5.2f}x {walls[mode] / walls['baseline']:>8.2f}x"
                )
    print("goal: llava_swap >= 1.5x the baseline's samples/s, with the same losses")


if __name__ == "__main__":
    main()
