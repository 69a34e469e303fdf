/* p2.c: phase II's gradients on the host (p2.h). */
#include "runtime/p2.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int weighted(const ir_layer *l) {
  return (l->kind == IR_CONV || l->kind == IR_LINEAR) && l->w_off >= 0;
}

/* ---- the ranking ---- */

int64_t rt_units_missing(const ir_graph *g, const ir_arch *a, rt_unit **out) {
  /* counted first, then written: one allocation of the exact size */
  rt_unit *u = NULL;
  int64_t n = 0;
  *out = NULL;
  for (int pass = 0; pass < 2; pass++) {
    if (pass && !(u = malloc((size_t)(n ? n : 1) * sizeof *u))) return -1;
    n = 0;
    for (int li = 0; li < g->n_layers; li++) {
      const ir_layer *l = &g->layers[li];
      if (!weighted(l)) continue;
      int len = g->cfg.gran == FE_GRAN_KERNEL ? l->k * l->k : 1;
      int64_t nw_units = l->n_w / len;
      for (int64_t k = 0; k < nw_units + l->cout; k++) {
        int64_t start = k < nw_units ? l->w_off + k * len : l->b_off + (k - nw_units);
        if (ir_alpha_get(a, start)) continue;
        if (pass) u[n] = (rt_unit){start, k < nw_units ? len : 1, li, 0.0f};
        n++;
      }
    }
  }
  *out = u;
  return n;
}

float rt_unit_norm(const rt_unit *u, const float *g1, const float *g2) {
  double acc = 0;
  for (int32_t k = 0; k < u->len; k++) {
    double v = g1[u->start + k] + (g2 ? g2[u->start + k] : 0.0f);
    acc += v * v;
  }
  return (float)sqrt(acc);
}

int rt_unit_order(const void *a, const void *b) {
  const rt_unit *p = a, *q = b;
  if (p->score != q->score) return p->score < q->score ? 1 : -1;
  return p->start < q->start ? -1 : p->start > q->start;
}

static void swap_unit(rt_unit *a, rt_unit *b) {
  rt_unit t = *a;
  *a = *b, *b = t;
}

