/* search.c: phase II of ILNAS (the seed's Algorithm 1) and its baselines.
 *
 * Candidates are "units": one weight or bias at weight granularity, one
 * (c_out, c_in) kernel or one bias at kernel granularity. Every count and
 * every budget check is in parameters, so a kernel costs k*k. */
#include "search/search.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/elem.h"
#include "runtime/p2.h"

typedef srch_unit unit;

int srch_init(srch_state *s, const ir_graph *g, fe_search method, uint64_t seed) {
  memset(s, 0, sizeof *s);
  s->g = g;
  s->method = method;
  s->alr = g->cfg.alr;
  s->lr = (float)g->cfg.lr;
  s->budget = g->cfg.budget;
  rt_rng_seed(&s->rng, seed ^ 0x9a0b1c2dull);
  s->per_layer = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof(int64_t));
  if (!s->per_layer) {
    srch_free(s);
    return -1;
  }
  return 0;
}

void srch_free(srch_state *s) {
  free(s->per_layer);
  memset(s, 0, sizeof *s);
}

static int weighted(const ir_layer *l) {
  return (l->kind == IR_CONV || l->kind == IR_LINEAR) && l->w_off >= 0;
}

/* ---- the graph's channels: who produces and who consumes them ---- */

/* The layer that writes channel ch of tensor t, or -1 (network input). */
static int producer(const ir_graph *g, int t, int ch) {
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->out_t == t && ch >= l->out_ch && ch < l->out_ch + l->cout) return i;
  }
  return -1;
}

/* Whether output co of a layer has an active weight or bias into it. */
static int row_any(const ir_arch *a, const ir_layer *l, int co) {
  int64_t row = ir_fan_in(l), base = l->w_off + co * row;
  if (ir_alpha_get(a, l->b_off + co)) return 1;
  for (int64_t i = 0; i < row; i++)
    if (ir_alpha_get(a, base + i)) return 1;
  return 0;
}

/* Whether channel ch of tensor t can carry a signal: it has an active
 * incoming weight, directly or through pass-throughs and pooling. */
static int has_incoming(const ir_graph *g, const ir_arch *a, int t, int ch) {
  for (int depth = 0; depth < 4 * g->n_layers + 4; depth++) {
    int p = producer(g, t, ch);
    if (p < 0) return 1;
    const ir_layer *l = &g->layers[p];
    int c = ch - l->out_ch;
    if (weighted(l) && a->alive[l - g->layers]) return row_any(a, l, c);
    if (weighted(l)) { /* dead: its predecessor's slice */
      t = l->prev_t, ch = l->prev_ch + c;
    } else {           /* pooling or copy: same channel of its input */
      t = l->in_t, ch = l->in_ch + c;
    }
  }
  return 0;
}

/* Whether channel ch of tensor t reaches the output through an active
 * weight of some consumer. */
static int has_outgoing(const ir_graph *g, const ir_arch *a, int t, int ch, int depth) {
  if (t == g->logits_t) return 1;
  if (depth > 4 * g->n_layers) return 0;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->in_t != t) continue;
    if (weighted(l) && a->alive[l - g->layers]) {
      const ir_tensor *in = &g->tensors[t];
      int per = l->kind == IR_LINEAR ? in->h * in->w : 1;
      int lo = l->in_ch * per, c0 = ch * per - lo;
      if (ch < l->in_ch || c0 >= l->cin) continue;
      int kk = l->k * l->k;
      for (int co = 0; co < l->cout; co++)
        for (int f = c0; f < c0 + per; f++)
          for (int k = 0; k < kk; k++)
            if (ir_alpha_get(a, l->w_off + ((int64_t)co * l->cin + f) * kk + k))
              return 1;
    } else if (!weighted(l)) {
      if (ch >= l->in_ch && ch < l->in_ch + l->cin &&
          has_outgoing(g, a, l->out_t, l->out_ch + ch - l->in_ch, depth + 1))
        return 1;
    }
  }
  /* a dead layer passes this slice on */
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (weighted(l) && !a->alive[l - g->layers] && l->prev_t == t && ch >= l->prev_ch &&
        ch < l->prev_ch + l->cout &&
        has_outgoing(g, a, l->out_t, l->out_ch + ch - l->prev_ch, depth + 1))
      return 1;
  }
  return 0;
}

/* ---- growth moves ---- */

