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
