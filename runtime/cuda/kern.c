/* kern.c: a layer's GPU kernels (see kern.h). */
#include "runtime/cuda/kern.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>

enum { K_FWD, K_BWD_DATA, K_BWD_WEIGHT, K_BIAS };
/* The helpers: the dense path's, and the sparse kernels' input
 * preparation (conv: padded x and dy; linear: x batch-wide). */
enum { H_IM2COL, H_COL2IM, H_TO_CM, H_FROM_CM, H_SCALE, H_BIAS_FILL, H_PREP_X, H_PREP_DY, H_WSUM, N_HELPERS };

static void count_all(cu_kern *k);

void cu_kern_free(cu_kern *k) {
  if (k->maskf) cu.cuMemFree_v2(k->maskf);
  if (k->scratch && !k->lent) cu.cuMemFree_v2(k->scratch);
  if (k->tables) cu.cuMemFree_v2(k->tables);
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

/* The tables into one device allocation, 16-byte aligned each, and each
 * table's pointer variable in the module set to its copy. */
static int upload_tables(cu_kern *k, const cg_ptx_table *t, size_t n, char *err, size_t errlen) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += (t[i].bytes + 15) / 16 * 16;
  if (!total) return 0;
  unsigned char *host = malloc(total);
  if (!host) {
    snprintf(err, errlen, "cuda: out of memory");
    return -1;
  }
  CUresult r = cu.cuMemAlloc_v2(&k->tables, total);
  const char *what = "cuMemAlloc";
  size_t at = 0;
  for (size_t i = 0; i < n && !r; i++) {
    memcpy(host + at, t[i].data, t[i].bytes);
    CUdeviceptr var, ptr = k->tables + at;
    size_t vsize = 0;
    if ((r = cu.cuModuleGetGlobal_v2(&var, &vsize, k->mod, t[i].name))) what = t[i].name;
    else if ((r = cu.cuMemcpyHtoD_v2(var, &ptr, sizeof ptr))) what = "cuMemcpyHtoD";
    at += (t[i].bytes + 15) / 16 * 16;
  }
  if (!r && (r = cu.cuMemcpyHtoD_v2(k->tables, host, total))) what = "cuMemcpyHtoD";
  free(host);
  if (r) snprintf(err, errlen, "cuda: the kernels' tables (%s): %s", what, cu_str(r));
  return r ? -1 : 0;
}

