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
#include "runtime/p2.h"
#include "runtime/packed.h"
#include "runtime/plan.h"
#include "tests/jit/jitexec.h"
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
  /* inference: not worked, batch norm's output is 0 */
  double eval[2] = {jt_infer_loss(x[0], in, n, lab), jt_infer_loss(x[1], in, n, lab)};
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

/* Phase II's gradients through the live layout against the step at the
 * bounds (backend.h: p2_*): g and its ranking, the hyper step and g*
 * after units join, one of which makes an idle channel worked (the live
 * layout then makes a new step, which takes the gradients from the
 * old), the scores, and W back. Each ranking is also the host's over
 * that exec's own g (p2.h), exactly. */
static void check_p2(const char *backend) {
  char err[256], at_bounds[32];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  snprintf(at_bounds, sizeof at_bounds, "%s/bounds", backend);
  const int n = 8;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w, np = (size_t)g->n_params;
  float *in = jt_randf(2 * n * img), *g0[2], *w[2];
  ir_label lab[16];
  for (int i = 0; i < 2 * n; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  rt_exec *x[2] = {rt_exec_new(g, n, 2, backend, err, sizeof err), NULL};
  x[1] = x[0] ? rt_exec_new(g, n, 2, at_bounds, err, sizeof err) : NULL;
  CHECK(x[0] && x[1], "%s exec: %s", backend, err);
  if (!x[0] || !x[1]) return;
  enum { K = 40, C = 12 };
  rt_unit top[2][K], ref[K], cand[2][C];
  int64_t got[2] = {0, 0};
  double loss[2];
  for (int k = 0; k < 2; k++) {
    rt_exec_init_params(x[k], 11);
    for (int s = 0; s < 3; s++) {
      rt_exec_set_input(x[k], in, n);
      rt_exec_train_step(x[k], lab, 0.05f, 0.9f, 5e-4f, NULL);
    }
    rt_exec_phase2(x[k], 1);
    CHECK(rt_exec_p2_grad(x[k], 0, in, lab, 2, n, &loss[k], err, sizeof err) == 0, "p2_grad: %s", err);
    const float *s0 = rt_exec_p2_slot(x[k], 0);
    g0[k] = malloc(np * sizeof(float)), w[k] = malloc(np * sizeof(float));
    memcpy(g0[k], s0, np * sizeof(float));
    got[k] = rt_exec_p2_top(x[k], K, top[k], err, sizeof err);
    int64_t r = rt_units_top(g, x[k]->arch, g0[k], K, ref), same = 0;
    for (int64_t i = 0; i < r && i < got[k]; i++)
      same += top[k][i].start == ref[i].start && top[k][i].len == ref[i].len && top[k][i].layer == ref[i].layer &&
              top[k][i].score == ref[i].score;
    CHECK(got[k] == r && r > C && same == r,
          "%s: p2_top's %lld units are not the host's ranking of its g (%lld)", k ? at_bounds : backend,
          (long long)got[k], (long long)r);
  }
  double e = jt_nerr(g0[0], g0[1], np);
  CHECK(e < 1e-5 && fabs(loss[0] - loss[1]) <= 1e-5 * loss[1], "%s: g differs from the bounds' by %g", backend, e);
  int same = 0;
  for (int i = 0; i < C; i++) same += top[0][i].start == top[1][i].start;
  CHECK(same >= C - 2, "%s: the best %d units differ from the bounds' (%d the same)", backend, C, same);
  /* α*: the bounds' best join both at zero, and a kernel from a channel
   * that nothing reads yet (the plan's idle) with a value */
  rt_plan *pl = rt_plan_new(g);
  rt_plan_make(pl, x[1]->arch, x[1]->mask, rt_exec_view(x[1], RT_PARAMS), NULL);
  int64_t idle_at = -1;
  for (int li = 0; li < g->n_layers && idle_at < 0; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->kind != IR_CONV || l->w_off < 0 || !x[1]->arch->alive[li]) continue;
    for (int ci = 0; ci < l->cin && idle_at < 0; ci++)
      if (!pl->work[ir_chan_base(g, l->in_t) + l->in_ch + ci] && pl->work[ir_chan_base(g, l->out_t) + l->out_ch])
        idle_at = l->w_off + (int64_t)ci * l->k * l->k;
  }
  rt_plan_free(pl);
  CHECK(idle_at >= 0, "the model should have an idle input channel to connect");
  const float vals[9] = {0.1f, -0.2f, 0.3f, 0.05f, 0.2f, -0.1f, 0.15f, -0.3f, 0.25f};
  long before = rt_packed_rebuilds(x[0]->backend);
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < C; i++) rt_exec_set_unit(x[k], top[1][i].start, top[1][i].len, 1, NULL);
    if (idle_at >= 0) rt_exec_set_unit(x[k], idle_at, 9, 1, vals);
    memcpy(w[k], rt_exec_view(x[k], RT_PARAMS), np * sizeof(float));
    CHECK(rt_exec_p2_hyper(x[k], 0.1f, err, sizeof err) == 0, "p2_hyper: %s", err);
  }
  CHECK(rt_packed_rebuilds(x[0]->backend) > before, "%s: the idle channel should make a new step", backend);
  const float *p0 = rt_exec_view(x[0], RT_PARAMS), *p1 = rt_exec_view(x[1], RT_PARAMS);
  e = jt_nerr(p0, p1, np);
  double moved = jt_nerr(p1, w[1], np);
  CHECK(e < 1e-5 && moved > 1e-4, "%s: W* differs from the bounds' by %g (moved %g from W)", backend, e, moved);
  for (int k = 0; k < 2; k++) {
    CHECK(rt_exec_p2_grad(x[k], 1, in, lab, 2, n, &loss[k], err, sizeof err) == 0, "p2_grad: %s", err);
    memcpy(cand[k], top[1], sizeof cand[k]);
    CHECK(rt_exec_p2_score(x[k], cand[k], C, err, sizeof err) == 0, "p2_score: %s", err);
    const float *g1 = rt_exec_p2_slot(x[k], 1);
    for (int i = 0; i < C; i++)
      CHECK(cand[k][i].score == rt_unit_norm(&cand[k][i], g0[k], g1) && cand[k][i].score > 0,
            "%s: unit %d scores %g, its |g + g*| %g", k ? at_bounds : backend, i, cand[k][i].score,
            rt_unit_norm(&cand[k][i], g0[k], g1));
    CHECK(rt_exec_p2_restore(x[k], err, sizeof err) == 0, "p2_restore: %s", err);
    CHECK(memcmp(rt_exec_view(x[k], RT_PARAMS), w[k], np * sizeof(float)) == 0, "%s: W is not back",
          k ? at_bounds : backend);
  }
  for (int i = 0; i < C; i++)
    CHECK(fabsf(cand[0][i].score - cand[1][i].score) <= 1e-5f * cand[1][i].score, "%s: unit %d scores %g, at the bounds %g",
          backend, i, cand[0][i].score, cand[1][i].score);
  printf("%s: phase II's gradients through the live layout: %lld units ranked, %d of the best %d the bounds', "
         "g within %.2g, a new step at W* (%ld made in all)\n", backend, (long long)got[0], same, C, e,
         rt_packed_rebuilds(x[0]->backend));
  for (int k = 0; k < 2; k++) free(g0[k]), free(w[k]), rt_exec_free(x[k]);
  free(in), ir_free(g);
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
  check_p2("ref");
  check_p2("cpu");
  jt_check_deferred(src, "cpu/bounds", 2, 11);
  jt_check_deferred(src, "cpu", 2, 11);
  if (failures) fprintf(stderr, "test_live: %d failures\n", failures);
  else printf("test_live: ok\n");
  return failures != 0;
}
