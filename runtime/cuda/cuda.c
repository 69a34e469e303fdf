/* cuda.c: the CUDA kernel set. Each conv and linear layer gets kernels
 * generated for its shapes and α pattern (runtime/cuda/kern.h over
 * kgen/ptx.h), emitted as PTX by LLVM's NVPTX target and loaded with
 * cuModuleLoadDataEx, which JIT-compiles them for the GPU at hand; nvcc
 * is never needed. The driver is opened with dlopen (cu.h).
 *
 * The host step (host.c) runs the graph ops on the host: each call
 * copies its tensors into device buffers kept for the run (grown, never freed
 * between calls), packed (only the tensor's own floats of each sample's
 * arena cross), launches, and copies the results back, all on one stream
 * under one lock. The backend asks for the whole batch in one call
 * (whole_batch) and gives each backward both directions at once (conv_bwd,
 * linear_bwd), so a layer's step costs one round trip, not one per
 * thread and direction. Bias gradients are summed on the device.
 *
 * Each layer runs on its sparse kernels or on cuBLAS over the masked
 * weights, whichever a timed step at prepare finds faster for the batch
 * ($ILNAS_CUDA_PATH=sparse|dense forces one). */
#include "runtime/kernels.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/kern.h"

/* ---- the backend ------------------------------------------------------ */

/* A device buffer kept across calls, grown on demand. */
typedef struct dbuf {
  CUdeviceptr p;
  size_t cap;                    /* floats */
} dbuf;

enum { B_X, B_W, B_BIAS, B_Y, B_DY, B_DX, B_DW, B_DB, N_BUF };

/* Which path a layer runs on: the faster by measurement at each prepare
 * (PATH_AUTO), or forced by $ILNAS_CUDA_PATH=sparse|dense. */
enum { PATH_AUTO, PATH_SPARSE, PATH_DENSE };

typedef struct cuda_backend {
  rt_kernels pub;
  cublasHandle_t blas;           /* 0: no cuBLAS here, every layer sparse */
  int path;
  CUdevice dev;
  CUcontext ctx;                 /* the device's primary context */
  CUstream stream;
  char sm[16];                   /* the device's "sm_XY" */
  cu_kern *layers;               /* per layer; empty (mod NULL) until prepared */
  dbuf buf[N_BUF];
  void *pinned[4];               /* host ranges page-locked (host_memory) */
  int npinned;
  pthread_mutex_t lock;          /* one op at a time on the device */
  CUresult fail;                 /* the op's first failure; 0: none */
} cuda_backend;

static cuda_backend *CB(rt_kernels *b) { return (cuda_backend *)b; }

/* A driver call's failure inside an op: the first is kept (cb->fail and
 * the message in pub.error), every later call of the op is skipped, and
 * the op returns -1 (op_end). Training on silently wrong gradients would
 * be worse than stopping; the exec stops the run with the message. */
static CUresult cu_check(cuda_backend *cb, CUresult r, const char *what) {
  if (r && !cb->fail) {
    cb->fail = r;
    snprintf(cb->pub.error, sizeof cb->pub.error, "cuda backend: %s: %s (CUresult %d)", what, cu_str(r), (int)r);
  }
  return r;
}

static int choose_path(cuda_backend *cb, cu_kern *k, char *err, size_t errlen);

