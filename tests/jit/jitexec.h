/* jitexec.h: what the tests that train a model through rt_exec share: the
 * exec of a model from source, prepared, and a dead layer brought alive. */
#ifndef ILNAS_TESTS_JITEXEC_H
#define ILNAS_TESTS_JITEXEC_H

#include "runtime/exec.h"
#include "tests/jit/jitutil.h"

/* The model of source text on backend (batch, threads), its parameters
 * drawn from seed 5, prepared; *gp its graph (the caller frees both).
 * NULL after a failed CHECK, nothing left to free. */
static inline rt_exec *jt_exec(const char *text, int batch, int threads, const char *backend,
                               ir_graph **gp) {
  char err[256];
  *gp = NULL;
  ir_graph *g = jt_build(text);
  CHECK(g, "model does not build");
  if (!g) return NULL;
  rt_exec *x = rt_exec_new(g, batch, threads, backend, err, sizeof err);
  CHECK(x, "%s: exec: %s", backend, err);
  if (!x) {
    ir_free(g);
    return NULL;
  }
  rt_exec_init_params(x, 5);
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s: prepare: %s", backend, err);
  *gp = g;
  return x;
}

/* Dead weighted layer li alive, with its first unit of weights (ir_fan_in
 * / cin of them: a kernel, or one weight at weight granularity of a
 * linear layer) active at 0. The caller prepares. */
static inline void jt_wake(rt_exec *x, int li) {
  const ir_layer *l = &x->g->layers[li];
  rt_exec_set_alive(x, li, 1);
  rt_exec_set_unit(x, l->w_off, ir_fan_in(l) / l->cin, 1, NULL);
}

/* Growth in each of the n execs x[] of one graph, which hold the same
 * α: the first missing weight of every weighted layer joins, each
 * layer's at vals[layer]. The caller prepares. */
static inline void jt_grow_each(rt_exec **x, int n, const float *vals) {
  const ir_graph *g = x[0]->g;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    for (int64_t w = l->w_off; l->w_off >= 0 && w < l->w_off + l->n_w; w++)
      if (!ir_alpha_get(x[0]->arch, w)) {
        for (int k = 0; k < n; k++) rt_exec_set_unit(x[k], w, 1, 1, vals + li);
        break;
      }
  }
}

/* The loss of an inference pass of exec x over n images in (labels lab),
 * training switched back on after. */
static inline double jt_infer_loss(rt_exec *x, const float *in, int n, const ir_label *lab) {
  rt_exec_set_training(x, 0);
  rt_exec_set_input(x, in, n);
  rt_exec_forward(x);
  double loss = rt_exec_loss(x, lab, 0, NULL);
  rt_exec_set_training(x, 1);
  return loss;
}

#endif
