/* test_gpu_ops: the CUDA backend.
 *
 *   test_gpu_ops --no-device   where no GPU can run, the backend must
 *                              refuse to start with a clear message
 *                              ("no CUDA driver: ..." or "no GPU: ..."),
 *                              never crash; with a GPU it must start.
 *   test_gpu_ops               every op of the CUDA backend against the
 *                              reference kernels over random shapes,
 *                              strides, channel-prefix views and densities
 *                              from empty to full, by normalised error
 *                              (<= 1e-5; exact where the semantics are:
 *                              masked dw is 0, dx accumulates). Skips (77)
 *                              with the backend's message without a GPU.
 */
#include "runtime/backend.h"
#include "tests/jit/jitutil.h"

static const double densities[] = {0.0, 0.1, 0.5, 1.0};
enum { ND = sizeof densities / sizeof densities[0] };
#define TOL 1e-5

static int clear_refusal(const char *msg) {
  return strncmp(msg, "no CUDA driver: ", 16) == 0 || strncmp(msg, "no GPU: ", 8) == 0;
}

static void conv_case(int cin, int h, int w, int cout, int k, int stride, int pad, int n, double dens,
                      int kernel_gran, int with_bias) {
  char err[1024];
  ir_graph *g = jt_graph(IR_CONV, cin, h, w, cout, k, stride, pad);
  rt_backend *b = rt_backend_new("cuda", g, err, sizeof err);
  CHECK(b, "cuda backend: %s", err);
  if (!b) {
    jt_graph_free(g);
    return;
  }
  rt_conv_shape s = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride, .pad = pad};
  rt_conv_shape_finish(&s);
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
  snprintf(what, sizeof what, "conv cin %d %dx%d cout %d k %d s %d p %d n %d dens %.2f %s%s", cin, h, w,
           cout, k, stride, pad, n, dens, kernel_gran ? "kernel" : "weight", with_bias ? "" : " nobias");
  rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
  b->conv_fwd(b, 0, &s, x, wt, bias, y1);
  /* Over the whole span: the gaps between samples must be left alone. */
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= TOL, "%s: fwd error %g", what, e);
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
  }
  b->free(b);
  jt_graph_free(g);
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
}

static void linear_case(int in, int out, int n, double dens, int with_bias) {
  char err[1024];
  ir_graph *g = jt_graph(IR_LINEAR, in, 1, 1, out, 1, 1, 0);
  rt_backend *b = rt_backend_new("cuda", g, err, sizeof err);
  CHECK(b, "cuda backend: %s", err);
  if (!b) {
    jt_graph_free(g);
    return;
  }
  rt_linear_shape s = {.n = n, .in = in, .out = out, .x_ns = in + jt_int(0, 5), .y_ns = out + jt_int(0, 5)};
  size_t nw = (size_t)in * out, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)out, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)out) : NULL;
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  if (bias)
    for (int i = 0; i < out; i++)
      if (!bm[i]) bias[i] = 0.0f;
  float *x = jt_randf(nx), *dy = jt_randf(ny);
  float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
  memcpy(y1, y0, ny * sizeof *y1);
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
  char what[128];
  snprintf(what, sizeof what, "linear %d -> %d n %d dens %.2f%s", in, out, n, dens, with_bias ? "" : " nobias");
  rt_ref_linear_fwd(&s, x, wt, bias, wm, bm, y0);
  b->linear_fwd(b, 0, &s, x, wt, bias, y1);
  double e = jt_nerr(y1, y0, ny);
  CHECK(e <= TOL, "%s: fwd error %g", what, e);
  float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
  memcpy(dx1, dx0, nx * sizeof *dx1);
  rt_ref_linear_bwd_data(&s, dy, wt, wm, dx0);
  b->linear_bwd_data(b, 0, &s, dy, wt, dx1);
  e = jt_nerr(dx1, dx0, nx);
  CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
  float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw);
  float *db0 = jt_randf((size_t)out), *db1 = jt_randf((size_t)out);
  rt_ref_linear_bwd_weight(&s, x, dy, wm, bm, dw0, with_bias ? db0 : NULL);
  b->linear_bwd_weight(b, 0, &s, x, dy, dw1, with_bias ? db1 : NULL);
  e = jt_nerr(dw1, dw0, nw);
  CHECK(e <= TOL, "%s: bwd_weight dw error %g", what, e);
  int masked_bad = 0;
  for (size_t i = 0; i < nw; i++) masked_bad += !wm[i] && dw1[i] != 0.0f;
  CHECK(masked_bad == 0, "%s: %d masked dw not exactly 0", what, masked_bad);
  if (with_bias) {
    e = jt_nerr(db1, db0, (size_t)out);
    CHECK(e <= TOL, "%s: bwd_weight db error %g", what, e);
  }
  b->free(b);
  jt_graph_free(g);
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy), free(y0), free(y1);
  free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
}

int main(int argc, char **argv) {
  char err[1024] = "";
  ir_graph *g = jt_graph(IR_LINEAR, 4, 1, 1, 3, 1, 1, 0);
  rt_backend *b = rt_backend_new("cuda", g, err, sizeof err);
  if (argc > 1 && strcmp(argv[1], "--no-device") == 0) {
    if (b) printf("a GPU is present: the cuda backend started\n");
    else {
      printf("cuda backend refused: %s\n", err);
      CHECK(clear_refusal(err), "unclear refusal: '%s'", err);
    }
    /* The default stays the CPU backend, and an unknown name lists cuda. */
    rt_backend *u = rt_backend_new("nope", g, err, sizeof err);
    CHECK(!u && strstr(err, "cuda"), "unknown backend message lacks cuda: '%s'", err);
    if (b) b->free(b);
    jt_graph_free(g);
    return failures ? 1 : 0;
  }
  if (!b) {
    CHECK(clear_refusal(err), "unclear refusal: '%s'", err);
    jt_graph_free(g);
    if (failures) return 1;
    printf("SKIP: %s\n", err);
    return 77;
  }
  b->free(b);
  jt_graph_free(g);

  conv_case(3, 8, 8, 4, 3, 1, 1, 2, 1.0, 0, 1);
  conv_case(16, 14, 14, 32, 3, 1, 1, 16, 0.25, 0, 1); /* a realistic layer, larger batch */
  for (int d = 0; d < ND; d++)
    for (int c = 0; c < 6; c++) {
      int k = jt_int(1, 5), stride = jt_int(1, 3), pad = jt_int(0, k - 1);
      int lo = k > 2 * pad ? k - 2 * pad : 1;
      conv_case(jt_int(1, 9), jt_int(lo, 13), jt_int(lo, 13), jt_int(1, 9), k, stride, pad, jt_int(1, 5),
                densities[d], c % 2, c % 3 != 2);
    }
  linear_case(784, 64, 32, 0.25, 1);
  for (int d = 0; d < ND; d++)
    for (int c = 0; c < 6; c++)
      linear_case(jt_int(1, 300), jt_int(1, 70), jt_int(1, 9), densities[d], c % 3 != 2);
  printf("cuda ops against ref: %d failures\n", failures);
  return failures ? 1 : 0;
}
