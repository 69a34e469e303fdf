/* lower.c: lowering a checked model to the super-network, with its seed α.
 * Lives apart from the rest of the IR because it needs the frontend, which
 * the runtime library (and so every produced binary) does without. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "base/rng.h"

/* The graph grows in arrays sized from the model's bounds; `live` records,
 * per tensor channel, whether the seed network uses it, so each layer's
 * seed α can be drawn as soon as the layer exists. */
typedef struct builder {
  ir_graph *g;
  int cap_t, cap_l;
  uint8_t **live; /* [tensor][channel] */
  size_t alpha_words;
  rt_rng rng;
} builder;

static int add_tensor(builder *b, const char *name, int c, int h, int w) {
  ir_graph *g = b->g;
  assert(g->n_tensors < b->cap_t);
  int id = g->n_tensors++;
  ir_tensor *t = &g->tensors[id];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->c = c, t->h = h, t->w = w;
  t->off = g->act_size;
  g->act_size += (int64_t)c * h * w;
  b->live[id] = calloc((size_t)c, 1);
  assert(b->live[id]);
  return id;
}

static ir_layer *add_layer(builder *b, ir_kind kind, const char *name,
                           int item) {
  ir_graph *g = b->g;
  assert(g->n_layers < b->cap_l);
  ir_layer *l = &g->layers[g->n_layers++];
  memset(l, 0, sizeof *l);
  l->kind = kind;
  snprintf(l->name, sizeof l->name, "%s", name);
  l->item = item;
  l->z_t = l->prev_t = -1;
  l->w_off = l->b_off = l->g_off = l->s_off = -1;
  g->arch.alive[g->n_layers - 1] = 1;
  l->k = l->stride = 1;
  return l;
}

/* Features per input channel: a linear layer reading a spatial tensor sees
 * it flattened channel-major. */
static int feat_per_ch(const ir_graph *g, const ir_layer *l) {
  const ir_tensor *t = &g->tensors[l->in_t];
  return l->kind == IR_LINEAR ? t->h * t->w : 1;
}

/* Allocates the layer's parameters and draws its seed α: a live input
 * channel and a live output (the first `live_out`) are joined by each
 * weight (or kernel) with probability `density`; live outputs keep their
 * bias. Marks the live outputs in the output tensor. */
static void add_params(builder *b, ir_layer *l, int live_out) {
  ir_graph *g = b->g;
  l->n_w = (int64_t)l->cout * l->cin * l->k * l->k;
  l->w_off = g->n_params;
  g->n_params += l->n_w;
  l->b_off = g->n_params;
  g->n_params += l->cout;
  if (l->bn) {
    l->g_off = g->n_params;
    g->n_params += 2 * (int64_t)l->cout;
    l->s_off = g->n_stats;
    g->n_stats += 2 * (int64_t)l->cout;
  }
  size_t words = (size_t)(g->n_params + 63) / 64;
  if (words > b->alpha_words) {
    g->arch.alpha = realloc(g->arch.alpha, words * 8);
    assert(g->arch.alpha);
    memset(g->arch.alpha + b->alpha_words, 0, (words - b->alpha_words) * 8);
    b->alpha_words = words;
  }
  if (!g->arch.alive[l - g->layers]) return;
  double d = g->cfg.density;
  int kk = l->k * l->k, per = feat_per_ch(g, l);
  const uint8_t *in_live = b->live[l->in_t];
  for (int co = 0; co < live_out && co < l->cout; co++) {
    for (int ci = 0; ci < l->cin; ci++) {
      if (!in_live[l->in_ch + ci / per]) continue;
      int64_t base = l->w_off + ((int64_t)co * l->cin + ci) * kk;
      int on = d >= 1.0 || rt_rng_uniform(&b->rng) < d;
      for (int t = 0; t < kk; t++) {
        if (t > 0 && g->cfg.gran == FE_GRAN_WEIGHT)
          on = d >= 1.0 || rt_rng_uniform(&b->rng) < d;
        ir_alpha_set(&g->arch, base + t, on);
      }
    }
    ir_alpha_set(&g->arch, l->b_off + co, 1);
    b->live[l->out_t][l->out_ch + co] = 1;
  }
  if (l->bn)
    for (int64_t i = 0; i < 2 * (int64_t)l->cout; i++)
      ir_alpha_set(&g->arch, l->g_off + i, 1);
}