int64_t srch_revive_layer(rt_exec *x, int li) {
  const ir_graph *g = x->g;
  const ir_arch *a = x->arch;
  const ir_layer *l = &g->layers[li];
  assert(weighted(l) && !a->alive[li] && l->prev_t >= 0);
  int kk = l->k * l->k, centre = (l->k / 2) * l->k + l->k / 2;
  int64_t added = 0;
  rt_exec_set_alive(x, li, 1);
  /* the identity on the live channels: the centre tap c -> c (at kernel
   * granularity the rest of that kernel joins at zero) */
  const float one = 1.0f;
  int weight = g->cfg.gran == FE_GRAN_WEIGHT;
  float *tap = weight ? NULL : calloc((size_t)kk, sizeof *tap);
  if (tap) tap[centre] = 1.0f;
  for (int c = 0; c < l->cout; c++) {
    if (!has_incoming(g, a, l->prev_t, l->prev_ch + c)) continue;
    int ci = l->prev_ch - l->in_ch + c;
    if (l->kind == IR_LINEAR) ci = c; /* reads the previous layer whole */
    int64_t base = l->w_off + ((int64_t)c * l->cin + ci) * kk;
    if (weight) {
      added += rt_exec_set_unit(x, base + centre, 1, 1, &one);
    } else if (tap) { /* the kernel at zero but its centre tap */
      added += rt_exec_set_unit(x, base, kk, 1, tap);
    }
  }
  free(tap);
  return added;
}

/* Undo a revival that kept no candidate: back to a pass-through. */
static void kill_layer(rt_exec *x, int li) { rt_exec_set_alive(x, li, 0); }

/* Parameters a revival would add: its identity taps and, with batch norm
 * after the ReLU, at most a bias per live channel (rt_exec_set_alive). */
static int64_t revive_cost(const ir_graph *g, const ir_arch *a, const ir_layer *l) {
  int64_t n = 0;
  for (int c = 0; c < l->cout; c++)
    n += has_incoming(g, a, l->prev_t, l->prev_ch + c);
  int lift = l->bn == IR_BN_AFTER && l->relu;
  return n * (g->cfg.gran == FE_GRAN_KERNEL ? l->k * l->k : 1) + (lift ? n : 0);
}

/* Switches a unit on; parameters already on (a revived layer's identity
 * taps) keep their value. Returns how many came on. */
static int activate(rt_exec *x, const unit *u, const float *values) {
  return (int)rt_exec_set_unit(x, u->start, u->len, 1, values ? values + u->start : NULL);
}

static void deactivate(rt_exec *x, const unit *u) {
  rt_exec_set_unit(x, u->start, u->len, 0, NULL);
}

void srch_sizes(const srch_state *s, const ir_arch *a, int64_t *m, int64_t *n) {
  const ir_graph *g = s->g;
  ir_count c = ir_count_params(g, a);
  int64_t room = s->budget == INT64_MAX ? c.candidate : s->budget - c.active;
  if (room > c.candidate) room = c.candidate;
  if (room < 0) room = 0;
  int64_t want = s->plan_left > 0 ? (room + s->plan_left - 1) / s->plan_left
                                   : (int64_t)ceil(s->alr * (double)c.active);
  if (want < 1) want = 1;
  *m = want < room ? want : room;
  double nn = g->cfg.candidates * (double)*m;
  *n = nn < (double)room ? (int64_t)nn : room;
  if (*n < *m) *n = *m;
}

/* ---- the schedule ---- */

srch_schedule srch_schedule_of(const fe_model *m, int epochs, int freeze) {
  return (srch_schedule){epochs, m->grow_every, freeze < 0 ? m->freeze_last : freeze, m->flat,
                         m->grow_plan};
}

int srch_beats_left(const srch_schedule *s, int done) {
  int last = s->epochs - s->freeze - 1; /* the last epoch count that may grow */
  if (done < 1) done = 1;
  if (last < done) return 0;
  return last / s->every - (done - 1) / s->every;
}

int srch_due(const srch_schedule *s, int done, double prev_loss, double loss) {
  if (done < 1 || done % s->every || done >= s->epochs - s->freeze) return 0;
  if (s->flat <= 0 || (s->plan && srch_beats_left(s, done) == 1)) return 1;
  return prev_loss > 0 && (prev_loss - loss) / prev_loss < s->flat;
}

/* ---- placeholders ---- */