static int cuda_prepare(rt_kernels *b, int layer, const uint8_t *wmask, const uint8_t *bmask,
                        char *err, size_t errlen) {
  cuda_backend *cb = CB(b);
  const ir_layer *il = &b->g->layers[layer];
  if (il->kind != IR_CONV && il->kind != IR_LINEAR) {
    snprintf(err, errlen, "cuda backend: layer %d is not a conv or linear layer", layer);
    return -1;
  }
  cu_kern_desc d = {0};
  d.conv = il->kind == IR_CONV;
  if (d.conv) d.cd = (cg_conv_desc){il->cin, il->h, il->w, il->cout, il->k, il->stride, il->pad, wmask, bmask, 0, 0};
  else d.ld = (cg_linear_desc){il->cin, il->cout, wmask, bmask, 0, 0};
  cu_kern *k = &cb->layers[layer];
  if (cu_kern_same(k, &d)) return 0; /* unchanged pattern: keep the loaded kernels */
  pthread_mutex_lock(&cb->lock);
  /* Loading and unloading modules need the context current here. */
  CUresult r = cu.cuCtxSetCurrent(cb->ctx);
  int rc = -1;
  cu_kern nk;
  if (r) snprintf(err, errlen, "cuda backend: cuCtxSetCurrent: %s", cu_str(r));
  else if (cu_kern_build(&nk, &d, cb->sm, err, errlen) == 0) {
    if (choose_path(cb, &nk, err, errlen) == 0) {
      cu_kern_free(k);
      *k = nk;
      rc = 0;
    } else {
      cu_kern_free(&nk);
    }
  }
  if (rc) {
    /* name the layer; the kernel's message follows */
    char why[512];
    snprintf(why, sizeof why, "%s", err);
    snprintf(err, errlen, "cuda backend: layer %s: %s", il->name, why);
  }
  pthread_mutex_unlock(&cb->lock);
  return rc;
}

/* An op begins: the device's lock, its context, the layer's kernels
 * (NULL, and the op fails, when the layer was never prepared). */
static cu_kern *op_begin(rt_kernels *b, int layer) {
  cuda_backend *cb = CB(b);
  pthread_mutex_lock(&cb->lock);
  cb->fail = 0;
  cu_check(cb, cu.cuCtxSetCurrent(cb->ctx), "cuCtxSetCurrent");
  cu_kern *k = &cb->layers[layer];
  if (!k->mod && !cb->fail) { /* an invariant of exec: prepare runs first */
    cb->fail = CUDA_ERROR_INVALID_HANDLE;
    snprintf(b->error, sizeof b->error, "cuda backend: layer %d used before prepare", layer);
  }
  return cb->fail ? NULL : k;
}

/* The op ends: its work done, the lock released; 0, or -1 with the first
 * failure in b->error. */
static int op_end(rt_kernels *b) {
  cuda_backend *cb = CB(b);
  if (!cb->fail) cu_check(cb, cu.cuStreamSynchronize(cb->stream), "a kernel");
  int rc = cb->fail ? -1 : 0;
  pthread_mutex_unlock(&cb->lock);
  return rc;
}

/* Buffer i, at least n floats (contents undefined). */
static CUdeviceptr dev(cuda_backend *cb, int i, size_t n) {
  dbuf *d = &cb->buf[i];
  if (cb->fail) return 0;
  if (n > d->cap) {
    if (d->p) cu_check(cb, cu.cuMemFree_v2(d->p), "cuMemFree");
    d->p = 0, d->cap = 0;
    size_t want = n + n / 4; /* room for a little growth */
    cu_check(cb, cu.cuMemAlloc_v2(&d->p, want * sizeof(float)), "cuMemAlloc");
    d->cap = want;
  }
  return d->p;
}

/* Buffer i holding n floats of h (NULL: none, 0). */
static CUdeviceptr put(cuda_backend *cb, int i, const float *h, size_t n) {
  if (!h || !n || cb->fail) return 0;
  CUdeviceptr p = dev(cb, i, n);
  cu_check(cb, cu.cuMemcpyHtoDAsync_v2(p, h, n * sizeof(float), cb->stream), "cuMemcpyHtoD");
  return p;
}

static void get(cuda_backend *cb, float *h, CUdeviceptr p, size_t n) {
  if (h && n && !cb->fail) cu_check(cb, cu.cuMemcpyDtoHAsync_v2(h, p, n * sizeof(float), cb->stream), "cuMemcpyDtoH");
}

/* A tensor of the exec's arena: n samples of `per` floats, `ns` apart (the
 * rest of a sample's arena lies between them). On the device it is packed,
 * and only its own floats cross: one strided copy, or one per sample
 * where the driver refuses the pitch. */
typedef struct strided {
  int n;
  long ns, per;
} strided;

