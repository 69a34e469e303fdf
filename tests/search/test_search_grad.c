/* test_search_grad: phase II's arithmetic. The dense gradient against
 * central differences of the loss at every checked point (biases, dead
 * layers as their revival, batch norm), and the random baseline's draws
 * against the uniform distribution over the missing units (chi-square). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "runtime/host.h"
#include "base/rng.h"
#include "search/search.h"

#include "tests/check.h"

static ir_graph *build(const char *src) {
  fe_model m;
  if (fe_parse_string("test.ilnas", src, &m, stderr)) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}

static int weighted(const ir_layer *l) {
  return (l->kind == IR_CONV || l->kind == IR_LINEAR) && l->w_off >= 0;
}

/* ---- the dense gradient ---- */

/* One batch and what the central differences compare against. */
typedef struct batch {
  const float *in;
  const ir_label *lab;
  int n;
} batch;

/* The activation pattern of the last forward: the sign of every ReLU
 * output and the argmax of every max pool window. The loss is smooth in a
 * parameter over an interval where this pattern holds. */
static size_t pattern_size(const ir_graph *g, int n) {
  size_t s = 0;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->relu || l->kind == IR_MAXPOOL) s += (size_t)n * l->cout * l->oh * l->ow;
  }
  return s;
}

static void pattern(rt_exec *x, int n, uint8_t *p) {
  const ir_graph *g = x->g;
  float *act, *dact, *grads;
  size_t floats;
  rt_host_arena(x->backend, &act, &dact, &grads, &floats);
  int64_t ns = g->act_size;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    int64_t plane = (int64_t)l->oh * l->ow;
    if (l->kind == IR_MAXPOOL) {
      const float *in = act + g->tensors[l->in_t].off + (int64_t)l->in_ch * l->h * l->w;
      for (int i = 0; i < n; i++)
        for (int c = 0; c < l->cout; c++)
          for (int oy = 0; oy < l->oh; oy++)
            for (int ox = 0; ox < l->ow; ox++) {
              int best = 0;
              float bv = -INFINITY;
              for (int t = 0; t < l->k * l->k; t++) {
                int y = oy * l->stride + t / l->k, xx = ox * l->stride + t % l->k;
                if (y >= l->h || xx >= l->w) continue;
                float v = in[i * ns + (int64_t)c * l->h * l->w + y * l->w + xx];
                if (v > bv) bv = v, best = t;
              }
              *p++ = (uint8_t)best;
            }
    } else if (l->relu) {
      const float *o = act + g->tensors[l->out_t].off + (int64_t)l->out_ch * plane;
      for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < (int64_t)l->cout * plane; k++) *p++ = o[i * ns + k] > 0;
    }
  }
}

static double loss_of(rt_exec *x, const batch *b, uint8_t *pat) {
  rt_exec_set_input(x, b->in, b->n);
  rt_exec_forward(x);
  double loss = rt_exec_loss(x, b->lab, 0, NULL);
  if (pat) pattern(x, b->n, pat);
  return loss;
}

/* Tallies of one model's check. */
typedef struct tally {
  int checked, one_sided, kinks, off;
  double worst; /* largest |fd - g| / (atol + rtol |fd|) among kink-free points */
} tally;

enum { TAKE_W = 1, TAKE_B = 2 };

/* The derivative of the loss at parameter i of x (made active for it when
 * missing) from differences: central (0 returned) when the activation
 * pattern holds over [w - 2h, w + 2h]; one-sided, second order (1) when
 * it holds on one side only: w sits on a kink (a ReLU input exactly 0, as
 * a missing weight into a channel at 0 puts it), where the dense gradient
 * takes ReLU'(0) = 0, the side where the unit stays off; 2 (nothing to
 * compare) when it changes on both sides. */
