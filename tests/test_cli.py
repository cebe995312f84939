"""The `llava-swap` command: the demo is the README's main job until training lands."""

from __future__ import annotations

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
