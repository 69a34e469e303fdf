/* exec.c: the executor: the architecture (α, alive flags, the masks), its
 * changes a unit at a time, and a backend that runs the steps (backend.h).
 * A backend's failure is kept until rt_exec_status asks. */
#include "runtime/exec.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/hash.h"
#include "base/rng.h"
#include "runtime/err.h"
#include "runtime/packed.h"
#include "runtime/ref.h"

typedef struct exec_impl {
  rt_exec pub;
  ir_arch arch;   /* pub.arch, writable */
  uint8_t *mask;  /* pub.mask, writable */
  uint8_t *dirty; /* per layer: α changed since the last prepare */
  uint8_t *varies; /* per channel of every tensor: ir_varying, at prepare */
  int failed;     /* the backend failed since the last rt_exec_status */
  char error[512];
  /* rt_exec_set_dataset: the set, and where the backend does not keep
   * it, a batch's images made from its draws */
  const rt_dataset *ds;
  rt_norm nm;
  int crop, kept;
  float *made;
  int n_in;       /* the images of the pass begun (this rank's part) */
  float *part;    /* step_ranks: the active parameters' gradients */
  int64_t part_cap;
  int profiling;  /* rt_exec_profile, and not paused */
  double sum_s;   /* ... the ranks' sums of gradients: seconds */
} exec_impl;

static exec_impl *E(rt_exec *x) { return (exec_impl *)x; }

/* The first failure of the backend's operations is kept. */
static void keep(rt_exec *x, int rc) {
  exec_impl *e = E(x);
  if (rc && !e->failed) {
    e->failed = 1;
    snprintf(e->error, sizeof e->error, "%s", x->backend->error);
  }
}

int rt_exec_status(rt_exec *x, char *err, size_t errlen) {
  exec_impl *e = E(x);
  if (!e->failed) return 0;
  e->failed = 0;
  snprintf(err, errlen, "%s", e->error);
  return -1;
}

/* The masks follow α `now` from the exec's (or, with now NULL, from none
 * to the exec's): only where they differ, so that a wide template's pages
 * of missing parameters are never touched (not resident). The parameters
 * and momentum (unless NULL) of those that go off become 0; the inactive
 * ones hold 0 already. */
static void follow(exec_impl *e, const uint64_t *now, float *w, float *mom) {
  const uint64_t *was = e->arch.alpha;
  for (int64_t k = 0; k < (e->pub.g->n_params + 63) / 64; k++) {
    uint64_t to = now ? now[k] : was[k], d = now ? to ^ was[k] : to;
    for (; d; d &= d - 1) {
      int64_t i = k * 64 + __builtin_ctzll(d);
      if (i >= e->pub.g->n_params) break;
      int on = (int)((to >> (i & 63)) & 1);
      e->mask[i] = (uint8_t)on;
      if (!on && w) w[i] = 0.0f, mom[i] = 0.0f;
    }
  }
}

rt_exec *rt_exec_new(const ir_graph *g, int cap, int threads, const char *backend,
                     char *err, size_t errlen) {
  exec_impl *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  rt_exec *x = &e->pub;
  x->g = g;
  x->cap = cap;
  x->arch = &e->arch;
  x->mask = e->mask = calloc((size_t)g->n_params + 1, 1);
  e->dirty = calloc((size_t)g->n_layers + 1, 1);
  e->varies = calloc((size_t)ir_chan_base(g, g->n_tensors) + 1, 1);
  if (!e->mask || !e->dirty || !e->varies || ir_arch_init(&e->arch, g)) {
    snprintf(err, errlen, "out of memory");
    rt_exec_free(x);
    return NULL;
  }
  ir_arch_copy(&e->arch, &g->arch, g);
  x->backend = rt_backend_new(backend ? backend : "ref", g, x->arch, cap, threads, err, errlen);
  if (!x->backend) {
    rt_exec_free(x);
    return NULL;
  }
  x->threads = x->backend->threads;
  follow(e, NULL, NULL, NULL); /* the masks of the seed; its parameters are 0 */
  if (rt_exec_set_arch(x, x->arch, err, errlen)) {
    rt_exec_free(x);
    return NULL;
  }
  return x;
}

void rt_exec_free(rt_exec *x) {
  if (!x) return;
  exec_impl *e = E(x);
  if (x->backend) x->backend->i->free(x->backend);
  free(e->mask), free(e->dirty), free(e->varies), free(e->made), free(e->part);
  ir_arch_free(&e->arch);
  free(e);
}