static int diff(rt_exec *x, const batch *b, int64_t i, int maskable, double h,
                const uint8_t *base, uint8_t *pat, size_t np, double *d) {
  int m = !maskable || x->mask[i];
  float w = rt_exec_view(x, RT_PARAMS)[i];
  if (!m) rt_exec_set_unit(x, i, 1, 1, NULL);
  double l0 = loss_of(x, b, NULL), l[5];
  float wt[5];
  int same[5];
  for (int s = -2; s <= 2; s++) {
    if (!s) continue;
    wt[s + 2] = w + (float)(s * h);
    rt_exec_params_write(x)[i] = wt[s + 2];
    l[s + 2] = loss_of(x, b, pat);
    same[s + 2] = memcmp(pat, base, np) == 0;
  }
  if (!m) rt_exec_set_unit(x, i, 1, 0, NULL);
  rt_exec_params_write(x)[i] = w;
  /* the steps actually taken, in float */
  double hp = (double)wt[3] - w, hm = (double)w - wt[1];
  if (same[1] && same[3] && same[0] && same[4]) {
    *d = (l[3] - l[1]) / (hp + hm);
    return 0;
  }
  if (same[3] && same[4]) {
    *d = (-3 * l0 + 4 * l[3] - l[4]) / (2 * hp);
    return 1;
  }
  if (same[1] && same[0]) {
    *d = (3 * l0 - 4 * l[1] + l[0]) / (2 * hm);
    return 1;
  }
  return 2;
}

static const double ATOL = 1e-4, RTOL = 1e-3, H = 1e-3;

/* Checks grad at parameters of layer li of x: a sample of the weights,
 * every bias, and batch norm's gamma and beta when bn is set. */
static void check_layer(rt_exec *x, const batch *b, int li, const float *grad, int bn,
                        const char *what, tally *t) {
  const ir_graph *g = x->g;
  const ir_layer *l = &g->layers[li];
  size_t np = pattern_size(g, b->n);
  uint8_t *base = malloc(np), *pat = malloc(np);
  if (!base || !pat) {
    free(base), free(pat);
    CHECK(0, "out of memory");
    return;
  }
  loss_of(x, b, base);
  int64_t step = 1 + l->n_w / 24;
  int64_t nb = l->b_off >= 0 ? l->cout : 0, ng = bn && l->bn ? 2 * (int64_t)l->cout : 0;
  /* a sample of the weights, then every bias, gamma and beta */
  int64_t nw = (l->n_w + step - 1) / step;
  for (int64_t k = 0; k < nw + nb + ng; k++) {
    int64_t i = k < nw ? l->w_off + k * step
                : k < nw + nb ? l->b_off + (k - nw)
                              : l->g_off + (k - nw - nb);
    const char *kind = k < nw ? "weight" : k < nw + nb ? "bias"
                       : k < nw + nb + l->cout ? "gamma" : "beta";
    int maskable = k < nw + nb, missing = maskable && !x->mask[i];
    double fd;
    int how = diff(x, b, i, maskable, H, base, pat, np, &fd);
    t->checked++;
    t->one_sided += how == 1;
    if (how == 2) {
      t->kinks++;
      continue;
    }
    double err = fabs(fd - grad[i]), tol = ATOL + RTOL * fabs(fd);
    if (err / tol > t->worst) t->worst = err / tol;
    if (err > tol) {
      t->off++;
      CHECK(0, "%s: %s %s %lld (%s): dense gradient %.6g, central difference %.6g", what,
            l->name, kind, (long long)i, missing ? "missing" : "active", grad[i], fd);
    }
  }
  free(base), free(pat);
}

/* A copy of x (architecture, parameters) with dead layer li revived as
 * the identity after a forward on b, whose statistics its batch norm
 * starts from, as phase II revives it. */
static rt_exec *revived(rt_exec *x, const batch *b, int li, const char *backend) {
  const ir_graph *g = x->g;
  char err[256];
  rt_exec *r = rt_exec_new(g, b->n, x->threads, backend, err, sizeof err);
  CHECK(r, "exec: %s", err);
  if (!r) return NULL;
  CHECK(rt_exec_set_arch(r, x->arch, err, sizeof err) == 0, "set_arch: %s", err);
  memcpy(rt_exec_params_write(r), rt_exec_view(x, RT_PARAMS), (size_t)g->n_params * sizeof(float));
  memcpy(rt_exec_edit(r, RT_STATS), rt_exec_view(x, RT_STATS), (size_t)g->n_stats * sizeof(float));
  rt_exec_phase2(r, 1);
  loss_of(r, b, NULL);
  srch_revive_layer(r, li);
  CHECK(rt_exec_prepare(r, err, sizeof err) == 0, "prepare: %s", err);
  return r;
}

/* srch_dense_grad on one model against central differences: live layers'
 * weights (active and missing), biases and batch norm; dead layers'
 * weights and biases on a copy where the layer has been revived. */
