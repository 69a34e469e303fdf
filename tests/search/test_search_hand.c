/* test_search_hand: one expansion of a network small enough to follow by
 * hand, a 2-2-2 MLP on four fixed inputs, against the seed's Algorithm 1
 * computed here in double precision, independently of the runtime:
 *
 *   g   = ∇L(α ⊙ W) at every parameter, the missing ones included;
 *   m   = ⌈Alr · active⌉, n = candidates · m (capped by what is missing);
 *   α*  = α ∪ the n missing units with the largest |g|;
 *   W*  = W − lr g on every parameter of α* (the candidates start at 0);
 *   g*  = ∇L(α* ⊙ W*);
 *   the m candidates with the largest |g + g*| join α, at zero, and the
 *   other weights keep their values (W, not W*); Alr decays.
 *
 * Then the schedule: which epochs expand under every, flat, freeze last
 * and a plan, and how a plan sizes m. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "search/search.h"

#include "tests/check.h"

enum { N = 4, P = 12 }; /* samples; parameters: W1 4, b1 2, W2 4, b2 2 */

static ir_graph *build(const char *src) {
  fe_model m;
  if (fe_parse_string("hand.ilnas", src, &m, stderr)) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}

/* The network by hand. Parameter i of the hand layout is at off[i] in the
 * runtime's; w and a (α) are in the hand layout: W1[j][i] at 2j+i, b1[j]
 * at 4+j, W2[k][j] at 6+2k+j, b2[k] at 10+k. */
typedef struct net {
  double w[P];
  int a[P];
} net;

static const double X[N][2] = {{0.5, -1.0}, {1.5, 0.25}, {-0.75, 1.0}, {1.0, 1.25}};
static const int Y[N] = {0, 1, 1, 0};

/* Loss and its gradient at every parameter, as if each missing one were
 * present at its (zero) value. */
static double loss_grad(const net *t, double grad[P]) {
  memset(grad, 0, P * sizeof *grad);
  double loss = 0;
  for (int s = 0; s < N; s++) {
    double pre[2], h[2], z[2];
    for (int j = 0; j < 2; j++) {
      pre[j] = t->a[4 + j] * t->w[4 + j];
      for (int i = 0; i < 2; i++) pre[j] += t->a[2 * j + i] * t->w[2 * j + i] * X[s][i];
      h[j] = pre[j] > 0 ? pre[j] : 0;
    }
    for (int k = 0; k < 2; k++) {
      z[k] = t->a[10 + k] * t->w[10 + k];
      for (int j = 0; j < 2; j++) z[k] += t->a[6 + 2 * k + j] * t->w[6 + 2 * k + j] * h[j];
    }
    double mx = z[0] > z[1] ? z[0] : z[1], e0 = exp(z[0] - mx), e1 = exp(z[1] - mx);
    double p[2] = {e0 / (e0 + e1), e1 / (e0 + e1)};
    loss -= log(p[Y[s]]) / N;
    double dz[2] = {(p[0] - (Y[s] == 0)) / N, (p[1] - (Y[s] == 1)) / N};
    for (int k = 0; k < 2; k++) {
      grad[10 + k] += dz[k];
      for (int j = 0; j < 2; j++) grad[6 + 2 * k + j] += dz[k] * h[j];
    }
    for (int j = 0; j < 2; j++) {
      double dh = 0;
      for (int k = 0; k < 2; k++) dh += t->a[6 + 2 * k + j] * t->w[6 + 2 * k + j] * dz[k];
      double dpre = pre[j] > 0 ? dh : 0;
      grad[4 + j] += dpre;
      for (int i = 0; i < 2; i++) grad[2 * j + i] += dpre * X[s][i];
    }
  }
  return loss;
}

/* Indices of the `count` largest score[i] over i with pick[i], best first
 * (ties: lower index, as the search breaks them). */
static int top(const double *score, const int *pick, int count, int *out) {
  int got = 0;
  int used[P] = {0};
  for (; got < count; got++) {
    int best = -1;
    for (int i = 0; i < P; i++)
      if (pick[i] && !used[i] && score[i] > 0 && (best < 0 || score[i] > score[best])) best = i;
    if (best < 0) break;
    used[best] = 1, out[got] = best;
  }
  return got;
}

static int close_to(double got, double want) {
  return fabs(got - want) <= 1e-5 + 1e-4 * fabs(want);
}