static void copy2d(cuda_backend *cb, strided t, float *h, CUdeviceptr d, int to_dev) {
  if (t.n <= 0 || t.per <= 0 || cb->fail) return;
  size_t row = (size_t)t.per * sizeof(float), pitch = (size_t)t.ns * sizeof(float);
  if (t.ns == t.per || t.n == 1) {
    size_t all = row * (size_t)t.n;
    cu_check(cb, to_dev ? cu.cuMemcpyHtoDAsync_v2(d, h, all, cb->stream) : cu.cuMemcpyDtoHAsync_v2(h, d, all, cb->stream),
             "cuMemcpy");
    return;
  }
  CUDA_MEMCPY2D c;
  memset(&c, 0, sizeof c);
  c.WidthInBytes = row, c.Height = (size_t)t.n;
  if (to_dev) {
    c.srcMemoryType = CU_MEMORYTYPE_HOST, c.srcHost = h, c.srcPitch = pitch;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE, c.dstDevice = d, c.dstPitch = row;
  } else {
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE, c.srcDevice = d, c.srcPitch = row;
    c.dstMemoryType = CU_MEMORYTYPE_HOST, c.dstHost = h, c.dstPitch = pitch;
  }
  if (cu.cuMemcpy2DAsync_v2(&c, cb->stream) == 0) return;
  for (int i = 0; i < t.n; i++) {
    float *hi = h + (long)i * t.ns;
    CUdeviceptr di = d + (CUdeviceptr)((size_t)i * row);
    cu_check(cb, to_dev ? cu.cuMemcpyHtoDAsync_v2(di, hi, row, cb->stream) : cu.cuMemcpyDtoHAsync_v2(hi, di, row, cb->stream),
             "cuMemcpy");
  }
}

/* Buffer i holding t's samples of h, packed (h NULL: none, 0). */
static CUdeviceptr put_t(cuda_backend *cb, int i, const float *h, strided t) {
  if (!h || t.n <= 0) return 0;
  CUdeviceptr p = dev(cb, i, (size_t)t.n * (size_t)t.per);
  copy2d(cb, t, (float *)h, p, 1);
  return p;
}

static void get_t(cuda_backend *cb, float *h, CUdeviceptr p, strided t) {
  if (h && p) copy2d(cb, t, h, p, 0);
}

typedef struct io {
  long xns, yns, xper, yper;     /* strides, floats per sample */
} io;

static io conv_io(const rt_conv_shape *s) {
  io v = {s->x_ns, s->y_ns, (long)s->cin * s->h * s->w, (long)s->cout * s->oh * s->ow};
  if (!v.xns) v.xns = v.xper;
  if (!v.yns) v.yns = v.yper;
  return v;
}

static io linear_io(const rt_linear_shape *s) {
  io v = {s->x_ns ? s->x_ns : s->in, s->y_ns ? s->y_ns : s->out, s->in, s->out};
  return v;
}

/* On the device every tensor is packed: the kernels see strides of one
 * sample. */
static int fwd(rt_kernels *b, int layer, int n, io v, const float *x, const float *w, const float *bias,
               float *y) {
  cuda_backend *cb = CB(b);
  cu_kern *k = op_begin(b, layer);
  if (!k) return op_end(b);
  strided xt = {n, v.xns, v.xper}, yt = {n, v.yns, v.yper};
  CUdeviceptr dx = put_t(cb, B_X, x, xt), dw = put(cb, B_W, w, k->nw), db = put(cb, B_BIAS, bias, k->nb);
  CUdeviceptr dy = n > 0 ? dev(cb, B_Y, (size_t)n * (size_t)v.yper) : 0;
  if (n > 0) cu_check(cb, cu_kern_fwd(k, cb->stream, dx, dw, db, dy, n, v.xper, v.yper), "forward kernel");
  get_t(cb, y, dy, yt);
  return op_end(b);
}

