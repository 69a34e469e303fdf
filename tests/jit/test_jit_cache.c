/* test_jit_cache: the CPU backend compiles a pattern once, recompiles only
 * the layer whose mask changed, and compiles a layer of about a million
 * active weights to no more code than a layer of a few hundred. The layers are forced onto the JIT path
 * (their densities would run dense on OpenBLAS by default, compiling
 * nothing); two more checks: a dense layer compiles nothing, and by
 * default a linear layer at 25% runs on the JIT kernels, at 100% dense. */
#include <time.h>

#include "jitutil.h"
#include "runtime/kernels.h"
#include "runtime/cpu/cpu.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_cache(void) {
  char err[256];
  ir_graph *g = jt_graph(IR_CONV, 6, 8, 8, 5, 3, 1, 1);
  /* layer 1: another shape, so that the two layers never share an entry */
  g->layers[1].kind = IR_LINEAR, g->layers[1].cin = 20, g->layers[1].cout = 7;
  rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
  CHECK(b, "cpu backend: %s", err);
  if (!b) return;
  rt_cpu_set_dense_threshold(b, 2.0, 2.0);
  uint8_t *wm = jt_mask(6 * 5 * 9, 1, 0.3), *bm = jt_mask(5, 1, 1.0);
  uint8_t *lm = jt_mask(20 * 7, 1, 0.5), *lb = jt_mask(7, 1, 1.0);
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "%s", err);
  CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
  rt_cpu_stats s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 2 && s.hits == 0, "first prepare: %ld compiles, %ld hits", s.compiles, s.hits);
  /* the same patterns again (as rt_exec_prepare does every growth) */
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "%s", err);
  CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
  s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 2 && s.hits == 2, "same pattern: %ld compiles, %ld hits", s.compiles, s.hits);
  /* a copy of the mask in other memory, with another nonzero byte for
   * "active", is the same pattern */
  uint8_t *wm2 = malloc(6 * 5 * 9);
  for (int i = 0; i < 6 * 5 * 9; i++) wm2[i] = (uint8_t)(wm[i] ? 0xff : 0);
  CHECK(b->prepare(b, 0, wm2, bm, err, sizeof err) == 0, "%s", err);
  s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 2, "equal pattern elsewhere recompiled (%ld)", s.compiles);
  /* one weight grows in layer 0: only layer 0 recompiles */
  int grown = 0;
  for (int i = 0; i < 6 * 5 * 9 && !grown; i++)
    if (!wm2[i]) wm2[i] = 1, grown = 1;
  CHECK(b->prepare(b, 0, wm2, bm, err, sizeof err) == 0, "%s", err);
  CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
  s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 3 && s.hits == 4, "grown layer 0: %ld compiles, %ld hits", s.compiles, s.hits);
  /* the old pattern of layer 0 is used by no layer: dropped from the JIT */
  CHECK(s.cached == 2, "%ld modules alive, expected 2", s.cached);
  /* a bias mask change is a pattern change too */
  lb[3] = 0;
  CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
  s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 4, "bias mask change: %ld compiles", s.compiles);
  /* and the recompiled kernel is the new pattern's */
  rt_linear_shape ls = {.n = 3, .in = 20, .out = 7};
  float *x = jt_randf(60), *w = jt_randf(140), *bias = jt_randf(7), y0[21], y1[21];
  for (int i = 0; i < 140; i++)
    if (!lm[i]) w[i] = 0;
  rt_ref_linear_fwd(&ls, x, w, bias, lm, lb, y0);
  b->linear_fwd(b, 1, &ls, x, w, bias, y1);
  CHECK(jt_nerr(y1, y0, 21) <= 1e-6, "linear after a bias change: %g", jt_nerr(y1, y0, 21));
  /* forced dense, a new pattern compiles nothing and still computes */
  rt_cpu_set_dense_threshold(b, 0.0, 0.0);
  lm[0] = !lm[0], w[0] = lm[0] ? w[0] : 0.0f;
  rt_ref_linear_fwd(&ls, x, w, bias, lm, lb, y0);
  CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
  s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 4 && rt_cpu_layer_dense(b, 1), "dense layer compiled (%ld)", s.compiles);
  b->linear_fwd(b, 1, &ls, x, w, bias, y1);
  CHECK(jt_nerr(y1, y0, 21) <= 1e-6, "dense linear: %g", jt_nerr(y1, y0, 21));
  /* the defaults back (a negative threshold): whatever the lanes and
   * OpenBLAS's kernels, a linear layer at 25% runs on the JIT kernels,
   * one at 100% on OpenBLAS (linear_dense_from) */
  rt_cpu_set_dense_threshold(b, -1.0, -1.0);
  for (int lanes = 8; lanes <= 16; lanes += 8) {
    CHECK(rt_cpu_set_lanes(b, lanes) == 0, "set lanes %d", lanes);
    for (int i = 0; i < 140; i++) lm[i] = i % 4 == 0;
    CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
    CHECK(!rt_cpu_layer_dense(b, 1), "linear at 25%%, %d lanes: dense by default", lanes);
    memset(lm, 1, 140);
    CHECK(b->prepare(b, 1, lm, lb, err, sizeof err) == 0, "%s", err);
    CHECK(rt_cpu_layer_dense(b, 1), "linear at 100%%, %d lanes: not dense by default", lanes);
  }
  free(x), free(w), free(bias);
  free(wm), free(wm2), free(bm), free(lm), free(lb);
  b->free(b);
  jt_graph_free(g);
}