int srch_refill(srch_state *s, rt_exec *x) {
  const ir_graph *g = s->g;
  const ir_arch *a = x->arch;
  int64_t active = ir_count_params(g, a).active;
  int added = 0, kernel = g->cfg.gran == FE_GRAN_KERNEL;
  double d = g->cfg.density;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!weighted(l) || !a->alive[li] || l->out_t == g->logits_t) continue;
    int nodes = 0, holders = 0;
    for (int c = 0; c < l->cout; c++) {
      if (!row_any(a, l, c)) continue;
      if (has_outgoing(g, a, l->out_t, l->out_ch + c, 0)) nodes++;
      else holders++;
    }
    int want = (int)ceil(0.1 * nodes);
    if (want < 1) want = 1;
    /* the input channels that carry a signal, once per layer */
    int kk = l->k * l->k, per = l->kind == IR_LINEAR ? g->tensors[l->in_t].h * g->tensors[l->in_t].w : 1;
    int n_in = l->cin / per, live_in = 0;
    uint8_t *in_live = malloc((size_t)n_in);
    float *w = malloc((size_t)kk * sizeof *w); /* a unit's values */
    if (!in_live || !w) {
      free(in_live), free(w);
      return added;
    }
    for (int ci = 0; ci < n_in; ci++)
      live_in += in_live[ci] = (uint8_t)has_incoming(g, a, l->in_t, l->in_ch + ci);
    /* a placeholder's incoming weights: each live input joined with the
     * seed's density, one weight (or one whole kernel) at a time */
    int ulen = kernel ? kk : 1;
    int64_t cost = (int64_t)ceil(d * live_in * per * kk);
    if (cost < 1) cost = 1;
    float bound = 1.0f / sqrtf((float)cost);
    for (int c = 0; c < l->cout && holders < want && live_in > 0; c++) {
      /* a channel without incoming weights or bias may still feed the
       * layers after it, its output a constant (0, or batch norm's beta):
       * in a task's network whose channel takes its inputs from another
       * task's own weights, say. Incoming weights would change what it
       * feeds them, so only one that feeds nothing becomes a placeholder. */
      if (row_any(a, l, c) || has_outgoing(g, a, l->out_t, l->out_ch + c, 0)) continue;
      if (active + cost > s->budget) break;
      int64_t base = l->w_off + c * ir_fan_in(l), got = 0;
      for (int ci = 0; ci < l->cin; ci++) {
        if (!in_live[ci / per]) continue;
        for (int k = 0; k < kk; k += ulen) {
          if (rt_rng_uniform(&s->rng) >= d || active + got + ulen > s->budget)
            continue;
          int64_t at = base + (int64_t)ci * kk + k;
          for (int t = 0; t < ulen; t++) w[t] = (2.0f * rt_rng_uniform(&s->rng) - 1.0f) * bound;
          rt_exec_set_unit(x, at, ulen, 1, w);
          got += ulen;
        }
      }
      active += got;
      if (got > 0) holders++, added++;
    }
    free(in_live), free(w);
  }
  return added;
}

/* ---- the dense gradient ---- */

/* Loss on the phase II batches, no gradients; batch norm in training mode
 * as during phase I, with its running statistics left untouched. */
