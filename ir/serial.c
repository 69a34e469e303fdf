/* serial.c: the IR's binary form. Little-endian and field by field (never a
 * struct dump), so it is stable across compilers and checked on the way in:
 * every count is bounded and every index is validated before it is used. */
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

/* Version 2 appends CFG_INTS_2 to the configuration, version 3 CFG_INTS_3,
 * version 4 the tasks (n_tasks, shared, then each task); older files read
 * with their defaults (no tasks). */
enum { IR_VERSION = 4, IR_VERSION_MIN = 1 };
static const char IR_MAGIC[8] = {'I', 'L', 'N', 'A', 'S', 'I', 'R', '1'};

typedef struct wbuf {
  uint8_t *p;
  size_t n, cap;
  int oom;
} wbuf;

static void put(wbuf *w, const void *src, size_t n) {
  if (w->oom) return;
  if (w->n + n > w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 4096;
    while (cap < w->n + n) cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (!p) { w->oom = 1; return; }
    w->p = p, w->cap = cap;
  }
  memcpy(w->p + w->n, src, n);
  w->n += n;
}

static void put_u64(wbuf *w, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  put(w, b, 8);
}
static void put_i64(wbuf *w, int64_t v) { put_u64(w, (uint64_t)v); }
static void put_f64(wbuf *w, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  put_u64(w, u);
}
static void put_str(wbuf *w, const char *s, size_t max) {
  size_t n = strnlen(s, max);
  put_u64(w, n);
  put(w, s, n);
}

typedef struct rbuf {
  const uint8_t *p;
  size_t n, at;
  char *err;
  size_t errlen;
  int bad;
} rbuf;

static void fail(rbuf *r, const char *fmt, ...) {
  if (r->bad) return;
  r->bad = 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, r->errlen, fmt, ap);
  va_end(ap);
}

static uint64_t get_u64(rbuf *r) {
  if (r->bad) return 0;
  if (r->n - r->at < 8) {
    fail(r, "IR truncated at byte %zu", r->at);
    return 0;
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)r->p[r->at + i] << (8 * i);
  r->at += 8;
  return v;
}
static int64_t get_i64(rbuf *r) { return (int64_t)get_u64(r); }
static double get_f64(rbuf *r) {
  uint64_t u = get_u64(r);
  double v;
  memcpy(&v, &u, 8);
  return v;
}
/* An int field within [lo, hi]. */
static int get_int(rbuf *r, int64_t lo, int64_t hi, const char *what) {
  int64_t v = get_i64(r);
  if (!r->bad && (v < lo || v > hi)) {
    fail(r, "IR field %s out of range (%lld)", what, (long long)v);
    return (int)lo;
  }
  return (int)v;
}
static void get_str(rbuf *r, char *dst, size_t max) {
  uint64_t n = get_u64(r);
  if (r->bad) return;
  if (n >= max || r->n - r->at < n) {
    fail(r, "IR string of %llu bytes is malformed", (unsigned long long)n);
    return;
  }
  if (memchr(r->p + r->at, 0, n)) { /* it would not survive a round trip */
    fail(r, "IR string of %llu bytes holds a NUL byte", (unsigned long long)n);
    return;
  }
  memcpy(dst, r->p + r->at, n);
  dst[n] = 0;
  r->at += n;
}

/* One list of fields for both directions keeps writer and reader in step. */
#define CFG_INTS(X)                                                            \
  X(in_c) X(in_h) X(in_w) X(classes) X(gran) X(data) X(aug_crop) X(aug_flip)  \
  X(batch) X(epochs) X(sched) X(step_every) X(method) X(grow_every)           \
  X(freeze_last) X(grow_batches) X(n_items)
#define CFG_INTS_2(X) X(grow_plan)
#define CFG_INTS_3(X) X(resize_h) X(resize_w) X(channels)
/* a task: its name and data path, these, then its test split */
#define TASK_INTS(X)                                                           \
  X(classes) X(data) X(aug_crop) X(aug_flip) X(resize_h) X(resize_w) X(channels)
#define CFG_F64S(X)                                                            \
  X(density) X(test_split) X(lr) X(step_gamma) X(momentum) X(decay) X(alr)    \
  X(alr_decay) X(candidates) X(flat)
#define ITEM_INTS(X)                                                           \
  X(kind) X(loc.line) X(loc.col) X(layers_lo) X(layers_hi) X(width_lo)        \
  X(width_hi) X(kernel) X(dense) X(batchnorm) X(factor)
