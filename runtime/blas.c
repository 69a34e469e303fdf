/* blas.c: dense OpenBLAS kernels that follow the masks as they are at each
 * call, like the reference backend, but at GEMM speed: phase II flips the
 * masks between passes (the candidates α*), which kernels compiled for one
 * pattern cannot follow without a rebuild.
 *
 * Each call multiplies by the weights with the current masks applied (a
 * masked copy, so a stray value under a clear bit is never read), and
 * writes masked weight and bias gradients as exactly zero: the semantics
 * of ref.h, summed in GEMM order. */
#include "runtime/kernels.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/elem.h"

typedef struct blas_backend {
  rt_kernels pub;
  const uint8_t **wmask, **bmask; /* per layer, into the exec's masks */
} blas_backend;

static blas_backend *B(rt_kernels *b) { return (blas_backend *)b; }

static int blas_prepare(rt_kernels *b, int layer, const uint8_t *wmask, const uint8_t *bmask,
                        char *err, size_t errlen) {
  (void)err, (void)errlen;
  B(b)->wmask[layer] = wmask;
  B(b)->bmask[layer] = bmask;
  return 0;
}

/* w with the mask applied; NULL when out of memory. */
static float *masked(const float *w, const uint8_t *m, size_t n) {
  float *c = malloc((n ? n : 1) * sizeof *c);
  if (c)
    for (size_t i = 0; i < n; i++) c[i] = !m || m[i] ? w[i] : 0.0f;
  return c;
}

static float bias_at(const float *bias, const uint8_t *bm, int o) {
  return bias && rt_bias_counts(bm, 0, o) ? bias[o] : 0.0f;
}

static long conv_kc(const rt_conv_shape *s) { return (long)s->cin * s->k * s->k; }
static long xstride(const rt_conv_shape *s) { return s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w; }
static long ystride(const rt_conv_shape *s) { return s->y_ns ? s->y_ns : (long)s->cout * s->oh * s->ow; }

static int blas_conv_fwd(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                          const float *w, const float *bias, float *y) {
  const uint8_t *wm = B(b)->wmask[l], *bm = s->bias_all ? NULL : B(b)->bmask[l];
  long KC = conv_kc(s), P = (long)s->oh * s->ow;
  float *wc = masked(w, wm, (size_t)s->cout * KC), *col = malloc((size_t)(KC * P) * sizeof *col);
  if (!wc || !col) { /* the reference computes the same */
    free(wc), free(col);
    rt_ref_conv_fwd(s, x, w, bias, wm, bm, y);
    return 0;
  }
  for (int i = 0; i < s->n; i++) {
    float *yi = y + i * ystride(s);
    rt_im2col(s, x + i * xstride(s), col);
    for (int co = 0; co < s->cout; co++) {
      float v = bias_at(bias, bm, co);
      for (long q = 0; q < P; q++) yi[co * P + q] = v;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, (int)P, (int)KC, 1.0f, wc,
                (int)KC, col, (int)P, 1.0f, yi, (int)P);
    if (s->relu) rt_relu((long)s->cout * P, yi, yi);
  }
  free(wc), free(col);
  return 0;
}

static int blas_conv_bwd_data(rt_kernels *b, int l, const rt_conv_shape *s, const float *dy,
                               const float *w, float *dx) {
  const uint8_t *wm = B(b)->wmask[l];
  long KC = conv_kc(s), P = (long)s->oh * s->ow;
  float *wc = masked(w, wm, (size_t)s->cout * KC), *col = malloc((size_t)(KC * P) * sizeof *col);
  if (!wc || !col) {
    free(wc), free(col);
    rt_ref_conv_bwd_data(s, dy, w, wm, dx);
    return 0;
  }
  for (int i = 0; i < s->n; i++) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)KC, (int)P, s->cout, 1.0f, wc,
                (int)KC, dy + i * ystride(s), (int)P, 0.0f, col, (int)P);
    rt_col2im_add(s, col, dx + i * xstride(s));
  }
  free(wc), free(col);
  return 0;
}

/* The masks the weight gradients honour: none for phase II's dense one. */
static void wgrad_masks(rt_kernels *b, int l, const uint8_t **wm, const uint8_t **bm) {
  *wm = b->unmasked_wgrad ? NULL : B(b)->wmask[l];
  *bm = b->unmasked_wgrad ? NULL : B(b)->bmask[l];
}