/* Two layers of one shape that trade patterns in one prepare_layers call
 * (rt_exec_prepare after a growth, where the bounds layout gives layers
 * one shape): each entry is held until every layer has switched, so that
 * neither is dropped while the other layer is still to take it, and
 * each layer then computes its new pattern. A drawn model of two tasks on
 * cpu/bounds read a freed entry here. */
static void test_swap(void) {
  char err[256];
  ir_graph *g = jt_graph(IR_CONV, 3, 5, 5, 3, 1, 1, 0);
  rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
  CHECK(b && b->prepare_layers, "cpu backend: %s", b ? "no prepare_layers" : err);
  if (!b || !b->prepare_layers) return;
  rt_cpu_set_dense_threshold(b, 2.0, 2.0);
  uint8_t m1[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, m2[9] = {0, 1, 1, 1, 0, 0, 1, 0, 0};
  uint8_t bm[3] = {1, 1, 1};
  int layers[2] = {0, 1};
  const uint8_t *before[2] = {m1, m2}, *after[2] = {m2, m1}, *bms[2] = {bm, bm};
  CHECK(b->prepare_layers(b, 2, layers, before, bms, err, sizeof err) == 0, "%s", err);
  CHECK(b->prepare_layers(b, 2, layers, after, bms, err, sizeof err) == 0, "%s", err);
  rt_cpu_stats s = rt_cpu_get_stats(b);
  CHECK(s.compiles == 2 && s.cached == 2, "swapped: %ld compiles, %ld modules alive (2, 2)",
        s.compiles, s.cached);
  rt_conv_shape cs = {.n = 2, .cin = 3, .h = 5, .w = 5, .cout = 3, .oh = 5, .ow = 5, .k = 1,
                      .stride = 1, .pad = 0, .x_ns = 75, .y_ns = 75};
  float *x = jt_randf(150), *w = jt_randf(9), bias[3] = {0.1f, -0.2f, 0.3f}, y0[150], y1[150];
  for (int li = 0; li < 2; li++) {
    float wl[9];
    for (int i = 0; i < 9; i++) wl[i] = after[li][i] ? w[i] : 0.0f;
    rt_ref_conv_fwd(&cs, x, wl, bias, after[li], bm, y0);
    CHECK(b->conv_fwd(b, li, &cs, x, wl, bias, y1) == 0, "layer %d: conv_fwd", li);
    CHECK(jt_nerr(y1, y0, 150) <= 1e-6, "layer %d after the swap: %g", li, jt_nerr(y1, y0, 150));
  }
  free(x), free(w);
  b->free(b);
  jt_graph_free(g);
}

/* The machine code of one prepare of layer 0 at density dens, its conv
 * forward unrolled where it may be (unroll) or not: bytes of .text (the
 * tables apart), and the seconds it took (printed, not held to a bound:
 * timings belong in benchmarks). */
static long code_of(ir_kind kind, int cin, int h, int cout, int k, double dens, int unroll,
                    size_t *active) {
  char err[256];
  ir_graph *g = jt_graph(kind, cin, h, h, cout, k, 1, k / 2);
  rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
  CHECK(b, "cpu backend: %s", err);
  if (!b) return -1;
  rt_cpu_set_dense_threshold(b, 2.0, 2.0);
  rt_cpu_set_unroll(b, unroll);
  size_t nw = (size_t)g->layers[0].n_w;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)cout, 1, 1.0);
  /* and a few whole kernel rows, so that the sparse mask too has runs of
   * taps (kgen/sparse.c, rtab) besides single entries: the two compile
   * the same loop nests */
  for (size_t r = 0; kind == IR_CONV && r < 20; r++)
    memset(wm + r * 7919 % (nw / (size_t)k) * (size_t)k, 1, (size_t)k);
  *active = 0;
  for (size_t i = 0; i < nw; i++) *active += wm[i];
  double t0 = now_s();
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "%s", err);
  double t = now_s() - t0;
  rt_cpu_stats s = rt_cpu_get_stats(b);
  printf("%s %dx%d%s: %zu active weights: %ld bytes of code; emit %.3f s, optimise+compile "
         "%.3f s, total %.3f s\n",
         kind == IR_CONV ? "conv" : "linear", cin, cout, kind == IR_CONV ? " 3x3" : "", *active,
         s.code_bytes, s.emit_s, s.compile_s, t);
  /* preparing it again is a hash of the mask, not a compile */
  CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "%s", err);
  CHECK(rt_cpu_get_stats(b).compiles == 1, "re-prepare compiled again (%ld compiles)",
        rt_cpu_get_stats(b).compiles);
  free(wm), free(bm);
  b->free(b);
  jt_graph_free(g);
  return s.code_bytes;
}

