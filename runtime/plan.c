/* plan.c: the live channels of every tensor, and the dead layers that
 * alias their predecessor (plan.h). */
#include "runtime/plan.h"

#include <stdlib.h>
#include <string.h>

rt_plan *rt_plan_new(const ir_graph *g) {
  rt_plan *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  size_t nl = (size_t)(g->n_layers ? g->n_layers : 1);
  p->g = g;
  p->live = calloc((size_t)ir_chan_base(g, g->n_tensors) + 1, 1);
  p->work = calloc((size_t)ir_chan_base(g, g->n_tensors) + 1, 1);
  p->alias = calloc(nl, sizeof *p->alias);
  p->in_off = calloc(nl, sizeof *p->in_off);
  p->prev_off = calloc(nl, sizeof *p->prev_off);
  p->out_off = calloc(nl, sizeof *p->out_off);
  if (!p->live || !p->work || !p->alias || !p->in_off || !p->prev_off || !p->out_off) {
    rt_plan_free(p);
    return NULL;
  }
  for (int i = 0; i < g->n_layers; i++) p->alias[i] = i;
  return p;
}

void rt_plan_free(rt_plan *p) {
  if (!p) return;
  free(p->live), free(p->work), free(p->alias), free(p->in_off), free(p->prev_off), free(p->out_off);
  free(p);
}

static int64_t slice_off(const ir_graph *g, int t, int ch) {
  const ir_tensor *r = &g->tensors[t];
  return r->off + (int64_t)ch * r->h * r->w;
}

/* Whether [a0, a0 + an) and [b0, b0 + bn) of the same tensor overlap, and
 * whether they are the same. */
static int overlap(int ta, int a0, int an, int tb, int b0, int bn) {
  return ta == tb && ta >= 0 && a0 < b0 + bn && b0 < a0 + an;
}
static int same(int ta, int a0, int an, int tb, int b0, int bn) {
  return ta == tb && a0 == b0 && an == bn;
}

static int weighted(const ir_layer *l) {
  return l->w_off >= 0 && (l->kind == IR_CONV || l->kind == IR_LINEAR);
}

/* Whether alive layer o has an active weight reading channels [c0, c1)
 * of its input. */
static int reads(const ir_graph *g, const ir_arch *a, const ir_layer *o, int c0, int c1) {
  int64_t row = ir_fan_in(o), kk = row / o->cin * ir_per_chan(g, o);
  for (int co = 0; co < o->cout; co++)
    for (int64_t k = o->w_off + co * row + c0 * kk; k < o->w_off + co * row + c1 * kk; k++)
      if (ir_alpha_get(a, k)) return 1;
  return 0;
}

/* Whether dead layer d's output may alias its predecessor's: every layer
 * that reads it reads all of it, as its input or its pass-through (and
 * is then redirected), or reads it with no active weight as part of a
 * longer input. */
static int aliasable(const ir_graph *g, const ir_arch *a, int d) {
  const ir_layer *l = &g->layers[d];
  if (l->out_t == g->logits_t) return 0;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *o = &g->layers[i];
    if (i == d) continue;
    if (o->prev_t >= 0 && overlap(o->prev_t, o->prev_ch, o->cout, l->out_t, l->out_ch, l->cout) &&
        !same(o->prev_t, o->prev_ch, o->cout, l->out_t, l->out_ch, l->cout))
      return 0;
    if (o->z_t == l->out_t) return 0;
    int oc = ir_in_chans(g, o);
    if (!overlap(o->in_t, o->in_ch, oc, l->out_t, l->out_ch, l->cout) ||
        same(o->in_t, o->in_ch, oc, l->out_t, l->out_ch, l->cout))
      continue;
    if (!weighted(o)) return 0;
    if (!a->alive[i]) continue; /* a dead layer reads its pass-through only */
    int c0 = l->out_ch - o->in_ch, c1 = c0 + l->cout;
    if (reads(g, a, o, c0 < 0 ? 0 : c0, c1 > oc ? oc : c1)) return 0;
  }
  return 1;
}

