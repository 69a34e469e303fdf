/* lower.c: lowering a checked model to the super-network, with its seed α.
 * Lives apart from the rest of the IR because it needs the frontend, which
 * the runtime library (and so every produced binary) does without. */
#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "base/rng.h"

/* The graph grows in arrays sized from the model's bounds; `live` records,
 * per tensor channel, whether the seed network uses it, so each layer's
 * seed α can be drawn as soon as the layer exists.
 *
 * Lowering runs twice over the same code. The first pass (counting) lays
 * out shapes and offsets and counts the seed's weights from the live
 * channels, with no α and no draws, so sizes and the budget are checked
 * before anything in proportion to the super-network is allocated. The
 * second pass allocates α once at its final size and draws the seed. */
typedef struct builder {
  ir_graph *g;
  int cap_t, cap_l;
  uint8_t **live;   /* [tensor][channel] */
  int counting;     /* first pass: no α, no draws */
  int64_t seed_max; /* counting: seed weights and biases before density */
  int64_t item_params[FE_MAX_ITEMS + 1]; /* counting: per item, classifier last */
  int wide_item;    /* counting: an item whose linear layer reads > INT_MAX features, or -2 */
  int64_t wide_cin;
  jmp_buf oom;      /* a failed allocation while lowering */
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
  if (!b->live[id]) longjmp(b->oom, 1);
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
static void add_params(builder *b, ir_layer *l, int live_out, int64_t cin) {
  ir_graph *g = b->g;
  l->n_w = (int64_t)l->cout * cin * l->k * l->k;
  if (b->counting)
    b->item_params[l->item < 0 ? FE_MAX_ITEMS : l->item] +=
        l->n_w + (int64_t)l->cout * (l->bn ? 3 : 1);
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
  if (!g->arch.alive[l - g->layers]) return;
  double d = g->cfg.density;
  int kk = l->k * l->k, per = feat_per_ch(g, l);
  const uint8_t *in_live = b->live[l->in_t];
  if (b->counting) {
    /* Exact when density is 1; an upper bound otherwise. */
    int n_out = live_out < l->cout ? live_out : l->cout;
    int64_t live_in = 0;
    for (int64_t c = 0; c < cin / per; c++) live_in += in_live[l->in_ch + c];
    b->seed_max += (int64_t)n_out * (live_in * per * kk + 1);
    for (int co = 0; co < n_out; co++) b->live[l->out_t][l->out_ch + co] = 1;
    return;
  }
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
    add_params(b, l, it->width_lo, l->cin);
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
    add_params(b, l, live, l->cin);
  } else {
    for (int c = 0; c < cur->c; c++)
      b->live[l->out_t][c] = b->live[cur->t][cur->ch + c];
  }
  cur->t = l->out_t, cur->ch = 0, cur->h = l->oh, cur->w = l->ow;
}

static void lower_linear(builder *b, const char *name, int item, int index,
                         int width, int live_out, int alive, int relu,
                         cursor *cur) {
  if (cur->ch != 0 && cur->h * cur->w != 1) {
    /* A linear layer reads its input's planes flattened from channel 0
     * (ir_check): a slice further in (a dense stage's last layer) is
     * copied out first. */
    char cname[80];
    snprintf(cname, sizeof cname, "%s.in", name);
    int t = add_tensor(b, cname, cur->c, cur->h, cur->w);
    ir_layer *cp = add_layer(b, IR_COPY, cname, item);
    cp->cin = cp->cout = cur->c;
    cp->h = cp->oh = cur->h, cp->w = cp->ow = cur->w;
    cp->in_t = cur->t, cp->in_ch = cur->ch;
    cp->out_t = t, cp->out_ch = 0;
    for (int c = 0; c < cur->c; c++) b->live[t][c] = b->live[cur->t][cur->ch + c];
    cur->t = t, cur->ch = 0;
  }
  ir_layer *l = add_layer(b, IR_LINEAR, name, item);
  l->index = index;
  int64_t cin = (int64_t)cur->c * cur->h * cur->w;
  if (cin > INT_MAX && b->wide_item == -2) b->wide_item = item, b->wide_cin = cin;
  l->cin = cin > INT_MAX ? INT_MAX : (int)cin; /* counting only: refused after it */
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
  add_params(b, l, live_out, cin);
  if (!alive && l->prev_t >= 0)
    for (int c = 0; c < width; c++)
      b->live[l->out_t][c] = b->live[l->prev_t][l->prev_ch + c];
  cur->t = l->out_t, cur->ch = 0, cur->c = width, cur->h = cur->w = 1;
}

/* One lowering pass over the whole model into b->g, which holds no tensors
 * or layers yet. */