/* No per-weight code in the loop nests: a layer of about a million
 * active weights compiles to the same loop nests as the same shape with a
 * few hundred (its weights are tables), so its compile time is that of
 * its tables. The unrolled conv forward (per-weight code) takes the small
 * layer alone, under its bound on weights, and its code grows by at most
 * about a hundred bytes a weight and a loop a block of rows. */
static void test_big(ir_kind kind, int cin, int h, int cout, int k, double dens) {
  size_t nbig, nsmall, n;
  long big = code_of(kind, cin, h, cout, k, dens, 1, &nbig);
  long small = code_of(kind, cin, h, cout, k, 200.0 / ((double)cin * cout * k * k), 0, &nsmall);
  CHECK(nbig > 100000 && nsmall < 1000, "masks of %zu and %zu active weights", nbig, nsmall);
  CHECK(small > 0 && big > 0, "no code measured (%ld, %ld bytes)", small, big);
  CHECK(big <= small + small / 2 + 1024, "%zu active weights: %ld bytes of code against %ld for %zu",
        nbig, big, small, nsmall);
  long unrolled = code_of(kind, cin, h, cout, k, 200.0 / ((double)cin * cout * k * k), 1, &n);
  long most = small + 100 * (long)n + (kind == IR_CONV ? 64L * (cout / 16 + 1) : 0);
  CHECK(n < 1000 && unrolled <= most, "%zu active weights unrolled: %ld bytes of code, more "
        "than %ld", n, unrolled, most);
}

int main(void) {
  test_cache();
  test_swap();
  test_big(IR_CONV, 512, 14, 512, 3, 0.45);
  test_big(IR_LINEAR, 2048, 1, 1024, 1, 0.5);
  if (failures) fprintf(stderr, "test_jit_cache: %d failures\n", failures);
  else printf("test_jit_cache: ok\n");
  return failures != 0;
}
