/* cuda.c: the CUDA backend. Each conv and linear layer gets kernels
 * generated for its shapes and α pattern (codegen/ptx.h), emitted as PTX
 * by LLVM's NVPTX target and loaded with cuModuleLoadDataEx, which JIT-
 * compiles them for the GPU at hand; nvcc is never needed.
 *
 * The driver is opened with dlopen at first use, never linked: a binary
 * linked against libcuda (even the toolkit's stub) refuses to start where
 * the NVIDIA driver is absent, and one binary must run on both kinds of
 * machine. So the few driver types and entry points used here are
 * declared below rather than taken from cuda.h, and a build needs no CUDA
 * toolkit at all.
 *
 * This first version is correct, not fast: every call copies its chunk to
 * device memory, launches, synchronises and copies back, under one lock
 * (exec's threads share one context and one stream). A device-resident
 * arena is the next step. Bias gradients are summed on the host, in
 * double like the reference, from the dy the call already holds. */
#include "runtime/backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>

#include "codegen/ptx.h"
#include "runtime/cuda/cu.h"

/* ---- the backend ------------------------------------------------------ */

typedef struct cu_layer {
  int kind;                      /* IR_CONV or IR_LINEAR; -1 not prepared */
  uint8_t *wm, *bm;              /* the pattern compiled (0/1 copies) */
  size_t nw, nb;
  CUmodule mod;
  CUfunction fn[3];              /* fwd, bwd_data, bwd_weight */
  cg_conv_desc cd;               /* conv: shapes, masks pointing at wm/bm */
  cg_linear_desc ld;             /* linear: the same */
} cu_layer;

typedef struct cuda_backend {
  rt_backend pub;
  CUdevice dev;
  CUcontext ctx;                 /* the device's primary context */
  CUstream stream;
  char sm[16];                   /* the device's "sm_XY" */
  cu_layer *layers;
  long serial;                   /* names kernels uniquely */
  pthread_mutex_t lock;          /* one op at a time on the device */
} cuda_backend;

static cuda_backend *CB(rt_backend *b) { return (cuda_backend *)b; }

/* Failures inside an op cannot be returned (the table's ops are void),
 * and training on silently wrong gradients is worse than stopping: an op
 * that fails reports the driver's reason and aborts. */
static void cu_check(CUresult r, const char *what) {
  if (r == 0) return;
  fprintf(stderr, "cuda backend: %s: %s\n", what, cu_str(r));
  abort();
}

static void layer_clear(cu_layer *l) {
  if (l->mod) cu.cuModuleUnload(l->mod);
  free(l->wm), free(l->bm);
  memset(l, 0, sizeof *l);
  l->kind = -1;
}

static uint8_t *norm_mask(const uint8_t *m, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  if (!c) return NULL;
  for (size_t i = 0; i < n; i++) c[i] = (uint8_t)(!m || m[i]);
  return c;
}