int rt_exec_prepare(rt_exec *x, char *err, size_t errlen) {
  exec_impl *e = E(x);
  if (ir_varying(x->g, &e->arch, e->varies)) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (x->backend->i->prepare(x->backend, e->dirty, e->mask, e->varies)) {
    snprintf(err, errlen, "%s", x->backend->error);
    return -1;
  }
  memset(e->dirty, 0, (size_t)x->g->n_layers);
  return 0;
}

/* ---- the architecture ---- */

/* The weighted layer whose parameters (weights, biases, batch norm's
 * affine ones) include parameter i, or -1. */
static int layer_of(const ir_graph *g, int64_t i) {
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->w_off < 0) continue;
    int64_t end = l->b_off + l->cout + (l->bn ? 2 * (int64_t)l->cout : 0);
    if (i >= l->w_off && i < end) return li;
  }
  return -1;
}

int64_t rt_exec_set_unit(rt_exec *x, int64_t start, int64_t len, int on,
                         const float *values) {
  exec_impl *e = E(x);
  assert(start >= 0 && len >= 0 && start + len <= x->g->n_params);
  int li = layer_of(x->g, start);
  assert(li >= 0 && (len == 0 || layer_of(x->g, start + len - 1) == li));
  rt_backend *b = x->backend;
  int64_t changed = 0;
  /* the runs that change (one already off is 0 already), each written
   * where the backend keeps it */
  for (int64_t k = 0; k < len;) {
    if (ir_alpha_get(&e->arch, start + k) == !!on) {
      k++;
      continue;
    }
    int64_t k0 = k;
    for (; k < len && ir_alpha_get(&e->arch, start + k) != !!on; k++) {
      ir_alpha_set(&e->arch, start + k, on);
      e->mask[start + k] = (uint8_t)!!on;
    }
    changed += k - k0;
    keep(x, b->i->set_range(b, RT_PARAMS, start + k0, k - k0, on && values ? values + k0 : NULL));
    keep(x, b->i->set_range(b, RT_MOMENTUM, start + k0, k - k0, NULL));
  }
  if (changed) e->dirty[li] = 1;
  return changed;
}

/* Parameters [start, start + len) take values, where the backend keeps
 * them. */
static void put_params(rt_exec *x, int64_t start, int64_t len, const float *values) {
  keep(x, x->backend->i->set_range(x->backend, RT_PARAMS, start, len, values));
}

void rt_exec_set_alive(rt_exec *x, int li, int alive) {
  exec_impl *e = E(x);
  const ir_layer *l = &x->g->layers[li];
  assert(l->can_die && l->w_off >= 0);
  e->arch.alive[li] = (uint8_t)!!alive;
  e->dirty[li] = 1;
  if (!alive) {
    rt_exec_set_unit(x, l->w_off, l->n_w, 0, NULL);
    rt_exec_set_unit(x, l->b_off, l->cout, 0, NULL);
    if (l->bn) rt_exec_set_unit(x, l->g_off, 2 * (int64_t)l->cout, 0, NULL);
    return;
  }
  if (!l->bn) return;
  /* Its batch norm starts as the identity on the statistics of the moment:
   * those of the layer's output in the last forward, where it passed its
   * input through, which is what its pre-activation now is. gamma =
   * sqrt(var + eps) and beta = mean undo the normalisation on that batch
   * (training mode), and running statistics equal to them make it the
   * identity in inference too. Before any forward: gamma 1, beta 0.
   * With batch norm after the ReLU (IR_BN_AFTER), the ReLU would clip the
   * input's negative values: the bias of each channel that had some
   * becomes active at -min, lifting them to 0, and the batch norm takes the
   * lifted statistics (mean + bias) and gives back beta = mean, so that
   * out = relu(in + bias) - bias = in on that batch. */
  int after = l->bn == IR_BN_AFTER && l->relu;
  rt_exec_set_unit(x, l->g_off, 2 * (int64_t)l->cout, 1, NULL);
  double *mean = malloc(3 * (size_t)l->cout * sizeof *mean), *var = mean + l->cout;
  double *lo = mean ? mean + 2 * l->cout : NULL;
  int have = mean && x->backend->i->channel_stats(x->backend, li, mean, var, after ? lo : NULL) == 0;
  for (int c = 0; c < l->cout && have && after; c++)
    if (lo[c] < 0) {
      float lift = (float)-lo[c];
      rt_exec_set_unit(x, l->b_off + c, 1, 1, &lift);
    }
  float *gb = mean ? malloc(2 * (size_t)l->cout * sizeof *gb) : NULL, *stats = rt_exec_edit(x, RT_STATS);
  if (!gb) { /* out of memory: the identity on no statistics */
    float *w = rt_exec_params_write(x);
    for (int c = 0; c < l->cout; c++) w[l->g_off + c] = 1.0f, w[l->g_off + l->cout + c] = 0.0f;
    have = 0;
  }
  for (int c = 0; c < l->cout; c++) {
    double lift = after && have && lo[c] < 0 ? -lo[c] : 0.0;
    double m = have ? mean[c] : 0.0, v = have ? var[c] : 1.0;
    if (gb) gb[c] = have ? (float)sqrt(v + RT_BN_EPS) : 1.0f, gb[l->cout + c] = (float)m;
    stats[l->s_off + c] = (float)(m + lift), stats[l->s_off + l->cout + c] = (float)v;
  }
  if (gb) put_params(x, l->g_off, 2 * (int64_t)l->cout, gb);
  free(gb), free(mean);
}

