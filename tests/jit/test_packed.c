/* test_packed.c: the live layout (runtime/packed.h: the step on the
 * compact graph of the worked channels, dead aliases gone) against the
 * layout at the bounds, on the same growing run: expansions by each
 * side's own search (phase II's dense gradient on the compact graph),
 * kernels set by hand into new channels, dead layers revived; the losses
 * of every step, the parameters, the inference loss and phase II's dense
 * gradient. Half the steps run the bounds graph's schedule, which the
 * live layout translates. And the arena: the live one's, not the bounds'; and
 * the parameters' view at g's size, whose pages are given back between
 * views. */
#define _DEFAULT_SOURCE /* mincore */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "runtime/packed.h"
#include "search/search.h"
#include "tests/jit/jitexec.h"

static const char *const models[] = {
    /* dense stages with batch norm (kernel granularity), dead layers
     * inside a stage, at its end and in the linear stage */
    "model p { input 3x8x8; classes 5; search kernel budget 6k from density 0.5 seed 2;"
    " stage conv { layers 1..3 channels 3..8 kernel 3x3 dense norm batch }"
    " reduce conv 2;"
    " stage conv { layers 1..2 channels 4..8 kernel 3x3 }"
    " reduce gap;"
    " stage linear { layers 1..2 width 6..12 } }",
    /* weight granularity, batch norm after the ReLU, max pooling, a linear
     * layer that reads planes */
    "model q { input 2x10x10; classes 4; search weight budget 3k from density 0.3 seed 5;"
    " stage conv { layers 1..3 channels 4..8 kernel 3x3 dense norm batch after }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 3..6 kernel 3x3 }"
    " stage linear { layers 1..2 width 8..16 } }",
    /* batch norm before the ReLU under max pools that a conv and a linear
     * layer alone read (the pools' outputs left to them), dead layers in
     * both conv stages */
    "model r { input 2x12x12; classes 4; search weight budget 3k from density 0.3 seed 3;"
    " stage conv { layers 1..3 channels 4..8 kernel 3x3 norm batch }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 3..6 kernel 3x3 norm batch }"
    " reduce maxpool 2;"
    " stage linear { layers 1 width 8..16 } }",
};

enum { N = 8, STEPS = 30 };

static double step(rt_exec *x, int sched, const ir_call *f, int nf, const ir_call *b, int nb,
                   const float *in, const ir_label *lab) {
  rt_exec_set_input(x, in, N);
  if (sched) rt_exec_run(x, f, nf);
  else rt_exec_forward(x);
  double loss = rt_exec_loss(x, lab, 1, NULL);
  if (sched) rt_exec_run(x, b, nb);
  else rt_exec_backward(x);
  rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
  return loss;
}

