/* backend_cases.h: the check every backend (cpu, cuda) must pass: one
 * layer's three ops against the reference kernels, by normalised error,
 * and exact where the semantics are exact (dx accumulates onto what was
 * there, masked dw and db come out 0). Channel-prefix views: samples lie
 * further apart than packed, and the gaps must be left alone. */
#ifndef ILNAS_TESTS_BACKEND_CASES_H
#define ILNAS_TESTS_BACKEND_CASES_H

#include "jitutil.h"
#include "runtime/kernels.h"

#define BC_TOL 1e-5

typedef struct bc_hooks {
  const char *backend;                      /* "cpu", "cuda" */
  void (*created)(rt_kernels *b);           /* before prepare; NULL: nothing */
  void (*prepared)(rt_kernels *b, int layer, const char *what); /* NULL: nothing */
} bc_hooks;

static rt_kernels *bc_backend(const bc_hooks *h, ir_graph *g) {
  char err[1024];
  rt_kernels *b = rt_kernels_new(h->backend, g, err, sizeof err);
  CHECK(b, "%s backend: %s", h->backend, err);
  if (b && h->created) h->created(b);
  return b;
}

/* Zeroes the masked entries, as the runtime guarantees for weights. */
static void bc_apply_mask(float *v, const uint8_t *m, size_t n) {
  if (v)
    for (size_t i = 0; i < n; i++)
      if (!m[i]) v[i] = 0.0f;
}

/* The two weight-gradient checks shared by conv and linear. */
static void bc_check_wgrad(const char *what, const float *dw0, const float *dw1,
                           const uint8_t *wm, size_t nw, const float *db0,
                           const float *db1, const uint8_t *bm, size_t nb) {
  double e = jt_nerr(dw1, dw0, nw);
  CHECK(e <= BC_TOL, "%s: bwd_weight dw error %g", what, e);
  int masked_bad = 0;
  for (size_t i = 0; i < nw; i++) masked_bad += !wm[i] && dw1[i] != 0.0f;
  CHECK(masked_bad == 0, "%s: %d masked dw not exactly 0", what, masked_bad);
  if (!db0) return;
  e = jt_nerr(db1, db0, nb);
  CHECK(e <= BC_TOL, "%s: bwd_weight db error %g", what, e);
  for (size_t i = 0; i < nb; i++) CHECK(bm[i] || db1[i] == 0.0f, "%s: masked db", what);
}

