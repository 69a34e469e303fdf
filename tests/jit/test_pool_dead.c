/* test_pool_dead: a conv layer whose output reaches a 2x2 max pool past a
 * dead layer of its stage (the seed of a template with bounds) feeds the
 * pool itself on the cpu backend's live layout: its forward pools from
 * its packed rows and its backward takes the pool's gradient by the
 * windows' codes (runtime/host.c, pool_among and pool_plan). Against ref,
 * which fuses nothing (the oracle), the losses and parameters must agree
 * within float rounding, before and after the dead layers come alive.
 * (That the pools then cost nothing of their own is a timing:
 * bench/live_cost.sh shows it.) */
#include <math.h>
#include <string.h>

#include "jitexec.h"

enum { BATCH = 8, STEPS = 6, THREADS = 2 };

static const char *const src =
    "model d { input 1x12x12; classes 4; search weight budget 3k from density 0.4 seed 3;"
    " stage conv { layers 1..2 channels 4..6 kernel 3x3; }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 6..8 kernel 3x3; }"
    " reduce maxpool 2;"
    " stage linear { layers 1 width 8; } }";

typedef struct result {
  double loss[STEPS];
  float *params;
  int dead;           /* dead layers at the seed */
} result;

/* STEPS steps on backend from the same seed and batches; the dead
 * layers come alive before step 3. The number of parameters, or -1. */
static long run(const char *backend, result *r) {
  char err[256];
  ir_graph *g;
  rt_exec *x = jt_exec(src, BATCH, THREADS, backend, &g);
  if (!x) return -1;
  for (int li = 0; li < g->n_layers; li++)
    r->dead += g->layers[li].kind == IR_CONV && !x->arch->alive[li];
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  jt_state = 1234567;
  float *in = jt_randf((size_t)STEPS * BATCH * img);
  ir_label lab[BATCH];
  for (int s = 0; s < STEPS; s++) {
    if (s == 3) { /* every dead layer alive */
      for (int li = 0; li < g->n_layers; li++)
        if (g->layers[li].w_off >= 0 && !x->arch->alive[li]) jt_wake(x, li);
      CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s: prepare: %s", backend, err);
    }
    for (int i = 0; i < BATCH; i++) lab[i] = (ir_label)((s * 3 + i) % 4);
    rt_exec_set_input(x, in + (size_t)s * BATCH * img, BATCH);
    rt_exec_forward(x);
    r->loss[s] = rt_exec_loss(x, lab, 1, NULL);
    rt_exec_backward(x);
    rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
    CHECK(rt_exec_status(x, err, sizeof err) == 0, "%s: step %d: %s", backend, s, err);
  }
  long np = (long)g->n_params;
  r->params = malloc((size_t)np * sizeof(float));
  memcpy(r->params, rt_exec_view(x, RT_PARAMS), (size_t)np * sizeof(float));
  free(in);
  rt_exec_free(x);
  ir_free(g);
  return np;
}

int main(void) {
  result live = {0}, ref = {0};
  long nl = run("cpu", &live), nb = run("ref", &ref);
  CHECK(live.dead >= 2, "the seed has %d dead conv layers: nothing between a conv and its pool",
        live.dead);
  if (nl > 0 && nb == nl) {
    for (int s = 0; s < STEPS; s++)
      CHECK(fabs(live.loss[s] - ref.loss[s]) <= 1e-5 * fabs(ref.loss[s]),
            "step %d's loss %.9g on cpu, %.9g on ref", s, live.loss[s], ref.loss[s]);
    double e = jt_nerr(live.params, ref.params, (size_t)nl);
    CHECK(e <= 1e-5, "the parameters on cpu and on ref differ by %.3g", e);
  }
  free(live.params), free(ref.params);
  if (failures) fprintf(stderr, "test_pool_dead: %d failures\n", failures);
  else printf("test_pool_dead: ok\n");
  return failures != 0;
}