#define TENSOR_INTS(X) X(c) X(h) X(w)
#define LAYER_INTS(X)                                                          \
  X(kind) X(item) X(index) X(cin) X(h) X(w) X(cout) X(oh) X(ow) X(k)          \
  X(stride) X(pad) X(relu) X(bn)
/* then the layer's alive flag, which the architecture holds */
#define LAYER_INTS2(X)                                                         \
  X(can_die) X(in_t) X(in_ch) X(z_t) X(out_t) X(out_ch) X(prev_t) X(prev_ch)
#define LAYER_I64S(X) X(w_off) X(n_w) X(b_off) X(g_off) X(s_off)

int ir_serialize(const ir_graph *g, const ir_arch *a, uint8_t **buf, size_t *n) {
  wbuf w = {0};
  if (!a) a = &g->arch;
  const fe_model *m = &g->cfg;
  put(&w, IR_MAGIC, 8);
  put_u64(&w, IR_VERSION);
  put_str(&w, m->name, sizeof m->name);
  put_str(&w, m->data_path, sizeof m->data_path);
#define W(f) put_i64(&w, m->f);
  CFG_INTS(W)
#undef W
#define W(f) put_f64(&w, m->f);
  CFG_F64S(W)
#undef W
#define W(f) put_i64(&w, m->f);
  CFG_INTS_2(W)
  CFG_INTS_3(W)
#undef W
  put_i64(&w, m->n_tasks);
  put_f64(&w, m->shared);
  for (int i = 0; i < m->n_tasks; i++) {
    const fe_task *t = &m->tasks[i];
    put_str(&w, t->name, sizeof t->name);
    put_str(&w, t->data_path, sizeof t->data_path);
#define W(f) put_i64(&w, t->f);
    TASK_INTS(W)
#undef W
    put_f64(&w, t->test_split);
  }
  put_i64(&w, m->budget);
  put_u64(&w, m->seed);
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    put_str(&w, it->name, sizeof it->name);
#define W(f) put_i64(&w, it->f);
    ITEM_INTS(W)
#undef W
  }
  put_i64(&w, g->n_tensors);
  for (int i = 0; i < g->n_tensors; i++) {
    const ir_tensor *t = &g->tensors[i];
    put_str(&w, t->name, sizeof t->name);
#define W(f) put_i64(&w, t->f);
    TENSOR_INTS(W)
#undef W
    put_i64(&w, t->off);
  }
  put_i64(&w, g->n_layers);
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    put_str(&w, l->name, sizeof l->name);
#define W(f) put_i64(&w, l->f);
    LAYER_INTS(W)
    put_i64(&w, a->alive[i]);
    LAYER_INTS2(W)
    LAYER_I64S(W)
#undef W
  }
  put_i64(&w, g->input_t);
  put_i64(&w, g->logits_t);
  put_i64(&w, g->act_size);
  put_i64(&w, g->n_params);
  put_i64(&w, g->n_stats);
  for (int64_t i = 0; i < (g->n_params + 63) / 64; i++) put_u64(&w, a->alpha[i]);
  if (w.oom) {
    free(w.p);
    return -1;
  }
  *buf = w.p, *n = w.n;
  return 0;
}

/* The whole IR is checked here, once, for every reader (checkpoints, the
 * IR a produced binary embeds): a checkpoint is input from outside, and the
 * runtime, search and export trust every shape, slice and offset. What
 * holds is what ir_build produces: each op's shapes follow from its input,
 * every slice lies inside its tensor, tensors inside the arena without
 * overlapping, parameter ranges inside the parameter array without
 * overlapping. All arithmetic is 64-bit over fields already bounded. */
enum { MAX_ITEM_INT = 1 << 20, MAX_KERNEL = 4096 };
static const int64_t MAX_FLOATS = (int64_t)1 << 40; /* arena, parameters, stats */