int rt_exec_set_arch(rt_exec *x, const ir_arch *a, char *err, size_t errlen) {
  exec_impl *e = E(x);
  const ir_graph *g = x->g;
  /* the masks, parameters and momentum follow the exec's α already (the
   * one way it changes keeps them so): a's own is followed from it */
  if (a != &e->arch) {
    follow(e, a->alpha, rt_exec_params_write(x), rt_exec_edit(x, RT_MOMENTUM));
    ir_arch_copy(&e->arch, a, g);
  }
  memset(e->dirty, 1, (size_t)g->n_layers);
  return rt_exec_prepare(x, err, errlen);
}

/* How many of parameters [from, from + n) are active, by α's words. */
static int64_t active_in(const ir_arch *a, int64_t from, int64_t n) {
  int64_t c = 0, i = from, end = from + n;
  for (; i < end && (i & 63); i++) c += ir_alpha_get(a, i);
  for (; i + 64 <= end; i += 64) c += __builtin_popcountll(a->alpha[i >> 6]);
  for (; i < end; i++) c += ir_alpha_get(a, i);
  return c;
}

void rt_exec_init_params(rt_exec *x, uint64_t seed) {
  const ir_graph *g = x->g;
  rt_rng rng;
  rt_rng_seed(&rng, seed);
  float *params = rt_exec_params_write(x);
  float *mom = rt_exec_edit(x, RT_MOMENTUM), *stats = rt_exec_edit(x, RT_STATS);
  /* the active parameters are written; the others hold 0 already (see
   * rt_exec_set_arch), and their pages are not touched. α is read by its
   * bits, not through the mask: a wide template's bytes of missing
   * parameters would become resident when read. */
  const ir_arch *a = x->arch;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0) continue;
    int64_t row = ir_fan_in(l);
    for (int co = 0; co < l->cout; co++) {
      int64_t w0 = l->w_off + co * row;
      int64_t fan = active_in(a, w0, row);
      float bound = 1.0f / sqrtf((float)(fan > 0 ? fan : 1));
      /* ReLU layers: torch.nn.init.kaiming_uniform_(nonlinearity='relu'),
       * which keeps deep sparse stacks from fading; the classifier keeps
       * PyTorch's default. Biases: PyTorch's default. */
      float wbound = l->relu ? bound * sqrtf(6.0f) : bound;
      for (int64_t k = 0; k < row; k++) {
        float u = (2.0f * rt_rng_uniform(&rng) - 1.0f) * wbound;
        if (ir_alpha_get(a, w0 + k)) params[w0 + k] = u, mom[w0 + k] = 0.0f;
      }
      float u = (2.0f * rt_rng_uniform(&rng) - 1.0f) * bound;
      if (ir_alpha_get(a, l->b_off + co)) params[l->b_off + co] = u, mom[l->b_off + co] = 0.0f;
    }
    if (l->bn) {
      for (int c = 0; c < l->cout; c++) {
        params[l->g_off + c] = ir_alpha_get(a, l->g_off + c) ? 1.0f : 0.0f; /* dead: inactive */
        params[l->g_off + l->cout + c] = 0.0f;
        mom[l->g_off + c] = mom[l->g_off + l->cout + c] = 0.0f;
        stats[l->s_off + c] = 0.0f;
        stats[l->s_off + l->cout + c] = 1.0f;
      }
    }
  }
}