static double batches_loss(rt_exec *x, const srch_batches *b) {
  const ir_tensor *t = &x->g->tensors[x->g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  double loss = 0;
  for (int k = 0; k < b->count; k++) {
    rt_exec_set_input(x, b->x + (size_t)k * b->n * img, b->n);
    rt_exec_forward(x);
    loss += rt_exec_loss(x, b->y + (size_t)k * b->n, 0, NULL);
  }
  return loss / b->count;
}

/* Revives layer li; before the first revival of a layer with batch norm
 * (*fwd clear), a forward on the first phase II batch, whose statistics
 * its batch norm starts from (rt_exec_set_alive): the layer still passed
 * its input through there. */
static void revive_after_forward(rt_exec *x, const srch_batches *b, int li, int *fwd) {
  if (x->g->layers[li].bn && !*fwd) {
    rt_exec_set_input(x, b->x, b->n);
    rt_exec_forward(x);
    *fwd = 1;
  }
  srch_revive_layer(x, li);
}

int srch_dense_grad(srch_state *s, rt_exec *x, const srch_batches *b, float *out,
                    double *loss) {
  if (rt_exec_p2_grad(x, 0, b->x, b->y, b->count, b->n, loss, s->err, sizeof s->err)) return -1;
  const float *g0 = rt_exec_p2_slot(x, 0);
  if (!g0) {
    snprintf(s->err, sizeof s->err, "phase II's gradient cannot be read here");
    return -1;
  }
  memcpy(out, g0, (size_t)x->g->n_params * sizeof(float));
  return 0;
}

/* ---- one expansion ---- */

/* Takes units in order while the parameter count (with the identity taps
 * of layers they revive) stays within `cap`; returns how many. */
static int64_t take_prefix(const ir_graph *g, const ir_arch *a, unit *u, int64_t n, int64_t cap,
                           uint8_t *revive) {
  int64_t used = 0, k = 0, w = 0;
  memset(revive, 0, (size_t)g->n_layers);
  for (k = 0; k < n && used < cap; k++) {
    const ir_layer *l = &g->layers[u[k].layer];
    int64_t cost = u[k].len + (!a->alive[l - g->layers] && !revive[u[k].layer] ? revive_cost(g, a, l) : 0);
    if (used + cost > cap) continue;
    used += cost;
    if (!a->alive[l - g->layers]) revive[u[k].layer] = 1;
    u[w++] = u[k];
  }
  return w;
}

/* Whether take_prefix over u[0..k) stops because the cap is reached (and
 * so would not look further). */
static int prefix_fills(const ir_graph *g, const ir_arch *a, const unit *u, int64_t k, int64_t cap) {
  uint8_t *seen = calloc((size_t)(g->n_layers ? g->n_layers : 1), 1);
  int64_t used = 0;
  for (int64_t i = 0; seen && i < k && used < cap; i++) {
    const ir_layer *l = &g->layers[u[i].layer];
    int64_t cost = u[i].len + (!a->alive[l - g->layers] && !seen[u[i].layer] ? revive_cost(g, a, l) : 0);
    if (used + cost > cap) continue;
    used += cost;
    if (!a->alive[l - g->layers]) seen[u[i].layer] = 1;
  }
  free(seen);
  return used >= cap;
}

/* The k best missing units, best first (none of score 0: no signal, no
 * growth): from the gradient on the host, or from the backend's (the
 * expansion's, rt_exec_p2_top). How many (fewer than k when that is all),
 * -1 when out of memory, -2 when the backend failed. */
typedef int64_t (*top_fn)(void *ctx, int64_t k, unit *out);

typedef struct host_top {
  const ir_graph *g;
  const ir_arch *a;
  const float *grad;
} host_top;

static int64_t top_host(void *ctx, int64_t k, unit *out) {
  const host_top *h = ctx;
  return rt_units_top(h->g, h->a, h->grad, k, out);
}

typedef struct exec_top {
  rt_exec *x;
  srch_state *s;
} exec_top;

static int64_t top_exec(void *ctx, int64_t k, unit *out) {
  exec_top *e = ctx;
  int64_t got = rt_exec_p2_top(e->x, k, out, e->s->err, sizeof e->s->err);
  return got < 0 ? -2 : got;
}

/* AddCandidates over the ranking of top: as many of the best units as
 * take_prefix with this cap looks at, asked for in doubling numbers
 * (phase II ranks every missing parameter, and takes few), then
 * take_prefix's. The candidates in *out (malloc'd); their count, or what
 * top failed with. */
static int64_t candidates(const ir_graph *g, const ir_arch *a, int64_t cap, top_fn top, void *ctx,
                          unit **out) {
  uint8_t *revive = malloc((size_t)(g->n_layers ? g->n_layers : 1));
  unit *u = NULL;
  int64_t k = 2 * cap + 1024, got = -1;
  *out = NULL;
  for (; revive; k *= 2) {
    unit *v = realloc(u, (size_t)k * sizeof *u);
    if (!v) {
      got = -1;
      break;
    }
    u = v;
    got = top(ctx, k, u);
    if (got < 0 || got < k || prefix_fills(g, a, u, got, cap)) break;
  }
  if (got < 0) {
    free(u), free(revive);
    return got;
  }
  int64_t nc = take_prefix(g, a, u, got, cap, revive);
  free(revive);
  *out = u;
  return nc;
}

/* UpdateArch once the candidates are scored: the best that fit in m. */
static int64_t keep_best(const ir_graph *g, const ir_arch *a, unit *cand, int64_t nc, int64_t m) {
  uint8_t *revive = malloc((size_t)(g->n_layers ? g->n_layers : 1));
  if (!revive) return 0;
  qsort(cand, (size_t)nc, sizeof *cand, rt_unit_order);
  int64_t nk = take_prefix(g, a, cand, nc, m, revive);
  free(revive);
  return nk;
}

static void count_event(srch_state *s, rt_exec *x, const int64_t before,
                        srch_event *ev) {
  ir_count c = ir_count_params(x->g, x->arch);
  ev->active = c.active;
  ev->added = c.active - before;
  ev->per_layer = s->per_layer;
}

int64_t srch_add_candidates(const ir_graph *g, const ir_arch *a, const float *grad, int64_t n,
                            srch_unit **out) {
  host_top h = {g, a, grad};
  return candidates(g, a, n, top_host, &h, out);
}

int64_t srch_update_arch(const ir_graph *g, const ir_arch *a, srch_unit *cand, int64_t nc,
                         const float *grad, const float *gstar, int64_t m) {
  for (int64_t i = 0; i < nc; i++) cand[i].score = rt_unit_norm(&cand[i], grad, gstar);
  return keep_best(g, a, cand, nc, m);
}

int64_t srch_grow_random(srch_state *s, rt_exec *x, int64_t m, srch_event *ev) {
  const ir_graph *g = x->g;
  const ir_arch *a = x->arch;
  int64_t n, before = ir_count_params(g, a).active;
  unit *u;
  n = rt_units_missing(g, a, &u);
  uint8_t *revive = calloc((size_t)g->n_layers, 1);
  if (n < 0 || !revive) {
    free(u), free(revive);
    return -1;
  }
  for (int64_t i = 0; i < n; i++) u[i].score = rt_rng_uniform(&s->rng);
  qsort(u, (size_t)n, sizeof *u, rt_unit_order);
  int64_t k = take_prefix(g, a, u, n, m, revive);
  for (int li = 0; li < g->n_layers; li++)
    if (revive[li]) srch_revive_layer(x, li), ev->new_layers++;
  for (int64_t i = 0; i < k; i++) {
    s->per_layer[u[i].layer] += activate(x, &u[i], NULL);
  }
  free(u), free(revive);
  count_event(s, x, before, ev);
  return ev->added;
}

/* Placeholders now: channels with incoming and no outgoing weights. */
static int *placeholder_list(const ir_graph *g, const ir_arch *a, int *count) {
  int n = 0, cap = 64;
  int *p = malloc((size_t)cap * 2 * sizeof *p);
  for (int li = 0; p && li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!weighted(l) || !a->alive[l - g->layers] || l->out_t == g->logits_t) continue;
    for (int c = 0; c < l->cout; c++) {
      if (!row_any(a, l, c) || has_outgoing(g, a, l->out_t, l->out_ch + c, 0)) continue;
      if (n == cap) {
        cap *= 2;
        int *q = realloc(p, (size_t)cap * 2 * sizeof *p);
        if (!q) { free(p); return NULL; }
        p = q;
      }
      p[2 * n] = li, p[2 * n + 1] = c, n++;
    }
  }
  *count = n;
  return p;
}

