# Loaded at interpreter start by torchvision_cpu_stubs.pth (installed by setup.sh beside it, as _torchvision_cpu_stubs).
# Preloads (RTLD_GLOBAL) the CUDA-runtime copy bundled in torchvision.libs/ and the two
# stub libraries, so that PyPI torchvision's _C.so / image.so resolve their DT_NEEDED
# libcudart.so.13, libc10_cuda.so, libtorch_cuda.so by soname. See cuda_stubs.c and setup.sh.
import ctypes as _ct
import glob as _glob
import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
_paths = sorted(_glob.glob(_os.path.join(_here, "torchvision.libs", "libcudart*.so*")))[:1]
_paths += [_os.path.join(_here, "_torchvision_cuda_stubs", n) for n in ("libc10_cuda.so", "libtorch_cuda.so")]
for _p in _paths:  # a failure shows at start-up, naming the file, rather than later as torchvision's nms error
    _ct.CDLL(_p, mode=_ct.RTLD_GLOBAL)
del _ct, _glob, _os, _here, _paths
