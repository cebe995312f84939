"""The `llava-swap` command line's front door: arguments, `--help` and `--version`, with nothing heavy imported.

Importing `llava_swap` imports torch and transformers (seconds: registering the model with transformers' Auto classes
needs them), so the parser lives here, outside the package, and `--help` answers at once; a command's work runs in
`llava_swap.cli`, imported once the arguments are known. `recipes/sft.py` enters through `train_main`.
"""

from __future__ import annotations

import argparse
import logging

DESCRIPTION = "Build a LLaVA-style vision-language model on any LLM, train it, swap its LLM, and serve it anywhere."
# Choices, kept here so that --help needs no import; tests/test_cli.py checks them against llava_swap's own lists.
TINY_FAMILIES = ("llama1", "llama2", "llama3", "gemma")
TINY_VISION_KINDS = ("clip", "siglip", "dinov2")
TASK_NAMES = ("seismic_coordinates", "seismic_description", "shapes", "vqa_scene")
TRAIN_EPILOG = """recipe overrides (--set, repeatable; the value is YAML):
  --set stages.1.learning_rate=1e-4      a stage's field, stages counted from 0
  --set stages.1.optim=adafactor         any SFTConfig / TrainingArguments field, in any stage
  --set model.projector=linear           model.* and data.* fields
  --output_dir DIR --seed N --name NAME  the recipe's top-level fields
A run refuses an output_dir that holds a run unless --resume_from_checkpoint or --overwrite_output_dir is given."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (where it has one: not None, not off) and keeps the epilog's lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        off = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not (off or action.required or "%(default)" in text):
            text += " (default: %(default)s)"
        return text


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=logging.DEBUG,
                        help="also print llava-swap's debug messages and transformers' info")  # fmt: skip
    chosen.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=logging.WARNING,
                        help="print warnings and errors only")  # fmt: skip
    parser.set_defaults(verbosity=logging.INFO)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None, help="recipe YAML (recipes/configs/*.yaml); default: tiny offline")
    parser.add_argument("--output_dir", "--output-dir", default=None, help="override the recipe's output_dir")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--name", default=None, help="override the recipe's name")
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
    parser.add_argument(
        "--overwrite_output_dir",
        "--overwrite-output-dir",
        action="store_true",
        help="replace a finished or interrupted run in output_dir (refused otherwise); its feature cache is kept",
    )
    parser.add_argument(
        "--allow_recipe_change",
        "--allow-recipe-change",
        action="store_true",
        help="resume with a recipe that differs from the one the run started with (the changes are recorded)",
    )
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the resolved plan and stop")
    parser.add_argument("--num-processes", type=int, default=None, help="processes to plan the dry run for")
    return parser


STACK = ("transformers", "trl", "peft", "accelerate", "torch")


def version_report() -> str:
    """`llava-swap X` and the installed releases of the stack it runs on (what a bug report needs)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return "\n".join(f"{name} {installed(name)}" for name in ("llava-swap", *STACK))


class _PrintVersions(argparse.Action):
    """`--version`, one package a line (argparse's own version action would reflow the lines into one)."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_report())
        parser.exit()


def _subcommand(commands, name: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help shows defaults, running `llava_swap.cli.<name>`."""
    parser = commands.add_parser(name, formatter_class=_Formatter, help=description, **kwargs)
    parser.set_defaults(command=name)
    return parser