/* ---- the backend's state and steps ---- */

const float *rt_exec_view(const rt_exec *x, rt_state which) {
  return x->backend->i->view(x->backend, which);
}

float *rt_exec_edit(rt_exec *x, rt_state which) { return x->backend->i->edit(x->backend, which); }

float *rt_exec_params_write(rt_exec *x) { return rt_exec_edit(x, RT_PARAMS); }

void rt_exec_active_values(const rt_exec *x, rt_state which, float *out) {
  const ir_graph *g = x->g;
  if (rt_packed_active(x->backend, which, out) == ir_count_active_bits(x->arch, g->n_params)) return;
  const float *v = rt_exec_view(x, which);
  int64_t k = 0;
  for (int64_t i = ir_alpha_next(x->arch, 0, g->n_params); i < g->n_params;
       i = ir_alpha_next(x->arch, i + 1, g->n_params))
    out[k++] = v[i];
}

void rt_exec_set_driver(rt_exec *x, rt_graph_fn fwd, rt_graph_fn bwd) {
  x->backend->i->set_driver(x->backend, fwd, bwd);
}

void rt_exec_set_input(rt_exec *x, const float *batch, int n) {
  assert(n >= 1 && n <= x->cap);
  E(x)->n_in = n;
  keep(x, x->backend->i->upload(x->backend, batch, n));
}

int rt_exec_set_dataset(rt_exec *x, const rt_dataset *d, const rt_norm *nm, int crop, char *err,
                        size_t errlen) {
  exec_impl *e = E(x);
  const rt_backend_i *i = x->backend->i;
  e->ds = d, e->crop = crop, e->kept = 0;
  if (!d) return 0;
  e->nm = *nm;
  e->kept = i->set_dataset && i->upload_draws && i->set_dataset(x->backend, d, &e->nm, crop) == 0;
  if (e->kept) return 1;
  const ir_tensor *t = &x->g->tensors[x->g->input_t];
  free(e->made);
  e->made = malloc((size_t)x->cap * (size_t)t->c * t->h * t->w * sizeof *e->made);
  if (!e->made) {
    e->ds = NULL;
    snprintf(err, errlen, "out of memory for a batch of %d images", x->cap);
    return -1;
  }
  return 0;
}

void rt_exec_set_draws(rt_exec *x, const rt_draw *dr, int n) {
  exec_impl *e = E(x);
  assert(e->ds && n >= 1 && n <= x->cap);
  e->n_in = n;
  if (e->kept) {
    keep(x, x->backend->i->upload_draws(x->backend, dr, n));
    return;
  }
  rt_data_make(e->ds, dr, n, &e->nm, e->crop, e->made, NULL);
  rt_exec_set_input(x, e->made, n);
}

void rt_exec_forward(rt_exec *x) { keep(x, x->backend->i->forward(x->backend)); }

double rt_exec_loss(rt_exec *x, const ir_label *labels, int grad, int *correct) {
  double loss = NAN;
  keep(x, x->backend->i->loss(x->backend, labels, grad, &loss, correct));
  return loss;
}

void rt_exec_backward(rt_exec *x) { keep(x, x->backend->i->backward(x->backend)); }

/* A failure of the exec's own (not the backend's) kept like one. */
static void fail(rt_exec *x, const char *msg) {
  exec_impl *e = E(x);
  if (!e->failed) e->failed = 1, snprintf(e->error, sizeof e->error, "%s", msg);
}

static int ranks(const rt_exec *x) { return rt_comm_size(x->comm) > 1; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* v[0..n) = the ranks' sum of v * own / (the ranks' sum of own): a sum of
 * the ranks' means, each weighted by its images. *tot: the sum of own. */
static int weighted_sum(rt_exec *x, float *v, int64_t n, double own, double *extra, int n_extra,
                        double *tot, char *err, size_t errlen) {
  for (int64_t i = 0; i < n; i++) v[i] *= (float)own;
  double t[4] = {own};
  for (int k = 0; k < n_extra; k++) t[1 + k] = extra[k];
  if (rt_comm_sum(x->comm, v, n, err, errlen) || rt_comm_sum_d(x->comm, t, 1 + n_extra, err, errlen))
    return -1;
  float inv = (float)(1.0 / t[0]);
  for (int64_t i = 0; i < n; i++) v[i] *= inv;
  for (int k = 0; k < n_extra; k++) extra[k] = t[1 + k];
  *tot = t[0];
  return 0;
}

