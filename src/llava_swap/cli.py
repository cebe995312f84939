"""The `llava-swap` command line.

`llava-swap demo` builds a tiny vision-language model offline from `llava_swap.tiny` backbones, asks it a question
about a generated image, and prints each step; `--save DIR` keeps the model. `llava-swap export` converts a saved
model to transformers' native llava format.
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
