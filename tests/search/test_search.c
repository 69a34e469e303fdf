/* test_search: the ranking of phase II, the growth moves that must leave
 * the network's function unchanged, the budget, kernel granularity. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "base/rng.h"
#include "search/search.h"

#include "tests/jit/jitexec.h"


static ir_graph *build(const char *src) {
  fe_model m;
  if (fe_parse_string("test.ilnas", src, &m, stderr)) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}

static size_t input_size(const ir_graph *g) {
  const ir_tensor *t = &g->tensors[g->input_t];
  return (size_t)t->c * t->h * t->w;
}

/* Logits of a fixed random batch. */
static void logits(rt_exec *x, const float *in, int n, float *out) {
  rt_exec_set_input(x, in, n);
  rt_exec_forward(x);
  memcpy(out, rt_exec_view(x, RT_LOGITS), (size_t)n * x->g->cfg.classes * sizeof(float));
}

/* Brute force: is `idx` among the top-`count` of `score` over `cand`? */
static void test_ranking(void) {
  ir_graph *g = build("model r { input 1x1x6; classes 4; "
                      "search weight budget 1k from density 0.5 seed 3; }");
  CHECK(g, "build");
  if (!g) return;
  rt_rng rng;
  rt_rng_seed(&rng, 9);
  float *grad = calloc((size_t)g->n_params, sizeof(float));
  float *gstar = calloc((size_t)g->n_params, sizeof(float));
  for (int64_t i = 0; i < g->n_params; i++) {
    grad[i] = (float)(rt_rng_uniform(&rng) * 2 - 1);
    gstar[i] = (float)(rt_rng_uniform(&rng) * 2 - 1);
  }
  int64_t missing = ir_count_params(g, &g->arch).candidate;
  CHECK(missing >= 6, "too few missing parameters (%lld)", (long long)missing);
  srch_unit *u;
  int64_t n = 5, nc = srch_add_candidates(g, &g->arch, grad, n, &u);
  CHECK(nc == 5, "AddCandidates took %lld of 5", (long long)nc);
  /* every candidate is missing and no missing one beats the weakest */
  float weakest = INFINITY;
  for (int64_t i = 0; i < nc; i++) {
    CHECK(!ir_alpha_get(&g->arch, u[i].start), "candidate %lld is active", (long long)u[i].start);
    float a = fabsf(grad[u[i].start]);
    if (a < weakest) weakest = a;
    CHECK(fabsf(u[i].score - a) < 1e-7f, "score is not |g|");
  }
  for (int64_t p = 0; p < g->n_params; p++) {
    if (ir_alpha_get(&g->arch, p)) continue;
    int in = 0;
    for (int64_t i = 0; i < nc; i++) in |= u[i].start == p;
    CHECK(in || fabsf(grad[p]) <= weakest, "missing %lld with |g| %g left out",
          (long long)p, fabsf(grad[p]));
  }
  /* UpdateArch keeps the best 2 by |g + g*| among the candidates */
  srch_unit cand[5];
  memcpy(cand, u, sizeof cand);
  int64_t nk = srch_update_arch(g, &g->arch, u, nc, grad, gstar, 2);
  CHECK(nk == 2, "UpdateArch kept %lld of 2", (long long)nk);
  for (int i = 0; i < 5; i++) {
    int kept = cand[i].start == u[0].start || cand[i].start == u[1].start;
    float v = fabsf(grad[cand[i].start] + gstar[cand[i].start]);
    CHECK(kept || (v <= fabsf(grad[u[0].start] + gstar[u[0].start]) &&
                   v <= fabsf(grad[u[1].start] + gstar[u[1].start])),
          "candidate %lld with |g+g*| %g dropped", (long long)cand[i].start, v);
  }
  free(u), free(grad), free(gstar);
  ir_free(g);

  /* kernel granularity: whole kernels, scored by the norm of the gradient */
  g = build("model k { input 2x5x5; classes 3; search kernel seed 2 from density 0.5;"
            " stage conv { layers 1 channels 3 kernel 3x3; } }");
  CHECK(g, "build kernel model");
  if (!g) return;
  grad = calloc((size_t)g->n_params, sizeof(float));
  rt_rng_seed(&rng, 4);
  for (int64_t i = 0; i < g->n_params; i++) grad[i] = rt_rng_uniform(&rng) - 0.5f;
  nc = srch_add_candidates(g, &g->arch, grad, 30, &u);
  int64_t total = 0;
  for (int64_t i = 0; i < nc; i++) {
    const ir_layer *l = &g->layers[u[i].layer];
    total += u[i].len;
    if (l->kind == IR_CONV && u[i].start < l->b_off) {
      CHECK(u[i].len == 9 && (u[i].start - l->w_off) % 9 == 0, "kernel unit split");
      double s = 0;
      for (int k = 0; k < 9; k++) s += (double)grad[u[i].start + k] * grad[u[i].start + k];
      CHECK(fabs(sqrt(s) - u[i].score) < 1e-5, "kernel score is not the norm");
    }
    if (i > 0) CHECK(u[i].score <= u[i - 1].score, "candidates out of order");
  }
  CHECK(total <= 30 && total > 20, "kernel candidates hold %lld parameters", (long long)total);
  free(u), free(grad);
  ir_free(g);
}