/* Both backward directions (dx NULL: none, dw NULL: none). */
static int bwd(rt_kernels *b, int layer, int n, io v, const float *x, const float *dy, const float *w,
               float *dx, float *dw, float *db) {
  cuda_backend *cb = CB(b);
  cu_kern *k = op_begin(b, layer);
  if (!k) return op_end(b);
  strided xt = {n, v.xns, v.xper}, yt = {n, v.yns, v.yper};
  CUdeviceptr ddy = put_t(cb, B_DY, dy, yt), dwt = dx ? put(cb, B_W, w, k->nw) : 0;
  CUdeviceptr ddx = dx ? put_t(cb, B_DX, dx, xt) : 0, dxin = dw ? put_t(cb, B_X, x, xt) : 0;
  CUdeviceptr ddw = dw ? dev(cb, B_DW, k->nw) : 0, ddb = dw && db ? dev(cb, B_DB, k->nb) : 0;
  if (n > 0) cu_check(cb, cu_kern_bwd(k, cb->stream, dxin, ddy, dwt, ddx, ddw, ddb, n, v.xper, v.yper), "backward kernels");
  else if (dw) { /* an empty batch: zero gradients */
    cu_check(cb, cu.cuMemsetD32Async(ddw, 0, k->nw, cb->stream), "cuMemsetD32");
    if (ddb) cu_check(cb, cu.cuMemsetD32Async(ddb, 0, k->nb, cb->stream), "cuMemsetD32");
  }
  get_t(cb, dx, ddx, xt);
  get(cb, dw, ddw, k->nw);
  get(cb, db, ddb, k->nb);
  return op_end(b);
}

/* Seconds of one forward and backward (both directions, bias included)
 * of k on n samples of zeros, the median of three after a warm-up; -1
 * when the device failed (cb->fail, the message in pub.error). */
static double time_step(cuda_backend *cb, cu_kern *k, int n) {
  const cu_kern_desc *d = &k->d;
  cb->fail = 0;
  long xper = d->conv ? (long)d->cd.cin * d->cd.h * d->cd.w : d->ld.in, yper = (long)(k->nout * k->plane);
  CUdeviceptr x = dev(cb, B_X, (size_t)(n * xper)), y = dev(cb, B_Y, (size_t)(n * yper));
  CUdeviceptr dx = dev(cb, B_DX, (size_t)(n * xper)), dy = dev(cb, B_DY, (size_t)(n * yper));
  CUdeviceptr w = dev(cb, B_W, k->nw), bias = dev(cb, B_BIAS, k->nb), dw = dev(cb, B_DW, k->nw);
  CUdeviceptr db = dev(cb, B_DB, k->nb);
  CUdeviceptr zero[] = {x, dx, dy, w, bias};
  size_t len[] = {(size_t)(n * xper), (size_t)(n * xper), (size_t)(n * yper), k->nw, k->nb};
  for (int i = 0; i < 5; i++) cu_check(cb, cu.cuMemsetD32Async(zero[i], 0, len[i], cb->stream), "cuMemsetD32");
  CUevent e0 = NULL, e1 = NULL;
  if (!cb->fail) cu_check(cb, cu.cuEventCreate(&e0, 0), "cuEventCreate");
  if (!cb->fail) cu_check(cb, cu.cuEventCreate(&e1, 0), "cuEventCreate");
  float t[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4 && !cb->fail; i++) {
    cu_check(cb, cu.cuEventRecord(e0, cb->stream), "cuEventRecord");
    cu_check(cb, cu_kern_fwd(k, cb->stream, x, w, bias, y, n, xper, yper), "forward kernel");
    cu_check(cb, cu_kern_bwd(k, cb->stream, x, dy, w, dx, dw, db, n, xper, yper), "backward kernels");
    cu_check(cb, cu.cuEventRecord(e1, cb->stream), "cuEventRecord");
    cu_check(cb, cu.cuEventSynchronize(e1), "a kernel");
    cu_check(cb, cu.cuEventElapsedTime(&t[i], e0, e1), "cuEventElapsedTime");
  }
  if (e0) cu.cuEventDestroy_v2(e0);
  if (e1) cu.cuEventDestroy_v2(e1);
  if (cb->fail) return -1;
  /* t[0] warms up; the median of the rest, sorted in place */
  for (int i = 1; i < 4; i++)
    for (int j = i + 1; j < 4; j++)
      if (t[j] < t[i]) {
        float v = t[i];
        t[i] = t[j], t[j] = v;
      }
  return 1e-3 * t[2];
}