static void bc_conv_case(const bc_hooks *h, int cin, int ih, int iw, int cout, int k,
                         int stride, int pad, int n, double dens, int kernel_gran,
                         int with_bias) {
  char err[1024];
  ir_graph *g = jt_graph(IR_CONV, cin, ih, iw, cout, k, stride, pad);
  rt_kernels *b = bc_backend(h, g);
  if (!b) {
    jt_graph_free(g);
    return;
  }
  rt_conv_shape s = {.n = n, .cin = cin, .h = ih, .w = iw, .cout = cout, .k = k,
                     .stride = stride, .pad = pad};
  rt_conv_shape_finish(&s);
  s.x_ns = (long)(cin + jt_int(0, 2)) * ih * iw + jt_int(0, 3);
  s.y_ns = (long)(cout + jt_int(0, 2)) * s.oh * s.ow + jt_int(0, 3);
  size_t nw = (size_t)cout * cin * k * k, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, kernel_gran ? (size_t)k * k : 1, dens);
  uint8_t *bm = jt_mask((size_t)cout, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)cout) : NULL;
  bc_apply_mask(wt, wm, nw), bc_apply_mask(bias, bm, (size_t)cout);
  float *x = jt_randf(nx), *dy = jt_randf(ny);
  float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
  memcpy(y1, y0, ny * sizeof *y1);
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
  char what[160];
  snprintf(what, sizeof what, "%s conv cin %d %dx%d cout %d k %d s %d p %d n %d dens %.2f %s%s",
           h->backend, cin, ih, iw, cout, k, stride, pad, n, dens,
           kernel_gran ? "kernel" : "weight", with_bias ? "" : " nobias");
  if (h->prepared) h->prepared(b, 0, what);
  rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
  b->conv_fwd(b, 0, &s, x, wt, bias, y1);
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= BC_TOL, "%s: fwd error %g", what, e);
  if (b->fuses_relu) { /* the activation applied inside the forward */
    s.relu = 1;
    rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
    b->conv_fwd(b, 0, &s, x, wt, bias, y1);
    s.relu = 0;
    e = jt_nerr(y1, y0, ny);
    CHECK(e <= BC_TOL, "%s: fwd with fused relu error %g", what, e);
  }
  float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
  memcpy(dx1, dx0, nx * sizeof *dx1);
  rt_ref_conv_bwd_data(&s, dy, wt, wm, dx0);
  b->conv_bwd_data(b, 0, &s, dy, wt, dx1);
  e = jt_nerr(dx1, dx0, nx);
  CHECK(e <= BC_TOL, "%s: bwd_data error %g", what, e);
  float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw);
  float *db0 = jt_randf((size_t)cout), *db1 = jt_randf((size_t)cout);
  rt_ref_conv_bwd_weight(&s, x, dy, wm, bm, dw0, with_bias ? db0 : NULL);
  b->conv_bwd_weight(b, 0, &s, x, dy, dw1, with_bias ? db1 : NULL);
  bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)cout);
  if (b->conv_bwd) { /* the combined backward, with and without dx */
    for (int with_dx = 0; with_dx < 2; with_dx++) {
      float *dx2 = jt_randf(nx), *dxr = malloc(nx * sizeof *dxr);
      memcpy(dxr, dx2, nx * sizeof *dxr);
      if (with_dx) rt_ref_conv_bwd_data(&s, dy, wt, wm, dxr);
      for (size_t i = 0; i < nw; i++) dw1[i] = 1e30f; /* overwritten, not added to */
      for (int i = 0; i < cout; i++) db1[i] = 1e30f;
      b->conv_bwd(b, 0, &s, x, dy, NULL, wt, with_dx ? dx2 : NULL, dw1,
                  with_bias ? db1 : NULL);
      bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)cout);
      e = jt_nerr(dx2, dxr, nx);
      CHECK(e <= BC_TOL, "%s: combined bwd (dx %s) error %g", what, with_dx ? "on" : "off", e);
      free(dx2), free(dxr);
    }
  }
  if (b->conv_bwd && b->fuses_relu) { /* the ReLU's gradient taken inside */
    float *act = jt_randf(ny), *dz = malloc(ny * sizeof *dz), *dya = malloc(ny * sizeof *dya);
    for (size_t i = 0; i < ny; i++) {
      act[i] = act[i] > 0.0f ? act[i] : 0.0f; /* an activation: half of it 0 */
      dz[i] = act[i] > 0.0f ? dy[i] : 0.0f;
    }
    memcpy(dya, dy, ny * sizeof *dya);
    float *dx2 = jt_randf(nx), *dxr = malloc(nx * sizeof *dxr);
    memcpy(dxr, dx2, nx * sizeof *dxr);
    rt_ref_conv_bwd_data(&s, dz, wt, wm, dxr);
    rt_ref_conv_bwd_weight(&s, x, dz, wm, bm, dw0, with_bias ? db0 : NULL);
    s.relu = 1;
    b->conv_bwd(b, 0, &s, x, dya, act, wt, dx2, dw1, with_bias ? db1 : NULL);
    s.relu = 0;
    bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)cout);
    e = jt_nerr(dx2, dxr, nx);
    CHECK(e <= BC_TOL, "%s: combined bwd with fused relu error %g", what, e);
    if (b->pool_dy && s.oh % 2 == 0 && s.ow % 2 == 0) {
      /* and the 2x2 max pool's after it: its gradient routed back by the
       * backend, to each window's first maximum (ties in the ReLU's
       * zeros), as rt_ref_maxpool_bwd does into zeros */
      long op = (long)s.oh * s.ow / 4;
      float *dp = jt_randf(ny), *whole = calloc(ny, sizeof *whole);
      float *out = malloc(ny * sizeof *out);
      rt_pool_shape ps = {n, cout, s.oh, s.ow, 2, s.y_ns, s.y_ns};
      rt_ref_maxpool_bwd(&ps, act, dp, whole);
      for (size_t i = 0; i < ny; i++) dz[i] = act[i] > 0.0f ? whole[i] : 0.0f;
      memcpy(dxr, dx2, nx * sizeof *dxr);
      rt_ref_conv_bwd_data(&s, dz, wt, wm, dxr);
      rt_ref_conv_bwd_weight(&s, x, dz, wm, bm, dw0, with_bias ? db0 : NULL);
      for (int i = 0; i < n; i++) /* the pool's gradient in the first quarter of each sample */
        for (long k = op * cout; k < s.y_ns; k++) dp[i * s.y_ns + k] = NAN;
      s.relu = 1, s.pooled = out;
      b->conv_bwd(b, 0, &s, x, dp, act, wt, dx2, dw1, with_bias ? db1 : NULL);
      s.relu = 0, s.pooled = NULL;
      bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)cout);
      e = jt_nerr(dx2, dxr, nx);
      CHECK(e <= BC_TOL, "%s: combined bwd through the pool error %g", what, e);
      free(dp), free(whole), free(out);
    }
    if (b->pool_fwd && b->pool_dy && s.oh % 2 == 0 && s.ow % 2 == 0) {
      /* the forward that writes the pool's output and codes (y is its
       * scratch); then the backward routing by the codes, y never read
       * (NaN here) */
      long op = (long)s.oh * s.ow / 4;
      float *yr = malloc(ny * sizeof *yr), *pr = malloc(ny * sizeof *pr);
      float *pb = malloc(ny * sizeof *pb), *dp = jt_randf(ny), *whole = calloc(ny, sizeof *whole);
      float *out = malloc(ny * sizeof *out), *ynan = malloc(ny * sizeof *ynan);
      uint8_t *code = malloc((size_t)n * cout * op + 3);
      for (size_t i = 0; i < ny; i++) pr[i] = pb[i] = ynan[i] = NAN;
      s.relu = 1;
      rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, yr);
      rt_pool_shape ps = {n, cout, s.oh, s.ow, 2, s.y_ns, s.y_ns};
      rt_ref_maxpool_fwd(&ps, yr, pr);
      s.pool_y = pb, s.pcode = code + 3, s.pcode_ns = (long)cout * op;
      b->conv_fwd(b, 0, &s, x, wt, bias, out);
      int bad = 0; /* every pooled value there */
      for (int i = 0; i < n; i++)
        for (long q = 0; q < op * cout; q++) bad += isnan(pb[i * s.y_ns + q]);
      CHECK(!bad, "%s: fwd through the pool left %d pooled values unwritten", what, bad);
      for (int i = 0; i < n; i++) /* only the pool's planes compare */
        for (long q = op * cout; q < s.y_ns; q++) pb[i * s.y_ns + q] = pr[i * s.y_ns + q] = 0.0f;
      e = jt_nerr(pb, pr, ny);
      CHECK(e <= BC_TOL, "%s: fwd through the pool error %g", what, e);
      rt_ref_maxpool_bwd(&ps, yr, dp, whole);
      for (size_t i = 0; i < ny; i++) dz[i] = yr[i] > 0.0f ? whole[i] : 0.0f;
      memcpy(dxr, dx2, nx * sizeof *dxr);
      rt_ref_conv_bwd_data(&s, dz, wt, wm, dxr);
      rt_ref_conv_bwd_weight(&s, x, dz, wm, bm, dw0, with_bias ? db0 : NULL);
      s.pool_y = NULL, s.pooled = out;
      b->conv_bwd(b, 0, &s, x, dp, ynan, wt, dx2, dw1, with_bias ? db1 : NULL);
      s.relu = 0, s.pooled = NULL, s.pcode = NULL, s.pcode_ns = 0;
      bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)cout);
      e = jt_nerr(dx2, dxr, nx);
      CHECK(e <= BC_TOL, "%s: combined bwd through the pool's codes error %g", what, e);
      free(yr), free(pr), free(pb), free(dp), free(whole), free(out), free(ynan), free(code);
    }
    free(act), free(dz), free(dya), free(dx2), free(dxr);
  }
  b->free(b);
  jt_graph_free(g);
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
}