/* Names end up in messages and in generated C (comments, identifiers). */
static int name_ok(const char *s, int path) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (path ? ch < 0x20 || ch == 0x7f
             : !(ch == '_' || ch == '-' || ch == '.' || (ch >= '0' && ch <= '9') ||
                 (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
      return 0;
  }
  return 1;
}

static int finite_in(double v, double lo, double hi) { return v == v && v >= lo && v <= hi; }

/* The tasks: none, or two to FE_MAX_TASKS with distinct names and fields
 * bounded as the model's are; shared in [0, 1), and 0 without tasks. */
static void check_tasks(rbuf *r, const fe_model *m) {
  if (m->n_tasks < 0 || m->n_tasks == 1 || m->n_tasks > FE_MAX_TASKS) {
    fail(r, "IR cfg.n_tasks %d is neither 0 nor 2 to %d", m->n_tasks, FE_MAX_TASKS);
    return;
  }
  if (!finite_in(m->shared, 0, 1) || m->shared == 1 || (m->n_tasks == 0 && m->shared != 0))
    fail(r, "IR cfg.shared %g is outside [0, 1) or set without tasks", m->shared);
  for (int i = 0; i < m->n_tasks && !r->bad; i++) {
    const fe_task *t = &m->tasks[i];
    if (!t->name[0] || !name_ok(t->name, 0))
      fail(r, "IR task %d: its name is empty or has characters a name cannot have", i);
    for (int j = 0; j < i && !r->bad; j++)
      if (strcmp(m->tasks[j].name, t->name) == 0)
        fail(r, "IR task %d: its name '%s' is task %d's too", i, t->name, j);
    if (!r->bad && !name_ok(t->data_path, 1))
      fail(r, "IR task %d (%s): its data path has control characters", i, t->name);
    struct { const char *what; int v, lo, hi; } ints[] = {
        {"classes", t->classes, 1, 65536},    {"data", t->data, 0, FE_DATA_DOWNSAMPLED},
        {"aug_crop", t->aug_crop, 0, 4096},   {"aug_flip", t->aug_flip, 0, 1},
        {"resize_h", t->resize_h, 0, 4096},   {"resize_w", t->resize_w, 0, 4096},
        {"channels", t->channels, 0, 3},
    };
    for (size_t k = 0; k < sizeof ints / sizeof *ints && !r->bad; k++)
      if (ints[k].v < ints[k].lo || ints[k].v > ints[k].hi)
        fail(r, "IR task %d (%s): %s %d is outside [%d, %d]", i, t->name, ints[k].what,
             ints[k].v, ints[k].lo, ints[k].hi);
    if (!r->bad && !finite_in(t->test_split, 0, 1))
      fail(r, "IR task %d (%s): test_split %g is outside [0, 1]", i, t->name, t->test_split);
  }
}

static void check_cfg(rbuf *r, const fe_model *m) {
  if (!name_ok(m->name, 0)) fail(r, "IR model name has characters a model name cannot have");
  if (!name_ok(m->data_path, 1)) fail(r, "IR data path has control characters");
  struct { const char *what; int v, lo, hi; } ints[] = {
      {"cfg.in_c", m->in_c, 1, 4},           {"cfg.in_h", m->in_h, 1, 4096},
      {"cfg.in_w", m->in_w, 1, 4096},        {"cfg.classes", m->classes, 1, 65536},
      {"cfg.gran", m->gran, 0, FE_GRAN_KERNEL}, {"cfg.data", m->data, 0, FE_DATA_DOWNSAMPLED},
      {"cfg.aug_crop", m->aug_crop, 0, 4096}, {"cfg.aug_flip", m->aug_flip, 0, 1},
      {"cfg.batch", m->batch, 1, 65536},     {"cfg.epochs", m->epochs, 0, INT32_MAX},
      {"cfg.sched", m->sched, 0, FE_SCHED_STEP}, {"cfg.step_every", m->step_every, 1, INT32_MAX},
      {"cfg.method", m->method, 0, FE_SEARCH_FIXED}, {"cfg.grow_every", m->grow_every, 1, INT32_MAX},
      {"cfg.freeze_last", m->freeze_last, 0, INT32_MAX},
      {"cfg.grow_batches", m->grow_batches, 1, INT32_MAX},
      {"cfg.n_items", m->n_items, 0, FE_MAX_ITEMS}, {"cfg.grow_plan", m->grow_plan, 0, 1},
      {"cfg.resize_h", m->resize_h, 0, 4096}, {"cfg.resize_w", m->resize_w, 0, 4096},
      {"cfg.channels", m->channels, 0, 3},
  };
  for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
    if (ints[i].v < ints[i].lo || ints[i].v > ints[i].hi)
      fail(r, "IR %s %d is outside [%d, %d]", ints[i].what, ints[i].v, ints[i].lo, ints[i].hi);
  struct { const char *what; double v, lo, hi; } reals[] = {
      {"cfg.density", m->density, 0, 1},      {"cfg.test_split", m->test_split, 0, 1},
      {"cfg.lr", m->lr, 0, 1e30},             {"cfg.step_gamma", m->step_gamma, 0, 1},
      {"cfg.momentum", m->momentum, 0, 1},    {"cfg.decay", m->decay, 0, 1e30},
      {"cfg.alr", m->alr, 0, 1e30},           {"cfg.alr_decay", m->alr_decay, 0, 1},
      {"cfg.candidates", m->candidates, 1, 1e9}, {"cfg.flat", m->flat, 0, 1},
  };
  for (size_t i = 0; i < sizeof reals / sizeof *reals; i++)
    if (!finite_in(reals[i].v, reals[i].lo, reals[i].hi))
      fail(r, "IR %s %g is outside [%g, %g]", reals[i].what, reals[i].v, reals[i].lo,
           reals[i].hi);
  if (m->budget < 0) fail(r, "IR cfg.budget %lld is negative", (long long)m->budget);
  check_tasks(r, m);
  for (int i = 0; i < m->n_items && !r->bad; i++) {
    const fe_item *it = &m->items[i];
    if (!name_ok(it->name, 0)) fail(r, "IR item %d: its name has characters a name cannot have", i);
    if (it->kind > FE_REDUCE_GAP) fail(r, "IR item %d: kind %d is not an item kind", i, it->kind);
    if (it->layers_lo > it->layers_hi || it->width_lo > it->width_hi ||
        it->layers_hi > MAX_ITEM_INT || it->width_hi > MAX_ITEM_INT ||
        it->kernel > MAX_ITEM_INT || it->factor > MAX_ITEM_INT || it->dense > 1 ||
        it->batchnorm > IR_BN_AFTER)
      fail(r, "IR item %d (%s): its ranges are inconsistent", i, it->name);
  }
}

static int64_t tsize(const ir_tensor *t) { return (int64_t)t->c * t->h * t->w; }

/* A channel slice [ch, ch + n) of tensor t, read or written by layer l with
 * the given spatial shape. */
static void check_slice(rbuf *r, const ir_graph *g, int li, const char *what, int t, int ch,
                        int64_t n, int h, int w) {
  const ir_layer *l = &g->layers[li];
  if (r->bad) return;
  if (t < 0 || t >= g->n_tensors) {
    fail(r, "IR layer %d (%s): %s tensor %d is not one of its %d tensors", li, l->name, what,
         t, g->n_tensors);
    return;
  }
  const ir_tensor *T = &g->tensors[t];
  if (T->h != h || T->w != w)
    fail(r, "IR layer %d (%s): %s is %dx%d but tensor t%d (%s) is %dx%d", li, l->name, what,
         h, w, t, T->name, T->h, T->w);
  else if (ch < 0 || n < 0 || ch + n > T->c)
    fail(r, "IR layer %d (%s): %s channels %d..%lld lie outside tensor t%d (%s) of %d", li,
         l->name, what, ch, (long long)(ch + n), t, T->name, T->c);
}

typedef struct prange {
  int64_t lo, hi; /* [lo, hi) */
  int layer;
} prange;

static int prange_cmp(const void *a, const void *b) {
  const prange *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Ranges inside [0, limit) and pairwise disjoint; `what` names them. */
static void check_ranges(rbuf *r, const ir_graph *g, prange *p, int n, int64_t limit,
                         const char *what) {
  for (int i = 0; i < n && !r->bad; i++)
    if (p[i].lo < 0 || p[i].hi < p[i].lo || p[i].hi > limit)
      fail(r, "IR layer %d (%s): %s %lld..%lld lie outside the %lld there are", p[i].layer,
           g->layers[p[i].layer].name, what, (long long)p[i].lo, (long long)p[i].hi,
           (long long)limit);
  if (r->bad) return;
  qsort(p, (size_t)n, sizeof *p, prange_cmp);
  for (int i = 1; i < n && !r->bad; i++)
    if (p[i].lo < p[i - 1].hi)
      fail(r, "IR layer %d (%s): %s %lld..%lld overlap layer %d (%s)'s", p[i].layer,
           g->layers[p[i].layer].name, what, (long long)p[i].lo, (long long)p[i].hi,
           p[i - 1].layer, g->layers[p[i - 1].layer].name);
}

static void check_layer(rbuf *r, const ir_graph *g, int li) {
  const ir_layer *l = &g->layers[li];
  const fe_model *m = &g->cfg;
#define BAD(...) do { fail(r, __VA_ARGS__); return; } while (0)
  if (!name_ok(l->name, 0)) BAD("IR layer %d: its name has characters a name cannot have", li);
  if ((unsigned)l->kind >= IR_N_KINDS) BAD("IR layer %d (%s): kind %d is not an op", li, l->name, l->kind);
  if (l->item < -1 || l->item >= m->n_items)
    BAD("IR layer %d (%s): item %d is not one of the model's %d", li, l->name, l->item, m->n_items);
  if (l->index < 0 || l->cin < 1 || l->h < 1 || l->w < 1 || l->cout < 1 || l->oh < 1 ||
      l->ow < 1 || l->k < 1 || l->k > MAX_KERNEL || l->stride < 1 || l->pad < 0 || l->pad >= l->k ||
      l->in_ch < 0 || l->out_ch < 0 || l->relu > 1 || l->bn > IR_BN_AFTER || l->can_die > 1 ||
      l->relu < 0 || l->bn < 0 || l->can_die < 0 || l->prev_ch < 0)
    BAD("IR layer %d (%s): a count or flag is out of range (cin %d, cout %d, h %d, w %d, "
        "oh %d, ow %d, k %d, stride %d, pad %d, in_ch %d, out_ch %d, prev_ch %d)",
        li, l->name, l->cin, l->cout, l->h, l->w, l->oh, l->ow, l->k, l->stride, l->pad,
        l->in_ch, l->out_ch, l->prev_ch);
  int weighted = l->kind == IR_CONV || l->kind == IR_LINEAR;
  if (!l->can_die && !g->arch.alive[li])
    BAD("IR layer %d (%s): dead, but it cannot die", li, l->name);
  if (l->bn && l->kind != IR_CONV) BAD("IR layer %d (%s): batch norm on a %s", li, l->name, ir_kind_name(l->kind));
  if (!weighted && (l->relu || l->can_die || l->z_t != -1 || l->prev_t != -1))
    BAD("IR layer %d (%s): a %s has no ReLU, pre-activation or pass-through", li, l->name,
        ir_kind_name(l->kind));
  if (l->in_t < 0 || l->in_t >= g->n_tensors)
    BAD("IR layer %d (%s): input tensor %d is not one of its %d tensors", li, l->name, l->in_t, g->n_tensors);
  const ir_tensor *in = &g->tensors[l->in_t];
  int64_t read_c = l->cin; /* channels read from in_t */
  if (l->kind != IR_LINEAR) check_slice(r, g, li, "input", l->in_t, l->in_ch, read_c, l->h, l->w);
  if (r->bad) return;
  switch (l->kind) {
  case IR_CONV: {
    int64_t oh = ((int64_t)l->h + 2 * l->pad - l->k) / l->stride + 1;
    int64_t ow = ((int64_t)l->w + 2 * l->pad - l->k) / l->stride + 1;
    if ((int64_t)l->h + 2 * l->pad < l->k || (int64_t)l->w + 2 * l->pad < l->k ||
        l->oh != oh || l->ow != ow)
      BAD("IR layer %d (%s): output %dx%d does not follow from input %dx%d, kernel %d, "
          "stride %d, pad %d", li, l->name, l->oh, l->ow, l->h, l->w, l->k, l->stride, l->pad);
    break;
  }
  case IR_LINEAR: {
    if (l->h != 1 || l->w != 1 || l->oh != 1 || l->ow != 1 || l->k != 1 || l->stride != 1 ||
        l->pad != 0)
      BAD("IR layer %d (%s): a linear layer's shapes are 1x1", li, l->name);
    int64_t plane = (int64_t)in->h * in->w;
    if (l->cin % plane != 0 || (l->in_ch != 0 && plane != 1))
      BAD("IR layer %d (%s): cin %d is not a whole channel slice of tensor t%d (%s, %dx%dx%d) "
          "from channel %d", li, l->name, l->cin, l->in_t, in->name, in->c, in->h, in->w, l->in_ch);
    read_c = l->cin / plane;
    break;
  }
  case IR_MAXPOOL:
    if (l->k != l->stride || l->pad != 0 || l->cin != l->cout || l->oh != l->h / l->k ||
        l->ow != l->w / l->k)
      BAD("IR layer %d (%s): max pool %dx%dx%d -> %dx%dx%d does not follow from window %d", li,
          l->name, l->cin, l->h, l->w, l->cout, l->oh, l->ow, l->k);
    break;
  case IR_GAP:
  case IR_COPY:
    if (l->k != 1 || l->stride != 1 || l->pad != 0 || l->cin != l->cout ||
        (l->kind == IR_GAP ? l->oh != 1 || l->ow != 1 : l->oh != l->h || l->ow != l->w))
      BAD("IR layer %d (%s): %s %dx%dx%d -> %dx%dx%d is not its shape", li, l->name,
          ir_kind_name(l->kind), l->cin, l->h, l->w, l->cout, l->oh, l->ow);
    break;
  }
  if (l->kind == IR_LINEAR) check_slice(r, g, li, "input", l->in_t, l->in_ch, read_c, in->h, in->w);
  check_slice(r, g, li, "output", l->out_t, l->out_ch, l->cout, l->oh, l->ow);
  if (r->bad) return;
  if (l->in_t == l->out_t && l->in_ch < l->out_ch + l->cout && l->out_ch < l->in_ch + read_c)
    BAD("IR layer %d (%s): writes the channels it reads", li, l->name);
  if (l->kind == IR_CONV || (l->kind == IR_LINEAR && l->relu)) {
    check_slice(r, g, li, "pre-activation", l->z_t, 0, l->cout, l->oh, l->ow);
    if (!r->bad && (l->z_t == l->in_t || l->z_t == l->out_t))
      BAD("IR layer %d (%s): its pre-activation shares a tensor", li, l->name);
  } else if (l->z_t != -1) {
    BAD("IR layer %d (%s): z_t %d where it has no pre-activation", li, l->name, l->z_t);
  }
  if (l->can_die)
    check_slice(r, g, li, "pass-through source", l->prev_t, l->prev_ch, l->cout, l->oh, l->ow);
  else if (l->prev_t != -1)
    BAD("IR layer %d (%s): prev_t %d but it cannot die", li, l->name, l->prev_t);
  if (r->bad) return;
  if (weighted) {
    int64_t cc = (int64_t)l->cout * l->cin, kk = (int64_t)l->k * l->k; /* < 2^48, 2^24 */
    if (cc > MAX_FLOATS / kk)
      BAD("IR layer %d (%s): %d x %d weights of %dx%d do not fit", li, l->name, l->cout, l->cin,
          l->k, l->k);
    if (l->w_off > MAX_FLOATS || l->b_off > MAX_FLOATS || l->g_off > MAX_FLOATS ||
        l->s_off > MAX_FLOATS)
      BAD("IR layer %d (%s): a parameter offset is out of range (w_off %lld, b_off %lld, "
          "g_off %lld, s_off %lld)", li, l->name, (long long)l->w_off, (long long)l->b_off,
          (long long)l->g_off, (long long)l->s_off);
    if (l->n_w != cc * kk)
      BAD("IR layer %d (%s): n_w %lld is not cout*cin*k*k = %lld", li, l->name,
          (long long)l->n_w, (long long)(cc * kk));
    if (l->w_off < 0 || l->b_off < 0 || (l->bn ? l->g_off < 0 || l->s_off < 0
                                             : l->g_off != -1 || l->s_off != -1))
      BAD("IR layer %d (%s): parameter offsets w_off %lld, b_off %lld, g_off %lld, s_off %lld "
          "are not those of its op", li, l->name, (long long)l->w_off, (long long)l->b_off,
          (long long)l->g_off, (long long)l->s_off);
    /* exec's layer_of takes a layer's parameters as one block: w, b, gamma/beta */
    if (l->b_off != l->w_off + l->n_w || (l->bn && l->g_off != l->b_off + l->cout))
      BAD("IR layer %d (%s): b_off %lld and g_off %lld do not follow its weights at w_off %lld",
          li, l->name, (long long)l->b_off, (long long)l->g_off, (long long)l->w_off);
  } else if (l->w_off != -1 || l->n_w != 0 || l->b_off != -1 || l->g_off != -1 || l->s_off != -1) {
    BAD("IR layer %d (%s): a %s has no parameters", li, l->name, ir_kind_name(l->kind));
  }
#undef BAD
}

static void check_graph(rbuf *r, const ir_graph *g) {
  const fe_model *m = &g->cfg;
  check_cfg(r, m);
  if (r->bad) return;
  if (g->act_size > MAX_FLOATS || g->n_params > MAX_FLOATS || g->n_stats > MAX_FLOATS) {
    fail(r, "IR sizes out of range (arena %lld, parameters %lld, statistics %lld floats)",
         (long long)g->act_size, (long long)g->n_params, (long long)g->n_stats);
    return;
  }
  prange *p = malloc(((size_t)g->n_tensors + 3 * (size_t)g->n_layers) * sizeof *p);
  if (!p) {
    fail(r, "out of memory");
    return;
  }
  for (int i = 0; i < g->n_tensors && !r->bad; i++) {
    const ir_tensor *t = &g->tensors[i];
    if (!name_ok(t->name, 0)) fail(r, "IR tensor %d: its name has characters a name cannot have", i);
    if (t->off < 0 || t->off > g->act_size || tsize(t) > g->act_size - t->off)
      fail(r, "IR tensor t%d (%s): offset %lld of %dx%dx%d lies outside the arena of %lld", i,
           t->name, (long long)t->off, t->c, t->h, t->w, (long long)g->act_size);
    p[i] = (prange){t->off, t->off + tsize(t), i};
  }
  if (!r->bad && (g->input_t < 0 || g->input_t >= g->n_tensors || g->logits_t < 0 ||
                  g->logits_t >= g->n_tensors))
    fail(r, "IR input tensor %d or logits tensor %d is not one of its %d tensors", g->input_t,
         g->logits_t, g->n_tensors);
  if (!r->bad && g->input_t == g->logits_t)
    fail(r, "IR input and logits are the same tensor t%d", g->input_t);
  if (!r->bad) {
    const ir_tensor *in = &g->tensors[g->input_t], *lg = &g->tensors[g->logits_t];
    if (in->c != m->in_c || in->h != m->in_h || in->w != m->in_w)
      fail(r, "IR input tensor t%d (%s) is %dx%dx%d but cfg's input is %dx%dx%d", g->input_t,
           in->name, in->c, in->h, in->w, m->in_c, m->in_h, m->in_w);
    else if (lg->c != m->classes || lg->h != 1 || lg->w != 1)
      fail(r, "IR cfg.classes %d does not match the logits tensor t%d (%s, %dx%dx%d)",
           m->classes, g->logits_t, lg->name, lg->c, lg->h, lg->w);
  }
  if (!r->bad) {
    qsort(p, (size_t)g->n_tensors, sizeof *p, prange_cmp);
    for (int i = 1; i < g->n_tensors && !r->bad; i++)
      if (p[i].lo < p[i - 1].hi)
        fail(r, "IR tensor t%d (%s) overlaps tensor t%d (%s) in the arena", p[i].layer,
             g->tensors[p[i].layer].name, p[i - 1].layer, g->tensors[p[i - 1].layer].name);
  }
  for (int i = 0; i < g->n_layers && !r->bad; i++) check_layer(r, g, i);
  int np = 0, ns = 0;
  for (int i = 0; i < g->n_layers && !r->bad; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0) continue;
    int64_t end = l->b_off + l->cout + (l->bn ? 2 * (int64_t)l->cout : 0);
    p[np++] = (prange){l->w_off, end, i};
  }
  check_ranges(r, g, p, np, g->n_params, "parameters");
  for (int i = 0; i < g->n_layers && !r->bad; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->bn) p[ns++] = (prange){l->s_off, l->s_off + 2 * (int64_t)l->cout, i};
  }
  check_ranges(r, g, p, ns, g->n_stats, "statistics");
  /* the logits come from the last layer, a linear one without ReLU */
  if (!r->bad) {
    const ir_layer *last = &g->layers[g->n_layers - 1];
    if (last->kind != IR_LINEAR || last->out_t != g->logits_t || last->out_ch != 0 ||
        last->relu || last->cout != m->classes)
      fail(r, "IR layer %d (%s): the last layer does not write the %d logits", g->n_layers - 1,
           last->name, m->classes);
  }
  free(p);
}