static int cuda_prepare(rt_backend *b, int layer, const uint8_t *wmask, const uint8_t *bmask,
                        char *err, size_t errlen) {
  cuda_backend *cb = CB(b);
  const ir_layer *il = &b->g->layers[layer];
  if (il->kind != IR_CONV && il->kind != IR_LINEAR) {
    snprintf(err, errlen, "cuda backend: layer %d is not a conv or linear layer", layer);
    return -1;
  }
  cu_layer *l = &cb->layers[layer];
  int k = il->kind == IR_CONV ? il->k : 1;
  size_t nw = (size_t)il->cout * (size_t)il->cin * (size_t)k * (size_t)k, nb = (size_t)il->cout;
  uint8_t *wm = norm_mask(wmask, nw), *bm = norm_mask(bmask, nb);
  if (!wm || !bm) {
    free(wm), free(bm);
    snprintf(err, errlen, "cuda backend: out of memory");
    return -1;
  }
  /* Unchanged pattern: keep the loaded kernels. */
  if (l->kind == (int)il->kind && l->nw == nw && l->nb == nb && memcmp(l->wm, wm, nw) == 0 &&
      memcmp(l->bm, bm, nb) == 0) {
    free(wm), free(bm);
    return 0;
  }
  pthread_mutex_lock(&cb->lock);
  /* Unloading the old module and loading the new one need the context
   * current on this thread. */
  CUresult r = cu.cuCtxSetCurrent(cb->ctx);
  if (r) {
    snprintf(err, errlen, "cuda backend: cuCtxSetCurrent: %s", cu_str(r));
    free(wm), free(bm);
    pthread_mutex_unlock(&cb->lock);
    return -1;
  }
  layer_clear(l);
  l->kind = (int)il->kind, l->wm = wm, l->bm = bm, l->nw = nw, l->nb = nb;
  l->cd = (cg_conv_desc){il->cin, il->h, il->w, il->cout, k, il->stride, il->pad, wm, bm};
  l->ld = (cg_linear_desc){il->cin, il->cout, wm, bm, 0};
  char names[3][64];
  const char *ops[3] = {"fwd", "bwd_data", "bwd_weight"};
  long id = cb->serial++;
  for (int i = 0; i < 3; i++) snprintf(names[i], sizeof names[i], "ilnas_g%ld_%s", id, ops[i]);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(names[0], ctx);
  int rc = il->kind == IR_CONV
               ? cg_ptx_conv_fwd(m, &l->cd, names[0]) || cg_ptx_conv_bwd_data(m, &l->cd, names[1]) ||
                     cg_ptx_conv_bwd_weight(m, &l->cd, names[2])
               : cg_ptx_linear_fwd(m, &l->ld, names[0]) || cg_ptx_linear_bwd_data(m, &l->ld, names[1]) ||
                     cg_ptx_linear_bwd_weight(m, &l->ld, names[2]);
  char *ptx = NULL;
  if (rc) snprintf(err, errlen, "cuda backend: layer %s: shape too large for the GPU kernels", il->name);
  else rc = cg_ptx_emit(m, cb->sm, &ptx, err, errlen);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!rc) {
    char log[4096] = "";
    CUjit_option opt[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *val[2] = {log, (void *)(uintptr_t)sizeof log};
    r = cu.cuModuleLoadDataEx(&l->mod, ptx, 2, opt, val);
    if (r) {
      snprintf(err, errlen, "cuda backend: loading layer %s's PTX: %s%s%s", il->name, cu_str(r),
               log[0] ? ": " : "", log);
      l->mod = NULL;
      rc = -1;
    }
    for (int i = 0; i < 3 && !rc; i++) {
      r = cu.cuModuleGetFunction(&l->fn[i], l->mod, names[i]);
      if (r) {
        snprintf(err, errlen, "cuda backend: kernel %s: %s", names[i], cu_str(r));
        rc = -1;
      }
    }
  }
  free(ptx);
  if (rc) layer_clear(l);
  pthread_mutex_unlock(&cb->lock);
  return rc;
}

/* Device copies of one call's buffers. */
typedef struct dbuf {
  CUdeviceptr p;
  size_t n;                      /* floats */
} dbuf;

static dbuf dalloc(size_t n) {
  dbuf d = {0, n};
  if (n) cu_check(cu.cuMemAlloc_v2(&d.p, n * sizeof(float)), "cuMemAlloc");
  return d;
}

static dbuf dput(const float *h, size_t n) {
  dbuf d = dalloc(h ? n : 0);
  if (d.n) cu_check(cu.cuMemcpyHtoD_v2(d.p, h, n * sizeof(float)), "cuMemcpyHtoD");
  return d;
}

static void dget(float *h, dbuf d) {
  if (d.n) cu_check(cu.cuMemcpyDtoH_v2(h, d.p, d.n * sizeof(float)), "cuMemcpyDtoH");
}

static void dfree(dbuf d) {
  if (d.p) cu_check(cu.cuMemFree_v2(d.p), "cuMemFree");
}

/* Floats of a strided tensor of n samples: the last sample ends at
 * (n-1)*ns + per. The gaps between samples belong to other tensors, so a
 * buffer written by a kernel is first copied in whole, then out whole. */
static size_t span(int n, long ns, long per) { return n > 0 ? (size_t)((long)(n - 1) * ns + per) : 0; }

static void launch(cuda_backend *cb, CUfunction f, int64_t threads, dbuf a, dbuf b, dbuf c, dbuf d,
                   int64_t n, int64_t a_ns, int64_t b_ns) {
  if (threads <= 0) return;
  void *args[7] = {&a.p, &b.p, &c.p, &d.p, &n, &a_ns, &b_ns};
  unsigned grid = (unsigned)((threads + CG_PTX_BLOCK - 1) / CG_PTX_BLOCK);
  cu_check(cu.cuLaunchKernel(f, grid, 1, 1, CG_PTX_BLOCK, 1, 1, 0, cb->stream, args, NULL), "cuLaunchKernel");
  cu_check(cu.cuStreamSynchronize(cb->stream), "kernel");
}

static cu_layer *op_begin(rt_backend *b, int layer, int kind) {
  cuda_backend *cb = CB(b);
  pthread_mutex_lock(&cb->lock);
  cu_check(cu.cuCtxSetCurrent(cb->ctx), "cuCtxSetCurrent");
  cu_layer *l = &cb->layers[layer];
  if (l->kind != kind) { /* an invariant of exec: prepare runs first */
    fprintf(stderr, "cuda backend: layer %d used before prepare\n", layer);
    abort();
  }
  return l;
}

static void op_end(rt_backend *b) { pthread_mutex_unlock(&CB(b)->lock); }

