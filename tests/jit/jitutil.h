/* jitutil.h: what the JIT tests share: checks, random data, a one-layer
 * graph, a model from source (jt_build), and the normalised error the
 * backends are compared by. */
#ifndef ILNAS_TESTS_JITUTIL_H
#define ILNAS_TESTS_JITUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

#include "tests/check.h"

static uint64_t jt_state = 88172645463325252ull;
static inline uint64_t jt_next(void) {
  jt_state ^= jt_state << 13, jt_state ^= jt_state >> 7, jt_state ^= jt_state << 17;
  return jt_state;
}
static inline double jt_unif(void) { return (double)(jt_next() >> 11) / 9007199254740992.0; }

/* A model from source text, lowered (tests that link ilnas_lower); NULL
 * after diagnostics on stderr. */
static inline ir_graph *jt_build(const char *text) {
  fe_model m;
  if (fe_parse_string("t.ilnas", text, &m, stderr)) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}
static inline int jt_int(int lo, int hi) { return lo + (int)(jt_next() % (uint64_t)(hi - lo + 1)); }
static inline float *jt_randf(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = (float)(jt_unif() * 2 - 1);
  return p;
}

/* ||a - ref|| / ||ref||; exactly-equal zero vectors give 0, a nonzero a
 * against a zero ref gives infinity. */
static inline double jt_nerr(const float *a, const float *ref, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) {
    double e = (double)a[i] - (double)ref[i];
    d += e * e, r += (double)ref[i] * ref[i];
  }
  if (r == 0) return d == 0 ? 0 : INFINITY;
  return sqrt(d / r);
}

/* A graph of one layer, enough for a backend (which reads only layers). */
static inline ir_graph *jt_graph(ir_kind kind, int cin, int h, int w, int cout, int k, int stride,
                          int pad) {
  ir_graph *g = calloc(1, sizeof *g);
  g->layers = calloc(2, sizeof *g->layers);
  g->n_layers = 2;
  for (int i = 0; i < 2; i++) {
    ir_layer *l = &g->layers[i];
    l->kind = kind, l->cin = cin, l->h = h, l->w = w, l->cout = cout;
    l->k = k, l->stride = stride, l->pad = pad;
    l->oh = kind == IR_CONV ? (h + 2 * pad - k) / stride + 1 : 1;
    l->ow = kind == IR_CONV ? (w + 2 * pad - k) / stride + 1 : 1;
    l->n_w = (int64_t)cout * cin * (kind == IR_CONV ? k * k : 1);
  }
  return g;
}
static inline void jt_graph_free(ir_graph *g) { free(g->layers), free(g); }

/* A mask of the given density: per weight, or per (cout, cin) kernel of
 * `unit` weights when whole kernels come and go together. */
static inline uint8_t *jt_mask(size_t n, size_t unit, double density) {
  uint8_t *m = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i += unit) {
    uint8_t on = (uint8_t)(jt_unif() < density);
    for (size_t k = 0; k < unit; k++) m[i + k] = on;
  }
  return m;
}

#endif
