/* test_jit_ops: every op of the CPU (JIT) backend against the reference
 * kernels, over random shapes, strides, paddings, kernel sizes, channel-
 * prefix views (per-sample strides larger than packed), densities from
 * empty to full and both mask granularities. Compared by normalised error;
 * exact where the semantics are exact (dx accumulates, masked dw is 0).
 * Every case runs three times: with the backend's measured dense
 * threshold, and forced onto the JIT kernels and onto OpenBLAS. */
#include "jitutil.h"
#include "runtime/backend.h"
#include "runtime/cpu/cpu.h"

static const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
enum { ND = sizeof densities / sizeof densities[0] };
#define TOL 1e-5

/* The dense threshold of the run: < 0 the backend's own, 0 all dense, 2
 * none dense. */
static double force_thr = -1;

static void set_path(rt_backend *b, int layer, const char *what) {
  if (force_thr < 0) return;
  CHECK(rt_cpu_layer_dense(b, layer) == (force_thr == 0), "%s: forced path not taken", what);
}

static void force(rt_backend *b) {
  if (force_thr >= 0) rt_cpu_set_dense_threshold(b, force_thr, force_thr);
}

static void conv_case(rt_backend **bp, int cin, int h, int w, int cout, int k, int stride,
                      int pad, int n, double dens, int kernel_gran, int with_bias) {
  char err[256];
  ir_graph *g = jt_graph(IR_CONV, cin, h, w, cout, k, stride, pad);
  rt_backend *b = rt_backend_new("cpu", g, err, sizeof err);
  CHECK(b, "cpu backend: %s", err);
  if (!b) return;
  *bp = b;
  force(b);
  rt_conv_shape s = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k,
                     .stride = stride, .pad = pad};
  rt_conv_shape_finish(&s);
  /* A channel-prefix view: samples are further apart than packed. */
  s.x_ns = (long)(cin + jt_int(0, 2)) * h * w + jt_int(0, 3);
  s.y_ns = (long)(cout + jt_int(0, 2)) * s.oh * s.ow + jt_int(0, 3);
  size_t nw = (size_t)cout * cin * k * k, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, kernel_gran ? (size_t)k * k : 1, dens);
  uint8_t *bm = jt_mask((size_t)cout, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)cout) : NULL;
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  if (bias)
    for (int i = 0; i < cout; i++)
      if (!bm[i]) bias[i] = 0.0f;
  float *x = jt_randf(nx), *dy = jt_randf(ny);
  float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
  memcpy(y1, y0, ny * sizeof *y1);
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
  char what[160];
  snprintf(what, sizeof what, "conv cin %d %dx%d cout %d k %d s %d p %d n %d dens %.2f %s%s",
           cin, h, w, cout, k, stride, pad, n, dens, kernel_gran ? "kernel" : "weight",
           with_bias ? "" : " nobias");
  set_path(b, 0, what);
  rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
  b->conv_fwd(b, 0, &s, x, wt, bias, y1);
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= TOL, "%s: fwd error %g", what, e);
  /* dx accumulates: both start from the same nonzero values. */
  float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
  memcpy(dx1, dx0, nx * sizeof *dx1);
  rt_ref_conv_bwd_data(&s, dy, wt, wm, dx0);
  b->conv_bwd_data(b, 0, &s, dy, wt, dx1);
  e = jt_nerr(dx1, dx0, nx);
  CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
  float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw);
  float *db0 = jt_randf((size_t)cout), *db1 = jt_randf((size_t)cout);
  rt_ref_conv_bwd_weight(&s, x, dy, wm, bm, dw0, with_bias ? db0 : NULL);
  b->conv_bwd_weight(b, 0, &s, x, dy, dw1, with_bias ? db1 : NULL);
  e = jt_nerr(dw1, dw0, nw);
  CHECK(e <= TOL, "%s: bwd_weight dw error %g", what, e);
  int masked_bad = 0;
  for (size_t i = 0; i < nw; i++) masked_bad += !wm[i] && dw1[i] != 0.0f;
  CHECK(masked_bad == 0, "%s: %d masked dw not exactly 0", what, masked_bad);
  if (with_bias) {
    e = jt_nerr(db1, db0, (size_t)cout);
    CHECK(e <= TOL, "%s: bwd_weight db error %g", what, e);
    for (int i = 0; i < cout; i++) CHECK(bm[i] || db1[i] == 0.0f, "%s: masked db", what);
  }
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
  b->free(b);
  *bp = NULL;
  jt_graph_free(g);
}