static void check_model(const char *src, const char *backend, int threads, int need_bn_dead) {
  ir_graph *g = build(src);
  CHECK(g, "build");
  if (!g) return;
  enum { N = 6 };
  char err[256], what[64];
  snprintf(what, sizeof what, "%s (%s)", g->cfg.name, backend);
  /* the layout at the bounds: pattern() reads the arena at g's offsets
   * (tests/jit/test_packed.c holds the live layout's dense gradient to it) */
  char at_bounds[32];
  snprintf(at_bounds, sizeof at_bounds, "%s/bounds", backend);
  backend = at_bounds;
  rt_exec *x = rt_exec_new(g, N, threads, backend, err, sizeof err);
  CHECK(x, "exec: %s", err);
  srch_state st;
  if (!x || srch_init(&st, g, FE_SEARCH_ILNAS, 1)) {
    rt_exec_free(x), ir_free(g);
    return;
  }
  rt_exec_init_params(x, 3);
  srch_refill(&st, x); /* placeholders: channels with incoming weights only */
  /* batch norm away from its identity, so that gamma and beta matter, and
   * its outputs mostly above 0 */
  float *p = rt_exec_params_write(x);
  rt_rng rng;
  rt_rng_seed(&rng, 21);
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    /* most units on, away from their kink: active biases of the hidden
     * layers positive (the inputs are too) */
    if (weighted(l) && l->relu && x->arch->alive[li])
      for (int c = 0; c < l->cout; c++)
        if (x->mask[l->b_off + c]) p[l->b_off + c] = 1.0f + 0.5f * rt_rng_uniform(&rng);
    if (l->bn && x->arch->alive[li])
      for (int c = 0; c < l->cout; c++)
        p[l->g_off + c] = 0.5f + rt_rng_uniform(&rng),
        p[l->g_off + l->cout + c] = 2.0f + 0.5f * rt_rng_uniform(&rng);
  }
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
  const ir_tensor *ti = &g->tensors[g->input_t];
  size_t img = (size_t)ti->c * ti->h * ti->w;
  float *in = malloc(N * img * sizeof *in), *grad = malloc((size_t)g->n_params * sizeof *grad);
  ir_label lab[N];
  for (size_t i = 0; i < N * img; i++) in[i] = rt_rng_uniform(&rng);
  for (int i = 0; i < N; i++) lab[i] = (ir_label)rt_rng_below(&rng, (uint64_t)g->cfg.classes);
  batch b = {in, lab, N};
  srch_batches sb = {1, N, in, lab};
  double loss;
  CHECK(srch_dense_grad(&st, x, &sb, grad, &loss) == 0, "dense gradient: %s", st.err);
  tally live = {0}, dead = {0};
  int dead_conv = 0, dead_linear = 0, dead_bn = 0;
  rt_exec_phase2(x, 1); /* the loss with masks flipped, as phase II evaluates it */
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!weighted(l)) continue;
    if (x->arch->alive[li]) {
      check_layer(x, &b, li, grad, 1, what, &live);
      continue;
    }
    if (!l->can_die) continue;
    rt_exec *r = revived(x, &b, li, backend);
    if (!r) continue;
    double lr = loss_of(r, &b, NULL);
    CHECK(fabs(lr - loss) <= 1e-5 * (1 + loss), "%s: reviving %s changed the loss %g -> %g",
          what, l->name, loss, lr);
    dead_conv += l->kind == IR_CONV, dead_linear += l->kind == IR_LINEAR, dead_bn += l->bn;
    int before = dead.off;
    check_layer(r, &b, li, grad, 0, what, &dead);
    if (dead.off > before)
      fprintf(stderr, "%s: dead layer %s%s: %d points off\n", what, l->name,
              l->bn ? " (batch norm)" : "", dead.off - before);
    rt_exec_free(r);
  }
  rt_exec_phase2(x, 0);
  printf("%s: live layers %d points (%d one-sided, %d skipped at kinks, worst error %.3f of "
         "the tolerance), dead layers %d points (%d one-sided, %d skipped, worst %.3f); "
         "%d dead conv, %d dead linear, %d with batch norm\n",
         what, live.checked, live.one_sided, live.kinks, live.worst, dead.checked,
         dead.one_sided, dead.kinks, dead.worst, dead_conv, dead_linear, dead_bn);
  CHECK(dead_conv > 0 && dead_linear > 0, "%s: no dead conv or linear layer to check", what);
  CHECK(!need_bn_dead || dead_bn > 0, "%s: no dead layer with batch norm", what);
  /* nearly every point compared: smooth there, or on one side of its kink */
  CHECK(10 * live.kinks <= live.checked && 10 * dead.kinks <= dead.checked,
        "%s: %d of %d live and %d of %d dead points skipped at kinks", what, live.kinks,
        live.checked, dead.kinks, dead.checked);
  free(in), free(grad);
  srch_free(&st);
  rt_exec_free(x), ir_free(g);
}