static int blas_conv_bwd_weight(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                                 const float *dy, float *dw, float *db) {
  const uint8_t *wm, *bm;
  wgrad_masks(b, l, &wm, &bm);
  long KC = conv_kc(s), P = (long)s->oh * s->ow;
  float *col = malloc((size_t)(KC * P) * sizeof *col);
  if (!col) {
    rt_ref_conv_bwd_weight(s, x, dy, wm, bm, dw, db);
    return 0;
  }
  memset(dw, 0, (size_t)(s->cout * KC) * sizeof *dw);
  for (int i = 0; i < s->n; i++) {
    rt_im2col(s, x + i * xstride(s), col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, (int)KC, (int)P, 1.0f,
                dy + i * ystride(s), (int)P, col, (int)P, 1.0f, dw, (int)KC);
  }
  free(col);
  if (wm) rt_zero_masked(dw, wm, (size_t)(s->cout * KC));
  if (!db) return 0;
  for (int co = 0; co < s->cout; co++) {
    double acc = 0.0;
    for (int i = 0; i < s->n; i++) acc += rt_sum(P, dy + i * ystride(s) + co * P);
    db[co] = rt_bias_counts(bm, 0, co) ? (float)acc : 0.0f;
  }
  return 0;
}

static long lin_x_ns(const rt_linear_shape *s) { return s->x_ns ? s->x_ns : s->in; }
static long lin_y_ns(const rt_linear_shape *s) { return s->y_ns ? s->y_ns : s->out; }

static int blas_linear_fwd(rt_kernels *b, int l, const rt_linear_shape *s, const float *x,
                            const float *w, const float *bias, float *y) {
  const uint8_t *wm = B(b)->wmask[l], *bm = B(b)->bmask[l];
  float *wc = masked(w, wm, (size_t)s->out * (size_t)s->in);
  if (!wc) {
    rt_ref_linear_fwd(s, x, w, bias, wm, bm, y);
    return 0;
  }
  for (int i = 0; i < s->n; i++)
    for (int o = 0; o < s->out; o++) y[i * lin_y_ns(s) + o] = bias_at(bias, bm, o);
  if (s->n > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->n, s->out, s->in, 1.0f, x,
                (int)lin_x_ns(s), wc, s->in, 1.0f, y, (int)lin_y_ns(s));
  free(wc);
  return 0;
}

static int blas_linear_bwd_data(rt_kernels *b, int l, const rt_linear_shape *s, const float *dy,
                                 const float *w, float *dx) {
  const uint8_t *wm = B(b)->wmask[l];
  float *wc = masked(w, wm, (size_t)s->out * (size_t)s->in);
  if (!wc) {
    rt_ref_linear_bwd_data(s, dy, w, wm, dx);
    return 0;
  }
  if (s->n > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->in, s->out, 1.0f, dy,
                (int)lin_y_ns(s), wc, s->in, 1.0f, dx, (int)lin_x_ns(s));
  free(wc);
  return 0;
}

static int blas_linear_bwd_weight(rt_kernels *b, int l, const rt_linear_shape *s,
                                   const float *x, const float *dy, float *dw, float *db) {
  const uint8_t *wm, *bm;
  wgrad_masks(b, l, &wm, &bm);
  size_t nw = (size_t)s->out * (size_t)s->in;
  if (s->n > 0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, s->in, s->n, 1.0f, dy,
                (int)lin_y_ns(s), x, (int)lin_x_ns(s), 0.0f, dw, s->in);
  else
    memset(dw, 0, nw * sizeof *dw);
  if (wm) rt_zero_masked(dw, wm, nw);
  if (!db) return 0;
  for (int o = 0; o < s->out; o++) {
    double acc = 0.0;
    for (int i = 0; i < s->n; i++) acc += dy[i * lin_y_ns(s) + o];
    db[o] = rt_bias_counts(bm, 0, o) ? (float)acc : 0.0f;
  }
  return 0;
}

static void blas_free(rt_kernels *b) {
  if (!b) return;
  free(B(b)->wmask), free(B(b)->bmask);
  free(b);
}

rt_kernels *rt_kernels_blas_new(const ir_graph *g) {
  blas_backend *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->wmask = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof *r->wmask);
  r->bmask = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof *r->bmask);
  if (!r->wmask || !r->bmask) {
    blas_free(&r->pub);
    return NULL;
  }
  openblas_set_num_threads(1); /* exec runs one chunk per thread already */
  r->pub = (rt_kernels){.name = "blas", .g = g, .prepare = blas_prepare,
                        .conv_fwd = blas_conv_fwd, .conv_bwd_data = blas_conv_bwd_data,
                        .conv_bwd_weight = blas_conv_bwd_weight, .linear_fwd = blas_linear_fwd,
                        .linear_bwd_data = blas_linear_bwd_data,
                        .linear_bwd_weight = blas_linear_bwd_weight, .free = blas_free,
                        .fuses_relu = 1, .threads = 1};
  return &r->pub;
}
