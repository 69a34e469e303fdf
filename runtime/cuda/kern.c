/* kern.c: a layer's GPU kernels (see kern.h). */
#include "runtime/cuda/kern.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>

enum { K_FWD, K_BWD_DATA, K_BWD_WEIGHT, K_BIAS };

void cu_kern_free(cu_kern *k) {
  if (k->mod) cu.cuModuleUnload(k->mod);
  free(k->wm), free(k->bm);
  memset(k, 0, sizeof *k);
}

static size_t weights_of(const cu_kern_desc *d, size_t *nb) {
  if (d->conv) {
    *nb = (size_t)d->cd.cout;
    return (size_t)d->cd.cout * (size_t)d->cd.cin * (size_t)d->cd.k * (size_t)d->cd.k;
  }
  *nb = (size_t)d->ld.out;
  return (size_t)d->ld.out * (size_t)d->ld.in;
}

static int same_mask(const uint8_t *have, const uint8_t *m, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (have[i] != (uint8_t)(!m || m[i])) return 0;
  return 1;
}

int cu_kern_same(const cu_kern *k, const cu_kern_desc *d) {
  if (!k->mod || k->d.conv != d->conv) return 0;
  if (d->conv) {
    const cg_conv_desc *a = &k->d.cd, *b = &d->cd;
    if (a->cin != b->cin || a->h != b->h || a->w != b->w || a->cout != b->cout || a->k != b->k ||
        a->stride != b->stride || a->pad != b->pad)
      return 0;
  } else if (k->d.ld.in != d->ld.in || k->d.ld.out != d->ld.out) {
    return 0;
  }
  size_t nb, nw = weights_of(d, &nb);
  return same_mask(k->wm, d->conv ? d->cd.wm : d->ld.wm, nw) &&
         same_mask(k->bm, d->conv ? d->cd.bm : d->ld.bm, nb);
}

static uint8_t *norm_mask(const uint8_t *m, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  if (c)
    for (size_t i = 0; i < n; i++) c[i] = (uint8_t)(!m || m[i]);
  return c;
}

int cu_kern_build(cu_kern *k, const cu_kern_desc *d, const char *sm, char *err, size_t errlen) {
  static atomic_long serial;
  memset(k, 0, sizeof *k);
  k->d = *d;
  k->nw = weights_of(d, &k->nb);
  k->wm = norm_mask(d->conv ? d->cd.wm : d->ld.wm, k->nw);
  k->bm = norm_mask(d->conv ? d->cd.bm : d->ld.bm, k->nb);
  if (!k->wm || !k->bm) {
    snprintf(err, errlen, "cuda: out of memory");
    cu_kern_free(k);
    return -1;
  }
  if (d->conv) {
    k->d.cd.wm = k->wm, k->d.cd.bm = k->bm;
    int oh = (d->cd.h + 2 * d->cd.pad - d->cd.k) / d->cd.stride + 1;
    int ow = (d->cd.w + 2 * d->cd.pad - d->cd.k) / d->cd.stride + 1;
    k->nout = d->cd.cout, k->plane = (int64_t)oh * ow;
  } else {
    k->d.ld.wm = k->wm, k->d.ld.bm = k->bm;
    k->nout = d->ld.out, k->plane = 1;
  }
  /* Kernel names are unique in the process: modules of one context may
   * be loaded side by side while a layer is being replaced. */
  long id = atomic_fetch_add(&serial, 1);
  static const char *const ops[4] = {"fwd", "bwd_data", "bwd_weight", "bias"};
  char names[4][64];
  for (int i = 0; i < 4; i++) snprintf(names[i], sizeof names[i], "ilnas_k%ld_%s", id, ops[i]);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(names[0], ctx);
  int rc = d->conv ? cg_ptx_conv_fwd(m, &k->d.cd, names[0]) || cg_ptx_conv_bwd_data(m, &k->d.cd, names[1]) ||
                         cg_ptx_conv_bwd_weight(m, &k->d.cd, names[2])
                   : cg_ptx_linear_fwd(m, &k->d.ld, names[0]) || cg_ptx_linear_bwd_data(m, &k->d.ld, names[1]) ||
                         cg_ptx_linear_bwd_weight(m, &k->d.ld, names[2]);
  rc = rc || cg_ptx_bias_grad(m, k->nout, k->plane, k->bm, names[3]);
  char *ptx = NULL;
  if (rc) snprintf(err, errlen, "cuda: shape too large for the GPU kernels");
  else rc = cg_ptx_emit(m, sm, &ptx, err, errlen);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!rc) {
    char log[4096] = "";
    CUjit_option opt[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *val[2] = {log, (void *)(uintptr_t)sizeof log};
    CUresult r = cu.cuModuleLoadDataEx(&k->mod, ptx, 2, opt, val);
    if (r) {
      snprintf(err, errlen, "cuda: loading the PTX: %s%s%s", cu_str(r), log[0] ? ": " : "", log);
      k->mod = NULL;
      rc = -1;
    }
    for (int i = 0; i < 4 && !rc; i++)
      if ((r = cu.cuModuleGetFunction(&k->fn[i], k->mod, names[i]))) {
        snprintf(err, errlen, "cuda: kernel %s: %s", names[i], cu_str(r));
        rc = -1;
      }
  }
  free(ptx);
  if (rc) cu_kern_free(k);
  return rc;
}

static CUresult launch(CUfunction f, CUstream s, int64_t threads, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c,
                       CUdeviceptr d, int64_t n, int64_t a_ns, int64_t b_ns) {
  if (threads <= 0) return 0;
  void *args[7] = {&a, &b, &c, &d, &n, &a_ns, &b_ns};
  unsigned grid = (unsigned)((threads + CG_PTX_BLOCK - 1) / CG_PTX_BLOCK);
  return cu.cuLaunchKernel(f, grid, 1, 1, CG_PTX_BLOCK, 1, 1, 0, s, args, NULL);
}

static int64_t threads_of(const cu_kern *k, cg_ptx_op op, int64_t n) {
  return k->d.conv ? cg_ptx_conv_threads(&k->d.cd, op, n) : cg_ptx_linear_threads(&k->d.ld, op, n);
}

CUresult cu_kern_fwd(const cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias,
                     CUdeviceptr y, int64_t n, int64_t x_ns, int64_t y_ns) {
  return launch(k->fn[K_FWD], s, threads_of(k, CG_PTX_FWD, n), x, w, bias, y, n, x_ns, y_ns);
}

CUresult cu_kern_bwd_data(const cu_kern *k, CUstream s, CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx,
                          int64_t n, int64_t dy_ns, int64_t dx_ns) {
  return launch(k->fn[K_BWD_DATA], s, threads_of(k, CG_PTX_BWD_DATA, n), dy, w, dx, 0, n, dy_ns, dx_ns);
}

CUresult cu_kern_bwd_weight(const cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr dw,
                            CUdeviceptr db, int64_t n, int64_t x_ns, int64_t dy_ns) {
  /* The kernels write (or add into) the active weights only: masked ones
   * are zeroed here, and so is db, which is summed by atomics. */
  CUresult r = cu.cuMemsetD32Async(dw, 0, k->nw, s);
  if (!r) r = launch(k->fn[K_BWD_WEIGHT], s, threads_of(k, CG_PTX_BWD_WEIGHT, n), x, dy, dw, 0, n, x_ns, dy_ns);
  if (!r && db) r = cu.cuMemsetD32Async(db, 0, k->nb, s);
  if (!r && db) r = launch(k->fn[K_BIAS], s, n * k->nout, dy, 0, db, 0, n, dy_ns, 0);
  return r;
}