static void bc_linear_case(const bc_hooks *h, int in, int out, int n, double dens,
                           int with_bias) {
  char err[1024];
  ir_graph *g = jt_graph(IR_LINEAR, in, 1, 1, out, 1, 1, 0);
  rt_kernels *b = bc_backend(h, g);
  if (!b) {
    jt_graph_free(g);
    return;
  }
  rt_linear_shape s = {.n = n, .in = in, .out = out, .x_ns = in + jt_int(0, 5),
                       .y_ns = out + jt_int(0, 5)};
  size_t nw = (size_t)in * out, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)out, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)out) : NULL;
  bc_apply_mask(wt, wm, nw), bc_apply_mask(bias, bm, (size_t)out);
  float *x = jt_randf(nx), *dy = jt_randf(ny);
  float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
  memcpy(y1, y0, ny * sizeof *y1);
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
  char what[128];
  snprintf(what, sizeof what, "%s linear %d->%d n %d dens %.2f%s", h->backend, in, out,
           n, dens, with_bias ? "" : " nobias");
  if (h->prepared) h->prepared(b, 0, what);
  rt_ref_linear_fwd(&s, x, wt, bias, wm, bm, y0);
  b->linear_fwd(b, 0, &s, x, wt, bias, y1);
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= BC_TOL, "%s: fwd error %g", what, e);
  float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
  memcpy(dx1, dx0, nx * sizeof *dx1);
  rt_ref_linear_bwd_data(&s, dy, wt, wm, dx0);
  b->linear_bwd_data(b, 0, &s, dy, wt, dx1);
  e = jt_nerr(dx1, dx0, nx);
  CHECK(e <= BC_TOL, "%s: bwd_data error %g", what, e);
  float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw);
  float *db0 = jt_randf((size_t)out), *db1 = jt_randf((size_t)out);
  rt_ref_linear_bwd_weight(&s, x, dy, wm, bm, dw0, with_bias ? db0 : NULL);
  b->linear_bwd_weight(b, 0, &s, x, dy, dw1, with_bias ? db1 : NULL);
  bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)out);
  { /* a pass (wgen): fwd and bwd share what the backend keeps of w; a new
     * pass with new weights must not see the old ones */
    static uint64_t pass = 1000;
    float *w2 = malloc(nw * sizeof *w2), *dx2 = malloc(nx * sizeof *dx2);
    float *dxr = malloc(nx * sizeof *dxr);
    for (size_t i = 0; i < nx; i++) dx2[i] = x[i] * 0.5f; /* not from jt_rand: cases stay put */
    for (int round = 0; round < 2; round++) {
      for (size_t i = 0; i < nw; i++) w2[i] = wt[i] * (float)(round + 1);
      s.wgen = ++pass;
      rt_ref_linear_fwd(&s, x, w2, bias, wm, bm, y0);
      b->linear_fwd(b, 0, &s, x, w2, bias, y1);
      e = jt_nerr(y1, y0, ny);
      CHECK(e <= BC_TOL, "%s: fwd in pass %d error %g", what, round, e);
      memcpy(dxr, dx2, nx * sizeof *dxr);
      rt_ref_linear_bwd_data(&s, dy, w2, wm, dxr);
      if (b->linear_bwd) b->linear_bwd(b, 0, &s, x, dy, w2, dx2, dw1, NULL);
      else b->linear_bwd_data(b, 0, &s, dy, w2, dx2);
      e = jt_nerr(dx2, dxr, nx);
      CHECK(e <= BC_TOL, "%s: bwd in pass %d error %g", what, round, e);
      memcpy(dx2, dxr, nx * sizeof *dxr);
    }
    s.wgen = 0;
    free(w2), free(dx2), free(dxr);
  }
  if (b->wgrad_index) { /* packed weight gradients: dw[j] is weight idx[j]'s */
    b->packed_wgrad = 1;
    size_t np = 0;
    const int32_t *idx = b->wgrad_index(b, 0, &np);
    if (idx) {
      size_t k = 0, bad_idx = 0, untouched = 0;
      for (size_t i = 0; i < nw; i++)
        if (wm[i]) bad_idx += k >= np || (size_t)idx[k++] != i;
      CHECK(bad_idx == 0 && k == np, "%s: packed layout is not the active weights", what);
      float *dwr = malloc(np ? np * sizeof *dwr : 1);
      for (size_t j = 0; j < np; j++) dwr[j] = dw0[idx[j]];
      for (size_t i = 0; i < nw; i++) dw1[i] = 1e30f;
      if (b->linear_bwd) b->linear_bwd(b, 0, &s, x, dy, wt, NULL, dw1, with_bias ? db1 : NULL);
      else b->linear_bwd_weight(b, 0, &s, x, dy, dw1, with_bias ? db1 : NULL);
      e = np ? jt_nerr(dw1, dwr, np) : 0;
      CHECK(e <= BC_TOL, "%s: packed dw error %g", what, e);
      for (size_t i = np; i < nw; i++) untouched += dw1[i] == 1e30f;
      CHECK(untouched == nw - np, "%s: packed dw wrote past its %zu entries", what, np);
      free(dwr);
    }
    b->packed_wgrad = 0;
  }
  if (b->linear_bwd) { /* the combined backward, with and without dx */
    for (int with_dx = 0; with_dx < 2; with_dx++) {
      float *dx2 = jt_randf(nx), *dxr = malloc(nx * sizeof *dxr);
      memcpy(dxr, dx2, nx * sizeof *dxr);
      if (with_dx) rt_ref_linear_bwd_data(&s, dy, wt, wm, dxr);
      for (size_t i = 0; i < nw; i++) dw1[i] = 1e30f; /* overwritten, not added to */
      for (int i = 0; i < out; i++) db1[i] = 1e30f;
      b->linear_bwd(b, 0, &s, x, dy, wt, with_dx ? dx2 : NULL, dw1, with_bias ? db1 : NULL);
      bc_check_wgrad(what, dw0, dw1, wm, nw, with_bias ? db0 : NULL, db1, bm, (size_t)out);
      e = jt_nerr(dx2, dxr, nx);
      CHECK(e <= BC_TOL, "%s: combined bwd (dx %s) error %g", what, with_dx ? "on" : "off", e);
      free(dx2), free(dxr);
    }
  }
  b->free(b);
  jt_graph_free(g);
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
}

#endif
