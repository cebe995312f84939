"""The `llava-swap` command line.

`llava-swap train` runs a training recipe (the same as `accelerate launch recipes/sft.py`); with no `--config`, the
tiny offline default. `llava-swap demo` builds a tiny vision-language model offline and asks it about a generated
image. `llava-swap export` converts a saved model to transformers' native llava format.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _demo_image(size: int = 64):
    """A red circle on a white background: something to ask about without any data set."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(220, 30, 30))
    return image


def demo(args: argparse.Namespace) -> int:
    import torch

    from . import build_vlm, tiny

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        lm_dir = tiny.save_language_model(args.family, Path(workdir) / f"tiny-{args.family}")
        vision_dir = tiny.save_vision_model(args.vision, Path(workdir) / f"tiny-{args.vision}")
        print(f"[1/4] wrote tiny offline backbones: {lm_dir.name} (LLM) and {vision_dir.name} (vision encoder)")
        model, processor = build_vlm(lm_dir, vision_dir, projector=args.projector)
    config = model.config
    parts = {
        "vision tower": model.vision_tower,
        "projector": model.multi_modal_projector,
        "language model": model.language_model,
    }
    sizes = ", ".join(f"{name} {sum(p.numel() for p in part.parameters()):,}" for name, part in parts.items())
    print(
        f"[2/4] built LlavaSwapForCausalLM: family={config.llm_family}, template={config.chat_template_name}, "
        f"projector={config.projector_type}, {config.image_seq_length} image tokens per image\n      parameters: {sizes}"
    )
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": _demo_image()}, {"type": "text", "text": args.question}],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    shown = prompt.replace(processor.image_token * config.image_seq_length, f"<image>x{config.image_seq_length}")
    print(f"[3/4] prompt ({inputs['input_ids'].shape[1]} tokens):\n      {shown!r}")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"[4/4] answer (untrained weights, so expect noise): {answer!r}")
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)
        print(f"saved to {args.save}: load it with LlavaSwapForCausalLM.from_pretrained / AutoProcessor")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


def train(args: argparse.Namespace) -> int:
    from .training import Recipe, default_recipe, describe_plan, run_recipe

    recipe = Recipe.from_yaml(args.config) if args.config else default_recipe()
    if args.output_dir:
        recipe.output_dir = args.output_dir
    for assignment in args.set or []:
        recipe = recipe.with_override(assignment)
    if args.dry_run:
        print(describe_plan(recipe, args.num_processes))
        return 0
    summary = run_recipe(recipe, resume_from_checkpoint=args.resume_from_checkpoint)
    before, after = summary.get("eval_before", {}), summary.get("eval", {})
    if after:
        print(f"accuracy before training {before.get('accuracy', 0):.1%} -> after {after['accuracy']:.1%}")
    print(f"outputs in {summary['output_dir']}: the final model, TensorBoard logs (<stage>/runs), train_summary.json")
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None, help="recipe YAML (recipes/configs/*.yaml); default: tiny offline")
    parser.add_argument("--output_dir", "--output-dir", default=None, help="override the recipe's output_dir")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. stages.1.learning_rate=1e-4"
    )
    parser.add_argument(
        "--resume_from_checkpoint",
        "--resume-from-checkpoint",
        nargs="?",
        const=True,
        default=None,
        help="resume: finished stages are reused, the interrupted one continues from its newest checkpoint",
    )
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the resolved plan and stop")
    parser.add_argument("--num-processes", type=int, default=None, help="processes to plan the dry run for")
    return parser


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of recipes/sft.py: the `train` command without the subcommand word."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="sft.py", description="LLaVA two-stage finetuning"))
    return train(parser.parse_args(argv))


def export(args: argparse.Namespace) -> int:
    from . import LlavaSwapForCausalLM, LlavaSwapProcessor, export_hf_llava

    model = LlavaSwapForCausalLM.from_pretrained(args.model)
    processor = LlavaSwapProcessor.from_pretrained(args.model)
    out = export_hf_llava(model, processor, args.out)
    print(f"wrote a native transformers llava checkpoint to {out} (LlavaForConditionalGeneration, vLLM, SGLang)")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from . import tiny

    parser = argparse.ArgumentParser(prog="llava-swap", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="build a tiny VLM offline and ask it about an image")
    demo_parser.add_argument("--family", default="llama3", choices=tiny.LANGUAGE_FAMILIES, help="tiny LLM family")
    demo_parser.add_argument("--vision", default="clip", choices=tiny.VISION_KINDS, help="tiny vision encoder")
    demo_parser.add_argument("--projector", default="mlp2x_gelu", help="mlp2x_gelu (default) or linear")
    demo_parser.add_argument("--question", default="What shape is in the image?")
    demo_parser.add_argument("--max-new-tokens", type=int, default=12)
    demo_parser.add_argument("--save", default=None, help="directory to save the built model and processor")
    demo_parser.set_defaults(func=demo)

    train_parser = commands.add_parser("train", help="run a training recipe (default: the tiny offline one)")
    add_train_arguments(train_parser).set_defaults(func=train)

    export_parser = commands.add_parser("export", help="convert a saved model to transformers' native llava format")
    export_parser.add_argument("--model", required=True, help="directory of a saved llava-swap model")
    export_parser.add_argument("--out", required=True, help="output directory")
    export_parser.set_defaults(func=export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
