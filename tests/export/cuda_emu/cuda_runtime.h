/* cuda_runtime.h stand-in: runs an exported .cu on the CPU, so the
 * kernels' indexing is held to the runtime on machines without a GPU.
 * g++ -x c++ -I tests/export/cuda_emu -c net.cu. Device memory is host
 * memory; a launch runs every (block, thread) in turn, which is exact for
 * these kernels: each thread writes one element and reads only what
 * earlier launches wrote. */
#ifndef ILNAS_CUDA_EMU_H
#define ILNAS_CUDA_EMU_H

#include <cstddef>
#include <cstdlib>
#include <cstring>

#define __global__
#define __device__

struct ilnas_emu_dim { unsigned int x; };
static ilnas_emu_dim blockIdx, threadIdx, blockDim = {256};

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost };

static inline cudaError_t cudaMalloc(void **p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaFree(void *p) {
  std::free(p);
  return cudaSuccess;
}
static inline cudaError_t cudaMemset(void *p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
template <class T> cudaError_t cudaMemcpyToSymbol(T &sym, const void *s, size_t n) {
  if (n > sizeof sym) return cudaErrorMemoryAllocation;
  std::memcpy(&sym, s, n);
  return cudaSuccess;
}
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }

#define ILNAS_LAUNCH(kernel, blocks, ...)                                  \
  do {                                                                     \
    const unsigned int ilnas_nb = (blocks);                                \
    for (unsigned int b_ = 0; b_ < ilnas_nb; b_++)                         \
      for (unsigned int t_ = 0; t_ < blockDim.x; t_++) {                   \
        blockIdx.x = b_, threadIdx.x = t_;                                 \
        kernel(__VA_ARGS__);                                               \
      }                                                                    \
  } while (0)

#endif