int rt_exec_sum_ranks(rt_exec *x, double *loss, int *correct, int *images) {
  exec_impl *e = E(x);
  if (!ranks(x)) {
    if (images) *images = e->n_in;
    return e->failed ? -1 : 0;
  }
  if (e->failed) return -1;
  double t0 = e->profiling > 0 ? now_s() : 0.0;
  /* the live layout's step, where it runs one: its gradients at the
   * compact graph's indices, not a view of the template's size */
  rt_backend *b = rt_packed_step(x->backend);
  if (!b) b = x->backend;
  float *g = b->i->edit(b, RT_GRADS);
  if (!g) {
    char msg[512];
    snprintf(msg, sizeof msg, "the %s backend cannot take the ranks' summed gradients: %.400s",
             x->backend->i->name, b->error);
    fail(x, msg);
    return -1;
  }
  /* the active parameters' alone: SGD leaves the others be */
  const ir_arch *a = b->arch;
  int64_t np = b->g->n_params, na = ir_count_active_bits(a, np), k = 0;
  if (na > e->part_cap) {
    free(e->part);
    e->part_cap = 0;
    if (!(e->part = malloc((size_t)na * sizeof *e->part))) {
      fail(x, "out of memory for the gradients summed over the ranks");
      return -1;
    }
    e->part_cap = na;
  }
  for (int64_t i = ir_alpha_next(a, 0, np); i < np; i = ir_alpha_next(a, i + 1, np))
    e->part[k++] = g[i];
  char err[512];
  double sums[2] = {*loss * e->n_in, *correct}, n;
  if (weighted_sum(x, e->part, na, e->n_in, sums, 2, &n, err, sizeof err)) {
    fail(x, err);
    return -1;
  }
  k = 0;
  for (int64_t i = ir_alpha_next(a, 0, np); i < np; i = ir_alpha_next(a, i + 1, np))
    g[i] = e->part[k++];
  *loss = sums[0] / n, *correct = (int)sums[1];
  if (images) *images = (int)n;
  if (e->profiling > 0) e->sum_s += now_s() - t0;
  return 0;
}

/* rt_exec_train_step over the ranks (rt_exec_set_comm). */
static double step_ranks(rt_exec *x, const ir_label *labels, float lr, float momentum, float decay,
                         int *correct) {
  int c = 0;
  rt_exec_forward(x);
  double loss = rt_exec_loss(x, labels, 1, &c);
  rt_exec_backward(x);
  if (rt_exec_sum_ranks(x, &loss, &c, NULL)) return NAN;
  rt_exec_sgd(x, lr, momentum, decay);
  if (correct) *correct = c;
  return loss;
}

double rt_exec_train_step(rt_exec *x, const ir_label *labels, float lr, float momentum, float decay,
                          int *correct) {
  if (ranks(x)) return step_ranks(x, labels, lr, momentum, decay, correct);
  double loss = NAN;
  keep(x, x->backend->i->train_step(x->backend, labels, lr, momentum, decay, &loss, correct));
  return loss;
}

void rt_exec_run(rt_exec *x, const ir_call *calls, int n) {
  keep(x, x->backend->i->run(x->backend, calls, n));
}

void rt_exec_set_training(rt_exec *x, int on) { x->backend->i->set_training(x->backend, on); }

void rt_exec_sgd(rt_exec *x, float lr, float momentum, float decay) {
  keep(x, x->backend->i->sgd(x->backend, lr, momentum, decay));
}

void rt_exec_sgd_shared(rt_exec *const *xs, int n, const int64_t *idx, int64_t m, float *sum,
                        float lr, float momentum, float decay) {
  memset(sum, 0, (size_t)m * sizeof *sum);
  for (int k = 0; k < n; k++) {
    const float *g = rt_exec_view(xs[k], RT_GRADS);
    for (int64_t j = 0; j < m; j++) sum[j] += g[idx[j]];
  }
  for (int k = 0; k < n; k++) {
    float *g = m ? rt_exec_edit(xs[k], RT_GRADS) : NULL;
    if (m && !g) {
      exec_impl *e = E(xs[0]);
      if (!e->failed)
        snprintf(e->error, sizeof e->error, "the %s backend cannot take the tasks' summed "
                 "gradients: %.400s", xs[k]->backend->i->name, xs[k]->backend->error);
      e->failed = 1;
      return;
    }
    for (int64_t j = 0; j < m; j++) g[idx[j]] = sum[j];
    rt_exec_sgd(xs[k], lr, momentum, decay);
  }
}