/* db[o] = sum of dy over the batch (and pixels), in double; masked: 0. */
static void bias_grad(const uint8_t *bm, int nout, int n, const float *dy, long ns, long plane,
                      float *db) {
  for (int o = 0; o < nout; o++) {
    double acc = 0;
    if (bm[o])
      for (int s = 0; s < n; s++) {
        const float *p = dy + (long)s * ns + (long)o * plane;
        float sum = 0;
        for (long i = 0; i < plane; i++) sum += p[i];
        acc += sum;
      }
    db[o] = (float)acc;
  }
}

static const dbuf none = {0, 0};

static void cuda_conv_fwd(rt_backend *b, int layer, const rt_conv_shape *s, const float *x,
                          const float *w, const float *bias, float *y) {
  cu_layer *l = op_begin(b, layer, IR_CONV);
  long xns = s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w;
  long yns = s->y_ns ? s->y_ns : (long)s->cout * s->oh * s->ow;
  dbuf dx = dput(x, span(s->n, xns, (long)s->cin * s->h * s->w)), dw = dput(w, l->nw);
  dbuf db = dput(bias, l->nb), dy = dput(y, span(s->n, yns, (long)s->cout * s->oh * s->ow));
  launch(CB(b), l->fn[0], cg_ptx_conv_threads(&l->cd, CG_PTX_FWD, s->n), dx, dw, db, dy, s->n, xns, yns);
  dget(y, dy);
  dfree(dx), dfree(dw), dfree(db), dfree(dy);
  op_end(b);
}

static void cuda_conv_bwd_data(rt_backend *b, int layer, const rt_conv_shape *s, const float *dy,
                               const float *w, float *dx) {
  cu_layer *l = op_begin(b, layer, IR_CONV);
  long xns = s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w;
  long yns = s->y_ns ? s->y_ns : (long)s->cout * s->oh * s->ow;
  dbuf ddy = dput(dy, span(s->n, yns, (long)s->cout * s->oh * s->ow)), dw = dput(w, l->nw);
  dbuf ddx = dput(dx, span(s->n, xns, (long)s->cin * s->h * s->w));
  launch(CB(b), l->fn[1], cg_ptx_conv_threads(&l->cd, CG_PTX_BWD_DATA, s->n), ddy, dw, ddx, none, s->n,
         yns, xns);
  dget(dx, ddx);
  dfree(ddy), dfree(dw), dfree(ddx);
  op_end(b);
}

static void cuda_conv_bwd_weight(rt_backend *b, int layer, const rt_conv_shape *s, const float *x,
                                 const float *dy, float *dw, float *db) {
  cu_layer *l = op_begin(b, layer, IR_CONV);
  long xns = s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w;
  long yns = s->y_ns ? s->y_ns : (long)s->cout * s->oh * s->ow;
  dbuf dx = dput(x, span(s->n, xns, (long)s->cin * s->h * s->w));
  dbuf ddy = dput(dy, span(s->n, yns, (long)s->cout * s->oh * s->ow)), ddw = dalloc(l->nw);
  /* The kernel writes the active weights only; masked ones must be 0. */
  if (ddw.n) cu_check(cu.cuMemsetD32Async(ddw.p, 0, ddw.n, CB(b)->stream), "cuMemsetD32");
  launch(CB(b), l->fn[2], cg_ptx_conv_threads(&l->cd, CG_PTX_BWD_WEIGHT, s->n), dx, ddy, ddw, none,
         s->n, xns, yns);
  dget(dw, ddw);
  dfree(dx), dfree(ddy), dfree(ddw);
  if (db) bias_grad(l->bm, s->cout, s->n, dy, yns, (long)s->oh * s->ow, db);
  op_end(b);
}

static void cuda_linear_fwd(rt_backend *b, int layer, const rt_linear_shape *s, const float *x,
                            const float *w, const float *bias, float *y) {
  cu_layer *l = op_begin(b, layer, IR_LINEAR);
  long xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  dbuf dx = dput(x, span(s->n, xns, s->in)), dw = dput(w, l->nw), db = dput(bias, l->nb);
  dbuf dy = dput(y, span(s->n, yns, s->out));
  launch(CB(b), l->fn[0], cg_ptx_linear_threads(&l->ld, CG_PTX_FWD, s->n), dx, dw, db, dy, s->n, xns, yns);
  dget(y, dy);
  dfree(dx), dfree(dw), dfree(db), dfree(dy);
  op_end(b);
}

static void cuda_linear_bwd_data(rt_backend *b, int layer, const rt_linear_shape *s, const float *dy,
                                 const float *w, float *dx) {
  cu_layer *l = op_begin(b, layer, IR_LINEAR);
  long xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  dbuf ddy = dput(dy, span(s->n, yns, s->out)), dw = dput(w, l->nw), ddx = dput(dx, span(s->n, xns, s->in));
  launch(CB(b), l->fn[1], cg_ptx_linear_threads(&l->ld, CG_PTX_BWD_DATA, s->n), ddy, dw, ddx, none, s->n,
         yns, xns);
  dget(dx, ddx);
  dfree(ddy), dfree(dw), dfree(ddx);
  op_end(b);
}