/* Puts k on the faster of its two paths for the batch the exec runs, or
 * on the one $ILNAS_CUDA_PATH names (libxsmm decides the same way, by a
 * measured threshold, here measured per layer and pattern). */
static int choose_path(cuda_backend *cb, cu_kern *k, char *err, size_t errlen) {
  if (!cb->blas || cb->path == PATH_SPARSE) return 0;
  if (cu_kern_set_dense(k, cb->blas, err, errlen)) return -1;
  if (cb->path == PATH_DENSE) return 0;
  int n = cb->pub.chunk > 0 ? cb->pub.chunk : 64;
  double dense = time_step(cb, k, n);
  cu_kern_set_dense(k, 0, err, errlen);
  double sparse = dense < 0 ? -1 : time_step(cb, k, n);
  if (sparse < 0) {
    snprintf(err, errlen, "%s (timing the layer's two paths)", cb->pub.error);
    return -1;
  }
  if (dense < sparse) cu_kern_set_dense(k, cb->blas, err, errlen);
  return 0;
}

static int cuda_conv_fwd(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x, const float *w,
                          const float *bias, float *y) {
  return fwd(b, layer, s->n, conv_io(s), x, w, bias, y);
}

static int cuda_conv_bwd_data(rt_kernels *b, int layer, const rt_conv_shape *s, const float *dy,
                               const float *w, float *dx) {
  return bwd(b, layer, s->n, conv_io(s), NULL, dy, w, dx, NULL, NULL);
}

static int cuda_conv_bwd_weight(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x,
                                 const float *dy, float *dw, float *db) {
  return bwd(b, layer, s->n, conv_io(s), x, dy, NULL, NULL, dw, db);
}

static int cuda_conv_bwd(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x, const float *dy,
                          const float *y, const float *w, float *dx, float *dw, float *db) {
  (void)y; /* the backend does not fuse the ReLU */
  return bwd(b, layer, s->n, conv_io(s), x, dy, w, dx, dw, db);
}

static int cuda_linear_fwd(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                            const float *w, const float *bias, float *y) {
  return fwd(b, layer, s->n, linear_io(s), x, w, bias, y);
}

static int cuda_linear_bwd_data(rt_kernels *b, int layer, const rt_linear_shape *s, const float *dy,
                                 const float *w, float *dx) {
  return bwd(b, layer, s->n, linear_io(s), NULL, dy, w, dx, NULL, NULL);
}

static int cuda_linear_bwd_weight(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                                   const float *dy, float *dw, float *db) {
  return bwd(b, layer, s->n, linear_io(s), x, dy, NULL, NULL, dw, db);
}

static int cuda_linear_bwd(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                            const float *dy, const float *w, float *dx, float *dw, float *db) {
  return bwd(b, layer, s->n, linear_io(s), x, dy, w, dx, dw, db);
}

/* Phase II's dense gradient of a layer on cuBLAS, added into the host's
 * dw and db: the pass itself ran on the host (phase II flips masks
 * between passes, and a pattern compiled for each would cost more than
 * the pass). */