static void test_expansion(const char *backend) {
  const double alr = 0.15, decay = 0.8, lr = 0.5;
  ir_graph *g = build("model hand { input 2x1x1; classes 2; search weight budget 1k seed 1;"
                      " stage linear { layers 1..1 width 2..2; } }"
                      "grow ilnas every 1 epoch alr 0.15 decay 0.8 candidates 2x;");
  CHECK(g, "build");
  if (!g) return;
  const ir_layer *hid = NULL, *cls = NULL;
  for (int i = 0; i < g->n_layers; i++)
    if (g->layers[i].kind == IR_LINEAR) *(g->layers[i].relu ? &hid : &cls) = &g->layers[i];
  CHECK(hid && cls && hid->cin == 2 && hid->cout == 2 && cls->cin == 2 && cls->cout == 2 &&
            g->n_params == P, "the template is not the 2-2-2 MLP");
  if (!hid || !cls || g->n_params != P) {
    ir_free(g);
    return;
  }
  int64_t off[P];
  for (int i = 0; i < 4; i++) off[i] = hid->w_off + i, off[6 + i] = cls->w_off + i;
  for (int i = 0; i < 2; i++) off[4 + i] = hid->b_off + i, off[10 + i] = cls->b_off + i;

  /* α: W1 but W1[1][0], both b1, the diagonal of W2; missing: W1[1][0],
   * W2[0][1], W2[1][0], b2 */
  net t = {.w = {0.8, -0.6, 0.0, 0.9, 0.1, -0.2, 1.1, 0.0, 0.0, -0.7, 0.0, 0.0},
           .a = {1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0}};
  char err[256];
  rt_exec *x = rt_exec_new(g, N, 1, backend, err, sizeof err);
  CHECK(x, "%s: exec: %s", backend, err);
  srch_state s;
  if (!x || srch_init(&s, g, FE_SEARCH_ILNAS, 1)) {
    rt_exec_free(x), ir_free(g);
    return;
  }
  for (int i = 0; i < P; i++) rt_exec_set_unit(x, off[i], 1, t.a[i], NULL);
  float *pw = rt_exec_params_write(x);
  for (int i = 0; i < P; i++) pw[off[i]] = (float)t.w[i];
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s: prepare: %s", backend, err);

  /* by hand */
  double gsum[P], gstar[P], score[P];
  double loss = loss_grad(&t, gsum);
  int active = 0, missing[P];
  for (int i = 0; i < P; i++) active += t.a[i], missing[i] = !t.a[i];
  int m = (int)ceil(alr * active), n = 2 * m; /* 2, 4 of the 5 missing */
  double absg[P];
  for (int i = 0; i < P; i++) absg[i] = fabs(gsum[i]);
  int cand[P], nc = top(absg, missing, n, cand);
  net star = t;
  for (int k = 0; k < nc; k++) star.a[cand[k]] = 1;
  for (int i = 0; i < P; i++)
    if (star.a[i]) star.w[i] = t.w[i] - lr * gsum[i];
  loss_grad(&star, gstar);
  int in_cand[P] = {0};
  for (int k = 0; k < nc; k++) in_cand[cand[k]] = 1;
  for (int i = 0; i < P; i++) score[i] = fabs(gsum[i] + gstar[i]);
  int kept[P], nk = top(score, in_cand, m, kept);
  /* the hand example must tell the seed's step from one that moves only
   * the candidates: the kept set differs, or g* does */
  net only = t;
  double gonly[P];
  for (int k = 0; k < nc; k++) only.a[cand[k]] = 1, only.w[cand[k]] = -lr * gsum[cand[k]];
  loss_grad(&only, gonly);
  double diff = 0;
  for (int k = 0; k < nc; k++) diff += fabs(gonly[cand[k]] - gstar[cand[k]]);
  CHECK(m == 2 && nc == 4 && nk == 2 && diff > 1e-3,
        "the hand example degenerated: m %d, n %d, kept %d, |g*_all - g*_cand| %g", m, nc, nk,
        diff);

  /* the library: sizes, g, the candidates, g*, the kept, the values */
  int64_t lm, ln;
  srch_sizes(&s, x->arch, &lm, &ln);
  CHECK(lm == m && ln == n, "%s: m, n = %lld, %lld; by hand %d, %d", backend, (long long)lm,
        (long long)ln, m, n);
  s.lr = (float)lr;
  float in[N * 2];
  ir_label lab[N];
  for (int i = 0; i < N; i++) in[2 * i] = (float)X[i][0], in[2 * i + 1] = (float)X[i][1], lab[i] = (ir_label)Y[i];
  srch_batches b = {1, N, in, lab};
  srch_event ev;
  int rc = srch_expand(&s, x, &b, &ev);
  CHECK(rc == 0, "%s: expand: %d %s", backend, rc, s.err);
  CHECK(close_to(ev.loss_before, loss) && close_to(ev.loss_after, loss),
        "%s: loss %.7f -> %.7f, by hand %.7f (an expansion keeps the function)", backend,
        ev.loss_before, ev.loss_after, loss);
  /* g and g*, as the backend kept them */
  const float *g0 = rt_exec_p2_slot(x, 0), *g1 = rt_exec_p2_slot(x, 1);
  CHECK(g0 && g1, "%s: phase II's gradients cannot be read", backend);
  for (int i = 0; g0 && g1 && i < P; i++) {
    CHECK(close_to(g0[off[i]], gsum[i]), "%s: g[%d] = %.7f, by hand %.7f", backend, i, g0[off[i]], gsum[i]);
    if (star.a[i])
      CHECK(close_to(g1[off[i]], gstar[i]), "%s: g*[%d] = %.7f, by hand %.7f", backend, i, g1[off[i]],
            gstar[i]);
  }
  int want[P];
  memcpy(want, t.a, sizeof want);
  for (int k = 0; k < nk; k++) want[kept[k]] = 1;
  const float *w = rt_exec_view(x, RT_PARAMS);
  for (int i = 0; i < P; i++) {
    CHECK(ir_alpha_get(x->arch, off[i]) == want[i], "%s: α[%d] = %d, by hand %d", backend, i,
          ir_alpha_get(x->arch, off[i]), want[i]);
    CHECK(w[off[i]] == (float)(t.a[i] ? t.w[i] : 0.0), "%s: w[%d] = %g after the expansion, "
          "want %g (W kept, new ones at 0)", backend, i, w[off[i]], t.a[i] ? t.w[i] : 0.0);
  }
  CHECK(ev.added == m && ev.active == active + m, "%s: added %lld, active %lld", backend,
        (long long)ev.added, (long long)ev.active);
  CHECK(fabs(s.alr - alr * decay) < 1e-12, "%s: Alr %g after one expansion, want %g", backend,
        s.alr, alr * decay);
  srch_free(&s);
  rt_exec_free(x);
  ir_free(g);
}