/* Where the network is while lowering: a channel slice of a tensor. */
typedef struct cursor {
  int t, ch;   /* tensor and first channel */
  int c, h, w; /* shape of the slice */
} cursor;

static void mark_live(builder *b, int t, int ch, int n) {
  for (int i = 0; i < n; i++) b->live[t][ch + i] = 1;
}

static void lower_conv_stage(builder *b, const fe_item *it, int item,
                             cursor *cur) {
  int C = it->width_hi, L = it->layers_hi;
  char name[64];
  int cat_t = -1;
  if (it->dense) {
    cat_t = add_tensor(b, it->name, cur->c + L * C, cur->h, cur->w);
    snprintf(name, sizeof name, "%s.in", it->name);
    ir_layer *cp = add_layer(b, IR_COPY, name, item);
    cp->cin = cp->cout = cur->c;
    cp->h = cp->oh = cur->h, cp->w = cp->ow = cur->w;
    cp->in_t = cur->t, cp->in_ch = cur->ch;
    cp->out_t = cat_t, cp->out_ch = 0;
    for (int c = 0; c < cur->c; c++)
      b->live[cat_t][c] = b->live[cur->t][cur->ch + c];
  }
  int in_t = cur->t, in_ch = cur->ch, in_c = cur->c;
  for (int i = 0; i < L; i++) {
    snprintf(name, sizeof name, "%s.%d", it->name, i);
    ir_layer *l = add_layer(b, IR_CONV, name, item);
    l->index = i;
    l->h = l->oh = cur->h, l->w = l->ow = cur->w;
    l->k = it->kernel, l->stride = 1, l->pad = it->kernel / 2;
    l->relu = 1, l->bn = it->batchnorm;
    l->cout = C;
    b->g->arch.alive[l - b->g->layers] = i < it->layers_lo;
    l->can_die = i > 0;
    if (it->dense) {
      l->in_t = cat_t, l->in_ch = 0, l->cin = cur->c + i * C;
      l->out_t = cat_t, l->out_ch = cur->c + i * C;
      if (i > 0) l->prev_t = cat_t, l->prev_ch = cur->c + (i - 1) * C;
    } else {
      l->out_t = add_tensor(b, name, C, cur->h, cur->w), l->out_ch = 0;
      l->in_t = in_t, l->in_ch = in_ch, l->cin = in_c;
      if (i > 0) l->prev_t = in_t, l->prev_ch = in_ch;
      in_t = l->out_t, in_ch = 0, in_c = C;
    }
    snprintf(name, sizeof name, "%s.%d.z", it->name, i);
    l->z_t = add_tensor(b, name, C, cur->h, cur->w);
    add_params(b, l, it->width_lo);
    if (!b->g->arch.alive[l - b->g->layers] && l->prev_t >= 0) /* pass-through: same live channels */
      for (int c = 0; c < C; c++)
        b->live[l->out_t][l->out_ch + c] = b->live[l->prev_t][l->prev_ch + c];
  }
  const ir_layer *last = &b->g->layers[b->g->n_layers - 1];
  cur->t = last->out_t, cur->ch = last->out_ch, cur->c = C;
}

static void lower_reduce(builder *b, const fe_item *it, int item, int n,
                         cursor *cur, int bn) {
  char name[64];
  snprintf(name, sizeof name, "reduce%d", n);
  int f = it->factor;
  ir_layer *l;
  if (it->kind == FE_REDUCE_GAP) {
    l = add_layer(b, IR_GAP, name, item);
    l->oh = l->ow = 1;
  } else if (it->kind == FE_REDUCE_MAXPOOL) {
    l = add_layer(b, IR_MAXPOOL, name, item);
    l->k = l->stride = f;
    l->oh = cur->h / f, l->ow = cur->w / f;
  } else {
    l = add_layer(b, IR_CONV, name, item);
    l->k = 3, l->stride = f, l->pad = 1;
    l->oh = (cur->h + 2 - 3) / f + 1, l->ow = (cur->w + 2 - 3) / f + 1;
    l->relu = 1, l->bn = bn;
  }
  l->cin = l->cout = cur->c;
  l->h = cur->h, l->w = cur->w;
  l->in_t = cur->t, l->in_ch = cur->ch;
  l->out_t = add_tensor(b, name, l->cout, l->oh, l->ow), l->out_ch = 0;
  if (l->kind == IR_CONV) {
    snprintf(name, sizeof name, "reduce%d.z", n);
    l->z_t = add_tensor(b, name, l->cout, l->oh, l->ow);
    int live = 0;
    for (int c = 0; c < cur->c; c++) live += b->live[cur->t][cur->ch + c];
    add_params(b, l, live);
  } else {
    for (int c = 0; c < cur->c; c++)
      b->live[l->out_t][c] = b->live[cur->t][cur->ch + c];
  }
  cur->t = l->out_t, cur->ch = 0, cur->h = l->oh, cur->w = l->ow;
}