/* AddCandidates ranks by selecting the best, not by sorting all: against
 * a brute-force full sort, on gradients with many ties and zeros, for caps
 * from one parameter to every missing one. */
static int by_rank(const void *a, const void *b) {
  const float *p = a, *q = b; /* (|g|, index) pairs */
  if (p[0] != q[0]) return p[0] < q[0] ? 1 : -1;
  return p[1] < q[1] ? -1 : p[1] > q[1];
}

static void test_ranking_select(void) {
  ir_graph *g = build("model q { input 1x1x40; classes 10; "
                      "search weight budget 10k from density 0.3 seed 5; "
                      "stage linear { layers 1..1 width 60..60; } }");
  CHECK(g, "build");
  if (!g) return;
  rt_rng rng;
  rt_rng_seed(&rng, 11);
  float *grad = calloc((size_t)g->n_params, sizeof(float));
  float *ref = malloc((size_t)g->n_params * 2 * sizeof(float));
  int64_t nm = 0;
  for (int64_t i = 0; i < g->n_params; i++) {
    /* eight levels, a quarter of them zero */
    grad[i] = (float)((int)(rt_rng_uniform(&rng) * 8) - 2) * 0.25f;
    if (ir_alpha_get(&g->arch, i)) continue;
    ref[2 * nm] = fabsf(grad[i]), ref[2 * nm + 1] = (float)i, nm++;
  }
  qsort(ref, (size_t)nm, 2 * sizeof(float), by_rank);
  int64_t nz = nm;
  while (nz > 0 && ref[2 * (nz - 1)] == 0.0f) nz--;
  const int64_t caps[] = {1, 7, 100, nm / 5, nm / 4 + 1, nm / 2, nz, nm, nm + 10};
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    srch_unit *u;
    int64_t nc = srch_add_candidates(g, &g->arch, grad, caps[c], &u);
    int64_t want = caps[c] < nz ? caps[c] : nz;
    CHECK(nc == want, "cap %lld: %lld candidates, want %lld", (long long)caps[c],
          (long long)nc, (long long)want);
    for (int64_t i = 0; i < nc && i < want; i++)
      if (u[i].start != (int64_t)ref[2 * i + 1]) {
        CHECK(0, "cap %lld: candidate %lld is %lld, want %lld", (long long)caps[c],
              (long long)i, (long long)u[i].start, (long long)ref[2 * i + 1]);
        break;
      }
    free(u);
  }
  free(grad), free(ref);
  ir_free(g);
}

/* The dense gradient of phase II (srch_dense_grad) against central
 * differences of the loss, at active and missing weights alike of the
 * live layers (whose backward computes it with the masks lifted), on the
 * cpu backend with two threads as in training. (A dead layer's gradient
 * is that of its revival as the identity, which no single weight's
 * difference shows.) */
