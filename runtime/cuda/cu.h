/* cu.h: the CUDA driver API and cuBLAS, as much of them as ilnas uses,
 * opened with dlopen at first use and never linked.
 *
 * A binary linked against libcuda (even the toolkit's stub) refuses to
 * start where the NVIDIA driver is absent, and one binary must run on both
 * kinds of machine; so the few driver types and entry points are declared
 * here rather than taken from cuda.h, and a build needs no CUDA toolkit.
 * The values of the enums are cuda.h's and cublas_api.h's.
 *
 *   char err[256];
 *   if (cu_open(err, sizeof err)) ...;          // "no CUDA driver: ..."
 *   cu.cuInit(0); ...
 *   if (cublas_open(err, sizeof err) == 0) cublas.cublasCreate_v2(&h);
 */
#ifndef ILNAS_RT_CU_H
#define ILNAS_RT_CU_H

#include <stddef.h>

typedef int CUresult; /* 0 = CUDA_SUCCESS */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;
typedef int CUjit_option;
typedef struct CUarray_st *CUarray;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

/* cuda.h's CUDA_MEMCPY2D (v2), field for field. */
typedef struct CUDA_MEMCPY2D {
  size_t srcXInBytes, srcY;
  int srcMemoryType; /* CU_MEMORYTYPE_* */
  const void *srcHost;
  CUdeviceptr srcDevice;
  CUarray srcArray;
  size_t srcPitch;
  size_t dstXInBytes, dstY;
  int dstMemoryType;
  void *dstHost;
  CUdeviceptr dstDevice;
  CUarray dstArray;
  size_t dstPitch;
  size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
enum {
  CU_JIT_ERROR_LOG_BUFFER = 5, /* CUjit_option */
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CU_MEMORYTYPE_HOST = 1,
  CU_MEMORYTYPE_DEVICE = 2,
  CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1, /* CUstreamCaptureMode */
};

/* The entry points, resolved by name; the _v2 names are what cuda.h's
 * macros map the plain names to since CUDA 3.2 (64-bit sizes). */
#define CU_FUNCS(X)                                                                          \
  X(cuInit, (unsigned))                                                                      \
  X(cuDeviceGetCount, (int *))                                                               \
  X(cuDeviceGet, (CUdevice *, int))                                                          \
  X(cuDeviceGetName, (char *, int, CUdevice))                                                \
  X(cuDeviceGetAttribute, (int *, int, CUdevice))                                            \
  X(cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice))                                       \
  X(cuDevicePrimaryCtxRelease_v2, (CUdevice))                                                \
  X(cuCtxSetCurrent, (CUcontext))                                                            \
  X(cuModuleLoadDataEx, (CUmodule *, const void *, unsigned, CUjit_option *, void **))       \
  X(cuModuleUnload, (CUmodule))                                                              \
  X(cuModuleGetFunction, (CUfunction *, CUmodule, const char *))                             \
  X(cuModuleGetGlobal_v2, (CUdeviceptr *, size_t *, CUmodule, const char *))                 \
  X(cuLaunchKernel, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, \
                     unsigned, CUstream, void **, void **))                                  \
  X(cuMemAlloc_v2, (CUdeviceptr *, size_t))                                                  \
  X(cuMemFree_v2, (CUdeviceptr))                                                             \
  X(cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t))                                    \
  X(cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t))                                          \
  X(cuMemcpyHtoDAsync_v2, (CUdeviceptr, const void *, size_t, CUstream))                     \
  X(cuMemcpyDtoHAsync_v2, (void *, CUdeviceptr, size_t, CUstream))                           \
  X(cuMemcpyDtoDAsync_v2, (CUdeviceptr, CUdeviceptr, size_t, CUstream))                      \
  X(cuMemcpy2DAsync_v2, (const CUDA_MEMCPY2D *, CUstream))                                  \
  X(cuMemHostRegister_v2, (void *, size_t, unsigned))                                        \
  X(cuMemHostUnregister, (void *))                                                           \
  X(cuMemsetD32Async, (CUdeviceptr, unsigned, size_t, CUstream))                             \
  X(cuMemsetD2D32Async, (CUdeviceptr, size_t, unsigned, size_t, size_t, CUstream))            \
  X(cuStreamBeginCapture_v2, (CUstream, int))                                                \
  X(cuStreamEndCapture, (CUstream, CUgraph *))                                               \
  X(cuGraphInstantiateWithFlags, (CUgraphExec *, CUgraph, unsigned long long))               \
  X(cuGraphLaunch, (CUgraphExec, CUstream))                                                  \
  X(cuGraphExecDestroy, (CUgraphExec))                                                       \
  X(cuGraphDestroy, (CUgraph))                                                               \
  X(cuStreamCreate, (CUstream *, unsigned))                                                  \
  X(cuStreamDestroy_v2, (CUstream))                                                          \
  X(cuStreamSynchronize, (CUstream))                                                         \
  X(cuEventCreate, (CUevent *, unsigned))                                                    \
  X(cuEventDestroy_v2, (CUevent))                                                            \
  X(cuEventRecord, (CUevent, CUstream))                                                      \
  X(cuEventSynchronize, (CUevent))                                                           \
  X(cuEventElapsedTime, (float *, CUevent, CUevent))                                         \
  X(cuGetErrorString, (CUresult, const char **))

typedef struct cu_api {
#define X(name, args) CUresult(*name) args;
  CU_FUNCS(X)
#undef X
} cu_api;

/* Filled by cu_open. */
extern cu_api cu;

/* Opens libcuda.so.1 and resolves every entry point, once per process.
 * 0, or -1 with "no CUDA driver: ..." or "CUDA driver too old: ...". */
int cu_open(char *err, size_t errlen);

/* The driver's name for r. */
const char *cu_str(CUresult r);

/* cuBLAS (v2 API). Column-major, as BLAS. */
typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t; /* 0 = CUBLAS_STATUS_SUCCESS */
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };

#define CUBLAS_FUNCS(X)                                                                      \
  X(cublasCreate_v2, (cublasHandle_t *))                                                     \
  X(cublasDestroy_v2, (cublasHandle_t))                                                      \
  X(cublasSetStream_v2, (cublasHandle_t, CUstream))                                          \
  X(cublasSgemm_v2, (cublasHandle_t, int, int, int, int, int, const float *, const float *,  \
                     int, const float *, int, const float *, float *, int))               \
  X(cublasSgemmStridedBatched, (cublasHandle_t, int, int, int, int, int, const float *,      \
                                const float *, int, long long, const float *, int, long long, \
                                const float *, float *, int, long long, int))

typedef struct cublas_api {
#define X(name, args) cublasStatus_t(*name) args;
  CUBLAS_FUNCS(X)
#undef X
} cublas_api;

extern cublas_api cublas;

/* Opens the cuBLAS library (libcublas.so.13, .12 or .11), once per
 * process. 0, or -1 with "no cuBLAS: ...". */
int cublas_open(char *err, size_t errlen);

/* Puts other implementations in the tables (the tests' host emulation of
 * a GPU, tests/gpu/emu_driver.h) before anything opened the libraries:
 * from then on cu_open and cublas_open succeed at once. */
void cu_install(const cu_api *driver, const cublas_api *blas);

#endif