static void lower_all(builder *b, const fe_model *m) {
  ir_graph *g = b->g;
  rt_rng_seed(&b->rng, m->seed);
  g->input_t = add_tensor(b, "input", m->in_c, m->in_h, m->in_w);
  mark_live(b, g->input_t, 0, m->in_c);
  cursor cur = {g->input_t, 0, m->in_c, m->in_h, m->in_w};
  int n_reduce = 0, last_bn = 0;
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    switch (it->kind) {
    case FE_STAGE_CONV:
      lower_conv_stage(b, it, i, &cur);
      last_bn = it->batchnorm;
      break;
    case FE_REDUCE_MAXPOOL:
    case FE_REDUCE_CONV:
    case FE_REDUCE_GAP:
      lower_reduce(b, it, i, ++n_reduce, &cur, last_bn);
      break;
    case FE_STAGE_LINEAR:
      for (int k = 0; k < it->layers_hi; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s.%d", it->name, k);
        lower_linear(b, name, i, k, it->width_hi, it->width_lo,
                     k < it->layers_lo, 1, &cur);
      }
      break;
    }
  }
  lower_linear(b, "classifier", -1, 0, m->classes, m->classes, 1, 0, &cur);
  g->logits_t = cur.t;
}

/* Empties the graph and the live channels for another pass. */
static void reset(builder *b) {
  ir_graph *g = b->g;
  for (int i = 0; i < g->n_tensors; i++) free(b->live[i]), b->live[i] = NULL;
  g->n_tensors = g->n_layers = 0;
  g->act_size = g->n_params = g->n_stats = 0;
}

static int word_char(char c) {
  return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* Where a top-level setting such as "classes" is written, for settings the
 * checked model keeps no location of; line 0 (the file only) if not found. */
static fe_loc setting_loc(const fe_model *m, const char *word) {
  fe_loc at = {0, 0};
  size_t n = strlen(word);
  int line = 1;
  const char *line_start = m->src;
  for (const char *p = m->src; p && *p; p++) {
    if (*p == '\n') line++, line_start = p + 1;
    else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
      while (p[1] && p[1] != '\n') p++;
    } else if (*p == '"') {
      while (p[1] && p[1] != '"' && p[1] != '\n') p++;
      if (p[1] == '"') p++;
    } else if (strncmp(p, word, n) == 0 && (p == m->src || !word_char(p[-1])) &&
               !word_char(p[n])) {
      at.line = line, at.col = (int)(p - line_start) + 1;
      return at;
    }
  }
  return at;
}

static fe_loc item_loc(const fe_model *m, int item) {
  return item < 0 || item >= m->n_items ? setting_loc(m, "classes") : m->items[item].loc;
}

ir_limits ir_limits_default(void) {
  ir_limits l = {IR_MAX_PARAMS_DEFAULT, IR_MAX_ARENA_DEFAULT};
  return l;
}

/* bytes as a person reads them: "1.9 MB", "76.0 GB". */
static const char *human(double bytes, char *buf, size_t len) {
  if (bytes >= 1e9) snprintf(buf, len, "%.1f GB", bytes / 1e9);
  else if (bytes >= 1e6) snprintf(buf, len, "%.1f MB", bytes / 1e6);
  else snprintf(buf, len, "%.1f KB", bytes / 1e3);
  return buf;
}

/* The first pass: sizes and the seed, checked before the second allocates
 * in proportion to them. Returns the number of errors reported. */
static int check_sizes(builder *b, const fe_model *m, const ir_limits *lim,
                       FILE *diag) {
  ir_graph *g = b->g;
  int errors = 0;
  char hb[32];
  if (m->density >= 1.0 && b->seed_max > m->budget) {
    fe_error_at(m, m->budget_loc, diag,
                "budget %" PRId64 " is below the seed network's %" PRId64
                " parameters (lower the seed's layers, channels or density)",
                m->budget, b->seed_max);
    errors++;
  }
  if (b->wide_item != -2) {
    fe_error_at(m, item_loc(m, b->wide_item), diag,
                "a linear layer here reads %" PRId64 " features, more than the "
                "%d a layer can have (reduce the image before it)",
                b->wide_cin, INT_MAX);
    errors++;
  }
  int64_t total = g->n_params;
  if (total > lim->max_params) {
    int big = FE_MAX_ITEMS; /* the item with the most parameters */
    for (int i = 0; i < m->n_items; i++)
      if (b->item_params[i] > b->item_params[big]) big = i;
    fe_error_at(m, item_loc(m, big == FE_MAX_ITEMS ? -1 : big), diag,
                "the super-network needs %" PRId64 " parameters (%s), over "
                "the limit of %" PRId64 "%s; raise it with 'ilnasc --max-params "
                "N' or ILNAS_MAX_PARAMS",
                total, human((double)total * 4, hb, sizeof hb), lim->max_params,
                b->item_params[big] < total ? " (most of them here)" : "");
    errors++;
  }
  /* In double: act_size * 4 * batch can pass 2^63. */
  double arena = (double)g->act_size * 4 * (m->batch > 0 ? m->batch : 1);
  if (arena > (double)lim->max_arena) {
    fe_error_at(m, setting_loc(m, "input"), diag,
                "the activation arena needs %" PRId64 " floats per image, "
                "%s at batch %d, over the limit of %" PRId64 " bytes; "
                "raise it with 'ilnasc --max-arena BYTES' or ILNAS_MAX_ARENA",
                g->act_size, human(arena, hb, sizeof hb), m->batch, lim->max_arena);
    errors++;
  }
  return errors;
}