static void test_dense_grad(void) {
  ir_graph *g = build("model d { input 1x6x6; classes 3; search weight budget 2k from "
                      "density 0.4 seed 8; stage conv { layers 1..2 channels 3..4 kernel 3x3; }"
                      " reduce maxpool 2; stage linear { layers 1..1 width 5..6; } }");
  CHECK(g, "build");
  if (!g) return;
  enum { N = 8 };
  char err[256];
  rt_exec *x = rt_exec_new(g, N, 2, "cpu", err, sizeof err);
  CHECK(x, "exec: %s", err);
  srch_state st;
  if (!x || srch_init(&st, g, FE_SEARCH_ILNAS, 1)) {
    rt_exec_free(x), ir_free(g);
    return;
  }
  rt_exec_init_params(x, 3);
  rt_rng rng;
  rt_rng_seed(&rng, 21);
  size_t img = input_size(g);
  float *in = malloc(N * img * sizeof *in), *grad = malloc((size_t)g->n_params * sizeof *grad);
  ir_label lab[N];
  for (size_t i = 0; i < N * img; i++) in[i] = rt_rng_uniform(&rng) * 2.0f - 1.0f;
  for (int i = 0; i < N; i++) lab[i] = (ir_label)rt_rng_below(&rng, 3);
  srch_batches b = {1, N, in, lab};
  double loss;
  CHECK(srch_dense_grad(&st, x, &b, grad, &loss) == 0, "dense gradient: %s", st.err);
  int checked = 0, off = 0;
  rt_exec_phase2(x, 1); /* the loss with masks flipped, as phase II evaluates it */
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->w_off < 0 || !x->arch->alive[li]) continue;
    for (int64_t k = 0; k < l->n_w; k += 1 + l->n_w / 12) {
      int64_t i = l->w_off + k;
      uint8_t m = x->mask[i];
      float w = rt_exec_view(x, RT_PARAMS)[i], h = 1e-2f;
      if (!m) rt_exec_set_unit(x, i, 1, 1, NULL);
      rt_exec_params_write(x)[i] = w + h;
      rt_exec_set_input(x, in, N);
      rt_exec_forward(x);
      double lp = rt_exec_loss(x, lab, 0, NULL);
      rt_exec_params_write(x)[i] = w - h;
      rt_exec_set_input(x, in, N);
      rt_exec_forward(x);
      double lm = rt_exec_loss(x, lab, 0, NULL);
      if (!m) rt_exec_set_unit(x, i, 1, 0, NULL);
      rt_exec_params_write(x)[i] = w;
      double fd = (lp - lm) / (2.0 * h);
      checked++;
      if (fabs(fd - grad[i]) > 2e-3 + 0.05 * fabs(fd)) off++;
    }
  }
  rt_exec_phase2(x, 0);
  /* a ReLU kink inside +-h may spoil a few */
  CHECK(off * 10 <= checked, "%d of %d dense gradients off the central differences", off,
        checked);
  free(in), free(grad);
  srch_free(&st);
  rt_exec_free(x), ir_free(g);
}

/* New nodes (placeholders) and new layers do not change the output, in
 * training and in inference, without batch norm and with it before or
 * after the ReLU. */