def make_parser() -> argparse.ArgumentParser:
    """The `llava-swap` parser; each subcommand's `command` names its function in `llava_swap.cli`."""
    parser = add_verbosity_arguments(
        argparse.ArgumentParser(prog="llava-swap", description=DESCRIPTION, formatter_class=_Formatter)
    )
    parser.add_argument(
        "--version",
        action=_PrintVersions,
        help="print the versions of llava-swap, transformers, TRL, PEFT, accelerate, torch",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = _subcommand(commands, "demo", "build a tiny VLM offline and ask it about an image")
    demo_parser.add_argument("--family", default="llama3", choices=TINY_FAMILIES, help="tiny LLM family")
    demo_parser.add_argument("--vision", default="clip", choices=TINY_VISION_KINDS, help="tiny vision encoder")
    demo_parser.add_argument("--projector", default="mlp2x_gelu", help="mlp2x_gelu (LLaVA-1.5) or linear (LLaVA-1)")
    demo_parser.add_argument("--question", default="What shape is in the image?", help="what to ask")
    demo_parser.add_argument("--max-new-tokens", type=int, default=12, help="length of the answer, at most")
    demo_parser.add_argument("--save", default=None, help="directory to save the built model and processor")

    train = _subcommand(commands, "train", "run a training recipe (default: the tiny offline one)", epilog=TRAIN_EPILOG)
    add_train_arguments(train)

    evaluate_parser = _subcommand(commands, "evaluate", "evaluate a saved model on a task's data")
    evaluate_parser.add_argument("--model", required=True, help="directory of a saved model")
    evaluate_parser.add_argument("--task", required=True, choices=TASK_NAMES, help="the task that scores the answers")
    evaluate_parser.add_argument("--data", required=True, help="the task's data folder (or a LLaVA JSON file)")
    evaluate_parser.add_argument("--split", default="test", help="which split of the data folder")
    evaluate_parser.add_argument("--batch-size", type=int, default=16, help="items generated at once")
    evaluate_parser.add_argument("--limit", type=int, default=None, help="evaluate the first N items only")
    evaluate_parser.add_argument("--out", default=None, help="output folder (default: MODEL/eval/TASK-SPLIT)")

    data_parser = _subcommand(commands, "data", "task data")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    generate_parser = data_commands.add_parser(
        "generate", formatter_class=_Formatter, help="write a task's synthetic data offline"
    )
    generate_parser.add_argument("--task", required=True, choices=TASK_NAMES, help="which task's data")
    generate_parser.add_argument("--out", required=True, help="the data folder to write")
    generate_parser.add_argument("--n", type=int, default=2000, help="training items")
    generate_parser.add_argument("--n-val", type=int, default=None, help="default: n / 20")
    generate_parser.add_argument("--n-test", type=int, default=None, help="default: n / 10")
    generate_parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same data")
    generate_parser.add_argument("--image-size", type=int, default=64, help="image side, in pixels")
    generate_parser.set_defaults(command="generate_data")

    study_parser = _subcommand(commands, "study", "train and compare several backbones under one manifest")
    study_parser.add_argument(
        "--config", default=None, help="study manifest YAML; default: tiny LLaMA-2/3 and Gemma, seeds 0 1 2"
    )
    study_parser.add_argument("--out", default=None, help="study folder (default: the manifest's, outputs/study)")
    study_parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="training seeds, instead of the manifest's (every variant runs once per seed; the data seed stays)",
    )
    study_parser.add_argument(
        "--plan",
        action="store_true",
        help="print one command per (variant, seed) run, to spread them over machines, and the one that merges them",
    )
    study_parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME[@SEED]",
        help="run only these runs (a variant at one seed, or at every seed); then `llava-swap analyze`",
    )

    analyze_parser = _subcommand(commands, "analyze", "rebuild a study's report from its stored records")
    analyze_parser.add_argument("--study", required=True, help="the study folder")

    card_parser = _subcommand(commands, "card", "write a trained model's card (README.md) next to its weights")
    card_parser.add_argument("--model", required=True, help="a trained output folder")
    card_parser.add_argument("--repo", default=None, help="the Hub repo id the card's snippets should name")

    push_parser = _subcommand(commands, "push", "push a trained model and its card to the Hugging Face Hub")
    push_parser.add_argument("--model", required=True, help="a trained output folder")
    push_parser.add_argument("--repo", required=True, help="ORG/NAME")
    push_parser.add_argument(
        "--format",
        choices=("native", "llava_swap"),
        default=None,
        help="default: native transformers llava when the model can be expressed in it, else llava_swap",
    )
    push_parser.add_argument("--private", action="store_true", help="create the repo private")

    export_parser = _subcommand(commands, "export", "convert a saved model to transformers' native llava format")
    export_parser.add_argument("--model", required=True, help="directory of a saved llava-swap model")
    export_parser.add_argument("--out", required=True, help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `llava-swap` console script."""
    return _run(_parse(make_parser(), argv), "llava-swap", argv)


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of recipes/sft.py: the `train` command without the subcommand word."""
    parser = argparse.ArgumentParser(
        prog="sft.py", description="LLaVA two-stage finetuning", formatter_class=_Formatter, epilog=TRAIN_EPILOG
    )
    parser.set_defaults(command="train")
    return _run(_parse(add_verbosity_arguments(add_train_arguments(parser)), argv), "sft.py", argv)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses `argv`; a training setting given as a flag (`--learning_rate 1e-4`, as in TRL's scripts) is refused
    with the override that sets it, since each stage of a recipe has its own."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        hint = ""
        if args.command == "train" and unknown[0].startswith("--"):
            field = unknown[0][2:].split("=")[0].replace("-", "_")
            hint = f"; a recipe's stages each have their own settings: --set stages.N.{field}=VALUE (N from 0)"
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def _run(args: argparse.Namespace, prog: str, argv: list[str] | None) -> int:
    from llava_swap import cli  # the heavy part: torch, transformers

    args.func = getattr(cli, args.command)
    cli.configure_logging(args.verbosity)
    return cli.run_command(args, prog, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