static void test_dense_grad(void) {
  static const char *plain =
      "model plain { input 2x6x6; classes 3; search weight budget 3k from density 0.4 seed 8;"
      " stage conv { layers 1..3 channels 3..4 kernel 3x3; } reduce maxpool 2;"
      " stage linear { layers 1..2 width 5..6; } }";
  static const char *bn =
      "model bn { input 2x6x6; classes 3; search weight budget 3k from density 0.4 seed 8;"
      " stage conv { layers 1..3 channels 3..4 kernel 3x3 norm batch; } reduce maxpool 2;"
      " stage linear { layers 1..2 width 5..6; } }";
  static const char *after = /* batch norm after the ReLU: a revival lifts its input */
      "model after { input 2x6x6; classes 3; search weight budget 3k from density 0.4 seed 8;"
      " stage conv { layers 1..3 channels 3..4 kernel 3x3 norm batch after; } reduce maxpool 2;"
      " stage linear { layers 1..2 width 5..6; } }";
  const char *backends[] = {"cpu", "ref"};
  for (int k = 0; k < 2; k++) {
    check_model(plain, backends[k], 2, 0);
    check_model(bn, backends[k], 2, 1);
    check_model(after, backends[k], 2, 1);
  }
}

/* ---- the random baseline's draws ---- */

/* The chi-square distribution's 0.999 quantile for df degrees of freedom
 * by the Wilson-Hilferty approximation: (X/df)^(1/3) is close to normal
 * with mean 1 - 2/(9 df) and variance 2/(9 df), so the quantile is
 * df (1 - 2/(9 df) + z sqrt(2/(9 df)))^3 with z = 3.0902, the normal's
 * 0.999 quantile (within a fraction of a percent for df >= 10). */
static double chi2_999(double df) {
  double v = 2.0 / (9.0 * df), c = 1.0 - v + 3.0902 * sqrt(v);
  return df * c * c * c;
}

/* sum (O - E)^2 / E over n counts of expectation e each. */
static double chi2_stat(const long *o, int64_t n, double e) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (o[i] - e) * (o[i] - e) / e;
  return s;
}

/* srch_grow_random(m) repeated `draws` times from the same architecture
 * (what each draw grew switched off again), counting how often each
 * missing unit is chosen. The model has no dead layers, so a draw never
 * revives one (which would add identity taps beside its units).
 *
 * Weight granularity: every unit is one parameter, so a draw is a uniform
 * m-subset of the U missing ones: each count has expectation R m / U and
 * the counts' covariance is (U - m)/(U - 1) times the multinomial's, so
 * X^2 (U - 1)/(U - m) follows chi-square with U - 1 degrees of freedom.
 *
 * Kernel granularity: conv kernels of k*k parameters beside single ones
 * (biases, the classifier's weights). With m = k*k, take_prefix over the
 * shuffled units takes either the first unit, a kernel, or (a single one
 * first) min(m, S) single ones, since no kernel fits after one: a draw is
 * a kernel with probability K / (K + S). Uniform over units, not
 * parameters, means that share; within each kind the draw is uniform.
 * The statistic adds the kind's (1 degree), the kernels' among the kernel
 * draws (K - 1) and the single ones' among theirs (S - 1, corrected as at
 * weight granularity). */