static void test_function_preserving(const char *norm) {
  char src[512];
  snprintf(src, sizeof src,
           "model f { input 1x8x8; classes 5; search weight seed 5 from density 0.6;"
           " stage conv { layers 1..3 channels 3..6 kernel 3x3 dense %s; }"
           " reduce maxpool 2;"
           " stage conv { layers 1..2 channels 4..6 kernel 3x3 %s; }"
           " stage linear { layers 1..3 width 6..9; } }", norm, norm);
  ir_graph *g = build(src);
  double tol = norm[0] ? 1e-5 : 1e-6; /* batch norm's identity rounds */
  CHECK(g, "build");
  if (!g) return;
  char err[256];
  int n = 6;
  rt_exec *x = rt_exec_new(g, n, 1, NULL, err, sizeof err);
  srch_state s;
  CHECK(x && srch_init(&s, g, FE_SEARCH_ILNAS, 1) == 0, "init");
  rt_exec_init_params(x, 3);
  size_t img = input_size(g);
  float *in = malloc((size_t)n * img * sizeof(float));
  rt_rng rng;
  rt_rng_seed(&rng, 8);
  for (size_t i = 0; i < n * img; i++) in[i] = rt_rng_uniform(&rng) * 2 - 1;
  int k = g->cfg.classes;
  float *a = malloc((size_t)n * k * sizeof(float)), *b = malloc((size_t)n * k * sizeof(float));
  float *ai = malloc((size_t)n * k * sizeof(float));
  float *s0 = malloc((size_t)(g->n_stats ? g->n_stats : 1) * sizeof(float));
  logits(x, in, n, a);
  int64_t before = ir_count_params(g, x->arch).active;
  int added = srch_refill(&s, x);
  CHECK(added > 0, "no placeholders added");
  CHECK(ir_count_params(g, x->arch).active > before, "placeholders have no incoming weights");
  logits(x, in, n, b);
  CHECK(memcmp(a, b, (size_t)n * k * sizeof(float)) == 0,
        "placeholder nodes changed the logits");
  int revived = 0;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->w_off < 0 || x->arch->alive[li] || !l->can_die) continue;
    /* a training forward moves the running statistics; as phase II does,
     * they come back afterwards, but for the revived layer's */
    rt_exec_set_training(x, 0);
    logits(x, in, n, ai);
    memcpy(s0, rt_exec_view(x, RT_STATS), (size_t)g->n_stats * sizeof *s0);
    rt_exec_set_training(x, 1);
    logits(x, in, n, b); /* the statistics its batch norm starts from */
    CHECK(srch_revive_layer(x, li) > 0, "%s: identity has no taps", l->name);
    revived++;
    CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
    if (l->bn) memcpy(s0 + l->s_off, rt_exec_view(x, RT_STATS) + l->s_off,
                      2 * (size_t)l->cout * sizeof *s0);
    logits(x, in, n, b);
    memcpy(rt_exec_edit(x, RT_STATS), s0, (size_t)g->n_stats * sizeof *s0);
    double worst = 0;
    for (int i = 0; i < n * k; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    CHECK(worst <= tol, "%s: reviving %s changed the logits by %g", norm, l->name, worst);
    rt_exec_set_training(x, 0);
    logits(x, in, n, b);
    rt_exec_set_training(x, 1);
    worst = 0;
    for (int i = 0; i < n * k; i++) worst = fmax(worst, fabs(ai[i] - b[i]));
    CHECK(worst <= tol, "%s: reviving %s changed the inference logits by %g", norm, l->name,
          worst);
  }
  CHECK(revived >= 3, "only %d dead layers to revive", revived);
  free(in), free(a), free(b), free(ai), free(s0);
  srch_free(&s);
  rt_exec_free(x);
  ir_free(g);
}

/* A channel without incoming weights that feeds the next layer (its
 * output a constant: 0, or batch norm's beta) is no placeholder: the
 * refill leaves it as it is, and the logits with it. A task's network
 * has such channels where another task's own weights feed them. */
