"""The `llava-swap` commands: what each subcommand does, how its outcome is reported, and logging.

`llava-swap train` runs a training recipe (the same as `accelerate launch recipes/sft.py`); with no `--config`, the
tiny offline default. `llava-swap demo` builds a tiny vision-language model offline and asks it about a generated
image. `llava-swap export` converts a saved model to transformers' native llava format. Arguments are parsed by
`llava_swap_cli` (the console script's light front door); `run_command` turns a user's mistake into one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

# The parser and the entry points live in `llava_swap_cli`, which imports nothing heavy (--help answers at once).
from llava_swap_cli import main, make_parser, train_main

# A user's mistake (a bad value, a missing file or package, a folder in the way) is reported in one line, exit 2;
# `-v` shows the traceback. Ctrl-C exits 130.
USER_ERRORS = (ValueError, OSError, ImportError)
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def _demo_image(size: int = 64):
    """A red circle on a white background: something to ask about without any data set."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(220, 30, 30))
    return image


def demo(args: argparse.Namespace) -> int:
    import torch

    from . import tiny
    from .backbones import build_vlm

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
    from accelerate import PartialState

    from .recipes import Recipe, default_recipe, describe_plan
    from .training import run_recipe

    recipe = Recipe.from_yaml(args.config) if args.config else default_recipe()
    for key in ("output_dir", "seed", "name"):  # top-level fields as flags, typed by the parser
        if getattr(args, key) is not None:
            setattr(recipe, key, getattr(args, key))
    for assignment in args.set or []:
        recipe = recipe.with_override(assignment)
    if args.dry_run:
        print(describe_plan(recipe, args.num_processes))
        return 0
    summary = run_recipe(
        recipe,
        resume_from_checkpoint=args.resume_from_checkpoint,
        overwrite_output_dir=args.overwrite_output_dir,
        allow_recipe_change=args.allow_recipe_change,
    )
    if not PartialState().is_main_process:
        return 0  # one process reports
    before, after = summary.eval_before, summary.eval
    if after:  # the task's accuracy where it has one, else its mean per-item score
        headline = "accuracy" if "accuracy" in after else "mean_score"
        print(f"{headline} before training {before.get(headline, 0):.1%} -> after {after[headline]:.1%}")
    print(f"outputs in {summary.output_dir}: the final model, TensorBoard logs (<stage>/runs), train_summary.json")
    return 0


