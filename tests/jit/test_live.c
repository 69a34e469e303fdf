/* test_live.c: the host step under its plan (runtime/plan.h: dead layers
 * that alias their predecessor, the gradient cleared where the backward
 * reads it, batch norm, ReLU and pooling on the worked channels only) against the layout at the bounds (every dead layer a copy,
 * every gradient tensor cleared whole), on the same growing run; and the
 * memory a model whose bounds are 8x its seed reports; and a prepare
 * during phase II, which leaves the step's kernels for its next pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "runtime/host.h"
#include "runtime/plan.h"
#include "tests/jit/jitutil.h"
#include "tests/jit/deferred.h"

/* Dense stages with batch norm (kernel granularity) and a linear stage:
 * dead layers inside a dense stage, at its end (read by the next reduce)
 * and in the linear stage (read by the classifier). */
static const char *src =
    "model l { input 3x8x8; classes 5; search kernel budget 6k from density 0.5 seed 2;"
    " stage conv { layers 1..3 channels 3..8 kernel 3x3 dense norm batch }"
    " reduce conv 2;"
    " stage conv { layers 1..2 channels 4..8 kernel 3x3 }"
    " reduce gap;"
    " stage linear { layers 1..2 width 6..12 } }";

/* The same under max pools: a dead layer at a stage's end reads the slice
 * the pool reads, so that under the plan the pool alone writes its
 * gradient (and overwrites it instead of having it cleared), with batch
 * norm before the pool and without. */
/* A dense stage after a reduce: its input is copied into the stage's
 * tensor (a copy layer), and that copy, the first op of the backward to
 * write the reduce's output gradient, overwrites it uncleared. */
static const char *src_dense =
    "model d { input 3x8x8; classes 5; search kernel budget 6k from density 0.5 seed 2;"
    " stage conv { layers 1..2 channels 3..6 kernel 3x3 dense norm batch }"
    " reduce conv 2;"
    " stage conv { layers 1..3 channels 4..8 kernel 3x3 dense norm batch }"
    " reduce gap;"
    " stage linear { layers 1..2 width 6..12 } }";

static const char *src_pool =
    "model p { input 3x8x8; classes 5; search kernel budget 6k from density 0.5 seed 2;"
    " stage conv { layers 1..3 channels 3..8 kernel 3x3 dense norm batch }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 4..8 kernel 3x3 }"
    " reduce maxpool 2;"
    " stage linear { layers 1..2 width 6..12 } }";

/* Parameters [start, start + len) of layer li on in both execs, with the
 * same values. */
static void grow(rt_exec *x[2], int64_t start, int64_t len, const float *v) {
  for (int k = 0; k < 2; k++) rt_exec_set_unit(x[k], start, len, 1, v);
}