int srch_expand(srch_state *s, rt_exec *x, const srch_batches *b,
                srch_event *ev) {
  const ir_graph *g = x->g;
  const ir_arch *a = x->arch;
  memset(ev, 0, sizeof *ev);
  memset(s->per_layer, 0, (size_t)g->n_layers * sizeof(int64_t));
  if (s->method == FE_SEARCH_FIXED) return -1;
  int64_t m, n;
  srch_sizes(s, a, &m, &n);
  if (m <= 0) return -1;
  int64_t before = ir_count_params(g, a).active;
  float *stats = malloc((size_t)(g->n_stats ? g->n_stats : 1) * sizeof(float));
  int nph = 0;
  int *ph = placeholder_list(g, a, &nph);
  if (!stats || !ph) {
    free(stats), free(ph);
    return -1;
  }
  memcpy(stats, rt_exec_view(x, RT_STATS), (size_t)g->n_stats * sizeof(float));
  uint8_t *was_alive = malloc((size_t)g->n_layers + 1);
  if (!was_alive) {
    free(stats), free(ph);
    return -1;
  }
  memcpy(was_alive, a->alive, (size_t)g->n_layers);
  rt_exec_phase2(x, 1);
  ev->loss_before = batches_loss(x, b);
  int rc = 0;
  double loss;

  if (s->method == FE_SEARCH_RANDOM) {
    if (srch_grow_random(s, x, m, ev) <= 0) rc = -1;
  } else {
    /* g, kept by the backend (on the device for the device step), which
     * ranks the missing units and takes the hyper step where it is */
    unit *u = NULL;
    exec_top et = {x, s};
    int64_t nc = -2;
    if (rt_exec_p2_grad(x, 0, b->x, b->y, b->count, b->n, &loss, s->err, sizeof s->err) == 0)
      nc = candidates(g, a, n, top_exec, &et, &u);
    uint8_t *revive = calloc((size_t)g->n_layers, 1);
    uint8_t *on = calloc((size_t)(nc > 0 ? nc : 1), 1);
    if (nc < 0 || !revive || !on) {
      free(u), free(revive), free(on), free(stats), free(ph), free(was_alive);
      rt_exec_phase2(x, 0);
      return nc == -2 ? -2 : -1;
    }
    /* α*: the candidates join at zero (a dead layer they are in comes
     * alive as the identity), which leaves the loss and g unchanged */
    int fwd = 0;
    for (int64_t i = 0; i < nc; i++)
      if (!a->alive[u[i].layer] && !revive[u[i].layer])
        revive[u[i].layer] = 1, revive_after_forward(x, b, u[i].layer, &fwd);
    for (int64_t i = 0; i < nc; i++) on[i] = activate(x, &u[i], NULL) > 0;
    /* W*: one SGD step, W* = W - lr g, on every weight of α* ⊙ W (the
     * seed's "updating all weights W* for this gradient descent step"),
     * batch norm's affine parameters included; g* = ∇L(α* ⊙ W*). W comes
     * back afterwards: phase II holds the weights, W* only ranks. */
    if (rt_exec_p2_hyper(x, s->lr, s->err, sizeof s->err)) {
      rc = -2;
    } else {
      if (rt_exec_p2_grad(x, 1, b->x, b->y, b->count, b->n, &loss, s->err, sizeof s->err)) rc = -2;
      if (rt_exec_p2_restore(x, rc ? NULL : s->err, rc ? 0 : sizeof s->err)) rc = -2;
    }
    for (int64_t i = 0; i < nc; i++)
      if (on[i]) deactivate(x, &u[i]);
    free(on);
    for (int li = 0; li < g->n_layers; li++)
      if (revive[li]) kill_layer(x, li);
    /* UpdateArch: keep the m best by |g + g*|, the rest stay zero */
    int64_t nk = 0;
    if (rc == 0 && rt_exec_p2_score(x, u, nc, s->err, sizeof s->err)) rc = -2;
    if (rc == 0) nk = keep_best(g, a, u, nc, m);
    memset(revive, 0, (size_t)g->n_layers);
    fwd = 0;
    for (int64_t i = 0; i < nk; i++)
      if (!a->alive[u[i].layer] && !revive[u[i].layer])
        revive[u[i].layer] = 1, revive_after_forward(x, b, u[i].layer, &fwd), ev->new_layers++;
    /* The kept parameters join at zero: W* only ranked them, and starting
     * from zero leaves the network's function unchanged by the expansion,
     * while phase I moves them from the next step on. */
    for (int64_t i = 0; i < nk; i++) {
      s->per_layer[u[i].layer] += activate(x, &u[i], NULL);
    }
    free(revive);
    count_event(s, x, before, ev);
    if (ev->added <= 0 && rc == 0) rc = -1;
    free(u);
  }
  /* A layer that came alive keeps the running statistics it came alive
   * with (rt_exec_set_alive); the others get theirs back below. */
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->bn && !was_alive[li] && a->alive[li])
      memcpy(stats + l->s_off, rt_exec_view(x, RT_STATS) + l->s_off,
             2 * (size_t)l->cout * sizeof(float));
  }
  free(was_alive);
  for (int i = 0; i < nph; i++)
    if (has_outgoing(g, a, g->layers[ph[2 * i]].out_t,
                     g->layers[ph[2 * i]].out_ch + ph[2 * i + 1], 0))
      ev->new_nodes++;
  free(ph);
  ev->placeholders = srch_refill(s, x);
  count_event(s, x, before, ev);
  ev->loss_after = batches_loss(x, b);
  memcpy(rt_exec_edit(x, RT_STATS), stats, (size_t)g->n_stats * sizeof(float));
  rt_exec_phase2(x, 0);
  free(stats);
  s->alr *= g->cfg.alr_decay;
  s->expansions++;
  return rc;
}