static void test_constant_node(const char *norm) {
  char src[512];
  snprintf(src, sizeof src,
           "model f { input 1x8x8; classes 5; search weight seed 5 from density 0.6;"
           " stage conv { layers 2 channels 3..6 kernel 3x3 %s; }"
           " stage linear { layers 1 width 6..9; } }", norm);
  ir_graph *g = build(src);
  CHECK(g, "build");
  if (!g) return;
  char err[256];
  int n = 6;
  rt_exec *x = rt_exec_new(g, n, 1, NULL, err, sizeof err);
  srch_state s;
  CHECK(x && srch_init(&s, g, FE_SEARCH_ILNAS, 1) == 0, "init");
  rt_exec_init_params(x, 3);
  /* conv1.0's channel 0: no incoming weights, no bias; an outgoing
   * weight into conv1.1; beta 0.5 where there is batch norm */
  const ir_layer *l0 = &g->layers[0], *l1 = &g->layers[1];
  int64_t row = ir_fan_in(l0);
  rt_exec_set_unit(x, l0->w_off, row, 0, NULL);
  rt_exec_set_unit(x, l0->b_off, 1, 0, NULL);
  float v = 0.7f;
  rt_exec_set_unit(x, l1->w_off + 4, 1, 1, &v); /* out 0, in 0, the centre tap */
  if (l0->g_off >= 0) rt_exec_params_write(x)[l0->g_off + l0->cout] = 0.5f;
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
  size_t img = input_size(g);
  float *in = malloc((size_t)n * img * sizeof(float));
  rt_rng rng;
  rt_rng_seed(&rng, 8);
  for (size_t i = 0; i < n * img; i++) in[i] = rt_rng_uniform(&rng) * 2 - 1;
  int k = g->cfg.classes;
  float *a = malloc((size_t)n * k * sizeof(float)), *b = malloc((size_t)n * k * sizeof(float));
  logits(x, in, n, a);
  srch_refill(&s, x);
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
  int incoming = 0;
  for (int64_t i = 0; i < row; i++) incoming += ir_alpha_get(x->arch, l0->w_off + i);
  const char *what = norm[0] ? norm : "no batch norm";
  CHECK(incoming == 0, "%s: the refill gave a channel that feeds conv1.1 %d incoming weights",
        what, incoming);
  logits(x, in, n, b);
  CHECK(memcmp(a, b, (size_t)n * k * sizeof(float)) == 0, "%s: the refill changed the logits",
        what);
  free(in), free(a), free(b);
  srch_free(&s);
  rt_exec_free(x);
  ir_free(g);
}

static void check_whole_kernels(const ir_graph *g, const ir_arch *a, const char *what) {
  if (g->cfg.gran != FE_GRAN_KERNEL) return;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0) continue;
    int kk = l->k * l->k;
    for (int64_t u = 0; u < l->n_w / kk; u++) {
      int first = ir_alpha_get(a, l->w_off + u * kk);
      for (int t = 1; t < kk; t++)
        if (ir_alpha_get(a, l->w_off + u * kk + t) != first) {
          CHECK(0, "%s: %s kernel %lld split", what, l->name, (long long)u);
          return;
        }
    }
  }
}

/* Random models and expansions: the budget holds, even for α*; kernel
 * granularity stays whole; the outputs stay finite. */