static void check_same_losses(const char *backend, const char *src) {
  char err[256];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  int dead = 0;
  for (int i = 0; i < g->n_layers; i++) dead += !g->arch.alive[i];
  CHECK(dead >= 3, "the model should have dead layers (%d)", dead);
  const int n = 8;
  rt_exec *x[2];
  char at_bounds[32]; /* the step itself, at the template's bounds */
  snprintf(at_bounds, sizeof at_bounds, "%s/bounds", backend);
  for (int k = 0; k < 2; k++) {
    x[k] = rt_exec_new(g, n, 2, at_bounds, err, sizeof err);
    CHECK(x[k], "%s exec: %s", backend, err);
    if (!x[k]) return;
    rt_exec_init_params(x[k], 11);
  }
  rt_host_layout_bounds(x[1]->backend, 1);
  rt_plan *p = rt_plan_new(g);
  int aliases = 0;
  rt_plan_make(p, x[0]->arch, x[0]->mask, NULL, NULL);
  for (int i = 0; i < g->n_layers; i++) aliases += p->alias[i] != i;
  int64_t idle = 0, nch = ir_chan_base(g, g->n_tensors);
  for (int64_t c = 0; c < nch; c++) idle += !p->work[c];
  rt_plan_free(p);
  CHECK(aliases >= 2, "the seed should have aliases (%d)", aliases);
  CHECK(idle * 4 >= nch, "the seed should leave channels idle (%lld of %lld)", (long long)idle,
        (long long)nch);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *in = jt_randf(n * img), *vals = jt_randf(4096);
  ir_label lab[8];
  for (int i = 0; i < n; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  int revived = 0, added = 0;
  double worst = 0;
  for (int step = 0; step < 24; step++) {
    if (step == 6 || step == 12 || step == 18) {
      /* channels come alive: in every alive weighted layer, a few
       * missing kernels, new output channels among them */
      for (int li = 0; li < g->n_layers; li++) {
        const ir_layer *l = &g->layers[li];
        if (l->w_off < 0 || !x[0]->arch->alive[li]) continue;
        int64_t unit = ir_fan_in(l) / l->cin;
        for (int j = 0; j < 3; j++) {
          int co = jt_int(0, l->cout - 1), ci = jt_int(0, l->cin - 1);
          int64_t at = l->w_off + ((int64_t)co * l->cin + ci) * unit;
          if (ir_alpha_get(x[0]->arch, at)) continue;
          for (int64_t u = 0; u < unit; u++) vals[u] *= 0.3f;
          grow(x, at, unit, vals + jt_int(0, 2000));
          added++;
        }
      }
    }
    if (step == 9 || step == 15) {
      /* a dead layer comes alive, with a few kernels */
      for (int li = 0; li < g->n_layers; li++) {
        const ir_layer *l = &g->layers[li];
        if (l->w_off < 0 || x[0]->arch->alive[li]) continue;
        for (int k = 0; k < 2; k++) rt_exec_set_alive(x[k], li, 1);
        int64_t unit = ir_fan_in(l) / l->cin;
        for (int c = 0; c < l->cout && c < l->cin; c += 2)
          grow(x, l->w_off + ((int64_t)c * l->cin + c) * unit, unit, vals + 100 + c);
        revived++;
        break;
      }
    }
    for (int k = 0; k < 2; k++) {
      int rc = rt_exec_prepare(x[k], err, sizeof err);
      CHECK(rc == 0, "prepare: %s", err);
    }
    double loss[2];
    for (int k = 0; k < 2; k++) {
      rt_exec_set_input(x[k], in, n);
      rt_exec_forward(x[k]);
      loss[k] = rt_exec_loss(x[k], lab, 1, NULL);
      rt_exec_backward(x[k]);
      rt_exec_sgd(x[k], 0.05f, 0.9f, 5e-4f);
      CHECK(rt_exec_status(x[k], err, sizeof err) == 0, "step: %s", err);
    }
    double rel = fabs(loss[0] - loss[1]) / fabs(loss[1]);
    if (rel > worst) worst = rel;
    CHECK(rel <= 1e-5, "%s, step %d: loss %.9g under the plan, %.9g at the bounds", backend, step,
          loss[0], loss[1]);
  }
  CHECK(revived == 2 && added > 10, "the run should grow (%d revived, %d added)", revived, added);
  long narrow = rt_host_narrow_passes(x[0]->backend);
  /* every step but the first and those after an edit (growth) */
  CHECK(narrow >= 16 && rt_host_narrow_passes(x[1]->backend) == 0,
        "%s: %ld narrow passes under the plan, %ld at the bounds", backend, narrow,
        rt_host_narrow_passes(x[1]->backend));
  const float *p0 = rt_exec_view(x[0], RT_PARAMS), *p1 = rt_exec_view(x[1], RT_PARAMS);
  double e = jt_nerr(p0, p1, (size_t)g->n_params);
  CHECK(e < 1e-5, "%s: parameters differ by %g", backend, e);
  double eval[2];
  for (int k = 0; k < 2; k++) { /* inference: not worked, batch norm's output is 0 */
    rt_exec_set_training(x[k], 0);
    rt_exec_set_input(x[k], in, n);
    rt_exec_forward(x[k]);
    eval[k] = rt_exec_loss(x[k], lab, 0, NULL);
  }
  CHECK(fabs(eval[0] - eval[1]) <= 1e-5 * fabs(eval[1]), "%s: inference loss %.9g under the plan, "
        "%.9g at the bounds", backend, eval[0], eval[1]);
  const float *s0 = rt_exec_view(x[0], RT_STATS), *s1 = rt_exec_view(x[1], RT_STATS);
  e = jt_nerr(s0, s1, (size_t)g->n_stats);
  CHECK(e < 1e-5, "%s: batch norm's statistics differ by %g", backend, e);
  printf("%s: %d aliases and %lld of %lld channels idle at the seed, 24 steps (%ld on the worked channels only), %d kernels "
         "added, %d layers revived, worst loss difference %.2g\n", backend, aliases, (long long)idle, (long long)nch,
         narrow, added,
         revived, worst);
  free(in), free(vals);
  rt_exec_free(x[0]), rt_exec_free(x[1]), ir_free(g);
}

/* Bounds 8x the seed in layers and channels: the seed's live activations
 * (the input, 2 channels and their pre-activations, the pooled 2, the
 * linear layer's 4 and 4, the 3 logits), with the 7 dead layers aliases
 * that cost nothing, and the live layout's arena exactly those. */
static void check_memory(void) {
  char err[256];
  ir_graph *g = jt_build("model m { input 1x8x8; classes 3; search kernel budget 9k from density 1 seed 1;"
                         " stage conv { layers 1..8 channels 2..16 kernel 3x3 }"
                         " reduce gap;"
                         " stage linear { layers 1..1 width 4..32 } }");
  CHECK(g, "model does not build");
  if (!g) return;
  rt_exec *x = rt_exec_new(g, 4, 1, "ref", err, sizeof err);
  CHECK(x, "exec: %s", err);
  if (!x) return;
  rt_exec *xb = rt_exec_new(g, 4, 1, "ref/bounds", err, sizeof err);
  CHECK(xb, "exec: %s", err);
  if (!xb) return;
  /* the live layout's arena is the live activations; at the bounds, the
   * arena is the template's */
  rt_backend_mem m = rt_exec_memory(x), mb = rt_exec_memory(xb);
  int64_t live = 64 + 2 * 2 * 64 + 2 + 4 + 4 + 3;
  CHECK(m.live == live * 4 && mb.live == live * 4, "live activations: %lld and %lld bytes per sample, not %lld",
        (long long)m.live, (long long)mb.live, (long long)live * 4);
  CHECK(m.arena == live * 4, "arena: %lld bytes per sample, not %lld", (long long)m.arena, (long long)live * 4);
  CHECK(mb.arena == g->act_size * 4, "arena at the bounds: %lld bytes per sample, not %lld", (long long)mb.arena,
        (long long)g->act_size * 4);
  printf("bounds 8x the seed: arena %lld bytes per sample (at the bounds %lld), live activations %lld\n",
         (long long)m.arena, (long long)mb.arena, (long long)m.live);
  rt_exec_free(x), rt_exec_free(xb), ir_free(g);
}

int main(int argc, char **argv) {
  (void)argc, (void)argv;
  check_same_losses("ref", src);
  check_same_losses("cpu", src);
  check_same_losses("ref", src_pool);
  check_same_losses("cpu", src_pool);
  check_same_losses("ref", src_dense);
  check_same_losses("cpu", src_dense);
  check_memory();
  jt_check_deferred(src, "cpu/bounds", 2, 11);
  jt_check_deferred(src, "cpu", 2, 11);
  if (failures) fprintf(stderr, "test_live: %d failures\n", failures);
  else printf("test_live: ok\n");
  return failures != 0;
}