static int dense_wgrad(rt_kernels *b, int layer, int n, io v, const float *x, const float *dz, float *dw,
                       float *db, char *err, size_t errlen) {
  cuda_backend *cb = CB(b);
  cu_kern *k = op_begin(b, layer);
  float *h = k ? malloc(k->nw * sizeof *h) : NULL;
  if (!h) {
    int failed = op_end(b);
    snprintf(err, errlen, "%s", failed ? b->error : "cuda backend: out of memory");
    return -1;
  }
  strided xt = {n, v.xns, v.xper}, yt = {n, v.yns, v.yper};
  CUdeviceptr dx = put_t(cb, B_X, x, xt), ddz = put_t(cb, B_DY, dz, yt);
  CUdeviceptr ddw = dev(cb, B_DW, k->nw);
  cu_check(cb, cu_kern_dense_wgrad(k, cb->stream, cb->blas, dx, ddz, ddw, n, v.xper, v.yper),
           "the dense gradient");
  get(cb, h, ddw, k->nw);
  if (op_end(b)) {
    snprintf(err, errlen, "%s (layer %s)", b->error, b->g->layers[layer].name);
    free(h);
    return -1;
  }
  for (size_t i = 0; i < k->nw; i++) dw[i] += h[i];
  free(h);
  /* the biases', missing ones included: sums of dz the host holds anyway
   * (the device's bias kernel covers the active ones only) */
  long plane = v.yper / (long)k->nout;
  for (int i = 0; i < n; i++)
    for (long c = 0; c < (long)k->nout; c++) {
      const float *d = dz + i * v.yns + c * plane;
      float acc = 0;
      for (long q = 0; q < plane; q++) acc += d[q];
      db[c] += acc;
    }
  return 0;
}

static int cuda_conv_dense_wgrad(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x,
                                 const float *dz, float *dw, float *db, char *err, size_t errlen) {
  return dense_wgrad(b, layer, s->n, conv_io(s), x, dz, dw, db, err, errlen);
}

static int cuda_linear_dense_wgrad(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                                   const float *dz, float *dw, float *db, char *err, size_t errlen) {
  return dense_wgrad(b, layer, s->n, linear_io(s), x, dz, dw, db, err, errlen);
}

/* Page-locked, the arena's copies run at the bus's speed, not through the
 * driver's staging buffers. Where the driver refuses (no permission, no
 * memory), the copies stay pageable: slower, the same results. */
static void cuda_host_memory(rt_kernels *b, void *p, size_t bytes) {
  cuda_backend *cb = CB(b);
  if (!p || !bytes || cb->npinned == (int)(sizeof cb->pinned / sizeof cb->pinned[0])) return;
  pthread_mutex_lock(&cb->lock);
  if (cu.cuCtxSetCurrent(cb->ctx) == 0 && cu.cuMemHostRegister_v2(p, bytes, 0) == 0) cb->pinned[cb->npinned++] = p;
  pthread_mutex_unlock(&cb->lock);
}

static void cuda_free(rt_kernels *b) {
  if (!b) return;
  cuda_backend *cb = CB(b);
  if (cb->ctx) cu.cuCtxSetCurrent(cb->ctx);
  for (int i = 0; i < cb->npinned; i++) cu.cuMemHostUnregister(cb->pinned[i]);
  if (cb->layers)
    for (int i = 0; i < b->g->n_layers; i++) cu_kern_free(&cb->layers[i]);
  free(cb->layers);
  for (int i = 0; i < N_BUF; i++)
    if (cb->buf[i].p) cu.cuMemFree_v2(cb->buf[i].p);
  if (cb->blas) cublas.cublasDestroy_v2(cb->blas);
  if (cb->stream) cu.cuStreamDestroy_v2(cb->stream);
  if (cb->ctx) cu.cuDevicePrimaryCtxRelease_v2(cb->dev);
  pthread_mutex_destroy(&cb->lock);
  free(cb);
}

/* The driver opened and initialised, with a device: 0; else -1 with the
 * reason ("no CUDA driver: ...", "no GPU: ..."). */
static int device_ready(char *err, size_t errlen) {
  if (cu_open(err, errlen)) return -1;
  CUresult r = cu.cuInit(0);
  if (r == CUDA_ERROR_NO_DEVICE) {
    snprintf(err, errlen, "no GPU: cuInit found no CUDA device");
    return -1;
  }
  if (r) {
    snprintf(err, errlen, "no GPU: cuInit failed: %s (CUresult %d)", cu_str(r), r);
    return -1;
  }
  int count = 0;
  r = cu.cuDeviceGetCount(&count);
  if (r || count < 1) {
    snprintf(err, errlen, "no GPU: cuDeviceGetCount returned %d%s%s", count, r ? ": " : "", r ? cu_str(r) : "");
    return -1;
  }
  return 0;
}