/* quickselect, median-of-three pivots */
void rt_units_select(rt_unit *u, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi && k > lo && k <= hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (rt_unit_order(&u[mid], &u[lo]) < 0) swap_unit(&u[mid], &u[lo]);
    if (rt_unit_order(&u[hi], &u[lo]) < 0) swap_unit(&u[hi], &u[lo]);
    if (rt_unit_order(&u[hi], &u[mid]) < 0) swap_unit(&u[hi], &u[mid]);
    rt_unit pivot = u[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (rt_unit_order(&u[i], &pivot) < 0) i++;
      while (rt_unit_order(&pivot, &u[j]) < 0) j--;
      if (i <= j) {
        swap_unit(&u[i], &u[j]);
        i++, j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
}

int64_t rt_units_top(const ir_graph *g, const ir_arch *a, const float *grad, int64_t k, rt_unit *out) {
  rt_unit *u;
  int64_t nu = rt_units_missing(g, a, &u);
  if (nu < 0) return -1;
  int64_t m = 0; /* the units of norm 0 never qualify: dropped first */
  for (int64_t i = 0; i < nu; i++) {
    u[i].score = rt_unit_norm(&u[i], grad, NULL);
    if (u[i].score != 0.0f) u[m++] = u[i];
  }
  if (k > m) k = m;
  if (k < m) rt_units_select(u, m, k);
  qsort(u, (size_t)k, sizeof *u, rt_unit_order);
  memcpy(out, u, (size_t)k * sizeof *u);
  free(u);
  return k;
}

/* ---- the host implementation of the operations ---- */

static int fail(rt_backend *b, const char *what) {
  snprintf(b->error, sizeof b->error, "%s", what);
  return -1;
}

void rt_p2_free(rt_p2 *p) {
  free(p->slot[0]), free(p->slot[1]), free(p->at), free(p->was);
  memset(p, 0, sizeof *p);
}

float *rt_p2_slot(rt_p2 *p, rt_backend *b, int slot, int write) {
  (void)write;
  if (!p->slot[slot]) p->slot[slot] = calloc((size_t)(b->g->n_params ? b->g->n_params : 1), sizeof(float));
  return p->slot[slot];
}

int rt_p2_grad(rt_p2 *p, rt_backend *b, int slot, const float *images, const ir_label *labels,
               int count, int n, double *loss) {
  const ir_graph *g = b->g;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *out = rt_p2_slot(p, b, slot, 1);
  if (!out) return fail(b, "out of memory for phase II's gradients");
  memset(out, 0, (size_t)g->n_params * sizeof(float));
  *loss = 0;
  for (int k = 0; k < count; k++) {
    double l;
    if (b->i->dense_grad(b, images + (size_t)k * n * img, labels + (size_t)k * n, n, out, &l)) return -1;
    *loss += l;
    /* batch norm's affine parameters: from the backward itself (always
     * active where their layer is alive) */
    const float *gr = b->i->view(b, RT_GRADS);
    if (!gr) return -1;
    for (int li = 0; li < g->n_layers; li++) {
      const ir_layer *ly = &g->layers[li];
      if (ly->bn && b->arch->alive[li])
        for (int64_t j = 0; j < 2 * (int64_t)ly->cout; j++) out[ly->g_off + j] += gr[ly->g_off + j];
    }
  }
  float inv = 1.0f / (float)count;
  for (int64_t i = 0; i < g->n_params; i++) out[i] *= inv;
  *loss /= count;
  return 0;
}

int rt_p2_top(rt_p2 *p, rt_backend *b, int64_t k, rt_unit *out, int64_t *got) {
  const float *g0 = rt_p2_slot(p, b, 0, 0);
  if (!g0) return fail(b, "out of memory for phase II's gradients");
  *got = rt_units_top(b->g, b->arch, g0, k, out);
  return *got < 0 ? fail(b, "out of memory for phase II's ranking") : 0;
}

int rt_p2_score(rt_p2 *p, rt_backend *b, rt_unit *u, int64_t n) {
  const float *g0 = rt_p2_slot(p, b, 0, 0), *g1 = rt_p2_slot(p, b, 1, 0);
  if (!g0 || !g1) return fail(b, "out of memory for phase II's gradients");
  for (int64_t i = 0; i < n; i++) u[i].score = rt_unit_norm(&u[i], g0, g1);
  return 0;
}

static int save_one(rt_p2 *p, int64_t i, float w) {
  if (p->n == p->cap) {
    int64_t cap = p->cap ? 2 * p->cap : 4096;
    int64_t *at = realloc(p->at, (size_t)cap * sizeof *at);
    if (at) p->at = at;
    float *was = at ? realloc(p->was, (size_t)cap * sizeof *was) : NULL;
    if (!was) return -1;
    p->was = was, p->cap = cap;
  }
  p->at[p->n] = i, p->was[p->n++] = w;
  return 0;
}

/* The weights and biases in α (found by α's words, so that a wide
 * template's missing ones are not read) and the batch norm of live
 * layers: what is active. */
int rt_p2_hyper(rt_p2 *p, rt_backend *b, float lr) {
  const ir_graph *g = b->g;
  const ir_arch *a = b->arch;
  const float *grad = rt_p2_slot(p, b, 0, 0);
  float *w = grad ? b->i->edit(b, RT_PARAMS) : NULL;
  if (!w) return grad ? -1 : fail(b, "out of memory for phase II's gradients");
  p->n = 0;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (!weighted(l) || !a->alive[li]) continue;
    int64_t end = l->b_off + l->cout;
    for (int64_t i = ir_alpha_next(a, l->w_off, end); i < end; i = ir_alpha_next(a, i + 1, end)) {
      if (save_one(p, i, w[i])) goto oom;
      w[i] -= lr * grad[i];
    }
    if (l->bn)
      for (int64_t i = l->g_off; i < l->g_off + 2 * (int64_t)l->cout; i++) {
        if (save_one(p, i, w[i])) goto oom;
        w[i] -= lr * grad[i];
      }
  }
  return 0;
oom:
  for (int64_t k = 0; k < p->n; k++) w[p->at[k]] = p->was[k];
  p->n = 0;
  return fail(b, "out of memory for phase II's hyper step");
}

int rt_p2_restore(rt_p2 *p, rt_backend *b) {
  float *w = b->i->edit(b, RT_PARAMS);
  if (!w) return -1;
  for (int64_t k = 0; k < p->n; k++) w[p->at[k]] = p->was[k];
  p->n = 0;
  return 0;
}
