/* test_tasks: several tasks over one super-network. The step trains a
 * shared weight on the sum of the tasks' gradients (checked against each
 * task's own gradient and against finite differences of the summed
 * loss), keeps it the same in every task, and trains a task's own weights
 * on its gradient alone; phase II of the shared architecture grows it in
 * every task at once, in the trunk only, without changing any output;
 * the baselines grow it at random the same way. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "ir/ir.h"
#include "runtime/exec.h"
#include "search/search.h"

#include "tests/check.h"

enum { N = 6 };

static const char *TEMPLATE =
    "model t { input 1x6x6; classes %d; search weight budget 2k from density 0.5 seed 4; "
    "stage conv { layers 1..2 channels 3..5 kernel 3x3 dense; } reduce maxpool 2; "
    "stage linear { layers 1 width 4..8; } }";

static ir_graph *build(int classes) {
  char src[512];
  snprintf(src, sizeof src, TEMPLATE, classes);
  fe_model m;
  if (fe_parse_string("test.ilnas", src, &m, stderr)) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}

typedef struct two {
  ir_graph *g[2];
  rt_exec *x[2];
  float *in[2];
  ir_label *lab[2];
  ir_arch shared;
  int64_t trunk_end, *idx, n_idx;
} two;

/* Tasks of 4 and 3 classes; the shared α is the seed's trunk, its
 * weights task 0's. */
static int make(two *t, const char *backend) {
  memset(t, 0, sizeof *t);
  char err[512];
  rt_rng rng;
  rt_rng_seed(&rng, 17);
  for (int k = 0; k < 2; k++) {
    t->g[k] = build(4 - k);
    if (!t->g[k]) return -1;
    t->x[k] = rt_exec_new(t->g[k], N, 1, backend, err, sizeof err);
    if (!t->x[k]) {
      fprintf(stderr, "%s\n", err);
      return -1;
    }
    rt_exec_init_params(t->x[k], 5 + (uint64_t)k);
    size_t img = 36;
    t->in[k] = malloc(N * img * sizeof(float));
    t->lab[k] = malloc(N * sizeof(ir_label));
    for (size_t i = 0; i < N * img; i++) t->in[k][i] = (float)(rt_rng_uniform(&rng) * 2 - 1);
    for (int i = 0; i < N; i++) t->lab[k][i] = (ir_label)rt_rng_below(&rng, (uint32_t)(4 - k));
  }
  const ir_layer *head = &t->g[0]->layers[t->g[0]->n_layers - 1];
  t->trunk_end = head->w_off;
  ir_arch_init(&t->shared, t->g[0]);
  t->idx = malloc((size_t)t->trunk_end * sizeof *t->idx);
  const float *p0 = rt_exec_view(t->x[0], RT_PARAMS);
  float *p1 = rt_exec_params_write(t->x[1]);
  for (int64_t i = 0; i < t->trunk_end; i++)
    if (ir_alpha_get(t->x[0]->arch, i)) {
      CHECK(ir_alpha_get(t->x[1]->arch, i), "the seeds' trunks agree at %lld", (long long)i);
      ir_alpha_set(&t->shared, i, 1);
      t->idx[t->n_idx++] = i;
      p1[i] = p0[i];
    }
  for (int k = 0; k < 2; k++)
    if (rt_exec_prepare(t->x[k], err, sizeof err)) return -1;
  return 0;
}

static void drop(two *t) {
  for (int k = 0; k < 2; k++) {
    rt_exec_free(t->x[k]), ir_free(t->g[k]);
    free(t->in[k]), free(t->lab[k]);
  }
  ir_arch_free(&t->shared);
  free(t->idx);
}

static double pass(rt_exec *x, const float *in, const ir_label *lab, int grad) {
  rt_exec_set_input(x, in, N);
  rt_exec_forward(x);
  double loss = rt_exec_loss(x, lab, grad, NULL);
  if (grad) rt_exec_backward(x);
  return loss;
}

/* One step: against w - lr (g0 + g1 + decay w) at a shared weight and
 * w - lr (g_k + decay w) at task k's own; then a second step, with
 * momentum, keeps the shared weights the same in both tasks. */