/* ---- the architecture several tasks share ---- */

/* What no task has (α: the tasks' union), in layers every task has alive
 * (alive: the tasks' intersection): where the shared architecture grows,
 * since a revival would give each task identity taps of its own. */
static int union_arch(rt_exec *const *xs, int n, int64_t trunk_end, ir_arch *u) {
  const ir_graph *g = xs[0]->g;
  if (ir_arch_init(u, g)) return -1;
  int64_t words = (trunk_end + 63) / 64;
  for (int k = 0; k < n; k++)
    for (int64_t i = 0; i < words; i++) u->alpha[i] |= xs[k]->arch->alpha[i];
  for (int li = 0; li < g->n_layers; li++)
    for (int k = 0; k < n; k++) u->alive[li] &= xs[k]->arch->alive[li];
  return 0;
}

/* Units u[0..k) join every task, at zero, and the shared architecture. */
static void join_shared(srch_state *s, rt_exec *const *xs, int n, ir_arch *shared,
                        const unit *u, int64_t k) {
  for (int64_t i = 0; i < k; i++) {
    for (int t = 0; t < n; t++) activate(xs[t], &u[i], NULL);
    for (int32_t j = 0; j < u[i].len; j++) ir_alpha_set(shared, u[i].start + j, 1);
    s->per_layer[u[i].layer] += u[i].len;
  }
}