static void cuda_linear_bwd_weight(rt_backend *b, int layer, const rt_linear_shape *s, const float *x,
                                   const float *dy, float *dw, float *db) {
  cu_layer *l = op_begin(b, layer, IR_LINEAR);
  long xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  dbuf dx = dput(x, span(s->n, xns, s->in)), ddy = dput(dy, span(s->n, yns, s->out));
  dbuf ddw = dalloc(l->nw);
  if (ddw.n) cu_check(cu.cuMemsetD32Async(ddw.p, 0, ddw.n, CB(b)->stream), "cuMemsetD32");
  launch(CB(b), l->fn[2], cg_ptx_linear_threads(&l->ld, CG_PTX_BWD_WEIGHT, s->n), dx, ddy, ddw, none,
         s->n, xns, yns);
  dget(dw, ddw);
  dfree(dx), dfree(ddy), dfree(ddw);
  if (db) bias_grad(l->bm, s->out, s->n, dy, yns, 1, db);
  op_end(b);
}

static void cuda_free(rt_backend *b) {
  if (!b) return;
  cuda_backend *cb = CB(b);
  if (cb->ctx) cu.cuCtxSetCurrent(cb->ctx);
  if (cb->layers)
    for (int i = 0; i < b->g->n_layers; i++) layer_clear(&cb->layers[i]);
  free(cb->layers);
  if (cb->stream) cu.cuStreamDestroy_v2(cb->stream);
  if (cb->ctx) cu.cuDevicePrimaryCtxRelease_v2(cb->dev);
  pthread_mutex_destroy(&cb->lock);
  free(cb);
}

rt_backend *rt_backend_cuda_new(const ir_graph *g, char *err, size_t errlen) {
  if (cu_open(err, errlen)) return NULL;
  CUresult r = cu.cuInit(0);
  if (r == CUDA_ERROR_NO_DEVICE) {
    snprintf(err, errlen, "no GPU: cuInit found no CUDA device");
    return NULL;
  }
  if (r) {
    snprintf(err, errlen, "no GPU: cuInit failed: %s (CUresult %d)", cu_str(r), r);
    return NULL;
  }
  int count = 0;
  r = cu.cuDeviceGetCount(&count);
  if (r || count < 1) {
    snprintf(err, errlen, "no GPU: cuDeviceGetCount returned %d%s%s", count, r ? ": " : "", r ? cu_str(r) : "");
    return NULL;
  }
  cuda_backend *cb = calloc(1, sizeof *cb);
  if (!cb) {
    snprintf(err, errlen, "cuda backend: out of memory");
    return NULL;
  }
  pthread_mutex_init(&cb->lock, NULL);
  cb->pub = (rt_backend){"cuda", g, cuda_prepare, cuda_conv_fwd, cuda_conv_bwd_data, cuda_conv_bwd_weight,
                         cuda_linear_fwd, cuda_linear_bwd_data, cuda_linear_bwd_weight, cuda_free, 0, NULL,
                         NULL, NULL, 1, 0, 0, 0, NULL};
  cb->layers = calloc((size_t)(g->n_layers > 0 ? g->n_layers : 1), sizeof *cb->layers);
  int major = 0, minor = 0;
  const char *what = "out of memory";
  r = 0;
  if (cb->layers) {
    for (int i = 0; i < g->n_layers; i++) cb->layers[i].kind = -1;
    /* The primary context is the one cuBLAS and the runtime API also use:
     * sharing it avoids a second copy of the device state. */
    if ((r = cu.cuDeviceGet(&cb->dev, 0))) what = "cuDeviceGet";
    else if ((r = cu.cuDevicePrimaryCtxRetain(&cb->ctx, cb->dev))) what = "cuDevicePrimaryCtxRetain";
    else if ((r = cu.cuCtxSetCurrent(cb->ctx))) what = "cuCtxSetCurrent";
    else if ((r = cu.cuStreamCreate(&cb->stream, 0))) what = "cuStreamCreate";
    else if ((r = cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, cb->dev)) ||
             (r = cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, cb->dev)))
      what = "cuDeviceGetAttribute";
    else what = NULL;
  }
  if (what) {
    snprintf(err, errlen, "cuda backend: %s%s%s", what, r ? ": " : "", r ? cu_str(r) : "");
    cuda_free(&cb->pub);
    return NULL;
  }
  snprintf(cb->sm, sizeof cb->sm, "sm_%d%d", major, minor);
  return &cb->pub;
}