static void test_step(const char *backend) {
  two t;
  if (make(&t, backend)) {
    CHECK(0, "%s: two tasks", backend);
    drop(&t);
    return;
  }
  const float lr = 0.1f, mom = 0.9f, decay = 1e-3f;
  float *w[2], *gr[2];
  for (int k = 0; k < 2; k++) {
    size_t np = (size_t)t.g[k]->n_params;
    pass(t.x[k], t.in[k], t.lab[k], 1);
    gr[k] = malloc(np * sizeof(float)), w[k] = malloc(np * sizeof(float));
    memcpy(gr[k], rt_exec_view(t.x[k], RT_GRADS), np * sizeof(float));
    memcpy(w[k], rt_exec_view(t.x[k], RT_PARAMS), np * sizeof(float));
  }
  float *sum = malloc((size_t)(t.n_idx ? t.n_idx : 1) * sizeof(float));
  rt_exec_sgd_shared(t.x, 2, t.idx, t.n_idx, sum, lr, mom, decay);
  char err[512];
  CHECK(rt_exec_status(t.x[0], err, sizeof err) == 0, "%s: the step ran", backend);
  int bad = 0, nonzero = 0;
  for (int k = 0; k < 2; k++) {
    const float *p = rt_exec_view(t.x[k], RT_PARAMS);
    for (int64_t i = 0; i < t.g[k]->n_params; i++) {
      if (!ir_alpha_get(t.x[k]->arch, i)) continue;
      int sh = i < t.trunk_end && ir_alpha_get(&t.shared, i);
      float g = sh ? gr[0][i] + gr[1][i] : gr[k][i];
      float want = w[k][i] - lr * (g + decay * w[k][i]);
      nonzero += sh && gr[0][i] != 0 && gr[1][i] != 0;
      if (fabsf(p[i] - want) > 1e-6f + 1e-5f * fabsf(want) && bad++ < 5)
        CHECK(0, "%s: task %d parameter %lld (%s) is %g, want %g", backend, k, (long long)i,
              sh ? "shared" : "its own", p[i], want);
    }
  }
  CHECK(bad == 0, "%s: %d parameters off after one step", backend, bad);
  CHECK(nonzero > 10, "%s: %d shared weights with a gradient from both tasks", backend, nonzero);
  for (int s = 0; s < 3; s++) {
    for (int k = 0; k < 2; k++) pass(t.x[k], t.in[k], t.lab[k], 1);
    rt_exec_sgd_shared(t.x, 2, t.idx, t.n_idx, sum, lr, mom, decay);
  }
  const float *p0 = rt_exec_view(t.x[0], RT_PARAMS);
  int differ = 0;
  for (int64_t j = 0; j < t.n_idx; j++)
    differ += p0[t.idx[j]] != rt_exec_view(t.x[1], RT_PARAMS)[t.idx[j]];
  CHECK(differ == 0, "%s: %d shared weights differ between the tasks after 4 steps", backend,
        differ);
  for (int k = 0; k < 2; k++) free(w[k]), free(gr[k]);
  free(sum);
  drop(&t);
}

/* The summed gradient against central differences of L0 + L1 at shared
 * weights, moved in both tasks at once. */
static void test_finite_differences(void) {
  two t;
  if (make(&t, "ref")) {
    CHECK(0, "two tasks");
    drop(&t);
    return;
  }
  float *g[2];
  for (int k = 0; k < 2; k++) {
    pass(t.x[k], t.in[k], t.lab[k], 1);
    g[k] = malloc((size_t)t.g[k]->n_params * sizeof(float));
    memcpy(g[k], rt_exec_view(t.x[k], RT_GRADS), (size_t)t.g[k]->n_params * sizeof(float));
  }
  int checked = 0, bad = 0;
  const float eps = 1e-2f;
  for (int64_t j = 0; j < t.n_idx && checked < 12; j += 1 + t.n_idx / 12) {
    int64_t i = t.idx[j];
    double l[2] = {0, 0};
    for (int side = 0; side < 2; side++)
      for (int k = 0; k < 2; k++) {
        float *p = rt_exec_params_write(t.x[k]);
        float was = p[i];
        p[i] = was + (side ? -eps : eps);
        l[side] += pass(t.x[k], t.in[k], t.lab[k], 0);
        rt_exec_params_write(t.x[k])[i] = was;
      }
    double fd = (l[0] - l[1]) / (2 * eps), an = (double)g[0][i] + g[1][i];
    checked++;
    if (fabs(fd - an) > 2e-3 + 0.05 * fabs(an) && bad++ < 4)
      CHECK(0, "shared weight %lld: finite differences %g, summed gradient %g", (long long)i,
            fd, an);
  }
  CHECK(checked >= 8 && bad == 0, "%d of %d shared weights off", bad, checked);
  free(g[0]), free(g[1]);
  drop(&t);
}