static void check_model(const char *src, const char *kind) {
  char err[256], name[2][32];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  snprintf(name[0], sizeof name[0], "%s", kind);
  snprintf(name[1], sizeof name[1], "%s/bounds", kind);
  rt_exec *x[2];
  srch_state s[2];
  for (int k = 0; k < 2; k++) {
    x[k] = rt_exec_new(g, N, 2, name[k], err, sizeof err);
    CHECK(x[k], "%s exec: %s", name[k], err);
    if (!x[k]) return;
    rt_exec_init_params(x[k], 7);
    CHECK(srch_init(&s[k], g, FE_SEARCH_ILNAS, 3) == 0, "srch_init");
    s[k].lr = 0.05f;
  }
  CHECK(rt_packed_step(x[0]->backend) && !rt_packed_step(x[1]->backend),
        "%s should be the live layout and %s the step itself", name[0], name[1]);
  ir_call *f, *b;
  int nf, nb;
  CHECK(ir_schedule(g, &f, &nf, &b, &nb) == 0, "schedule");
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  jt_state = 88172645463325252ull;
  float *in = jt_randf(2 * N * img), *vals = jt_randf(4096);
  ir_label lab[2 * N];
  for (int i = 0; i < 2 * N; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  long rebuilds0 = rt_packed_rebuilds(x[0]->backend);
  int64_t arena0 = rt_exec_memory(x[0]).arena;
  int expanded = 0, revived = 0, set = 0;
  double worst = 0;
  for (int it = 0; it < STEPS; it++) {
    if (it == 6 || it == 18) { /* each side's own expansion */
      srch_batches pb = {2, N, in, lab};
      srch_event ev[2];
      for (int k = 0; k < 2; k++) {
        srch_refill(&s[k], x[k]);
        int rc = srch_expand(&s[k], x[k], &pb, &ev[k]);
        CHECK(rc == 0 && ev[k].added > 0, "%s: expansion %d grew nothing (%d)", name[k], it, rc);
      }
      int64_t words = (g->n_params + 63) / 64, diff = 0;
      for (int64_t w = 0; w < words; w++) diff += x[0]->arch->alpha[w] != x[1]->arch->alpha[w];
      CHECK(diff == 0 && ev[0].added == ev[1].added,
            "%s: step %d: the expansions differ (%lld and %lld added, %lld words of α differ)", src, it,
            (long long)ev[0].added, (long long)ev[1].added, (long long)diff);
      expanded++;
    }
    if (it == 10) { /* kernels into channels that were not worked */
      for (int li = 0; li < g->n_layers; li++) {
        const ir_layer *l = &g->layers[li];
        if (l->w_off < 0 || !x[0]->arch->alive[li]) continue;
        int64_t unit = ir_fan_in(l) / l->cin;
        for (int j = 0; j < 3; j++) {
          int co = jt_int(0, l->cout - 1), ci = jt_int(0, l->cin - 1);
          int64_t at = l->w_off + ((int64_t)co * l->cin + ci) * unit;
          if (ir_alpha_get(x[0]->arch, at)) continue;
          const float *v = vals + jt_int(0, 2000);
          for (int k = 0; k < 2; k++) rt_exec_set_unit(x[k], at, unit, 1, v);
          set++;
        }
      }
    }
    if (it == 14) { /* a dead layer comes alive, with a few kernels */
      for (int li = 0; li < g->n_layers && !revived; li++) {
        const ir_layer *l = &g->layers[li];
        if (l->w_off < 0 || x[0]->arch->alive[li]) continue;
        int64_t unit = ir_fan_in(l) / l->cin;
        for (int k = 0; k < 2; k++) {
          rt_exec_set_alive(x[k], li, 1);
          for (int c = 0; c < l->cout && c < l->cin; c += 2)
            rt_exec_set_unit(x[k], l->w_off + ((int64_t)c * l->cin + c) * unit, unit, 1, vals + 100 + c);
        }
        revived++;
      }
    }
    for (int k = 0; k < 2; k++) CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "prepare: %s", err);
    double loss[2];
    const float *bx = in + (size_t)(it % 2) * N * img;
    for (int k = 0; k < 2; k++) {
      loss[k] = step(x[k], it % 2, f, nf, b, nb, bx, lab + (it % 2) * N);
      CHECK(rt_exec_status(x[k], err, sizeof err) == 0, "%s, step %d: %s", name[k], it, err);
    }
    double rel = fabs(loss[0] - loss[1]) / fabs(loss[1]);
    if (rel > worst) worst = rel;
    CHECK(rel <= 1e-5, "%s, %s, step %d: loss %.9g in the live layout, %.9g at the bounds", g->cfg.name, kind,
          it, loss[0], loss[1]);
  }
  CHECK(expanded == 2 && set > 3, "the run should grow (%d expansions, %d kernels set)", expanded, set);
  long rebuilds = rt_packed_rebuilds(x[0]->backend) - rebuilds0;
  CHECK(rebuilds >= 2, "%s: the live layout should have made new steps as channels came alive (%ld)",
        g->cfg.name, rebuilds);
  /* the active values as a checkpoint reads them: the live layout's from
   * its step and the values of what its compact graph leaves out (no view
   * of g's size made), the bounds' from its view */
  int64_t na = ir_count_active_bits(x[0]->arch, g->n_params);
  float *av[2];
  for (int k = 0; k < 2; k++) {
    av[k] = malloc(2 * (size_t)(na ? na : 1) * sizeof(float));
    rt_exec_active_values(x[k], RT_PARAMS, av[k]);
    rt_exec_active_values(x[k], RT_MOMENTUM, av[k] + na);
  }
  CHECK(rt_packed_active(x[0]->backend, RT_PARAMS, av[0]) == na, "%s, %s: the live layout should read "
        "its active values where it keeps them", g->cfg.name, kind);
  double e = jt_nerr(av[0], av[1], 2 * (size_t)na);
  CHECK(e < 1e-5, "%s, %s: active values and momentum differ by %g", g->cfg.name, kind, e);
  free(av[0]), free(av[1]);
  e = jt_nerr(rt_exec_view(x[0], RT_PARAMS), rt_exec_view(x[1], RT_PARAMS), (size_t)g->n_params);
  CHECK(e < 1e-5, "%s, %s: parameters differ by %g", g->cfg.name, kind, e);
  /* inference on the same running statistics: the layout at the bounds
   * moves those of a channel that is not worked toward 0 in its passes
   * that compute every channel, the live layout keeps them until the
   * channel is (packed.h) */
  memcpy(rt_exec_edit(x[0], RT_STATS), rt_exec_view(x[1], RT_STATS), (size_t)g->n_stats * sizeof(float));
  double eval[2] = {jt_infer_loss(x[0], in, N, lab), jt_infer_loss(x[1], in, N, lab)};
  CHECK(fabs(eval[0] - eval[1]) <= 1e-5 * fabs(eval[1]), "%s, %s: inference loss %.9g live, %.9g at the bounds",
        g->cfg.name, kind, eval[0], eval[1]);
  /* phase II's dense gradient, at every parameter of g */
  float *dg[2];
  double dl[2];
  for (int k = 0; k < 2; k++) {
    dg[k] = calloc((size_t)g->n_params, sizeof(float));
    rt_exec_phase2(x[k], 1);
    CHECK(rt_exec_dense_grad(x[k], in, lab, N, dg[k], &dl[k], err, sizeof err) == 0, "dense grad: %s", err);
    rt_exec_phase2(x[k], 0);
  }
  e = jt_nerr(dg[0], dg[1], (size_t)g->n_params);
  CHECK(e < 1e-5 && fabs(dl[0] - dl[1]) <= 1e-5 * fabs(dl[1]),
        "%s, %s: the dense gradients differ by %g (losses %.9g, %.9g)", g->cfg.name, kind, e, dl[0], dl[1]);
  /* the views at g's size hold no page once an operation has run (the
   * step holds the values): a wide template's pages of active parameters
   * are not resident while it trains */
  const float *pv = rt_exec_view(x[0], RT_PARAMS);
  rt_exec_sgd(x[0], 0.0f, 0.0f, 0.0f);
  size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = ((size_t)g->n_params * sizeof(float) + page - 1) / page;
  unsigned char *in_core = malloc(pages);
  size_t resident = 0;
  CHECK(in_core && mincore((void *)pv, pages * page, in_core) == 0, "mincore");
  for (size_t k = 0; in_core && k < pages; k++) resident += in_core[k] & 1;
  CHECK(resident == 0, "%s, %s: %zu of %zu pages of the parameters' view stay resident after a step",
        g->cfg.name, kind, resident, pages);
  free(in_core);
  int64_t arena = rt_exec_memory(x[0]).arena, bounds = rt_exec_memory(x[1]).arena;
  CHECK(arena0 < bounds && arena < bounds, "%s: the live arena (%lld, %lld at the seed) should be below the "
        "bounds' (%lld)", g->cfg.name, (long long)arena, (long long)arena0, (long long)bounds);
  printf("%s, %s: %d steps, %d expansions, %d kernels set, %d revived, %ld new steps; worst loss difference "
         "%.2g; arena %lld bytes per sample at the seed, %lld at the end, %lld at the bounds\n",
         g->cfg.name, kind, STEPS, expanded, set, revived, rebuilds, worst, (long long)arena0,
         (long long)arena, (long long)bounds);
  free(dg[0]), free(dg[1]), free(in), free(vals), free(f), free(b);
  for (int k = 0; k < 2; k++) srch_free(&s[k]), rt_exec_free(x[k]);
  ir_free(g);
}