int64_t srch_grow_shared_random(srch_state *s, rt_exec *const *xs, int n, ir_arch *shared,
                                int64_t trunk_end, int64_t m, srch_event *ev) {
  const ir_graph *g = xs[0]->g;
  ir_arch u;
  int64_t nu = 0, before = ir_count_params(g, shared).active;
  if (union_arch(xs, n, trunk_end, &u)) return -1;
  unit *c;
  nu = rt_units_missing(g, &u, &c);
  if (nu < 0) {
    ir_arch_free(&u);
    return -1;
  }
  int64_t w = 0;
  for (int64_t i = 0; i < nu; i++)
    if (c[i].start < trunk_end && u.alive[c[i].layer])
      c[w] = c[i], c[w++].score = rt_rng_uniform(&s->rng);
  qsort(c, (size_t)w, sizeof *c, rt_unit_order);
  int64_t k = 0, used = 0;
  while (k < w && used + c[k].len <= m) used += c[k++].len;
  join_shared(s, xs, n, shared, c, k);
  free(c);
  ir_arch_free(&u);
  ev->active = ir_count_params(g, shared).active;
  ev->added = ev->active - before;
  ev->per_layer = s->per_layer;
  return ev->added;
}

int srch_expand_shared(srch_state *s, rt_exec *const *xs, int n, const srch_batches *bs,
                       ir_arch *shared, int64_t trunk_end, srch_event *ev) {
  const ir_graph *g = xs[0]->g;
  memset(ev, 0, sizeof *ev);
  memset(s->per_layer, 0, (size_t)g->n_layers * sizeof(int64_t));
  if (s->method == FE_SEARCH_FIXED || n < 1) return -1;
  int64_t m, nn;
  srch_sizes(s, shared, &m, &nn);
  if (m <= 0) return -1;
  if (s->method == FE_SEARCH_RANDOM) {
    /* the losses as srch_expand takes them: phase II's passes, batch norm's
     * running statistics as they were */
    float **st = calloc((size_t)n, sizeof *st);
    int64_t got = -1;
    for (int k = 0; st && k < n; k++)
      if (!(st[k] = malloc((size_t)(xs[k]->g->n_stats ? xs[k]->g->n_stats : 1) * sizeof(float))))
        break;
    if (st && (n == 0 || st[n - 1])) {
      for (int k = 0; k < n; k++) {
        memcpy(st[k], rt_exec_view(xs[k], RT_STATS), (size_t)xs[k]->g->n_stats * sizeof(float));
        rt_exec_phase2(xs[k], 1);
        ev->loss_before += batches_loss(xs[k], &bs[k]);
      }
      got = srch_grow_shared_random(s, xs, n, shared, trunk_end, m, ev);
      for (int k = 0; k < n; k++) {
        ev->loss_after += batches_loss(xs[k], &bs[k]);
        memcpy(rt_exec_edit(xs[k], RT_STATS), st[k], (size_t)xs[k]->g->n_stats * sizeof(float));
        rt_exec_phase2(xs[k], 0);
      }
    }
    for (int k = 0; st && k < n; k++) free(st[k]);
    free(st);
    s->alr *= g->cfg.alr_decay;
    s->expansions++;
    return got > 0 ? 0 : -1;
  }
  ir_arch u;
  if (union_arch(xs, n, trunk_end, &u)) return -1;
  /* g and g*: the sums of the tasks' gradients (each task's kept by its
   * backend, which takes its own hyper step), in the trunk */
  float *gsum = calloc((size_t)g->n_params, sizeof(float));
  float *gstar = calloc((size_t)g->n_params, sizeof(float));
  float **st = calloc((size_t)n, sizeof *st);
  uint8_t *on = NULL;
  unit *cand = NULL;
  int rc = gsum && gstar && st ? 0 : -1;
  int64_t before = ir_count_params(g, shared).active, nc = 0;
  for (int k = 0; rc == 0 && k < n; k++) {
    const ir_graph *gt = xs[k]->g;
    if (!(st[k] = malloc((size_t)(gt->n_stats ? gt->n_stats : 1) * sizeof(float)))) rc = -1;
  }
  if (rc) goto done;
  for (int k = 0; k < n; k++) {
    memcpy(st[k], rt_exec_view(xs[k], RT_STATS), (size_t)xs[k]->g->n_stats * sizeof(float));
    rt_exec_phase2(xs[k], 1);
    ev->loss_before += batches_loss(xs[k], &bs[k]);
  }
  for (int k = 0; k < n && rc == 0; k++) {
    double loss;
    const float *gk = NULL;
    if (rt_exec_p2_grad(xs[k], 0, bs[k].x, bs[k].y, bs[k].count, bs[k].n, &loss, s->err, sizeof s->err) ||
        !(gk = rt_exec_p2_slot(xs[k], 0)))
      rc = -2;
    for (int64_t i = 0; rc == 0 && i < trunk_end; i++) gsum[i] += gk[i];
  }
  for (int li = 0; rc == 0 && li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (weighted(l) && !u.alive[li] && l->w_off < trunk_end) {
      memset(gsum + l->w_off, 0, (size_t)l->n_w * sizeof(float));
      memset(gsum + l->b_off, 0, (size_t)l->cout * sizeof(float));
    }
  }
  if (rc == 0) {
    nc = srch_add_candidates(g, &u, gsum, nn, &cand);
    on = calloc((size_t)(nc > 0 ? nc : 1) * (size_t)n, 1);
    if (nc < 0 || !on) rc = -1;
  }
  /* W*: in each task, α* at zero, one SGD step on its own gradient; g*
   * the sum of the tasks' gradients there; W comes back */
  for (int k = 0; k < n && rc == 0; k++) {
    rt_exec *x = xs[k];
    for (int64_t i = 0; i < nc; i++) on[k * nc + i] = activate(x, &cand[i], NULL) > 0;
    double loss;
    const float *gk = NULL;
    if (rt_exec_p2_hyper(x, s->lr, s->err, sizeof s->err)) {
      rc = -2;
    } else {
      if (rt_exec_p2_grad(x, 1, bs[k].x, bs[k].y, bs[k].count, bs[k].n, &loss, s->err, sizeof s->err) ||
          !(gk = rt_exec_p2_slot(x, 1)))
        rc = -2;
      for (int64_t i = 0; rc == 0 && i < trunk_end; i++) gstar[i] += gk[i];
      if (rt_exec_p2_restore(x, rc ? NULL : s->err, rc ? 0 : sizeof s->err)) rc = -2;
    }
    for (int64_t i = 0; i < nc; i++)
      if (on[k * nc + i]) deactivate(x, &cand[i]);
  }
  if (rc == 0) {
    /* UpdateArch: the m best by |g + g*| join every task, and the
     * shared architecture, at zero */
    int64_t nk = srch_update_arch(g, &u, cand, nc, gsum, gstar, m);
    join_shared(s, xs, n, shared, cand, nk);
    ev->active = ir_count_params(g, shared).active;
    ev->added = ev->active - before;
    ev->per_layer = s->per_layer;
    if (ev->added <= 0) rc = -1;
  }
  for (int k = 0; k < n; k++) {
    if (rc != -2) ev->loss_after += batches_loss(xs[k], &bs[k]);
    memcpy(rt_exec_edit(xs[k], RT_STATS), st[k], (size_t)xs[k]->g->n_stats * sizeof(float));
    rt_exec_phase2(xs[k], 0);
  }
  s->alr *= g->cfg.alr_decay;
  s->expansions++;
done:
  for (int k = 0; st && k < n; k++) free(st[k]);
  free(gsum), free(gstar), free(st), free(on), free(cand);
  ir_arch_free(&u);
  return rc;
}