static int load_ptx(LLVMModuleRef m, const char *sm, CUmodule *mod, char *err, size_t errlen) {
  char *ptx = NULL;
  if (cg_ptx_emit(m, sm, &ptx, err, errlen)) return -1;
  char log[4096] = "";
  CUjit_option opt[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *val[2] = {log, (void *)(uintptr_t)sizeof log};
  CUresult r = cu.cuModuleLoadDataEx(mod, ptx, 2, opt, val);
  free(ptx);
  if (r) {
    snprintf(err, errlen, "cuda: loading the PTX: %s%s%s", cu_str(r), log[0] ? ": " : "", log);
    *mod = NULL;
    return -1;
  }
  return 0;
}

static cu_kern_loader loader = load_ptx;

void cu_kern_set_loader(cu_kern_loader load) { loader = load ? load : load_ptx; }

int cu_kern_load(LLVMModuleRef m, const char *sm, CUmodule *mod, char *err, size_t errlen) {
  return loader(m, sm, mod, err, errlen);
}

/* The kernels of k (built by cu_kern_build, or with dense set the dense
 * path's alone, cu_kern_build_dense). */
static int build(cu_kern *k, const cu_kern_desc *d, int dense, const char *sm, char *err, size_t errlen) {
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
  k->k2 = (int64_t)(k->nw / k->nb);
  /* Kernel names are unique in the process: modules of one context may
   * be loaded side by side while a layer is being replaced. */
  long id = atomic_fetch_add(&serial, 1);
  static const char *const ops[4 + N_HELPERS] = {"fwd",   "bwd_data", "bwd_weight", "bias",   "im2col", "col2im",
                                                  "to_cm", "from_cm",  "scale",      "bias_fill", "prep_x", "prep_dy",
                                                  "wgrad_sum"};
  char names[4 + N_HELPERS][64];
  for (int i = 0; i < 4 + N_HELPERS; i++) snprintf(names[i], sizeof names[i], "ilnas_k%ld_%s", id, ops[i]);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(names[0], ctx);
  const cg_conv_desc *cd = &k->d.cd;
  cg_ptx_conv_geom *g = &k->geom;
  /* the dense path alone: every bias, no tables */
  const uint8_t *bm = dense ? NULL : k->bm;
  int rc = dense ? d->conv && (cg_ptx_im2col(m, cd, names[4 + H_IM2COL]) || cg_ptx_col2im(m, cd, names[4 + H_COL2IM]))
           : d->conv ? cg_ptx_conv_geom_init(g, cd) || cg_ptx_conv_fwd(m, cd, names[0]) ||
                         cg_ptx_conv_bwd_data(m, cd, names[1]) || cg_ptx_conv_bwd_weight(m, cd, names[2]) ||
                         cg_ptx_conv_wgrad_sum(m, cd, names[4 + H_WSUM]) ||
                         cg_ptx_im2col(m, cd, names[4 + H_IM2COL]) || cg_ptx_col2im(m, cd, names[4 + H_COL2IM]) ||
                         cg_ptx_pad(m, cd->cin, cd->h, cd->w, cd->pad, cd->pad, g->hp, g->wp, names[4 + H_PREP_X]) ||
                         (g->fast_bwd && cg_ptx_pad(m, cd->cout, g->oh, g->ow, cd->k - 1 - cd->pad,
                                                    cd->k - 1 - cd->pad, g->hq, g->wq, names[4 + H_PREP_DY]))
                   : cg_ptx_linear_fwd(m, &k->d.ld, names[0]) || cg_ptx_linear_bwd_data(m, &k->d.ld, names[1]) ||
                         cg_ptx_linear_bwd_weight(m, &k->d.ld, names[2]) ||
                         cg_ptx_to_cm(m, k->k2, 1, names[4 + H_PREP_X]);
  rc = rc || cg_ptx_bias_grad(m, k->nout, k->plane, bm, names[3]) ||
       cg_ptx_to_cm(m, k->nout, k->plane, names[4 + H_TO_CM]) ||
       cg_ptx_from_cm(m, k->nout, k->plane, bm, names[4 + H_FROM_CM]) || cg_ptx_scale(m, names[4 + H_SCALE]) ||
       cg_ptx_bias_fill(m, k->nout, k->plane, bm, names[4 + H_BIAS_FILL]);
  size_t nt = 0;
  cg_ptx_table *tabs = cg_ptx_take_tables(m, &nt);
  if (rc || !tabs) snprintf(err, errlen, "cuda: shape too large for the GPU kernels");
  else rc = loader(m, sm, &k->mod, err, errlen);
  rc = rc || !tabs;
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  for (int i = 0; i < 4 + N_HELPERS && !rc; i++) {
    if (!d->conv && (i == 4 + H_IM2COL || i == 4 + H_COL2IM || i == 4 + H_PREP_DY || i == 4 + H_WSUM))
      continue;
    if (d->conv && !k->geom.fast_bwd && i == 4 + H_PREP_DY) continue;
    if (dense && (i < K_BIAS || i == 4 + H_PREP_X || i == 4 + H_PREP_DY || i == 4 + H_WSUM)) continue;
    CUfunction *f = i < 4 ? &k->fn[i] : &k->hf[i - 4];
    CUresult r = cu.cuModuleGetFunction(f, k->mod, names[i]);
    if (r) {
      snprintf(err, errlen, "cuda: kernel %s: %s", names[i], cu_str(r));
      rc = -1;
    }
  }
  if (!rc) rc = upload_tables(k, tabs, nt, err, errlen);
  cg_ptx_free_tables(tabs, nt);
  if (rc) cu_kern_free(k);
  else if (!dense) count_all(k);
  return rc;
}

int cu_kern_build(cu_kern *k, const cu_kern_desc *d, const char *sm, char *err, size_t errlen) {
  return build(k, d, 0, sm, err, errlen);
}

int cu_kern_build_dense(cu_kern *k, const cu_kern_desc *d, cublasHandle_t h, const char *sm, char *err,
                        size_t errlen) {
  cu_kern_desc all = *d;
  if (all.conv) all.cd.wm = all.cd.bm = NULL;
  else all.ld.wm = all.ld.bm = NULL;
  if (build(k, &all, 1, sm, err, errlen)) return -1;
  k->blas = h;
  return 0;
}

void cu_kern_lend_scratch(cu_kern *k, CUdeviceptr p, size_t floats) {
  k->scratch = p, k->scratch_cap = floats, k->lent = 1;
}

size_t cu_kern_dense_scratch(const cu_kern *k, int64_t n) {
  return k->d.conv ? (size_t)((k->k2 + k->nout) * n * k->plane) : 0;
}

int cu_kern_set_dense(cu_kern *k, cublasHandle_t h, char *err, size_t errlen) {
  k->blas = h;
  if (!h || k->maskf) return 0;
  float *mf = malloc(k->nw * sizeof *mf);
  if (!mf) {
    snprintf(err, errlen, "cuda: out of memory");
    k->blas = 0;
    return -1;
  }
  for (size_t i = 0; i < k->nw; i++) mf[i] = k->wm[i] ? 1.0f : 0.0f;
  CUresult r = cu.cuMemAlloc_v2(&k->maskf, k->nw * sizeof *mf);
  if (!r) r = cu.cuMemcpyHtoD_v2(k->maskf, mf, k->nw * sizeof *mf);
  free(mf);
  if (r) {
    snprintf(err, errlen, "cuda: the dense path's mask: %s", cu_str(r));
    if (k->maskf) cu.cuMemFree_v2(k->maskf);
    k->maskf = 0, k->blas = 0;
    return -1;
  }
  return 0;
}

static CUresult launch(CUfunction f, CUstream s, int64_t threads, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c,
                       CUdeviceptr d, int64_t n, int64_t a_ns, int64_t b_ns) {
  if (threads <= 0) return 0;
  void *args[7] = {&a, &b, &c, &d, &n, &a_ns, &b_ns};
  unsigned grid = (unsigned)((threads + CG_PTX_BLOCK - 1) / CG_PTX_BLOCK);
  return cu.cuLaunchKernel(f, grid, 1, 1, CG_PTX_BLOCK, 1, 1, 0, s, args, NULL);
}

/* A launch's threads: affine in the batch, so two counts at build (the
 * counts walk the whole mask, far too slow for every call). */
static int64_t count_threads(const cu_kern *k, cg_ptx_op op, int64_t n) {
  return k->d.conv ? cg_ptx_conv_threads(&k->d.cd, op, n) : cg_ptx_linear_threads(&k->d.ld, op, n);
}

static int64_t threads_of(const cu_kern *k, cg_ptx_op op, int64_t n) { return k->thr[op][0] + n * k->thr[op][1]; }

static void count_all(cu_kern *k) {
  for (int op = CG_PTX_FWD; op <= CG_PTX_BWD_WEIGHT; op++) {
    k->thr[op][0] = count_threads(k, (cg_ptx_op)op, 0);
    k->thr[op][1] = count_threads(k, (cg_ptx_op)op, 1) - k->thr[op][0];
  }
}

/* cuBLAS's status as a CUresult the callers report: 0, or 999
 * (CUDA_ERROR_UNKNOWN); its own codes do not map onto the driver's. */
static CUresult blas_ok(cublasStatus_t st) { return st ? 999 : 0; }

static CUresult sgemm(cu_kern *k, int ta, int tb, int64_t m, int64_t n, int64_t kk, CUdeviceptr a, int64_t lda,
                      CUdeviceptr b, int64_t ldb, float beta, CUdeviceptr c, int64_t ldc) {
  const float one = 1.0f;
  return blas_ok(cublas.cublasSgemm_v2(k->blas, ta, tb, (int)m, (int)n, (int)kk, &one, (const float *)a, (int)lda,
                                       (const float *)b, (int)ldb, &beta, (float *)c, (int)ldc));
}

/* The layer's scratch, at least `floats`: the sparse kernels' prepared
 * inputs, or the dense path's columns and batch-wide dy. Pending work may
 * read the old buffer, so the stream drains before it is freed. */
static CUresult scratch(cu_kern *k, CUstream s, size_t floats) {
  if (floats <= k->scratch_cap) return 0;
  if (k->lent) return CUDA_ERROR_OUT_OF_MEMORY; /* the lender sized it */
  CUresult r = cu.cuStreamSynchronize(s);
  if (r) return r;
  if (k->scratch) cu.cuMemFree_v2(k->scratch);
  k->scratch = 0, k->scratch_cap = 0;
  if ((r = cu.cuMemAlloc_v2(&k->scratch, floats * sizeof(float)))) return r;
  k->scratch_cap = floats;
  return 0;
}

/* Floats a sample of the sparse kernels' prepared x and dy take. */
static int64_t prep_x_len(const cu_kern *k) { return k->d.conv ? k->geom.xp_ns : k->k2; }
static int64_t prep_dy_len(const cu_kern *k) {
  return k->d.conv ? (k->geom.fast_bwd ? k->geom.dyp_ns : 0) : k->nout;
}

/* conv: x padded; linear: x batch-wide. */
static CUresult prep_x(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr to, int64_t n, int64_t x_ns) {
  int64_t per = k->d.conv ? (int64_t)k->d.cd.cin * k->geom.hp * k->geom.wp : k->k2;
  return launch(k->hf[H_PREP_X], s, n * per, x, 0, to, 0, n, x_ns, 0);
}

/* conv (fast_bwd): dy padded by k-1-pad; linear: dy batch-wide. */
static CUresult prep_dy(cu_kern *k, CUstream s, CUdeviceptr dy, CUdeviceptr to, int64_t n, int64_t dy_ns) {
  if (k->d.conv) return launch(k->hf[H_PREP_DY], s, n * k->geom.dyp_ns, dy, 0, to, 0, n, dy_ns, 0);
  return launch(k->hf[H_TO_CM], s, n * k->nout, dy, 0, to, 0, n, dy_ns, 0);
}

CUresult cu_kern_fwd(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias, CUdeviceptr y,
                     int64_t n, int64_t x_ns, int64_t y_ns) {
  int64_t cols = n * k->plane;
  CUresult r;
  if (!k->blas) { /* the input prepared (padded or batch-wide), then the kernel */
    if ((r = scratch(k, s, (size_t)(n * prep_x_len(k))))) return r;
    if ((r = prep_x(k, s, x, k->scratch, n, x_ns))) return r;
    return launch(k->fn[K_FWD], s, threads_of(k, CG_PTX_FWD, n), k->scratch, w, bias, y, n, 0, y_ns);
  }
  if (!k->d.conv) { /* y = bias, then y += x W^T, column-major: Y^T = W^T X^T */
    r = launch(k->hf[H_BIAS_FILL], s, n * k->nout, 0, 0, bias, y, n, 0, y_ns);
    return r ? r : sgemm(k, CUBLAS_OP_T, CUBLAS_OP_N, k->nout, n, k->k2, w, k->k2, x, x_ns, 1.0f, y, y_ns);
  }
  /* col = im2col(x); ycm[cout][cols] = W col; y = ycm + bias */
  CUdeviceptr col = 0, ycm;
  if ((r = scratch(k, s, (size_t)((k->k2 + k->nout) * cols)))) return r;
  col = k->scratch, ycm = col + (CUdeviceptr)(k->k2 * cols) * sizeof(float);
  if ((r = launch(k->hf[H_IM2COL], s, k->k2 * cols, x, 0, col, 0, n, x_ns, 0))) return r;
  if ((r = sgemm(k, CUBLAS_OP_N, CUBLAS_OP_N, cols, k->nout, k->k2, col, cols, w, k->k2, 0.0f, ycm, cols))) return r;
  return launch(k->hf[H_FROM_CM], s, k->nout * cols, ycm, 0, bias, y, n, 0, y_ns);
}

static CUresult bias_grad(cu_kern *k, CUstream s, CUdeviceptr dy, CUdeviceptr db, int64_t n, int64_t dy_ns) {
  CUresult r = cu.cuMemsetD32Async(db, 0, k->nb, s);
  return r ? r : launch(k->fn[K_BIAS], s, n * k->nout, dy, 0, db, 0, n, dy_ns, 0);
}

CUresult cu_kern_bwd(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx,
                     CUdeviceptr dw, CUdeviceptr db, int64_t n, int64_t x_ns, int64_t dy_ns) {
  CUresult r = 0;
  if (!k->blas) {
    /* scratch: the prepared x, the prepared dy, then (conv) the weight
     * gradient's partial sums */
    int64_t xl = prep_x_len(k) * n, yl = prep_dy_len(k) * n;
    int64_t nnz = k->thr[CG_PTX_BWD_WEIGHT][1], parts = k->d.conv && dw ? cg_ptx_wchunks(n) * nnz : 0;
    if ((r = scratch(k, s, (size_t)(xl + yl + parts)))) return r;
    CUdeviceptr xp = k->scratch, dyp = xp + (CUdeviceptr)xl * sizeof(float);
    CUdeviceptr part = dyp + (CUdeviceptr)yl * sizeof(float);
    /* conv's weight gradient reads dy itself, linear's the batch-wide one */
    int prep = k->d.conv ? dx && k->geom.fast_bwd : 1;
    if (prep) r = prep_dy(k, s, dy, dyp, n, dy_ns);
    if (!r && dx)
      r = launch(k->fn[K_BWD_DATA], s, threads_of(k, CG_PTX_BWD_DATA, n), prep ? dyp : dy, w, dx, 0, n, dy_ns, x_ns);
    /* The kernels write (or add into) the active weights only: masked
     * ones are zeroed here. */
    if (!r && dw) r = cu.cuMemsetD32Async(dw, 0, k->nw, s);
    if (!r && dw) r = prep_x(k, s, x, xp, n, x_ns);
    if (!r && dw && k->d.conv) { /* partial sums per chunk of samples, then their sums */
      r = launch(k->fn[K_BWD_WEIGHT], s, parts, xp, dy, dw, part, n, 0, dy_ns);
      if (!r) r = launch(k->hf[H_WSUM], s, nnz, part, 0, dw, 0, n, 0, 0);
    } else if (!r && dw) {
      r = launch(k->fn[K_BWD_WEIGHT], s, threads_of(k, CG_PTX_BWD_WEIGHT, n), xp, dyp, dw, 0, n, 0, dy_ns);
    }
  } else if (!k->d.conv) {
    /* dX += dY W; dW = dY^T X, then masked (column-major, as for fwd) */
    if (dx) r = sgemm(k, CUBLAS_OP_N, CUBLAS_OP_N, k->k2, n, k->nout, w, k->k2, dy, dy_ns, 1.0f, dx, x_ns);
    if (!r && dw) r = sgemm(k, CUBLAS_OP_N, CUBLAS_OP_T, k->k2, k->nout, n, x, x_ns, dy, dy_ns, 0.0f, dw, k->k2);
    if (!r && dw && k->maskf) r = launch(k->hf[H_SCALE], s, (int64_t)k->nw, k->maskf, 0, dw, 0, (int64_t)k->nw, 0, 0);
  } else {
    /* dycm = to_cm(dy); dcol = W^T dycm, added into dx by col2im; then
     * col = im2col(x) in the same place; dW = dycm col^T, masked */
    int64_t cols = n * k->plane;
    if ((r = scratch(k, s, (size_t)((k->k2 + k->nout) * cols)))) return r;
    CUdeviceptr col = k->scratch, dycm = col + (CUdeviceptr)(k->k2 * cols) * sizeof(float);
    r = launch(k->hf[H_TO_CM], s, k->nout * cols, dy, 0, dycm, 0, n, dy_ns, 0);
    if (!r && dx) r = sgemm(k, CUBLAS_OP_N, CUBLAS_OP_T, cols, k->k2, k->nout, dycm, cols, w, k->k2, 0.0f, col, cols);
    if (!r && dx) r = launch(k->hf[H_COL2IM], s, n * k->d.cd.cin * k->d.cd.h * k->d.cd.w, col, 0, dx, 0, n, 0, x_ns);
    if (!r && dw) r = launch(k->hf[H_IM2COL], s, k->k2 * cols, x, 0, col, 0, n, x_ns, 0);
    if (!r && dw) r = sgemm(k, CUBLAS_OP_T, CUBLAS_OP_N, k->k2, k->nout, cols, col, cols, dycm, cols, 0.0f, dw, k->k2);
    if (!r && dw && k->maskf) r = launch(k->hf[H_SCALE], s, (int64_t)k->nw, k->maskf, 0, dw, 0, (int64_t)k->nw, 0, 0);
  }
  if (!r && dw && db) r = bias_grad(k, s, dy, db, n, dy_ns);
  return r;
}

CUresult cu_kern_bwd_data(cu_kern *k, CUstream s, CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx, int64_t n,
                          int64_t dy_ns, int64_t dx_ns) {
  return cu_kern_bwd(k, s, 0, dy, w, dx, 0, 0, n, dx_ns, dy_ns);
}

CUresult cu_kern_bwd_weight(cu_kern *k, CUstream s, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr dw,
                            CUdeviceptr db, int64_t n, int64_t x_ns, int64_t dy_ns) {
  return cu_kern_bwd(k, s, x, dy, 0, 0, dw, db, n, x_ns, dy_ns);
}

CUresult cu_kern_dense_wgrad(cu_kern *k, CUstream s, cublasHandle_t h, CUdeviceptr x, CUdeviceptr dy,
                             CUdeviceptr dw, int64_t n, int64_t x_ns, int64_t dy_ns) {
  /* the dense path's weight gradient on handle h, without its mask */
  cublasHandle_t had = k->blas;
  CUresult r = 0;
  k->blas = h;
  if (!k->d.conv) {
    r = sgemm(k, CUBLAS_OP_N, CUBLAS_OP_T, k->k2, k->nout, n, x, x_ns, dy, dy_ns, 0.0f, dw, k->k2);
  } else {
    int64_t cols = n * k->plane;
    r = scratch(k, s, (size_t)((k->k2 + k->nout) * cols));
    CUdeviceptr col = k->scratch, dycm = col + (CUdeviceptr)(k->k2 * cols) * sizeof(float);
    if (!r) r = launch(k->hf[H_TO_CM], s, k->nout * cols, dy, 0, dycm, 0, n, dy_ns, 0);
    if (!r) r = launch(k->hf[H_IM2COL], s, k->k2 * cols, x, 0, col, 0, n, x_ns, 0);
    if (!r) r = sgemm(k, CUBLAS_OP_T, CUBLAS_OP_N, k->k2, k->nout, cols, col, cols, dycm, cols, 0.0f, dw, k->k2);
  }
  k->blas = had;
  return r;
}