static void linear_case(int in, int out, int n, double dens, int with_bias) {
  char err[256];
  ir_graph *g = jt_graph(IR_LINEAR, in, 1, 1, out, 1, 1, 0);
  rt_backend *b = rt_backend_new("cpu", g, err, sizeof err);
  CHECK(b, "cpu backend: %s", err);
  if (!b) return;
  force(b);
  rt_linear_shape s = {n, in, out, in + jt_int(0, 5), out + jt_int(0, 5)};
  size_t nw = (size_t)in * out, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)out, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)out) : NULL;
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  float *x = jt_randf(nx), *dy = jt_randf(ny);
  float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
  memcpy(y1, y0, ny * sizeof *y1);
  CHECK(b->prepare(b, 1, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
  char what[128];
  snprintf(what, sizeof what, "linear %d->%d n %d dens %.2f%s", in, out, n, dens,
           with_bias ? "" : " nobias");
  set_path(b, 1, what);
  rt_ref_linear_fwd(&s, x, wt, bias, wm, bm, y0);
  b->linear_fwd(b, 1, &s, x, wt, bias, y1);
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= TOL, "%s: fwd error %g", what, e);
  float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
  memcpy(dx1, dx0, nx * sizeof *dx1);
  rt_ref_linear_bwd_data(&s, dy, wt, wm, dx0);
  b->linear_bwd_data(b, 1, &s, dy, wt, dx1);
  e = jt_nerr(dx1, dx0, nx);
  CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
  float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw);
  float *db0 = jt_randf((size_t)out), *db1 = jt_randf((size_t)out);
  rt_ref_linear_bwd_weight(&s, x, dy, wm, bm, dw0, with_bias ? db0 : NULL);
  b->linear_bwd_weight(b, 1, &s, x, dy, dw1, with_bias ? db1 : NULL);
  e = jt_nerr(dw1, dw0, nw);
  CHECK(e <= TOL, "%s: bwd_weight dw error %g", what, e);
  int masked_bad = 0;
  for (size_t i = 0; i < nw; i++) masked_bad += !wm[i] && dw1[i] != 0.0f;
  CHECK(masked_bad == 0, "%s: %d masked dw not exactly 0", what, masked_bad);
  if (with_bias) {
    e = jt_nerr(db1, db0, (size_t)out);
    CHECK(e <= TOL, "%s: db error %g", what, e);
  }
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
  b->free(b);
  jt_graph_free(g);
}

/* The empty layer must still overwrite y with the bias and dw with 0, and
 * leave dx as it was; the full layer is the dense computation. */
static void edge_cases(void) {
  rt_backend *b = NULL;
  conv_case(&b, 3, 5, 5, 4, 3, 1, 1, 2, 0.0, 0, 1);
  conv_case(&b, 3, 5, 5, 4, 3, 1, 1, 2, 1.0, 0, 1);
  conv_case(&b, 2, 3, 3, 2, 5, 1, 2, 1, 1.0, 0, 1);  /* kernel larger than the image */
  conv_case(&b, 1, 1, 1, 1, 1, 1, 0, 1, 1.0, 0, 0);  /* one pixel */
  conv_case(&b, 4, 7, 6, 3, 3, 2, 0, 3, 0.5, 1, 0);  /* stride 2, no padding, odd sizes */
  linear_case(7, 5, 1, 0.0, 1);
  linear_case(7, 5, 33, 1.0, 1);
  linear_case(1, 1, 1, 1.0, 0);
}

static void random_cases(int nconv, int nlin) {
  static const int ks[] = {1, 3, 5};
  for (int c = 0; c < nconv; c++) {
    rt_backend *b = NULL;
    int k = ks[jt_int(0, 2)], pad = jt_int(0, 2), stride = jt_int(1, 2);
    int h = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12), w = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12);
    conv_case(&b, jt_int(1, 6), h, w, jt_int(1, 6), k, stride, pad, jt_int(1, 4),
              densities[c % ND], jt_int(0, 1), jt_int(0, 3) != 0);
  }
  for (int c = 0; c < nlin; c++)
    linear_case(jt_int(1, 70), jt_int(1, 40), jt_int(1, 70), densities[c % ND], jt_int(0, 3) != 0);
}

int main(int argc, char **argv) {
  /* Each sparse case compiles a module; more cases are a flag away. */
  int nconv = argc > 1 ? atoi(argv[1]) : 20;
  static const double thr[] = {-1, 2.0, 0.0};
  for (int i = 0; i < 3; i++) {
    force_thr = thr[i];
    edge_cases();
    random_cases(nconv, 2 * nconv);
  }
  if (failures) fprintf(stderr, "test_jit_ops: %d failures\n", failures);
  else printf("test_jit_ops: ok\n");
  return failures != 0;
}