/* nz, rd (read by anything), rdw (read by an active weight): per channel. */
static void liveness(const ir_graph *g, const ir_arch *a, const float *params, const float *mom,
                     uint8_t *nz, uint8_t *rd, uint8_t *rdw) {
  int64_t nch = ir_chan_base(g, g->n_tensors);
  memset(nz, 0, (size_t)nch), memset(rd, 0, (size_t)nch), memset(rdw, 0, (size_t)nch);
  const ir_tensor *in = &g->tensors[g->input_t];
  memset(nz + ir_chan_base(g, g->input_t), 1, (size_t)in->c);
  memset(rd + ir_chan_base(g, g->logits_t), 1, (size_t)g->tensors[g->logits_t].c);
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    uint8_t *o = nz + ir_chan_base(g, l->out_t) + l->out_ch;
    if (!weighted(l)) {
      const uint8_t *s = nz + ir_chan_base(g, l->in_t) + l->in_ch;
      for (int c = 0; c < l->cout && c < l->cin; c++) o[c] |= s[c];
      continue;
    }
    if (!a->alive[i]) {
      const uint8_t *s = nz + ir_chan_base(g, l->prev_t) + l->prev_ch;
      for (int c = 0; c < l->cout; c++) o[c] |= s[c];
      continue;
    }
    int64_t row = ir_fan_in(l), kk = row / l->cin;
    int pc = ir_per_chan(g, l);
    uint8_t *r = rdw + ir_chan_base(g, l->in_t) + l->in_ch;
    for (int co = 0; co < l->cout; co++) {
      int on = ir_alpha_get(a, l->b_off + co);
      if (l->bn) {
        int64_t beta = l->g_off + l->cout + co;
        on |= !params || params[beta] != 0.0f || (mom && mom[beta] != 0.0f);
      }
      for (int ci = 0; ci < l->cin; ci++) {
        int64_t w0 = l->w_off + co * row + ci * kk;
        for (int64_t k = 0; k < kk; k++)
          if (ir_alpha_get(a, w0 + k)) {
            on = 1, r[ci / pc] = 1;
            break;
          }
      }
      o[co] |= (uint8_t)on;
    }
    if (l->z_t >= 0)
      for (int co = 0; co < l->cout; co++) nz[ir_chan_base(g, l->z_t) + co] |= o[co];
  }
  for (int64_t c = 0; c < nch; c++) rd[c] |= rdw[c];
  for (int i = g->n_layers - 1; i >= 0; i--) {
    const ir_layer *l = &g->layers[i];
    const uint8_t *o = rd + ir_chan_base(g, l->out_t) + l->out_ch;
    if (!weighted(l) || !a->alive[i]) {
      int t = weighted(l) ? l->prev_t : l->in_t, ch = weighted(l) ? l->prev_ch : l->in_ch;
      uint8_t *s = rd + ir_chan_base(g, t) + ch;
      for (int c = 0; c < l->cout; c++) s[c] |= o[c];
    } else if (l->z_t >= 0) {
      for (int co = 0; co < l->cout; co++) rd[ir_chan_base(g, l->z_t) + co] |= o[co];
    }
  }
}

static void make(const ir_graph *g, const ir_arch *a, const float *params, const float *mom,
                 uint8_t *live, uint8_t *work, uint8_t *rdw, int *alias, int64_t *in_off, int64_t *prev_off,
                 int64_t *out_off, int64_t *live_floats) {
  int64_t nch = ir_chan_base(g, g->n_tensors);
  uint8_t *nz = live, *rd = rdw + nch;
  liveness(g, a, params, mom, nz, rd, rdw);
  for (int64_t c = 0; c < nch; c++) work[c] = nz[c] | rd[c], live[c] = nz[c] & rd[c];
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    alias[i] = i;
    out_off[i] = slice_off(g, l->out_t, l->out_ch);
    if (!weighted(l) || a->alive[i] || l->prev_t < 0 || !aliasable(g, a, i)) continue;
    for (int w = 0; w < i; w++) {
      const ir_layer *s = &g->layers[w];
      if (same(s->out_t, s->out_ch, s->cout, l->prev_t, l->prev_ch, l->cout)) {
        alias[i] = alias[w], out_off[i] = out_off[w];
        break;
      }
    }
  }
  int64_t n = 0;
  for (int t = 0; t < g->n_tensors; t++) {
    const ir_tensor *r = &g->tensors[t];
    for (int c = 0; c < r->c; c++) {
      int skip = 0;
      for (int i = 0; i < g->n_layers && !skip; i++) {
        const ir_layer *l = &g->layers[i];
        skip = alias[i] != i && l->out_t == t && c >= l->out_ch && c < l->out_ch + l->cout;
      }
      if (live[ir_chan_base(g, t) + c] && !skip) n += (int64_t)r->h * r->w;
    }
  }
  *live_floats = n;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    in_off[i] = slice_off(g, l->in_t, l->in_ch);
    prev_off[i] = l->prev_t >= 0 ? slice_off(g, l->prev_t, l->prev_ch) : -1;
    for (int d = 0; d < g->n_layers; d++) {
      const ir_layer *o = &g->layers[d];
      if (alias[d] == d) continue;
      if (same(o->out_t, o->out_ch, o->cout, l->in_t, l->in_ch, ir_in_chans(g, l)) &&
          (!weighted(l) || ir_per_chan(g, l) == 1 || l->in_ch == 0))
        in_off[i] = out_off[d];
      if (l->prev_t >= 0 && same(o->out_t, o->out_ch, o->cout, l->prev_t, l->prev_ch, l->cout))
        prev_off[i] = out_off[d];
    }
  }
}

