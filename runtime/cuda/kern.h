/* kern.h: one conv or linear layer's GPU kernels, on device pointers.
 *
 * Generated for the layer's shapes and α pattern (kgen/ptx.h), emitted
 * as PTX and loaded into the current context with cuModuleLoadDataEx, whose
 * JIT log is surfaced in the error. A layer runs on its sparse kernels
 * or, where that is faster (dense enough), on cuBLAS sgemm over the
 * masked weights with generated helpers around it. The calls only enqueue
 * work on a stream: the CUDA backend (cuda.c) runs them on its device buffers, the
 * GPU benchmarks (bench/gpu) on theirs.
 *
 *   cu_kern k;
 *   if (cu_kern_build(&k, &(cu_kern_desc){.conv = 1, .cd = d}, "sm_90", err, sizeof err)) ...;
 *   cu_kern_set_dense(&k, cublas_handle, err, sizeof err);  // optional
 *   cu_kern_fwd(&k, stream, x, w, bias, y, n, x_ns, y_ns);
 *   cu_kern_bwd_data(&k, stream, dy, w, dx, n, dy_ns, dx_ns);
 *   cu_kern_bwd_weight(&k, stream, x, dy, dw, db, n, x_ns, dy_ns);
 *   cu_kern_free(&k);
 *
 * Semantics are ref.h's: forward overwrites y (bias 0: none), backward to
 * the input ADDS into dx, weight gradients overwrite dw and db (db 0:
 * none) with exactly 0 at masked weights. Strides are floats between
 * samples. The context must be current on the calling thread.
 */
#ifndef ILNAS_RT_CUDA_KERN_H
#define ILNAS_RT_CUDA_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "kgen/ptx.h"
#include "runtime/cuda/cu.h"

typedef struct cu_kern_desc {
  int conv;                      /* else linear */
  cg_conv_desc cd;               /* conv: shapes and masks (NULL: all active) */
  cg_linear_desc ld;             /* linear: the same */
} cu_kern_desc;

typedef struct cu_kern {
  cu_kern_desc d;                /* masks point at wm, bm */
  uint8_t *wm, *bm;              /* the pattern compiled (0/1 copies) */
  size_t nw, nb;                 /* weights and biases of the layer */
  int64_t nout;                  /* outputs per sample: cout or out */
  int64_t plane;                 /* pixels per output channel (1: linear) */
  int64_t k2;                    /* inputs per output: cin*k*k or in */
  cg_ptx_conv_geom geom;         /* conv: the padded inputs */
  int64_t thr[3][2];             /* per op (cg_ptx_op): threads = [0] + n * [1] */
  CUmodule mod;
  CUdeviceptr tables;            /* the kernels' index tables, one allocation */
  CUfunction fn[4];              /* the sparse kernels: fwd, bwd_data, bwd_weight, bias */
  CUfunction hf[9];              /* helpers: the dense path's, the inputs' preparation, the conv weight gradient's sum */
  /* The dense path (cu_kern_set_dense): cuBLAS on the masked weights. */
  cublasHandle_t blas;           /* 0: the sparse kernels */
  CUdeviceptr maskf;             /* nw floats, 1 at the active weights */
  CUdeviceptr scratch;           /* conv: col and the batch-wide dy */
  size_t scratch_cap;            /* floats */
  int lent;                      /* scratch is the caller's (cu_kern_lend_scratch) */
} cu_kern;

/* How a module of generated kernels is loaded: by default its PTX
 * (cg_ptx_emit) through cuModuleLoadDataEx, the JIT log in the message;
 * the tests' GPU emulation loads the IR itself. 0, or -1 with a message. */
typedef int (*cu_kern_loader)(LLVMModuleRef m, const char *sm, CUmodule *mod, char *err, size_t errlen);
void cu_kern_set_loader(cu_kern_loader load);
/* Loads m (other generated kernels: the device step's) the same way. */
int cu_kern_load(LLVMModuleRef m, const char *sm, CUmodule *mod, char *err, size_t errlen);

/* Builds and loads the kernels; `sm` is the device's "sm_XY". 0, or -1
 * with a message (k is then empty). The sparse kernels are in use. */
int cu_kern_build(cu_kern *k, const cu_kern_desc *d, const char *sm, char *err, size_t errlen);
void cu_kern_free(cu_kern *k);

/* Phase II's kernels of d's layer (its masks are ignored): the dense
 * path alone, on cuBLAS handle h, for every weight and bias. The forward
 * reads the weights as they are (zero where α is clear: exec.h), and the
 * weight and bias gradients are dense, the missing parameters' included;
 * masks may flip between calls. 0, or -1 with a message. */
int cu_kern_build_dense(cu_kern *k, const cu_kern_desc *d, cublasHandle_t h, const char *sm, char *err,
                        size_t errlen);
/* The dense path's scratch for batches of up to n (floats), and the
 * caller's buffer of that size for k to use (shared by layers whose
 * calls run on one stream); k never frees or grows it. */
size_t cu_kern_dense_scratch(const cu_kern *k, int64_t n);
void cu_kern_lend_scratch(cu_kern *k, CUdeviceptr p, size_t floats);

/* 1 when k was built for exactly this layer and pattern. */
int cu_kern_same(const cu_kern *k, const cu_kern_desc *d);

/* Runs the layer on cuBLAS (h, whose stream must be the calls' stream) or,
 * with h 0, on the sparse kernels. 0, or -1 with a message. */
int cu_kern_set_dense(cu_kern *k, cublasHandle_t h, char *err, size_t errlen);

CUresult cu_kern_fwd(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias, CUdeviceptr y,
                     int64_t n, int64_t x_ns, int64_t y_ns);
/* Both backward directions, sharing their work on dy: dx 0 skips the
 * input's gradient, dw 0 the weights' (and db 0 the bias's). */
CUresult cu_kern_bwd(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx,
                     CUdeviceptr dw, CUdeviceptr db, int64_t n, int64_t x_ns, int64_t dy_ns);
CUresult cu_kern_bwd_data(cu_kern *k, CUstream s, CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx, int64_t n,
                          int64_t dy_ns, int64_t dx_ns);
CUresult cu_kern_bwd_weight(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr dw,
                            CUdeviceptr db, int64_t n, int64_t x_ns, int64_t dy_ns);
/* Phase II's dense weight gradient (the missing weights' too) on cuBLAS
 * handle h, whichever path the layer runs on: dw is overwritten. (The
 * bias kernel covers the active biases only; the dense bias gradient is
 * the caller's.) */
CUresult cu_kern_dense_wgrad(cu_kern *k, CUstream s, cublasHandle_t h, CUdeviceptr x, CUdeviceptr dy,
                             CUdeviceptr dw, int64_t n, int64_t x_ns, int64_t dy_ns);

#endif