int ir_check(const ir_graph *g, char *err, size_t errlen) {
  rbuf r = {NULL, 0, 0, err, errlen, 0};
  check_graph(&r, g);
  return r.bad ? -1 : 0;
}

ir_graph *ir_deserialize(const uint8_t *buf, size_t n, char *err,
                         size_t errlen) {
  rbuf r = {buf, n, 0, err, errlen, 0};
  if (n < 16 || memcmp(buf, IR_MAGIC, 8) != 0) {
    snprintf(err, errlen, "not an ilnas IR (bad magic)");
    return NULL;
  }
  r.at = 8;
  uint64_t version = get_u64(&r);
  if (version < IR_VERSION_MIN || version > IR_VERSION) {
    snprintf(err, errlen, "unsupported IR version %llu (this build reads %d to %d)",
             (unsigned long long)version, IR_VERSION_MIN, IR_VERSION);
    return NULL;
  }
  ir_graph *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  fe_model *m = &g->cfg;
  get_str(&r, m->name, sizeof m->name);
  get_str(&r, m->data_path, sizeof m->data_path);
#define R(f) m->f = get_int(&r, 0, INT32_MAX, #f);
  CFG_INTS(R)
#undef R
#define R(f) m->f = get_f64(&r);
  CFG_F64S(R)
#undef R
#define R(f) m->f = version >= 2 ? get_int(&r, 0, INT32_MAX, #f) : 0;
  CFG_INTS_2(R)
#undef R
#define R(f) m->f = version >= 3 ? get_int(&r, 0, INT32_MAX, #f) : 0;
  CFG_INTS_3(R)
#undef R
  if (version >= 4) {
    m->n_tasks = get_int(&r, 0, FE_MAX_TASKS, "n_tasks");
    m->shared = get_f64(&r);
  }
  for (int i = 0; i < m->n_tasks && !r.bad; i++) {
    fe_task *t = &m->tasks[i];
    get_str(&r, t->name, sizeof t->name);
    get_str(&r, t->data_path, sizeof t->data_path);
#define R(f) t->f = get_int(&r, 0, INT32_MAX, #f);
    TASK_INTS(R)
#undef R
    t->test_split = get_f64(&r);
  }
  m->budget = get_i64(&r);
  m->seed = get_u64(&r);
  if (m->n_items > FE_MAX_ITEMS) fail(&r, "IR has %d items", m->n_items);
  for (int i = 0; i < m->n_items && !r.bad; i++) {
    fe_item *it = &m->items[i];
    get_str(&r, it->name, sizeof it->name);
#define R(f) it->f = get_int(&r, 0, INT32_MAX, #f);
    ITEM_INTS(R)
#undef R
  }
  g->n_tensors = get_int(&r, 1, 1 << 16, "n_tensors");
  if (!r.bad) g->tensors = calloc((size_t)g->n_tensors, sizeof *g->tensors);
  for (int i = 0; i < g->n_tensors && g->tensors && !r.bad; i++) {
    ir_tensor *t = &g->tensors[i];
    get_str(&r, t->name, sizeof t->name);
#define R(f) t->f = get_int(&r, 1, 1 << 20, #f);
    TENSOR_INTS(R)
#undef R
    t->off = get_i64(&r);
  }
  g->n_layers = get_int(&r, 1, 1 << 16, "n_layers");
  if (!r.bad) {
    g->layers = calloc((size_t)g->n_layers, sizeof *g->layers);
    g->arch.alive = calloc((size_t)g->n_layers, 1);
  }
  for (int i = 0; i < g->n_layers && g->layers && g->arch.alive && !r.bad; i++) {
    ir_layer *l = &g->layers[i];
    get_str(&r, l->name, sizeof l->name);
#define R(f) l->f = get_int(&r, -1, 1 << 24, #f);
    LAYER_INTS(R)
    g->arch.alive[i] = (uint8_t)get_int(&r, 0, 1, "alive");
    LAYER_INTS2(R)
#undef R
#define R(f) l->f = get_i64(&r);
    LAYER_I64S(R)
#undef R
  }
  g->input_t = get_int(&r, 0, 1 << 16, "input_t");
  g->logits_t = get_int(&r, 0, 1 << 16, "logits_t");
  g->act_size = get_i64(&r);
  g->n_params = get_i64(&r);
  g->n_stats = get_i64(&r);
  if (!r.bad && (g->act_size < 0 || g->n_params < 0 || g->n_stats < 0 ||
                 ((uint64_t)g->n_params + 63) / 64 > (r.n - r.at) / 8))
    fail(&r, "IR parameter count %lld does not match its size",
         (long long)g->n_params);
  if (!r.bad && (!g->tensors || !g->layers || !g->arch.alive)) fail(&r, "out of memory");
  if (!r.bad) {
    size_t words = (size_t)(((uint64_t)g->n_params + 63) / 64);
    g->arch.alpha = calloc(words ? words : 1, 8);
    if (!g->arch.alpha) fail(&r, "out of memory");
    for (size_t i = 0; i < words && !r.bad; i++) g->arch.alpha[i] = get_u64(&r);
  }
  if (!r.bad && r.at != r.n) fail(&r, "IR has %zu trailing bytes", r.n - r.at);
  if (!r.bad) check_graph(&r, g);
  if (r.bad) {
    ir_free(g);
    return NULL;
  }
  return g;
}
