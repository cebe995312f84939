"""The `llava-swap` command: the demo is the README's main job until training lands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava_swap.cli import main


@pytest.mark.parametrize(("family", "vision"), [("llama3", "clip"), ("gemma", "siglip")])
def test_demo_builds_answers_and_saves(tmp_path, capsys, family, vision):
    assert main(["demo", "--family", family, "--vision", vision, "--save", str(tmp_path / "vlm")]) == 0
    printed = capsys.readouterr().out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "done in"):
        assert step in printed
    assert f"family={family}" in printed and "16 image tokens per image" in printed
    assert (tmp_path / "vlm" / "model.safetensors").exists() and (tmp_path / "vlm" / "processor_config.json").exists()


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "llava_swap.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "demo" in result.stdout and "export" in result.stdout


def test_version_names_the_package_and_its_stack(capsys):
    from importlib.metadata import version

    import llava_swap
    from llava_swap.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"llava-swap {llava_swap.__version__}"
    assert lines[1:] == [f"{name} {version(name)}" for name in ("transformers", "trl", "peft", "accelerate", "torch")]


def test_quiet_and_verbose_set_which_library_messages_the_command_prints(capsys):
    import logging

    import transformers

    from llava_swap.cli import configure_logging, make_parser

    library = logging.getLogger("llava_swap.training")  # library modules log; the command line decides what shows
    try:
        for flags, shown in (([], ["info", "warning"]), (["-q"], ["warning"]), (["-v"], ["debug", "info", "warning"])):
            args = make_parser().parse_args([*flags, "export", "--model", "m", "--out", "o"])
            configure_logging(args.verbosity)
            configure_logging(args.verbosity)  # again: still one handler, so each message shows once
            library.debug("debug")
            library.info("info")
            library.warning("warning")
            assert capsys.readouterr().out.split() == shown, flags
    finally:
        logging.getLogger("llava_swap").setLevel(logging.NOTSET)
        transformers.logging.set_verbosity_error()
    with pytest.raises(SystemExit):
        make_parser().parse_args(["-q", "-v", "export", "--model", "m", "--out", "o"])  # one or the other


# Runs the command line in a child process and reports its peak memory on stderr (what a user's machine sees).
_MEASURED_MAIN = """
import resource, sys
from llava_swap.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _run_cli(*args, cwd=None) -> tuple[int, str, int]:
    """(exit code, stderr without the memory line, peak resident memory in MB) of `llava-swap ARGS`."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED_MAIN, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )
    lines = result.stderr.splitlines()
    peak = int(next(line.split()[1] for line in lines if line.startswith("peak_rss_kb")))
    return result.returncode, "\n".join(line for line in lines if not line.startswith("peak_rss_kb")), peak // 1024


def test_a_folder_that_is_not_a_vlm_is_refused_from_its_config(tmp_path):
    """A LLaMA-7B-sized plain LLM folder (config only): refused in one line before any weight is allocated, for
    evaluate and export alike; missing folders say 'not found', never 'could not connect'."""
    from transformers import LlamaConfig

    LlamaConfig().save_pretrained(tmp_path / "llama-7b")  # 6.7B parameters, were it built
    cases = {
        ("evaluate", "--model", str(tmp_path / "llama-7b"), "--task", "vqa_scene", "--data", "x"): (
            "is not a llava-swap or llava model but a plain 'llama' language model: build a vision-language model "
            "from it with llava_swap.build_vlm"
        ),
        ("export", "--model", str(tmp_path / "llama-7b"), "--out", str(tmp_path / "out")): "a plain 'llama'",
        ("evaluate", "--model", "outputs/nope", "--task", "vqa_scene", "--data", "x"): (
            "outputs/nope not found: no such folder here (offline, the Hub was not consulted)"
        ),
        ("export", "--model", str(tmp_path), "--out", str(tmp_path / "out")): "a folder without config.json",
    }
    for args, message in cases.items():
        code, error, peak_mb = _run_cli(*args, cwd=tmp_path)
        assert code == 2, (args, error)
        assert error == f"llava-swap: error: {error.split('error: ', 1)[1]}" and error.count("\n") == 0, error
        assert message in error
        assert "connect" not in error
        assert peak_mb < 2048
    assert not (tmp_path / "out").exists()


def test_help_imports_nothing_heavy_and_shows_defaults():
    """`llava-swap --help` (and every subcommand's) parses without importing torch, transformers or llava_swap, so
    it answers at once; each option with a default shows it."""
    probe = """
import contextlib, io, json, sys
import llava_swap_cli
helps = {}
for command in ([], ["demo"], ["train"], ["evaluate"], ["data", "generate"], ["study"], ["push"], ["export"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        llava_swap_cli.make_parser().parse_args([*command, "--help"])
    helps[" ".join(command)] = out.getvalue()
print(sorted(name for name in ("torch", "transformers", "llava_swap") if name in sys.modules))
print(json.dumps(helps))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported, helps = result.stdout.splitlines()
    assert imported == "[]"
    helps = json.loads(helps)
    assert "(default: llama3)" in helps["demo"] and "(default: 2000)" in helps["data generate"]
    assert "(default: test)" in helps["evaluate"] and "(default: None)" not in helps["train"]
    assert "--set stages.1.optim=adafactor" in helps["train"] and "--overwrite_output_dir" in helps["train"]


def test_the_front_doors_choices_are_llava_swaps_own():
    import llava_swap_cli
    from llava_swap import tiny
    from llava_swap.tasks import TASKS

    assert llava_swap_cli.TINY_FAMILIES == tiny.LANGUAGE_FAMILIES
    assert llava_swap_cli.TINY_VISION_KINDS == tiny.VISION_KINDS
    assert list(llava_swap_cli.TASK_NAMES) == sorted(TASKS)


def test_top_level_recipe_fields_as_flags(capsys):
    assert main(["train", "--dry-run", "--seed", "7", "--name", "mine", "--output_dir", "runs/7"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "recipe 'mine' -> runs/7 (seed 7, 1 process(es))"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dry-run", "--seed", "seven"])
    assert exit_info.value.code == 2 and "invalid int value: 'seven'" in capsys.readouterr().err


def test_a_training_setting_given_as_a_flag_names_the_override(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--learning_rate", "1e-4"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --learning_rate 1e-4; a recipe's stages each have their own settings: " in error
    assert "--set stages.N.learning_rate=VALUE" in error