void rt_exec_phase2(rt_exec *x, int on) { x->backend->i->phase2(x->backend, on); }

/* An operation's result: 0, or -1 with the backend's reason in err. */
static int backend_rc(const rt_exec *x, int rc, char *err, size_t errlen) {
  if (rc) snprintf(err, errlen, "%s", x->backend->error);
  return rc ? -1 : 0;
}

int rt_exec_dense_grad(rt_exec *x, const float *in, const ir_label *labels, int n, float *out,
                       double *loss, char *err, size_t errlen) {
  return backend_rc(x, x->backend->i->dense_grad(x->backend, in, labels, n, out, loss), err, errlen);
}

/* rt_exec_p2_grad over the ranks: this rank's part [lo, hi) of each
 * batch, gathered, then the slot summed, weighted by the parts. */
static int p2_grad_ranks(rt_exec *x, int slot, const float *images, const ir_label *labels,
                         int count, int n, double *loss, char *err, size_t errlen) {
  rt_backend *b = x->backend;
  const ir_tensor *in = &x->g->tensors[x->g->input_t];
  size_t img = (size_t)in->c * in->h * in->w;
  int lo, hi;
  rt_comm_part(x->comm, n, &lo, &hi);
  int m = hi - lo;
  double l = 0.0;
  if (m > 0) {
    float *px = malloc((size_t)count * m * img * sizeof *px);
    ir_label *py = malloc((size_t)count * m * sizeof *py);
    int rc = !px || !py ? rt_fail(err, errlen, "out of memory for phase II's part of %d batches",
                                  count) : 0;
    for (int k = 0; rc == 0 && k < count; k++) {
      memcpy(px + (size_t)k * m * img, images + ((size_t)k * n + lo) * img, (size_t)m * img * sizeof *px);
      memcpy(py + (size_t)k * m, labels + (size_t)k * n + lo, (size_t)m * sizeof *py);
    }
    if (rc == 0) rc = backend_rc(x, b->i->p2_grad(b, slot, px, py, count, m, &l), err, errlen);
    free(px), free(py);
    if (rc) return -1;
  }
  float *g = b->i->p2_slot(b, slot, 1);
  if (!g) return rt_fail(err, errlen, "phase II's gradients: %s", b->error);
  if (m == 0) memset(g, 0, (size_t)x->g->n_params * sizeof *g);
  double sum = l * m, tot;
  if (weighted_sum(x, g, x->g->n_params, m, &sum, 1, &tot, err, errlen)) return -1;
  *loss = sum / tot;
  return 0;
}

int rt_exec_p2_grad(rt_exec *x, int slot, const float *images, const ir_label *labels, int count, int n,
                    double *loss, char *err, size_t errlen) {
  if (ranks(x)) return p2_grad_ranks(x, slot, images, labels, count, n, loss, err, errlen);
  rt_backend *b = x->backend;
  return backend_rc(x, b->i->p2_grad(b, slot, images, labels, count, n, loss), err, errlen);
}

void rt_exec_set_comm(rt_exec *x, rt_comm *c) { x->comm = c; }

/* α and the alive flags, hashed. */
static uint64_t arch_hash(const ir_graph *g, const ir_arch *a) {
  uint64_t h = base_fnv(BASE_FNV_SEED, a->alpha, (size_t)(g->n_params + 63) / 64 * sizeof *a->alpha);
  return base_fnv(h, a->alive, (size_t)g->n_layers);
}

