"""Where the real serving and evaluation tools run: each in its own virtual environment (their pins differ from ours).

`tests/harnesses/<tool>/setup.sh VENV` builds one; a test finds it through an environment variable
(`LLAVA_SWAP_VLLM_PYTHON`, `LLAVA_SWAP_LMMS_EVAL_PYTHON`) and skips without it, unless
`LLAVA_SWAP_REQUIRE_HARNESSES=1` (set by .ci/run, which builds both) makes a missing one a failure.
"""

from __future__ import annotations

import os

import pytest


def harness_python(variable: str, tool: str) -> str:
    """The Python of `tool`'s environment, named by `variable`; skips (or fails where required) without one."""
    python = os.environ.get(variable)
    if python and os.path.exists(python):
        return python
    reason = f"{tool} not set up: run tests/harnesses/*/setup.sh VENV and set {variable}=VENV/bin/python"
    if os.environ.get("LLAVA_SWAP_REQUIRE_HARNESSES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
