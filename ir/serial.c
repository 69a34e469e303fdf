/* serial.c: the IR's binary form. Little-endian and field by field (never a
 * struct dump), so it is stable across compilers and checked on the way in:
 * every count is bounded and every index is validated before it is used. */
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

enum { IR_VERSION = 1 };
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
  memcpy(dst, r->p + r->at, n);
  dst[n] = 0;
  r->at += n;
}

/* One list of fields for both directions keeps writer and reader in step. */
#define CFG_INTS(X)                                                            \
  X(in_c) X(in_h) X(in_w) X(classes) X(gran) X(data) X(aug_crop) X(aug_flip)  \
  X(batch) X(epochs) X(sched) X(step_every) X(method) X(grow_every)           \
  X(freeze_last) X(grow_batches) X(n_items)
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

/* Everything a layer points at must exist, and every slice must fit. */
static void check_graph(rbuf *r, const ir_graph *g) {
  for (int i = 0; i < g->n_tensors && !r->bad; i++) {
    const ir_tensor *t = &g->tensors[i];
    if (t->off < 0 || t->off + (int64_t)t->c * t->h * t->w > g->act_size)
      fail(r, "IR tensor %d lies outside the arena", i);
  }
  for (int i = 0; i < g->n_layers && !r->bad; i++) {
    const ir_layer *l = &g->layers[i];
    int ts[3] = {l->in_t, l->out_t, l->z_t};
    for (int k = 0; k < 3; k++)
      if (ts[k] < (k == 2 ? -1 : 0) || ts[k] >= g->n_tensors)
        fail(r, "IR layer %d names tensor %d of %d", i, ts[k], g->n_tensors);
    if (l->prev_t < -1 || l->prev_t >= g->n_tensors)
      fail(r, "IR layer %d names tensor %d of %d", i, l->prev_t, g->n_tensors);
    if (r->bad) return;
    int64_t plane = (int64_t)l->h * l->w, oplane = (int64_t)l->oh * l->ow;
    const ir_tensor *in = &g->tensors[l->in_t], *out = &g->tensors[l->out_t];
    int64_t in_sz = (int64_t)in->c * in->h * in->w;
    int64_t in_need = l->kind == IR_LINEAR ? (int64_t)l->cin
                                           : ((int64_t)l->in_ch + l->cin) * plane;
    if (l->kind == IR_LINEAR) in_need += (int64_t)l->in_ch * in->h * in->w;
    if (in_need > in_sz || (int64_t)(l->out_ch + l->cout) * oplane >
                               (int64_t)out->c * out->h * out->w)
      fail(r, "IR layer %d reads or writes outside its tensors", i);
    if (l->w_off >= 0 &&
        (l->n_w != (int64_t)l->cout * l->cin * l->k * l->k ||
         l->w_off + l->n_w > g->n_params || l->b_off < 0 ||
         l->b_off + l->cout > g->n_params ||
         (l->bn && (l->g_off < 0 || l->g_off + 2 * l->cout > g->n_params ||
                    l->s_off < 0 || l->s_off + 2 * l->cout > g->n_stats))))
      fail(r, "IR layer %d has parameters outside the parameter array", i);
  }
  if (g->input_t < 0 || g->input_t >= g->n_tensors || g->logits_t < 0 ||
      g->logits_t >= g->n_tensors)
    fail(r, "IR input or logits tensor out of range");
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
  if (version != IR_VERSION) {
    snprintf(err, errlen, "unsupported IR version %llu (this build reads %d)",
             (unsigned long long)version, IR_VERSION);
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
                 (uint64_t)(g->n_params + 63) / 64 > (r.n - r.at) / 8))
    fail(&r, "IR parameter count %lld does not match its size",
         (long long)g->n_params);
  if (!r.bad && (!g->tensors || !g->layers || !g->arch.alive)) fail(&r, "out of memory");
  if (!r.bad) {
    size_t words = (size_t)(g->n_params + 63) / 64;
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