int rt_cuda_probe(char *what, size_t len) {
  if (device_ready(what, len)) return -1;
  CUdevice d;
  char name[128] = "";
  int major = 0, minor = 0;
  if (cu.cuDeviceGet(&d, 0) || cu.cuDeviceGetName(name, sizeof name, d) ||
      cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d) ||
      cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d)) {
    snprintf(what, len, "no GPU: device 0 cannot be queried");
    return -1;
  }
  snprintf(what, len, "%s, sm_%d%d", name, major, minor);
  return 0;
}

rt_kernels *rt_kernels_cuda_new(const ir_graph *g, char *err, size_t errlen) {
  if (device_ready(err, errlen)) return NULL;
  CUresult r;
  cuda_backend *cb = calloc(1, sizeof *cb);
  if (!cb) {
    snprintf(err, errlen, "cuda backend: out of memory");
    return NULL;
  }
  pthread_mutex_init(&cb->lock, NULL);
  cb->pub = (rt_kernels){.name = "cuda", .g = g, .prepare = cuda_prepare,
                         .conv_fwd = cuda_conv_fwd, .conv_bwd_data = cuda_conv_bwd_data,
                         .conv_bwd_weight = cuda_conv_bwd_weight, .linear_fwd = cuda_linear_fwd,
                         .linear_bwd_data = cuda_linear_bwd_data,
                         .linear_bwd_weight = cuda_linear_bwd_weight, .free = cuda_free,
                         .conv_bwd = cuda_conv_bwd, .linear_bwd = cuda_linear_bwd, .threads = 1,
                         .whole_batch = 1, .host_memory = cuda_host_memory};
  cb->layers = calloc((size_t)(g->n_layers > 0 ? g->n_layers : 1), sizeof *cb->layers);
  int major = 0, minor = 0;
  const char *what = "out of memory";
  r = 0;
  if (cb->layers) {
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
  const char *path = getenv("ILNAS_CUDA_PATH");
  cb->path = !path || !*path || strcmp(path, "auto") == 0 ? PATH_AUTO
             : strcmp(path, "sparse") == 0                ? PATH_SPARSE
             : strcmp(path, "dense") == 0                 ? PATH_DENSE
                                                          : -1;
  if (cb->path < 0) {
    snprintf(err, errlen, "cuda backend: ILNAS_CUDA_PATH is '%s'; it takes auto, sparse or dense", path);
    cuda_free(&cb->pub);
    return NULL;
  }
  /* Without cuBLAS every layer runs on its sparse kernels. */
  char why[256] = "";
  if (cublas_open(why, sizeof why) == 0 && cublas.cublasCreate_v2(&cb->blas) == 0) {
    if (cublas.cublasSetStream_v2(cb->blas, cb->stream)) {
      cublas.cublasDestroy_v2(cb->blas);
      cb->blas = 0;
    }
  } else {
    cb->blas = 0;
  }
  if (!cb->blas && cb->path == PATH_DENSE) {
    snprintf(err, errlen, "cuda backend: ILNAS_CUDA_PATH=dense, but cuBLAS cannot start (%s)",
             why[0] ? why : "cublasCreate failed");
    cuda_free(&cb->pub);
    return NULL;
  }
  /* phase II's dense gradient on cuBLAS; without it, on the host */
  if (cb->blas) {
    cb->pub.conv_dense_wgrad = cuda_conv_dense_wgrad;
    cb->pub.linear_dense_wgrad = cuda_linear_dense_wgrad;
  }
  return &cb->pub;
}

int rt_cuda_kernels_device(rt_kernels *b, CUcontext *ctx, CUstream *s, cublasHandle_t *h, const char **sm) {
  if (!b || strcmp(b->name, "cuda") != 0) return -1;
  cuda_backend *cb = CB(b);
  *ctx = cb->ctx, *s = cb->stream, *h = cb->blas, *sm = cb->sm;
  return 0;
}

cu_kern *rt_cuda_kernels_layer(rt_kernels *b, int layer) {
  cu_kern *k = &CB(b)->layers[layer];
  return k->mod ? k : NULL;
}