/* Which epochs expand, and how a plan sizes them. */
static void test_schedule(void) {
  fe_model m = {.grow_every = 1, .freeze_last = 3};
  srch_schedule s = srch_schedule_of(&m, 10, -1);
  int due = 0;
  for (int d = 1; d <= 10; d++) due |= srch_due(&s, d, 1.0, 1.0) << d;
  CHECK(due == 0x7e, "every 1, freeze last 3 of 10: after epochs mask %#x, want 1..6", due);
  CHECK(srch_beats_left(&s, 1) == 6 && srch_beats_left(&s, 6) == 1 &&
        srch_beats_left(&s, 7) == 0, "beats left %d %d %d", srch_beats_left(&s, 1),
        srch_beats_left(&s, 6), srch_beats_left(&s, 7));
  s = srch_schedule_of(&m, 10, 0); /* --freeze-last 0 */
  CHECK(srch_beats_left(&s, 1) == 9 && !srch_due(&s, 10, 1, 1), "--freeze-last 0");
  m.grow_every = 3, m.freeze_last = 2;
  s = srch_schedule_of(&m, 12, -1); /* beats 3, 6, 9; 10 frozen */
  due = 0;
  for (int d = 1; d <= 12; d++) due |= srch_due(&s, d, 1.0, 1.0) << d;
  CHECK(due == (1 << 3 | 1 << 6 | 1 << 9), "every 3: mask %#x", due);
  CHECK(srch_beats_left(&s, 1) == 3 && srch_beats_left(&s, 4) == 2 && srch_beats_left(&s, 9) == 1,
        "every 3: beats left");
  /* flat gates the beats: a beat expands only if the loss fell by less
   * than 1% over the epoch (none before the first epoch's comparison) */
  m.grow_every = 1, m.freeze_last = 0, m.flat = 0.01;
  s = srch_schedule_of(&m, 10, -1);
  CHECK(!srch_due(&s, 1, 0, 2.0), "flat: no loss before the first epoch, no plateau");
  CHECK(!srch_due(&s, 2, 2.0, 1.5), "flat: a 25%% drop is no plateau");
  CHECK(srch_due(&s, 3, 1.5, 1.495), "flat: a 0.3%% drop is one");
  CHECK(srch_due(&s, 4, 1.5, 1.6), "flat: a rise is one");
  CHECK(!srch_due(&s, 9, 2.0, 1.5) && !srch_due(&s, 10, 1.5, 1.5), "flat: the last epoch");
  m.grow_plan = 1; /* the plan's last beat runs regardless */
  s = srch_schedule_of(&m, 10, -1);
  CHECK(srch_due(&s, 9, 2.0, 1.5) && !srch_due(&s, 8, 2.0, 1.5), "plan: the last beat");

  /* a plan spreads the room over the beats left: room 90 over 4, 3, 2, 1 */
  ir_graph *g = build("model p { input 1x1x16; classes 4; search weight budget 100 from density "
                      "0.1 seed 2; stage linear { layers 1..1 width 4..8; } }"
                      "grow ilnas every 1 epoch candidates 2x plan;");
  CHECK(g, "plan model");
  if (!g) return;
  srch_state st;
  if (srch_init(&st, g, FE_SEARCH_ILNAS, 1)) {
    ir_free(g);
    return;
  }
  int64_t active = ir_count_params(g, &g->arch).active, room = 100 - active;
  for (int left = 4; left >= 1; left--) {
    int64_t pm, pn;
    st.plan_left = left;
    srch_sizes(&st, &g->arch, &pm, &pn);
    CHECK(pm == (room + left - 1) / left && pn == (2 * pm < room ? 2 * pm : room),
          "plan, %d left of room %lld: m %lld n %lld", left, (long long)room, (long long)pm,
          (long long)pn);
  }
  srch_free(&st);
  ir_free(g);
}

int main(void) {
  test_expansion("ref");
  test_expansion("cpu");
  test_schedule();
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else printf("ok\n");
  return failures != 0;
}