/* Phase II of the shared architecture: it grows in both tasks, in the
 * trunk, within its budget, at zero. */
static void test_expand_shared(void) {
  two t;
  if (make(&t, "cpu")) {
    CHECK(0, "two tasks");
    drop(&t);
    return;
  }
  srch_state s;
  srch_init(&s, t.g[0], FE_SEARCH_ILNAS, 3);
  int64_t before = ir_count_params(t.g[0], &t.shared).active;
  s.budget = before + 40;
  srch_batches b[2] = {{1, N, t.in[0], t.lab[0]}, {1, N, t.in[1], t.lab[1]}};
  float *out[2];
  for (int k = 0; k < 2; k++) {
    out[k] = malloc((size_t)N * (size_t)(4 - k) * sizeof(float));
    pass(t.x[k], t.in[k], t.lab[k], 0);
    memcpy(out[k], rt_exec_view(t.x[k], RT_LOGITS), (size_t)N * (size_t)(4 - k) * sizeof(float));
  }
  srch_event ev;
  int rc = srch_expand_shared(&s, t.x, 2, b, &t.shared, t.trunk_end, &ev);
  char err[512];
  for (int k = 0; k < 2; k++) rt_exec_prepare(t.x[k], err, sizeof err);
  int64_t after = ir_count_params(t.g[0], &t.shared).active;
  CHECK(rc == 0 && ev.added > 0 && after - before == ev.added,
        "the shared architecture grew (rc %d, %lld added, %lld -> %lld)", rc,
        (long long)ev.added, (long long)before, (long long)after);
  CHECK(after <= s.budget, "within its budget: %lld of %lld", (long long)after,
        (long long)s.budget);
  int outside = 0, missing = 0;
  for (int64_t i = 0; i < t.g[0]->n_params; i++) {
    if (!ir_alpha_get(&t.shared, i)) continue;
    outside += i >= t.trunk_end;
    for (int k = 0; k < 2; k++) missing += !ir_alpha_get(t.x[k]->arch, i);
  }
  CHECK(outside == 0 && missing == 0, "shared bits outside the trunk: %d, missing in a task: %d",
        outside, missing);
  for (int k = 0; k < 2; k++) {
    pass(t.x[k], t.in[k], t.lab[k], 0);
    const float *now = rt_exec_view(t.x[k], RT_LOGITS);
    float worst = 0;
    for (int i = 0; i < N * (4 - k); i++) worst = fmaxf(worst, fabsf(now[i] - out[k][i]));
    CHECK(worst < 1e-5f, "task %d's outputs moved by %g", k, worst);
    free(out[k]);
  }
  srch_free(&s);
  drop(&t);
}

/* The baselines' shared growth: m parameters at random, in every task,
 * in the trunk. */
static void test_grow_shared_random(void) {
  two t;
  if (make(&t, "ref")) {
    CHECK(0, "two tasks");
    drop(&t);
    return;
  }
  srch_state s;
  srch_init(&s, t.g[0], FE_SEARCH_RANDOM, 8);
  srch_event ev = {0};
  int64_t before = ir_count_params(t.g[0], &t.shared).active;
  int64_t got = srch_grow_shared_random(&s, t.x, 2, &t.shared, t.trunk_end, 25, &ev);
  int64_t after = ir_count_params(t.g[0], &t.shared).active;
  CHECK(got > 15 && got <= 25 && after - before == got, "grew %lld of 25 (%lld -> %lld)",
        (long long)got, (long long)before, (long long)after);
  int bad = 0;
  for (int64_t i = 0; i < t.g[0]->n_params; i++)
    if (ir_alpha_get(&t.shared, i))
      bad += i >= t.trunk_end || !ir_alpha_get(t.x[0]->arch, i) || !ir_alpha_get(t.x[1]->arch, i);
  CHECK(bad == 0, "%d shared parameters outside the trunk or missing in a task", bad);
  srch_free(&s);
  drop(&t);
}

int main(void) {
  test_step("ref");
  test_step("cpu");
  test_step("blas/bounds");
  test_finite_differences();
  test_expand_shared();
  test_grow_shared_random();
  if (failures) fprintf(stderr, "test_tasks: %d failures\n", failures);
  else printf("test_tasks: ok\n");
  return failures != 0;
}
