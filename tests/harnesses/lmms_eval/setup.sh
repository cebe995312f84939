#!/usr/bin/env bash
# The real lmms-eval 0.7.3 (PyPI) in its own virtual environment, with llava-swap installed in it (its model plugin
# and task files), for tests/test_lmms_eval.py:
#   bash tests/harnesses/lmms_eval/setup.sh VENV   then   LLAVA_SWAP_LMMS_EVAL_PYTHON=VENV/bin/python pytest -m lmms_eval
# - torchvision is pinned to 0.28.0 so pip keeps the CPU torch 2.13.0 (0.29 would bring a CUDA torch 2.14), then
#   removed: PyPI's torchvision is a CUDA build that fails to import beside the CPU torch, and transformers imports it
#   whenever it is installed. Neither lmms-eval's start-up nor its llava_hf needs it (images go through PIL).
# - decord: lmms-eval's llava_hf imports it at start-up; filelock<4: lmms-eval imports filelock._api.
set -euo pipefail
VENV="${1:?usage: setup.sh VENV}"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
python -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" lmms-eval==0.7.3 torch==2.13.0 torchvision==0.28.0 decord "filelock<4" -e "$ROOT"
"$VENV/bin/pip" uninstall --quiet -y torchvision
"$VENV/bin/python" -c "
import importlib.metadata as m
import lmms_eval.models as models
assert 'llava_swap' in models.list_available_models(), 'llava_swap is not registered with lmms-eval'
print('lmms-eval', m.version('lmms_eval'), 'with llava-swap', m.version('llava-swap'), 'transformers', m.version('transformers'))
"