def run_command(args: argparse.Namespace, prog: str, argv: list[str] | None) -> int:
    """Runs the chosen command; a user's mistake is one line on stderr (exit 2), Ctrl-C says how to resume (130)."""
    try:
        return args.func(args)
    except KeyboardInterrupt as stop:
        if os.environ.get("RANK", "0") == "0":  # one process of a distributed launch reports
            where = f" (checkpoint {stop.checkpoint})" if getattr(stop, "checkpoint", None) else ""
            print(f"{prog}: stopped by Ctrl-C{where}.", file=sys.stderr)
            if args.func is train:
                print(f"resume with:\n  {resume_command(prog, argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as error:
        if args.verbosity <= logging.DEBUG:
            raise
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USER_ERROR


def resume_command(prog: str, argv: list[str] | None) -> str:
    """The command that resumes this training run: the same arguments, resuming, never overwriting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    dropped = {
        "--overwrite_output_dir",
        "--overwrite-output-dir",
        "--resume_from_checkpoint",
        "--resume-from-checkpoint",
    }
    kept = [
        arg
        for arg in argv
        if arg not in dropped and not arg.startswith(("--resume_from_checkpoint=", "--resume-from-checkpoint="))
    ]
    launcher = ["accelerate", "launch", sys.argv[0]] if prog == "sft.py" else [prog]
    return shlex.join([*launcher, *kept, "--resume_from_checkpoint"])


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is when a message comes (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the current sys.stdout always wins
        pass


def configure_logging(level: int) -> None:
    """llava-swap's messages on stdout, one a line, from `level` up (library code logs; the command line shows)."""
    import transformers

    logger = logging.getLogger("llava_swap")
    for handler in [h for h in logger.handlers if isinstance(h, _StdoutHandler)]:
        logger.removeHandler(handler)  # one handler however often main() runs
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    if level <= logging.DEBUG:
        transformers.logging.set_verbosity_info()
    elif level >= logging.WARNING:
        transformers.logging.set_verbosity_warning()


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model

    out = args.out or str(Path(args.model) / "eval" / f"{args.task}-{args.split}")
    result = evaluate_model(
        args.model, args.task, args.data, split=args.split, batch_size=args.batch_size, limit=args.limit, out_dir=out
    )
    shown = {k: v for k, v in result.metrics.items() if not isinstance(v, dict)}
    print(f"{args.task} ({args.split}, {result.metrics['n']} items, {result.info['items_per_second']:.1f} items/s):")
    for key, value in shown.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    for key, value in result.metrics.get("calibration", {}).items():
        print(f"  {key}: {value:.4f}")
    print(f"wrote {out}/predictions.jsonl and {out}/metrics.json")
    return 0


def generate_data(args: argparse.Namespace) -> int:
    from .tasks import get_task

    task = get_task(args.task)
    n_test = args.n_test if args.n_test is not None else max(args.n // 10, 1)
    n_val = args.n_val if args.n_val is not None else max(args.n // 20, 1)
    paths = task.generate(
        args.out, n_train=args.n, n_val=n_val, n_test=n_test, seed=args.seed, image_size=args.image_size
    )
    print(f"wrote {args.task} to {args.out}: " + ", ".join(f"{split} {path.name}" for split, path in paths.items()))
    from .integrations.lmms_eval_tasks import write_lmms_eval_task

    yaml_path = write_lmms_eval_task(args.out, args.task)
    print(
        f"lmms-eval task llava_swap_{args.task}: lmms-eval eval --include_path {yaml_path.parent} "
        f"--tasks llava_swap_{args.task} --model llava_swap --model_args pretrained=MODEL"
    )
    return 0


def study(args: argparse.Namespace) -> int:
    from .study import StudyConfig, default_study, plan, run_study, select_jobs

    config = StudyConfig.from_yaml(args.config) if args.config else default_study()
    if args.seeds is not None:
        config = config.with_seeds(args.seeds)
    out = args.out or config.output_dir
    if args.plan:
        print("\n".join(plan(config, out, args.config, args.seeds)))
        return 0
    if args.only is not None:
        select_jobs(config, args.only)  # a name that is no run fails here, before any data is written
    status = run_study(config, out, only=args.only)
    runs = [f"{name} seed {seed} {state}" for name, by_seed in status.items() for seed, state in by_seed.items()]
    print("runs: " + ", ".join(runs))
    if args.only is None:
        print(f"report: {Path(out) / 'report.md'} (numbers in results.json, plots in plots/)")
    else:
        print(f"when every run has finished: llava-swap analyze --study {out}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    from .report import build_report

    print(f"report: {build_report(args.study)} (rebuilt from stored records)")
    return 0


def card(args: argparse.Namespace) -> int:
    from .hub import write_card

    print(f"wrote the model card {write_card(args.model, repo_id=args.repo)}")
    return 0


def push(args: argparse.Namespace) -> int:
    from .hub import push as push_model

    chosen = push_model(args.model, args.repo, format=args.format, private=args.private)
    print(f"pushed {args.model} to {args.repo} in the {chosen} format, with its model card")
    return 0


def export(args: argparse.Namespace) -> int:
    from .interop import export_hf_llava, serving_note
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .processing_llava_swap import LlavaSwapProcessor

    model = LlavaSwapForCausalLM.from_pretrained(args.model)
    processor = LlavaSwapProcessor.from_pretrained(args.model)
    out = export_hf_llava(model, processor, args.out)
    print(
        f"wrote a native transformers llava checkpoint to {out}: {serving_note(model.config.vision_config.model_type)}"
    )
    return 0


__all__ = ["configure_logging", "main", "make_parser", "resume_command", "run_command", "train_main"]


if __name__ == "__main__":
    sys.exit(main())