void rt_plan_make(rt_plan *p, const ir_arch *a, const uint8_t *mask, const float *params,
                  const float *mom) {
  (void)mask; /* α itself: the same bits */
  const ir_graph *g = p->g;
  uint8_t *rdw = malloc(2 * (size_t)ir_chan_base(g, g->n_tensors) + 1);
  if (!rdw) { /* no aliases: the layout at the bounds, every channel live */
    for (int i = 0; i < g->n_layers; i++) {
      const ir_layer *l = &g->layers[i];
      p->alias[i] = i;
      p->in_off[i] = slice_off(g, l->in_t, l->in_ch);
      p->prev_off[i] = l->prev_t >= 0 ? slice_off(g, l->prev_t, l->prev_ch) : -1;
      p->out_off[i] = slice_off(g, l->out_t, l->out_ch);
    }
    memset(p->live, 1, (size_t)ir_chan_base(g, g->n_tensors));
    memset(p->work, 1, (size_t)ir_chan_base(g, g->n_tensors));
    p->live_floats = g->act_size;
    return;
  }
  make(g, a, params, mom, p->live, p->work, rdw, p->alias, p->in_off, p->prev_off, p->out_off,
       &p->live_floats);
  free(rdw);
}

int64_t rt_plan_live_floats(const ir_graph *g, const ir_arch *a) {
  rt_plan *p = rt_plan_new(g);
  if (!p) return -1;
  rt_plan_make(p, a, NULL, NULL, NULL);
  int64_t n = p->live_floats;
  rt_plan_free(p);
  return n;
}

int rt_plan_z_writer(const ir_graph *g, int t) {
  int owner = -1;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->in_t == t || l->out_t == t || l->prev_t == t) return -1;
    if (l->z_t == t) {
      int assigns = (l->relu && !l->bn) || (l->bn && l->kind == IR_CONV);
      if (!assigns || owner >= 0) return -1;
      owner = i;
    }
  }
  return owner;
}

int rt_plan_sole_pool_writer(const ir_graph *g, int t) {
  int w = -1, n = 0;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->in_t == t || l->prev_t == t || l->z_t == t) n++, w = i;
  }
  if (n != 1) return -1;
  const ir_layer *l = &g->layers[w];
  const ir_tensor *r = &g->tensors[t];
  if (l->kind != IR_MAXPOOL || l->in_t != t || l->in_ch != 0 || l->cin != r->c ||
      l->h != r->h || l->w != r->w)
    return -1;
  return w;
}

int rt_plan_grad_clears(const ir_graph *g, uint8_t *assign, int64_t (*zero)[2], uint8_t *zt) {
  int n = 0;
  for (int t = 0; t < g->n_tensors; t++) {
    const ir_tensor *r = &g->tensors[t];
    if (t == g->input_t) continue;
    int z = rt_plan_z_writer(g, t);
    if (z >= 0) {
      assign[z] = (uint8_t)g->layers[z].bn; /* batch norm's writes add unless told */
      continue;
    }
    int pool = rt_plan_sole_pool_writer(g, t);
    if (pool >= 0) {
      assign[pool] = 1;
      continue;
    }
    zero[n][0] = r->off, zero[n][1] = r->off + (int64_t)r->c * r->h * r->w;
    if (zt) zt[t] = 1;
    n++;
  }
  return n;
}