static void test_budget(void) {
  rt_rng rng;
  rt_rng_seed(&rng, 2024);
  int bn_revivals = 0;
  for (int trial = 0; trial < 32; trial++) {
    char src[1024];
    int gran = trial % 2, c1 = 2 + (int)rt_rng_below(&rng, 4), l1 = 1 + (int)rt_rng_below(&rng, 3);
    int w = 3 + (int)rt_rng_below(&rng, 6), dense = (int)rt_rng_below(&rng, 2);
    int budget = 300 + (int)rt_rng_below(&rng, 3000);
    int method = trial % 3 == 2 ? FE_SEARCH_RANDOM : FE_SEARCH_ILNAS;
    int bn = trial / 2 % 2; /* both granularities with and without batch norm */
    snprintf(src, sizeof src,
             "model b%d { input 2x6x6; classes 3; search %s budget %d from density 0.%d seed %d;"
             " stage conv { layers 1..%d channels 2..%d kernel 3x3 %s %s; }"
             " reduce maxpool 2; stage linear { layers 1..2 width 3..%d; } }",
             trial, gran ? "kernel" : "weight", budget, 1 + (int)rt_rng_below(&rng, 9),
             trial, l1 + bn, c1, dense ? "dense" : "", bn ? "norm batch" : "", w);
    fe_model m;
    FILE *null = fopen("/dev/null", "w");
    int bad = fe_parse_string("b.ilnas", src, &m, null);
    ir_graph *g = bad ? NULL : ir_build(&m, null);
    if (!bad) fe_model_free(&m);
    fclose(null);
    if (!g) continue; /* budget below the seed: refused, as it should be */
    char err[256];
    int n = 4;
    rt_exec *x = rt_exec_new(g, n, 1, NULL, err, sizeof err);
    srch_state s;
    srch_init(&s, g, (fe_search)method, (uint64_t)trial);
    s.lr = 0.1f;
    rt_exec_init_params(x, 1);
    srch_refill(&s, x);
    size_t img = input_size(g);
    float *in = malloc((size_t)n * img * sizeof(float)), *fixed = malloc((size_t)n * img * sizeof(float));
    ir_label lab[4], flab[4];
    for (size_t i = 0; i < n * img; i++) in[i] = rt_rng_uniform(&rng);
    for (size_t i = 0; i < n * img; i++) fixed[i] = rt_rng_uniform(&rng);
    for (int i = 0; i < n; i++) lab[i] = (ir_label)rt_rng_below(&rng, 3);
    for (int i = 0; i < n; i++) flab[i] = (ir_label)rt_rng_below(&rng, 3);
    srch_batches b = {1, n, in, lab};
    for (int e = 0; e < 6; e++) {
      int64_t mm, nn;
      srch_sizes(&s, x->arch, &mm, &nn);
      ir_count c = ir_count_params(g, x->arch);
      CHECK(c.active + nn <= g->cfg.budget, "trial %d: α* of %lld would exceed the budget %lld",
            trial, (long long)(c.active + nn), (long long)g->cfg.budget);
      srch_event ev;
      double eval_before = jt_infer_loss(x, fixed, n, flab);
      srch_expand(&s, x, &b, &ev);
      double eval_after = jt_infer_loss(x, fixed, n, flab);
      bn_revivals += bn && ev.new_layers > 0;
      c = ir_count_params(g, x->arch);
      CHECK(c.active <= g->cfg.budget, "trial %d: %lld active > budget %lld", trial,
            (long long)c.active, (long long)g->cfg.budget);
      CHECK(isfinite(ev.loss_after), "trial %d: loss not finite", trial);
      /* every move joins at zero or as the identity: same function */
      CHECK(fabs(ev.loss_after - ev.loss_before) <= 1e-5 * (1 + fabs(ev.loss_before)),
            "trial %d%s: expansion %d (%d new layers) changed the loss %g -> %g", trial,
            bn ? " (batch norm)" : "", e, ev.new_layers, ev.loss_before, ev.loss_after);
      /* in inference too, on another batch: a revived layer's running
       * statistics match its batch norm */
      CHECK(fabs(eval_after - eval_before) <= 1e-5 * (1 + fabs(eval_before)),
            "trial %d%s: expansion %d (%d new layers) changed the inference loss %g -> %g",
            trial, bn ? " (batch norm)" : "", e, ev.new_layers, eval_before, eval_after);
      /* the masks mirror α */
      const float *params = rt_exec_view(x, RT_PARAMS);
      for (int64_t i = 0; i < g->n_params; i++)
        if (x->mask[i] != ir_alpha_get(x->arch, i) || (!x->mask[i] && params[i] != 0.0f)) {
          CHECK(0, "trial %d: mask or masked weight out of step at %lld (mask %d alpha %d value %g)", trial, (long long)i, x->mask[i], ir_alpha_get(x->arch, i), params[i]);
          break;
        }
      check_whole_kernels(g, x->arch, "after an expansion");
    }
    free(in), free(fixed);
    srch_free(&s);
    rt_exec_free(x);
    ir_free(g);
  }
  CHECK(bn_revivals >= 3, "only %d expansions revived a layer with batch norm", bn_revivals);
}

/* Batch norm of a channel that is a constant (a bias, or nothing: a
 * sparse seed has many) gives beta in training; inference must agree,
 * whatever its running statistics have drifted to. Trains a sparse model
 * with batch norm that grows (dead layers with batch norm come alive),
 * then compares the loss of one batch in both modes. */