static void lower_linear(builder *b, const char *name, int item, int index,
                         int width, int live_out, int alive, int relu,
                         cursor *cur) {
  ir_layer *l = add_layer(b, IR_LINEAR, name, item);
  l->index = index;
  l->cin = cur->c * cur->h * cur->w;
  l->h = l->w = l->oh = l->ow = 1;
  l->cout = width;
  l->relu = relu;
  b->g->arch.alive[l - b->g->layers] = (uint8_t)alive;
  l->can_die = index > 0 && item >= 0;
  l->in_t = cur->t, l->in_ch = cur->ch;
  char zname[80];
  snprintf(zname, sizeof zname, "%s.z", name);
  if (l->can_die) l->prev_t = cur->t, l->prev_ch = cur->ch;
  l->out_t = add_tensor(b, name, width, 1, 1), l->out_ch = 0;
  l->z_t = relu ? add_tensor(b, zname, width, 1, 1) : -1;
  add_params(b, l, live_out);
  if (!alive && l->prev_t >= 0)
    for (int c = 0; c < width; c++)
      b->live[l->out_t][c] = b->live[l->prev_t][l->prev_ch + c];
  cur->t = l->out_t, cur->ch = 0, cur->c = width, cur->h = cur->w = 1;
}

ir_graph *ir_build(const fe_model *m, FILE *diag) {
  ir_graph *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  g->cfg = *m;
  g->cfg.src = g->cfg.file = NULL;
  builder b = {.g = g};
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    b.cap_t += 2 * (it->layers_hi > 0 ? it->layers_hi : 1) + 2;
    b.cap_l += (it->layers_hi > 0 ? it->layers_hi : 1) + 1;
  }
  b.cap_t += 4, b.cap_l += 2;
  g->tensors = calloc((size_t)b.cap_t, sizeof *g->tensors);
  g->layers = calloc((size_t)b.cap_l, sizeof *g->layers);
  b.live = calloc((size_t)b.cap_t, sizeof *b.live);
  g->arch.alpha = calloc(1, 8);
  g->arch.alive = calloc((size_t)b.cap_l, 1);
  b.alpha_words = 1;
  if (!g->tensors || !g->layers || !b.live || !g->arch.alpha || !g->arch.alive) {
    free(b.live);
    ir_free(g);
    return NULL;
  }
  rt_rng_seed(&b.rng, m->seed);

  g->input_t = add_tensor(&b, "input", m->in_c, m->in_h, m->in_w);
  mark_live(&b, g->input_t, 0, m->in_c);
  cursor cur = {g->input_t, 0, m->in_c, m->in_h, m->in_w};
  int n_reduce = 0, last_bn = 0;
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    switch (it->kind) {
    case FE_STAGE_CONV:
      lower_conv_stage(&b, it, i, &cur);
      last_bn = it->batchnorm;
      break;
    case FE_REDUCE_MAXPOOL:
    case FE_REDUCE_CONV:
    case FE_REDUCE_GAP:
      lower_reduce(&b, it, i, ++n_reduce, &cur, last_bn);
      break;
    case FE_STAGE_LINEAR:
      for (int k = 0; k < it->layers_hi; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s.%d", it->name, k);
        lower_linear(&b, name, i, k, it->width_hi, it->width_lo,
                     k < it->layers_lo, 1, &cur);
      }
      break;
    }
  }
  lower_linear(&b, "classifier", -1, 0, m->classes, m->classes, 1, 0, &cur);
  g->logits_t = cur.t;
  for (int i = 0; i < g->n_tensors; i++) free(b.live[i]);
  free(b.live);

  ir_count c = ir_count_params(g, &g->arch);
  if (c.active > m->budget) {
    fe_error_at(m, m->budget_loc, diag,
                "budget %" PRId64 " is below the seed network's %" PRId64
                " parameters (lower the seed's layers, channels or density)",
                m->budget, c.active);
    ir_free(g);
    return NULL;
  }
  return g;
}

