/* deferred.h: a prepare during phase II (whose passes run on kernels that
 * follow the masks: the host step's live set, the device step's dense
 * ones) leaves the step's own kernels for its next pass off phase II.
 * test_live checks it on the host step, test_gpu_step on the device step:
 * the same steps, bit for bit, as a twin prepared outside phase II (a
 * kernel left for the old pattern would miss the weight that came alive). */
#ifndef ILNAS_TESTS_DEFERRED_H
#define ILNAS_TESTS_DEFERRED_H

#include "runtime/exec.h"
#include "tests/jit/jitutil.h"

static void jt_check_deferred(const char *src, const char *backend, int threads, uint64_t seed) {
  char err[256];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  enum { N = 8, STEPS = 3 };
  rt_exec *x[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    x[k] = rt_exec_new(g, N, threads, backend, err, sizeof err);
    CHECK(x[k], "%s exec: %s", backend, err);
    if (!x[k]) break;
    rt_exec_init_params(x[k], seed);
    CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "prepare: %s", err);
  }
  /* a missing weight of a live conv layer comes alive at 0.5 */
  int64_t at = -1;
  for (int i = 0; x[1] && i < g->n_layers && at < 0; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->kind != IR_CONV || !x[0]->arch->alive[i]) continue;
    for (int64_t k = l->w_off; k < l->w_off + l->n_w && at < 0; k++)
      if (!ir_alpha_get(x[0]->arch, k)) at = k;
  }
  CHECK(!x[1] || at >= 0, "no missing weight in a live conv layer");
  const ir_tensor *t = &g->tensors[g->input_t];
  jt_state = 77;
  float *in = jt_randf((size_t)N * t->c * t->h * t->w);
  ir_label lab[N];
  for (int i = 0; i < N; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  const float half = 0.5f;
  double loss[2][STEPS];
  for (int k = 0; k < 2 && at >= 0; k++) {
    rt_exec_phase2(x[k], k == 0);
    rt_exec_set_unit(x[k], at, 1, 1, &half);
    CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "prepare: %s", err);
    rt_exec_phase2(x[k], 0);
    for (int s = 0; s < STEPS; s++) {
      rt_exec_set_input(x[k], in, N);
      rt_exec_forward(x[k]);
      loss[k][s] = rt_exec_loss(x[k], lab, 1, NULL);
      rt_exec_backward(x[k]);
      rt_exec_sgd(x[k], 0.05f, 0.9f, 0.0f);
    }
  }
  if (at >= 0) {
    for (int s = 0; s < STEPS; s++)
      CHECK(memcmp(&loss[0][s], &loss[1][s], sizeof loss[0][s]) == 0,
            "%s, step %d: loss %.9g after a prepare in phase II, %.9g after one outside it", backend, s,
            loss[0][s], loss[1][s]);
    CHECK(memcmp(rt_exec_view(x[0], RT_PARAMS), rt_exec_view(x[1], RT_PARAMS),
                 (size_t)g->n_params * sizeof(float)) == 0,
          "%s: parameters differ after a prepare in phase II", backend);
    printf("%s: a prepare in phase II, then 3 steps: the same losses as without (%.6f %.6f %.6f)\n", backend,
           loss[0][0], loss[0][1], loss[0][2]);
  }
  free(in);
  for (int k = 0; k < 2; k++)
    if (x[k]) rt_exec_free(x[k]);
  ir_free(g);
}

#endif
