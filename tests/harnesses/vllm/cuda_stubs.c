/* Stand-ins for PyTorch's CUDA libraries (libc10_cuda.so, libtorch_cuda.so).
 * PyPI's torchvision 0.28.0 is built against CUDA torch: its _C.so and image.so have
 * DT_NEEDED libc10_cuda.so + libtorch_cuda.so, which only the CUDA torch wheel ships.
 * With torch 2.13.0+cpu those two are absent, _C.so fails to dlopen, torchvision's
 * C ops never register, and `import torchvision` dies in _meta_registrations.py
 * ("operator torchvision::nms does not exist").
 * These stubs define exactly the 17 CUDA symbols torchvision references (nm -D
 * --undefined-only, minus what CPU torch exports).  They are only reached when a CUDA
 * tensor hits a torchvision CUDA kernel, which cannot happen with CPU torch; then abort.
 * device_count() honestly returns 0.  CPU kernels (nms, roi_align, ...) are real. */
#include <stdio.h>
#include <stdlib.h>
static void die(const char *s) {
  fprintf(stderr, "torchvision CUDA stub called (%s): this venv has CPU-only torch\n", s);
  abort();
}
#define STUB(sym) void sym(void) { die(#sym); }
#ifdef TORCH_CUDA
STUB(_ZN2at4cuda26getCurrentDevicePropertiesEv)             /* at::cuda::getCurrentDeviceProperties() */
#else
signed char _ZN3c104cuda12device_countEv(void) { return 0; } /* c10::cuda::device_count() */
void *_ZN3c104cuda20CUDACachingAllocator9allocatorE = 0;     /* std::atomic<CUDAAllocator*> allocator */
STUB(_ZN3c104cuda14current_deviceEv)
STUB(_ZN3c104cuda14ExchangeDeviceEa)
STUB(_ZN3c104cuda14MaybeSetDeviceEa)
STUB(_ZN3c104cuda17getStreamFromPoolEba)
STUB(_ZN3c104cuda17getStreamFromPoolEia)
STUB(_ZN3c104cuda20getCurrentCUDAStreamEa)
STUB(_ZN3c104cuda20getDefaultCUDAStreamEa)
STUB(_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE)
STUB(_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_jb)
STUB(_ZN3c104cuda9GetDeviceEPa)
STUB(_ZN3c104cuda9SetDeviceEab)
STUB(_ZNK3c104cuda10CUDAStream11synchronizeEv)
STUB(_ZNK3c104cuda10CUDAStream5queryEv)
STUB(_ZNK3c104cuda10CUDAStream6streamEv)
#endif