static void test_bn_constants(int grow) {
  /* growing: dead layers with batch norm to bring alive */
  ir_graph *g = build(grow ? "model c { input 1x12x12; classes 4; search kernel from density 0.3 seed 3;"
                             " stage conv { layers 1..2 channels 8..16 kernel 3x3 norm batch; }"
                             " reduce conv 2;"
                             " stage conv { layers 1..2 channels 8..16 kernel 3x3 dense norm batch; }"
                             " reduce gap; stage linear { layers 1 width 16; } }"
                           : "model c { input 1x12x12; classes 4; search kernel from density 0.3 seed 3;"
                             " stage conv { layers 1 channels 8..16 kernel 3x3 norm batch; }"
                             " reduce conv 2;"
                             " stage conv { layers 1 channels 8..16 kernel 3x3 norm batch; }"
                             " reduce gap; stage linear { layers 1 width 16; } }");
  CHECK(g, "model does not build");
  if (!g) return;
  enum { N = 32 };
  char err[256];
  rt_exec *x = rt_exec_new(g, N, 1, "cpu", err, sizeof err);
  CHECK(x, "exec: %s", err);
  if (!x) {
    ir_free(g);
    return;
  }
  rt_exec_init_params(x, 5);
  srch_state st;
  int have_st = grow && srch_init(&st, g, FE_SEARCH_ILNAS, 4) == 0, grown = 0;
  CHECK(have_st || !grow, "srch_init");
  if (have_st) srch_refill(&st, x), st.lr = 0.05f, st.alr = 0.5;
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s", err);
  uint8_t *varies = malloc((size_t)ir_chan_base(g, g->n_tensors));
  int constants = 0;
  CHECK(varies && ir_varying(g, x->arch, varies) == 0, "ir_varying");
  for (int li = 0; varies && li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!l->bn) continue;
    for (int c = 0; c < l->cout; c++) constants += !varies[ir_chan_base(g, l->out_t) + l->out_ch + c];
  }
  CHECK(constants > 0, "the model has no constant channel to test");
  rt_rng rng;
  rt_rng_seed(&rng, 8);
  size_t img = input_size(g);
  float *in = malloc((size_t)N * img * sizeof *in);
  ir_label lab[N];
  double train = 0, eval = 0;
  for (int step = 0; in && step < 120; step++) {
    for (size_t i = 0; i < N * img; i++) in[i] = rt_rng_uniform(&rng);
    for (int i = 0; i < N; i++) lab[i] = (ir_label)(in[i * img] * 4); /* learnable */
    if (have_st && step % 30 == 29) {
      srch_batches pb = {1, N, in, lab};
      srch_event ev;
      if (srch_expand(&st, x, &pb, &ev) == 0) grown += ev.new_layers;
      CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s", err);
    }
    rt_exec_set_input(x, in, N);
    rt_exec_forward(x);
    train = rt_exec_loss(x, lab, 1, NULL);
    rt_exec_backward(x);
    rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
  }
  rt_exec_set_input(x, in, N);
  rt_exec_forward(x);
  train = rt_exec_loss(x, lab, 0, NULL);
  rt_exec_set_training(x, 0);
  rt_exec_set_input(x, in, N);
  rt_exec_forward(x);
  eval = rt_exec_loss(x, lab, 0, NULL);
  rt_exec_set_training(x, 1);
  printf("batch norm with %d constant channels, %d layers grown: loss %.4f in training mode, "
         "%.4f in inference\n", constants, grown, train, eval);
  CHECK(grown > 0 || !grow, "no layer with batch norm came alive");
  CHECK(fabs(eval - train) <= 0.1 * train, "inference loss %g far from training's %g", eval, train);
  free(in), free(varies);
  if (have_st) srch_free(&st);
  rt_exec_free(x);
  ir_free(g);
}

int main(void) {
  test_ranking();
  test_ranking_select();
  test_dense_grad();
  test_function_preserving("");
  test_function_preserving("norm batch");
  test_function_preserving("norm batch after");
  test_constant_node("");
  test_constant_node("norm batch");
  test_constant_node("norm batch after");
  test_budget();
  test_bn_constants(0); /* the drift shows without growth */
  test_bn_constants(1);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else printf("ok\n");
  return failures != 0;
}
