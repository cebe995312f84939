"""Prints pip constraints pinning the stack to the lower bounds pyproject.toml declares (the oldest tested releases).

`.ci/run` installs the project with them in a second virtual environment, so the declared minimums are what CI
tests: a bound raised in pyproject.toml is tested on the next run, with nothing else to edit.
"""

import re
import sys
import tomllib
from pathlib import Path

STACK = ("transformers", "trl", "peft", "accelerate")

dependencies = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
for name in STACK:
    spec = next((d for d in dependencies if re.match(rf"{name}\s*[<>=!~]", d)), None)
    lower = re.search(r">=\s*([\w.]+)", spec or "")
    if lower is None:
        sys.exit(f"pyproject.toml declares no lower bound for {name} ({spec!r}): add `{name}>=X`.")
    print(f"{name}=={lower.group(1)}")