int rt_exec_sync(rt_exec *x, char *err, size_t errlen) {
  if (!ranks(x)) return 0;
  const ir_graph *g = x->g;
  rt_comm *c = x->comm;
  int same;
  if (rt_comm_same(c, arch_hash(g, x->arch), &same, err, errlen)) return -1;
  if (!same)
    return rt_fail(err, errlen, "the ranks' architectures differ (rank %d's is not rank 0's): "
                   "their searches took different decisions", rt_comm_rank(c));
  if (g->n_stats) {
    float *st = rt_exec_edit(x, RT_STATS);
    if (!st) return rt_fail(err, errlen, "batch norm's statistics: %s", x->backend->error);
    if (rt_comm_sum(c, st, g->n_stats, err, errlen)) return -1;
    for (int64_t i = 0; i < g->n_stats; i++) st[i] /= (float)rt_comm_size(c);
  }
  /* The parameters and momentum are the same on every rank but where a
   * layer came alive on its rank's statistics: compared by a hash of the
   * active values (read where the backend keeps them, nothing of the
   * template's size), sent from rank 0 only where they differ. */
  int64_t na = ir_count_active_bits(x->arch, g->n_params);
  float *a = malloc((size_t)(na ? na : 1) * sizeof *a);
  if (!a) return rt_fail(err, errlen, "out of memory");
  uint64_t h = BASE_FNV_SEED;
  rt_state of[2] = {RT_PARAMS, RT_MOMENTUM};
  for (int k = 0; k < 2; k++) {
    rt_exec_active_values(x, of[k], a);
    h = base_fnv(h, a, (size_t)na * sizeof *a);
  }
  free(a);
  if (rt_comm_same(c, h, &same, err, errlen)) return -1;
  for (int k = 0; k < 2 && !same; k++) {
    float *v = rt_exec_edit(x, of[k]);
    if (!v) return rt_fail(err, errlen, "the parameters: %s", x->backend->error);
    if (rt_comm_bcast(c, v, g->n_params * (int64_t)sizeof *v, err, errlen)) return -1;
  }
  return 0;
}

int64_t rt_exec_p2_top(rt_exec *x, int64_t k, rt_unit *out, char *err, size_t errlen) {
  int64_t got = 0;
  if (backend_rc(x, x->backend->i->p2_top(x->backend, k, out, &got), err, errlen)) return -1;
  return got;
}

int rt_exec_p2_score(rt_exec *x, rt_unit *u, int64_t n, char *err, size_t errlen) {
  return backend_rc(x, x->backend->i->p2_score(x->backend, u, n), err, errlen);
}

int rt_exec_p2_hyper(rt_exec *x, float lr, char *err, size_t errlen) {
  return backend_rc(x, x->backend->i->p2_hyper(x->backend, lr), err, errlen);
}

int rt_exec_p2_restore(rt_exec *x, char *err, size_t errlen) {
  return backend_rc(x, x->backend->i->p2_restore(x->backend), err, errlen);
}

const float *rt_exec_p2_slot(rt_exec *x, int slot) { return x->backend->i->p2_slot(x->backend, slot, 0); }

rt_backend_stats rt_exec_get_stats(const rt_exec *x) { return x->backend->i->stats(x->backend); }

int rt_exec_profile(rt_exec *x) {
  E(x)->profiling = 1, E(x)->sum_s = 0.0;
  return x->backend->i->profile(x->backend);
}

void rt_exec_profile_pause(rt_exec *x, int pause) {
  exec_impl *e = E(x);
  if (e->profiling) e->profiling = pause ? -1 : 1; /* -1: profiled, paused */
  x->backend->i->profile_pause(x->backend, pause);
}

void rt_exec_profile_report(const rt_exec *x, FILE *f, long steps) {
  x->backend->i->profile_report(x->backend, f, steps);
  if (ranks(x) && steps > 0)
    fprintf(f, "ranks: %.3f ms a step summing the gradients over %d ranks, not in the table\n",
            1e3 * E((rt_exec *)x)->sum_s / (double)steps, rt_comm_size(x->comm));
}

rt_backend_mem rt_exec_memory(const rt_exec *x) { return x->backend->i->memory(x->backend); }

int64_t rt_peak_rss(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru)) return -1;
  return (int64_t)ru.ru_maxrss * 1024; /* kilobytes on Linux */
}

const char *rt_bytes_text(int64_t bytes, char *buf, size_t len) {
  static const char *unit[] = {"bytes", "kB", "MB", "GB", "TB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1000.0 && u < 4) v /= 1000.0, u++;
  if (u == 0) snprintf(buf, len, "%lld bytes", (long long)bytes);
  else snprintf(buf, len, "%.*f %s", v < 10.0 ? 2 : v < 100.0 ? 1 : 0, v, unit[u]);
  return buf;
}