static void check_draws(const char *src, int64_t m, int draws) {
  ir_graph *g = build(src);
  CHECK(g, "build");
  if (!g) return;
  char err[256];
  rt_exec *x = rt_exec_new(g, 1, 1, "ref", err, sizeof err);
  CHECK(x, "exec: %s", err);
  srch_state st;
  if (!x || srch_init(&st, g, FE_SEARCH_RANDOM, 7)) {
    rt_exec_free(x), ir_free(g);
    return;
  }
  int kernel = g->cfg.gran == FE_GRAN_KERNEL;
  /* the missing units, as the search enumerates them */
  int64_t nu = 0, cap = g->n_params;
  int64_t *start = malloc((size_t)cap * sizeof *start);
  int32_t *len = malloc((size_t)cap * sizeof *len);
  long *count = calloc((size_t)cap, sizeof *count);
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!weighted(l)) continue;
    CHECK(x->arch->alive[li], "%s is dead", l->name);
    int ul = kernel ? l->k * l->k : 1;
    for (int64_t u = 0; u < l->n_w / ul + l->cout; u++) {
      int64_t at = u < l->n_w / ul ? l->w_off + u * ul : l->b_off + (u - l->n_w / ul);
      if (ir_alpha_get(x->arch, at)) continue;
      start[nu] = at, len[nu] = u < l->n_w / ul ? ul : 1, nu++;
    }
  }
  int64_t nk = 0, ns = 0; /* kernels, single ones */
  for (int64_t u = 0; u < nu; u++) nk += len[u] > 1, ns += len[u] == 1;
  CHECK(!kernel || (nk >= 10 && ns > m), "%s: %lld kernels, %lld single units missing",
        g->cfg.name, (long long)nk, (long long)ns);
  long kernel_draws = 0;
  for (int r = 0; r < draws; r++) {
    srch_event ev;
    memset(&ev, 0, sizeof ev);
    int64_t added = srch_grow_random(&st, x, m, &ev);
    int64_t got_k = 0, got_s = 0;
    for (int64_t u = 0; u < nu; u++) {
      if (!ir_alpha_get(x->arch, start[u])) continue;
      count[u]++;
      got_k += len[u] > 1, got_s += len[u] == 1;
      rt_exec_set_unit(x, start[u], len[u], 0, NULL);
    }
    int64_t s_want = ns < m ? ns : m;
    int ok = kernel ? (got_k == 1 && got_s == 0) || (got_k == 0 && got_s == s_want)
                    : got_s == m;
    CHECK(added == m * !kernel + (kernel ? got_k * 9 + got_s : 0) && ok,
          "%s: draw %d grew %lld parameters: %lld kernels, %lld single units", g->cfg.name, r,
          (long long)added, (long long)got_k, (long long)got_s);
    if (!ok) break;
    kernel_draws += got_k;
  }
  double stat, df;
  if (!kernel) {
    stat = chi2_stat(count, nu, (double)draws * m / nu) * (nu - 1) / (double)(nu - m);
    df = (double)(nu - 1);
  } else {
    /* kernels first in each layer's list, then single ones: split them */
    long *kc = malloc((size_t)nk * sizeof *kc), *sc = malloc((size_t)ns * sizeof *sc);
    int64_t a = 0, b = 0;
    for (int64_t u = 0; u < nu; u++) {
      if (len[u] > 1) kc[a++] = count[u];
      else sc[b++] = count[u];
    }
    double pk = (double)nk / (double)(nk + ns), ek = draws * pk, es = draws * (1 - pk);
    long single_draws = draws - kernel_draws;
    stat = (kernel_draws - ek) * (kernel_draws - ek) / ek +
           (single_draws - es) * (single_draws - es) / es +
           chi2_stat(kc, nk, (double)kernel_draws / nk) +
           chi2_stat(sc, ns, (double)single_draws * m / ns) * (ns - 1) / (double)(ns - m);
    df = 1.0 + (double)(nk - 1) + (double)(ns - 1);
    printf("%s: %ld of %d draws a kernel (expected %.1f: %lld kernels, %lld single units)\n",
           g->cfg.name, kernel_draws, draws, ek, (long long)nk, (long long)ns);
    free(kc), free(sc);
  }
  double crit = chi2_999(df);
  printf("%s: %lld missing units, %d draws of %lld: chi-square %.1f, %g degrees of freedom, "
         "0.999 quantile %.1f\n",
         g->cfg.name, (long long)nu, draws, (long long)m, stat, df, crit);
  CHECK(stat < crit, "%s: the draws are not uniform over the missing units (chi-square %.1f "
        ">= %.1f, %g degrees of freedom)", g->cfg.name, stat, crit, df);
  free(start), free(len), free(count);
  srch_free(&st);
  rt_exec_free(x), ir_free(g);
}

static void test_random_draws(void) {
  check_draws("model uw { input 2x5x5; classes 3; search weight from density 0.3 seed 4;"
              " stage conv { layers 1 channels 3 kernel 3x3; } reduce gap;"
              " stage linear { layers 1 width 8; } }",
              6, 3000);
  check_draws("model uk { input 3x5x5; classes 3; search kernel from density 0.3 seed 4;"
              " stage conv { layers 1 channels 6 kernel 3x3; }"
              " stage conv { layers 1 channels 6 kernel 3x3; } reduce gap;"
              " stage linear { layers 1 width 8; } }",
              9, 4000);
}

int main(void) {
  test_dense_grad();
  test_random_draws();
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else printf("ok\n");
  return failures != 0;
}