int main(int argc, char **argv) {
  (void)argc;
#if defined(__x86_64__)
  /* blas's sums depend on the shapes too, with most of OpenBLAS's sgemm
   * kernels: they split a product's K (and tile M and N) by the matrices'
   * sizes, so the live layout's product over the worked channels and the
   * same product at the bounds, the others zero, round differently. Its
   * Sandybridge kernels give the same bits either way (a product against
   * the same one padded with zero rows, columns and K, every transpose:
   * 0 of 1,080 shapes differ, against 165 with the SkylakeX kernels and
   * 640 with Haswell's). Model r's batch norm over a channel of variance
   * near eps magnifies a difference some 250 times, and training carries
   * it on: under SkylakeX's kernels (what OpenBLAS picks on an AVX-512
   * machine) blas's two layouts part by 4e-5 a step after the first
   * expansion and by 3% later. The comparison is of the layouts, not of
   * OpenBLAS's roundings: the test runs itself under the Sandybridge
   * kernels, which OpenBLAS reads when it loads. */
  const char *core = getenv("OPENBLAS_CORETYPE");
  if (__builtin_cpu_supports("avx") && (!core || strcmp(core, "Sandybridge") != 0)) {
    setenv("OPENBLAS_CORETYPE", "Sandybridge", 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "test_packed: cannot run itself again (%s); blas's sums may depend on "
            "the shapes\n", strerror(errno));
  }
#else
  (void)argv;
#endif
  /* The kernel sets whose sums do not depend on the shapes; the JIT's do
   * (its blocking follows the channel counts), and under weight
   * granularity with batch norm after the ReLU a unit near its kink
   * makes a rounding difference grow past 1e-5 within a step, at the
   * bounds as in the live layout (both stay within 1e-4 of ref there). */
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
    check_model(models[m], "ref");
    check_model(models[m], "blas");
  }
  check_model(models[0], "cpu");
  check_model(models[2], "cpu");
  if (failures) fprintf(stderr, "test_packed: %d failures\n", failures);
  else printf("test_packed: ok\n");
  return failures != 0;
}
