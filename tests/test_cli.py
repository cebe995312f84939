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