/* Counts and checks, then lowers for real. Every allocation failure on the
 * way is reported; nothing here is modified between setjmp and longjmp but
 * what b points to. Returns 1 after errors. */
static int lower_twice(builder *b, const fe_model *m, const ir_limits *lim,
                       FILE *diag) {
  if (setjmp(b->oom)) {
    fe_error_at(m, (fe_loc){0, 0}, diag,
                "out of memory lowering the model (the super-network has %" PRId64
                " parameters so far, %" PRId64 " floats of activations per image)",
                b->g->n_params, b->g->act_size);
    return 1;
  }
  b->counting = 1;
  lower_all(b, m);
  if (check_sizes(b, m, lim, diag)) return 1;
  int64_t n_params = b->g->n_params;
  reset(b);
  b->counting = 0;
  b->g->arch.alpha = calloc((size_t)(n_params + 63) / 64 + 1, 8);
  if (!b->g->arch.alpha) {
    fe_error_at(m, setting_loc(m, "input"), diag,
                "out of memory for the super-network's %" PRId64
                " parameters (%.1f GB of α bits); lower the model's bounds",
                n_params, (double)n_params / 8e9);
    return 1;
  }
  lower_all(b, m);
  return 0;
}

ir_graph *ir_build(const fe_model *m, FILE *diag) {
  ir_limits lim = ir_limits_default();
  return ir_build_limited(m, &lim, diag);
}

ir_graph *ir_build_limited(const fe_model *m, const ir_limits *lim, FILE *diag) {
  ir_graph *g = calloc(1, sizeof *g);
  builder *b = calloc(1, sizeof *b); /* on the heap: it outlives a longjmp */
  if (!g || !b) {
    free(g), free(b);
    fe_error_at(m, (fe_loc){0, 0}, diag, "out of memory lowering the model");
    return NULL;
  }
  g->cfg = *m;
  g->cfg.src = g->cfg.file = NULL;
  b->g = g;
  b->wide_item = -2;
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    b->cap_t += 2 * (it->layers_hi > 0 ? it->layers_hi : 1) + 2;
    b->cap_l += (it->layers_hi > 0 ? it->layers_hi : 1) + 1;
  }
  b->cap_t += 4, b->cap_l += 2;
  g->tensors = calloc((size_t)b->cap_t, sizeof *g->tensors);
  g->layers = calloc((size_t)b->cap_l, sizeof *g->layers);
  b->live = calloc((size_t)b->cap_t, sizeof *b->live);
  g->arch.alive = calloc((size_t)b->cap_l, 1);
  int failed = !g->tensors || !g->layers || !b->live || !g->arch.alive;
  if (failed) fe_error_at(m, (fe_loc){0, 0}, diag, "out of memory lowering the model");
  else failed = lower_twice(b, m, lim, diag);
  if (b->live)
    for (int i = 0; i < g->n_tensors; i++) free(b->live[i]);
  free(b->live);
  free(b);
  if (failed) {
    ir_free(g);
    return NULL;
  }
  ir_count c = ir_count_params(g, &g->arch);
  if (c.active > m->budget) {
    fe_error_at(m, m->budget_loc, diag,
                "budget %" PRId64 " is below the seed network's %" PRId64
                " parameters (lower the seed's layers, channels or density)",
                m->budget, c.active);
    ir_free(g);
    return NULL;
  }
  /* what every binary checks as it loads the IR, here, where the model's
   * file can be named: a lowering that breaks it is this compiler's bug */
  char why[256];
  if (ir_check(g, why, sizeof why)) {
    fe_error_at(m, (fe_loc){0, 0}, diag,
                "internal error: the lowered network is not a valid IR (%s); please report "
                "it with this model file",
                why);
    ir_free(g);
    return NULL;
  }
  return g;
}
