/* packed.c: the live layout (packed.h): a step on the compact graph of
 * the channels the live network works, behind the bounds' indices. */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS */
#include "runtime/packed.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/plan.h"

enum { N_STATE = 4 }; /* RT_PARAMS, RT_MOMENTUM, RT_STATS, RT_GRADS */

/* A compact graph for training, where a dead layer that aliases its
 * source (plan.h) is gone: its output is its source's, and it has no
 * channels of its own; or for phase II, whose passes copy every dead
 * layer and whose dense gradient reads each one's own output. */
enum { TRAIN, PHASE2 };

typedef struct packed {
  rt_backend pub;
  char kind[32];       /* the steps' kind: "cpu", "cuda", ... */
  rt_backend *in;      /* the step on gc; NULL before the first prepare */
  const rt_dataset *ds; /* set_dataset's, given to every new step */
  const rt_norm *nm;
  int crop;
  ir_graph *gc;        /* the compact graph, its arch the step's */
  uint8_t *keep;       /* per channel of g: kept in gc; then per layer:
                        * gone (an alias that gc leaves out) */
  uint8_t *next;       /* ... as a new selection would make them */
  int mode, next_mode; /* what gc is for: TRAIN or PHASE2 */
  int *src;            /* per layer: where gc holds its output (itself,
                        * or a gone layer's alias source); then the same
                        * for the step before, while a new one is made */
  int64_t *pmap;       /* per parameter of gc: its index in g */
  int64_t *smap;       /* per statistic of gc: its index in g */
  int64_t *cmap;       /* per channel of gc: its channel in g */
  ir_call *call[2];    /* gc's schedule, per layer: forward, backward */
  int64_t *outside;    /* active parameters of g not in gc (the batch norm */
  int64_t n_outside;   /* gammas of channels not kept), which SGD decays, */
  float *ov[2];        /* ... their values and momentum while arr lets go */
  float *arr[N_STATE]; /* g's parameters, momentum, statistics, gradients */
  uint8_t held[N_STATE];  /* arr[w] holds values; else it is 0 and its
                           * pages are given back (not RT_STATS) */
  uint8_t fresh[N_STATE]; /* arr holds the step's values at gc's indices */
  uint8_t ahead[N_STATE]; /* arr was edited: the step takes it next */
  float *dense;        /* gc's dense gradient (phase II) */
  uint8_t *cmask, *cvaries, *cdirty;
  const uint8_t *mask, *varies; /* the executor's, from the last prepare */
  rt_plan *plan;
  rt_graph_fn fwd, bwd;
  int training, phase2, profiling, paused;
  rt_backend_stats retired; /* of the steps before this one */
  long rebuilds;
  /* Phase II's gradients: the step keeps them at gc's indices (held: a
   * bit per slot), and a step made in phase II takes them from the one
   * before, on a gc that keeps every channel of the old (rebuild);
   * p2_view: each slot at g's indices, for p2_slot */
  unsigned p2held;
  float *p2_view[2];
  unsigned p2ahead;    /* a bit per slot: its view was written (p2_slot),
                        * the step takes it at the next phase II call */
} packed;

static packed *P(rt_backend *b) { return (packed *)b; }

static int weighted(const ir_layer *l) {
  return l->w_off >= 0 && (l->kind == IR_CONV || l->kind == IR_LINEAR);
}

/* ---- which channels gc keeps ---- */

/* a |= b and b |= a over n channels; whether either changed. */
static int unite(uint8_t *a, uint8_t *b, int n) {
  int changed = 0;
  for (int c = 0; c < n; c++)
    if (a[c] != b[c]) a[c] = b[c] = 1, changed = 1;
  return changed;
}

static int any(const uint8_t *a, int n) {
  for (int c = 0; c < n; c++)
    if (a[c]) return 1;
  return 0;
}

/* The plan's worked channels, and with them: every channel of the input
 * and the logits; the channels a pass-through, a pooling or a copy pairs
 * (a kept one and its partner both kept, so that a slice's channels map
 * one to one); an alive layer's pre-activation as its output (a dead
 * layer's is never written); and at least one
 * channel of every layer's input and output, so that no shape is empty.
 * What gc drops holds 0 or is read by nothing (plan.h), so the step on
 * gc computes what the step at the bounds does on the channels it keeps.
 * For training, an alias's slice is dropped too (its readers read its
 * source's). keep: the channels, then a byte per layer: gone. */
static void select_channels(const ir_graph *g, const ir_arch *a, const rt_plan *pl, int mode,
                            uint8_t *keep) {
  int64_t nch = ir_chan_base(g, g->n_tensors);
  memcpy(keep, pl->work, (size_t)nch);
  memset(keep + ir_chan_base(g, g->input_t), 1, (size_t)g->tensors[g->input_t].c);
  memset(keep + ir_chan_base(g, g->logits_t), 1, (size_t)g->tensors[g->logits_t].c);
  for (int changed = 1; changed;) {
    changed = 0;
    for (int i = 0; i < g->n_layers; i++) {
      const ir_layer *l = &g->layers[i];
      uint8_t *out = keep + ir_chan_base(g, l->out_t) + l->out_ch;
      if (!weighted(l)) {
        int n = l->cin < l->cout ? l->cin : l->cout;
        changed |= unite(out, keep + ir_chan_base(g, l->in_t) + l->in_ch, n);
      } else {
        if (l->prev_t >= 0) changed |= unite(out, keep + ir_chan_base(g, l->prev_t) + l->prev_ch, l->cout);
        if (l->z_t >= 0 && a->alive[i]) changed |= unite(out, keep + ir_chan_base(g, l->z_t), l->cout);
      }
      uint8_t *in = keep + ir_chan_base(g, l->in_t) + l->in_ch;
      if (!any(out, l->cout)) out[0] = 1, changed = 1;
      if (!any(in, ir_in_chans(g, l))) in[0] = 1, changed = 1;
    }
  }
  /* for training, the aliases are gone, and with them their slices */
  uint8_t *gone = keep + nch;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    gone[i] = (uint8_t)(mode == TRAIN && pl->alias[i] != i);
    if (gone[i]) memset(keep + ir_chan_base(g, l->out_t) + l->out_ch, 0, (size_t)l->cout);
  }
}

/* ---- the compact graph ---- */

/* Kept channels of tensor t in [c0, c0 + n). */
static int kept(const ir_graph *g, const uint8_t *keep, int t, int c0, int n) {
  const uint8_t *k = keep + ir_chan_base(g, t) + c0;
  int m = 0;
  for (int c = 0; c < n; c++) m += k[c];
  return m;
}

static void free_compact(packed *p) {
  ir_free(p->gc);
  free(p->pmap), free(p->smap), free(p->cmap), free(p->call[0]), free(p->call[1]);
  free(p->dense), free(p->cmask), free(p->cvaries), free(p->cdirty);
  p->gc = NULL, p->pmap = p->smap = p->cmap = NULL, p->call[0] = p->call[1] = NULL;
  p->dense = NULL, p->cmask = p->cvaries = p->cdirty = NULL;
}

/* Where layer i reads in g (its input, or with prev its pass-through),
 * a gone layer's slice read as its source's (plan.c's redirection). */
static void reads_at(const packed *p, int i, int prev, int *t, int *ch) {
  const ir_graph *g = p->pub.g;
  const ir_layer *l = &g->layers[i];
  const uint8_t *gone = p->keep + ir_chan_base(g, g->n_tensors);
  *t = prev ? l->prev_t : l->in_t, *ch = prev ? l->prev_ch : l->in_ch;
  if (*t < 0) return;
  int n = prev ? l->cout : ir_in_chans(g, l);
  if (!prev && weighted(l) && ir_per_chan(g, l) != 1 && l->in_ch != 0) return;
  for (int d = 0; d < g->n_layers; d++) {
    const ir_layer *o = &g->layers[d];
    if (gone[d] && d != i && o->out_t == *t && o->out_ch == *ch && o->cout == n) {
      *t = g->layers[p->src[d]].out_t, *ch = g->layers[p->src[d]].out_ch;
      return;
    }
  }
}

/* Layer l's kept output channels (o, relative to its slice; *no of them)
 * and input features (f, relative to its input, read at (it, ich); *nf). */
static void kept_lists(const ir_graph *g, const uint8_t *keep, const ir_layer *l, int it, int ich,
                       int *o, int *no, int *f, int *nf) {
  const uint8_t *ko = keep + ir_chan_base(g, l->out_t) + l->out_ch;
  const uint8_t *ki = keep + ir_chan_base(g, it) + ich;
  int pc = ir_per_chan(g, l);
  *no = *nf = 0;
  for (int c = 0; c < l->cout; c++)
    if (ko[c]) o[(*no)++] = c;
  for (int ci = 0; ci < l->cin; ci++)
    if (ki[ci / pc]) f[(*nf)++] = ci;
}

/* gc and its maps from p->keep; -1 when out of memory. */
static int build_compact(packed *p) {
  const ir_graph *g = p->pub.g;
  const uint8_t *keep = p->keep;
  ir_graph *c = calloc(1, sizeof *c);
  if (!c) return -1;
  p->gc = c;
  c->cfg = g->cfg;
  c->n_tensors = g->n_tensors, c->n_layers = g->n_layers;
  c->input_t = g->input_t, c->logits_t = g->logits_t;
  c->tensors = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *c->tensors);
  c->layers = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *c->layers);
  if (!c->tensors || !c->layers) return -1;
  /* tensors in g's order, each its kept channels */
  int64_t nch = 0;
  for (int t = 0; t < g->n_tensors; t++) {
    ir_tensor *r = &c->tensors[t];
    *r = g->tensors[t];
    r->c = kept(g, keep, t, 0, g->tensors[t].c);
    r->off = c->act_size;
    c->act_size += (int64_t)r->c * r->h * r->w;
    nch += r->c;
  }
  /* layers: their slices in gc, their parameters in g's order */
  int maxc = 1;
  for (int i = 0; i < g->n_layers; i++)
    if (g->layers[i].cin > maxc || g->layers[i].cout > maxc)
      maxc = g->layers[i].cin > g->layers[i].cout ? g->layers[i].cin : g->layers[i].cout;
  const uint8_t *gone = keep + ir_chan_base(g, g->n_tensors);
  for (int i = 0; i < g->n_layers; i++)
    p->src[i] = gone[i] ? p->plan->alias[i] : i;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    ir_layer *m = &c->layers[i];
    *m = *l;
    reads_at(p, i, 0, &m->in_t, &m->in_ch);
    if (l->prev_t >= 0) reads_at(p, i, 1, &m->prev_t, &m->prev_ch);
    int it = m->in_t, ich = m->in_ch;
    m->in_ch = kept(g, keep, it, 0, ich);
    m->out_ch = kept(g, keep, l->out_t, 0, l->out_ch);
    if (l->prev_t >= 0) m->prev_ch = kept(g, keep, m->prev_t, 0, m->prev_ch);
    m->cout = kept(g, keep, l->out_t, l->out_ch, l->cout);
    m->cin = kept(g, keep, it, ich, ir_in_chans(g, l)) * ir_per_chan(g, l);
    if (l->w_off < 0) continue;
    int64_t kk = ir_fan_in(l) / l->cin;
    m->w_off = c->n_params;
    m->n_w = (int64_t)m->cout * m->cin * kk;
    c->n_params += m->n_w;
    m->b_off = c->n_params;
    c->n_params += m->cout;
    if (l->bn) {
      m->g_off = c->n_params;
      c->n_params += 2 * (int64_t)m->cout;
      m->s_off = c->n_stats;
      c->n_stats += 2 * (int64_t)m->cout;
    }
  }
  p->pmap = malloc((size_t)(c->n_params + 1) * sizeof *p->pmap);
  p->smap = malloc((size_t)(c->n_stats + 1) * sizeof *p->smap);
  p->cmap = malloc((size_t)(nch + 1) * sizeof *p->cmap);
  p->dense = malloc((size_t)(c->n_params + 1) * sizeof *p->dense);
  p->cmask = calloc((size_t)c->n_params + 1, 1);
  p->cvaries = calloc((size_t)nch + 1, 1);
  p->cdirty = malloc((size_t)g->n_layers + 1);
  int *o = malloc((size_t)maxc * sizeof *o), *f = malloc((size_t)maxc * sizeof *f);
  int bad = !p->pmap || !p->smap || !p->cmap || !p->dense || !p->cmask || !p->cvaries ||
            !p->cdirty || !o || !f || ir_arch_init(&c->arch, c);
  if (bad) {
    free(o), free(f);
    return -1;
  }
  int64_t k = 0;
  for (int t = 0; t < g->n_tensors; t++)
    for (int ch = 0; ch < g->tensors[t].c; ch++)
      if (keep[ir_chan_base(g, t) + ch]) p->cmap[k++] = ir_chan_base(g, t) + ch;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i], *m = &c->layers[i];
    if (l->w_off < 0) continue;
    int no, nf, it, ich;
    reads_at(p, i, 0, &it, &ich);
    kept_lists(g, keep, l, it, ich, o, &no, f, &nf);
    int64_t kk = ir_fan_in(l) / l->cin;
    for (int a = 0; a < no; a++) {
      for (int b = 0; b < nf; b++)
        for (int64_t t = 0; t < kk; t++)
          p->pmap[m->w_off + ((int64_t)a * nf + b) * kk + t] =
              l->w_off + ((int64_t)o[a] * l->cin + f[b]) * kk + t;
      p->pmap[m->b_off + a] = l->b_off + o[a];
      if (!l->bn) continue;
      p->pmap[m->g_off + a] = l->g_off + o[a];
      p->pmap[m->g_off + m->cout + a] = l->g_off + l->cout + o[a];
      p->smap[m->s_off + a] = l->s_off + o[a];
      p->smap[m->s_off + m->cout + a] = l->s_off + l->cout + o[a];
    }
  }
  free(o), free(f);
  for (int64_t k = 1; k < c->n_params; k++) /* rising: take_over, to_gc */
    assert(p->pmap[k] > p->pmap[k - 1]);
  ir_call *fc, *bc;
  int nf, nb;
  if (ir_schedule(c, &fc, &nf, &bc, &nb)) return -1;
  /* by layer: the schedule has one call per layer each way */
  p->call[0] = malloc((size_t)(g->n_layers + 1) * sizeof **p->call);
  p->call[1] = malloc((size_t)(g->n_layers + 1) * sizeof **p->call);
  if (p->call[0] && p->call[1]) {
    for (int i = 0; i < nf; i++) p->call[0][fc[i].args[0]] = fc[i];
    for (int i = 0; i < nb; i++) p->call[1][bc[i].args[0]] = bc[i];
  }
  free(fc), free(bc);
  return p->call[0] && p->call[1] ? 0 : -1;
}

/* gc's architecture and masks from the executor's. */
static void gather_arch(packed *p) {
  const ir_graph *g = p->pub.g;
  ir_graph *c = p->gc;
  memcpy(c->arch.alive, p->pub.arch->alive, (size_t)g->n_layers);
  for (int64_t k = 0; k < c->n_params; k++) {
    int on = ir_alpha_get(p->pub.arch, p->pmap[k]);
    ir_alpha_set(&c->arch, k, on);
    p->cmask[k] = p->mask ? p->mask[p->pmap[k]] : (uint8_t)on;
  }
  int64_t nch = ir_chan_base(c, c->n_tensors);
  for (int64_t k = 0; k < nch && p->varies; k++) p->cvaries[k] = p->varies[p->cmap[k]];
}

/* Appends to out (unless NULL) the active parameters in [from, from + n)
 * of layer l that gc leaves out; returns how many. chan(i): the channel
 * (output, or with ki the weight's row) a parameter belongs to. ko: l's
 * kept output channels; ki (weights only): its kept input features, read
 * one per pc. By α's words: nothing of g's size is read or written. */
static int64_t left_out(const uint64_t *alpha, const ir_layer *l, int64_t from, int64_t n,
                        const uint8_t *ko, const uint8_t *ki, int pc, int64_t *out) {
  int64_t m = 0, end = from + n, kk = ir_fan_in(l) / l->cin;
  for (int64_t w = from >> 6; n > 0 && w <= (end - 1) >> 6; w++)
    for (uint64_t b = alpha[w]; b; b &= b - 1) {
      int64_t i = w * 64 + __builtin_ctzll(b);
      if (i < from || i >= end) continue;
      int64_t r = ki ? (i - from) / kk : (i - from) % l->cout; /* weight row, or channel */
      if (ki ? ko[r / l->cin] && ki[(r % l->cin) / pc] : ko[r]) continue;
      if (out) out[m] = i;
      m++;
    }
  return m;
}

/* A run of parameters of one layer: its weights (kind 0), biases (1) or
 * batch norm's gamma and beta (2). */
typedef struct prange {
  int64_t off, n;
  int li, kind;
} prange;

static int by_off(const void *a, const void *b) {
  int64_t x = ((const prange *)a)->off, y = ((const prange *)b)->off;
  return (x > y) - (x < y);
}

/* The runs of g's parameters in index order (*n of them, malloc'd), or
 * NULL when out of memory. */
static prange *param_runs(const ir_graph *g, int *n) {
  prange *r = malloc(3 * (size_t)(g->n_layers + 1) * sizeof *r);
  if (!r) return NULL;
  *n = 0;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->w_off < 0) continue;
    r[(*n)++] = (prange){l->w_off, l->n_w, li, 0};
    r[(*n)++] = (prange){l->b_off, l->cout, li, 1};
    if (l->bn) r[(*n)++] = (prange){l->g_off, 2 * (int64_t)l->cout, li, 2};
  }
  qsort(r, (size_t)*n, sizeof *r, by_off);
  return r;
}

/* Layer li's kept output channels (ko) and input channels (ki, where gc
 * reads its input) in p->keep. */
static void kept_at(const packed *p, int li, const uint8_t **ko, const uint8_t **ki) {
  const ir_graph *g = p->pub.g;
  const ir_layer *l = &g->layers[li];
  int it, ich;
  reads_at(p, li, 0, &it, &ich);
  *ko = p->keep + ir_chan_base(g, l->out_t) + l->out_ch;
  *ki = p->keep + ir_chan_base(g, it) + ich;
}

static void hold(packed *p, int w);

/* The active parameters of g that gc leaves out, in index order; -1 when
 * out of memory. */
static int find_outside(packed *p) {
  const ir_graph *g = p->pub.g;
  hold(p, RT_PARAMS), hold(p, RT_MOMENTUM); /* ov is remade */
  const uint64_t *alpha = p->pub.arch->alpha;
  int nr;
  prange *r = param_runs(g, &nr);
  if (!r) return -1;
  int64_t n = 0;
  for (int pass = 0; pass < 2; pass++) {
    int64_t *out = pass ? p->outside : NULL;
    n = 0;
    for (int k = 0; k < nr; k++) {
      const ir_layer *l = &g->layers[r[k].li];
      const uint8_t *ko, *ki;
      kept_at(p, r[k].li, &ko, &ki);
      n += left_out(alpha, l, r[k].off, r[k].n, ko, r[k].kind == 0 ? ki : NULL,
                    ir_per_chan(g, l), out ? out + n : NULL);
    }
    if (!pass) {
      /* while the values are held in arr (their truth, see hold) */
      free(p->outside), free(p->ov[0]), free(p->ov[1]);
      p->outside = malloc((size_t)(n + 1) * sizeof *p->outside);
      p->ov[0] = malloc((size_t)(n + 1) * sizeof *p->ov[0]);
      p->ov[1] = malloc((size_t)(n + 1) * sizeof *p->ov[1]);
      if (!p->outside || !p->ov[0] || !p->ov[1]) {
        free(r);
        return -1;
      }
    }
  }
  free(r);
  p->n_outside = n;
  return 0;
}

/* ---- g's arrays and the step's ---- */

static int64_t count(const packed *p, int w) {
  return w == RT_STATS ? p->pub.g->n_stats : p->pub.g->n_params;
}

/* The parameters, momentum and gradients at g's indices are views that
 * exist while a caller uses them: the step holds the values of gc's
 * parameters and ov those of the active ones gc leaves out. Between
 * views, arr[w] is 0 with its pages given back (mapped anew), so that a
 * wide template's pages of active parameters (the CIFAR-10 seed's 50K
 * over 14.4M touch 1.9 MB of each array) are not resident while it
 * trains. The pointer stays the same. */
static size_t map_bytes(const packed *p, int w) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return ((size_t)(count(p, w) + 1) * sizeof(float) + page - 1) / page * page;
}

static float *map_zeros(const packed *p, int w, float *at) {
  void *m = mmap(at, map_bytes(p, w), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
  return m == MAP_FAILED ? NULL : m;
}

static int mapped(int w) { return w != RT_STATS; }

/* arr[w] holds the values: those that ov keeps go back in; the step's
 * are scattered when read (fresh is 0). */
static void hold(packed *p, int w) {
  if (!mapped(w) || p->held[w]) return;
  p->held[w] = 1, p->fresh[w] = 0;
  if (w != RT_GRADS)
    for (int64_t k = 0; k < p->n_outside; k++) p->arr[w][p->outside[k]] = p->ov[w][k];
}

/* arr[w] lets go of its values (not edits the step has yet to take):
 * ov keeps those gc leaves out, and the pages are given back. */
static void let_go(packed *p, int w) {
  if (!mapped(w) || !p->held[w] || p->ahead[w]) return;
  if (w != RT_GRADS)
    for (int64_t k = 0; k < p->n_outside; k++) p->ov[w][k] = p->arr[w][p->outside[k]];
  /* a fresh mapping in place: 0 and untouched, the old pages freed */
  if (map_zeros(p, w, p->arr[w]) == p->arr[w]) p->held[w] = 0, p->fresh[w] = 0;
}

static void let_go_all(packed *p) {
  for (int w = RT_PARAMS; w < N_STATE; w++) let_go(p, w);
}

/* arr[w] at gc's indices from the step. */
static void scatter(packed *p, int w) {
  hold(p, w);
  if (!p->in || p->fresh[w] || p->ahead[w]) return;
  const float *s = p->in->i->view(p->in, (rt_state)w);
  const int64_t *map = w == RT_STATS ? p->smap : p->pmap;
  int64_t n = w == RT_STATS ? p->gc->n_stats : p->gc->n_params;
  float *d = p->arr[w];
  if (w == RT_PARAMS || w == RT_MOMENTUM) {
    /* the active ones: an inactive parameter and its momentum are 0 in
     * the step as in g (SGD is masked, and edits come through g), and a
     * wide template's pages of them are left untouched */
    for (int64_t k = 0; k < n; k++)
      if (p->cmask[k]) d[map[k]] = s[k];
  } else {
    for (int64_t k = 0; k < n; k++) d[map[k]] = s[k];
  }
  p->fresh[w] = 1;
}

/* The step takes arr[w] at gc's indices. */
static void gather(packed *p, int w) {
  float *d = p->in->i->edit(p->in, (rt_state)w);
  const int64_t *map = w == RT_STATS ? p->smap : p->pmap;
  int64_t n = w == RT_STATS ? p->gc->n_stats : p->gc->n_params;
  const float *s = p->arr[w];
  for (int64_t k = 0; k < n; k++) d[k] = s[map[k]];
  p->ahead[w] = 0, p->fresh[w] = 1;
}

/* After a step's operation that may change its state: the views of
 * before are void (backend.h). */
static void stale(packed *p) {
  memset(p->fresh, 0, sizeof p->fresh);
  let_go_all(p);
}

static int fail(packed *p, const char *msg) {
  snprintf(p->pub.error, sizeof p->pub.error, "%s", msg);
  return -1;
}

static int from_step(packed *p, int rc) {
  if (rc) snprintf(p->pub.error, sizeof p->pub.error, "%s", p->in->error);
  return rc;
}

/* A new step on the compact graph of p->next: g's state carried over. */
/* The parameters and their momentum (what: RT_TAKE_*; and phase II's
 * gradients) go from the old step to the new where both keep them, in
 * the steps' memory (take_state: on the device, device to device); gc's
 * parameters the old one did not keep take arr's values (ov's, held by
 * find_outside: the active ones gc left out), and those it kept and gc
 * no longer does go to arr from the old step (rare: a view). Both maps
 * rise, so one walk pairs them. */
static int take_over(packed *p, rt_backend *in, rt_backend *old, const int64_t *opm, int64_t on, unsigned what) {
  const ir_arch *a = p->pub.arch;
  int64_t nn = p->gc->n_params, nr = 0, lost = 0;
  rt_run *r = malloc((size_t)((nn < on ? nn : on) + 1) * sizeof *r);
  if (!r) return fail(p, "out of memory");
  int64_t j = 0;
  for (int64_t k = 0; k < nn; k++) {
    while (j < on && opm[j] < p->pmap[k]) lost += ir_alpha_get(a, opm[j++]);
    if (j < on && opm[j] == p->pmap[k]) {
      if (nr && r[nr - 1].to + r[nr - 1].len == k && r[nr - 1].from + r[nr - 1].len == j) r[nr - 1].len++;
      else r[nr++] = (rt_run){k, j, 1};
      j++;
    }
  }
  while (j < on) lost += ir_alpha_get(a, opm[j++]);
  int state = what & RT_TAKE_PARAMS;
  for (int w = RT_PARAMS; state && lost && w <= RT_MOMENTUM; w++) {
    const float *v = old->i->view(old, (rt_state)w);
    if (!v) {
      free(r);
      return fail(p, old->error);
    }
    for (int64_t i = 0, k = 0; i < on; i++) {
      while (k < nn && p->pmap[k] < opm[i]) k++;
      if ((k == nn || p->pmap[k] != opm[i]) && ir_alpha_get(a, opm[i])) p->arr[w][opm[i]] = v[i];
    }
  }
  int rc = in->i->take_state(in, old, r, nr, what);
  for (int64_t k = 0, i = 0; state && rc == 0 && k < nn; k++) {
    while (i < nr && r[i].to + r[i].len <= k) i++;
    if ((i < nr && r[i].to <= k) || !ir_alpha_get(a, p->pmap[k])) continue; /* taken, or 0 */
    for (int w = RT_PARAMS; w <= RT_MOMENTUM && rc == 0; w++)
      rc = in->i->set_range(in, (rt_state)w, k, 1, &p->arr[w][p->pmap[k]]);
  }
  free(r);
  return rc ? fail(p, in->error) : 0;
}

static int rebuild(packed *p) {
  /* the state moves in the steps' memory, where no edit waits for the
   * new step; else through arr */
  int d2d = p->in && !p->ahead[RT_PARAMS] && !p->ahead[RT_MOMENTUM];
  for (int w = RT_PARAMS; w <= RT_STATS; w++)
    if (!d2d || w == RT_STATS) scatter(p, w);
  /* phase II's gradients at the old indices all have a place in the new */
  int take = p->p2held && p->in && p->mode == PHASE2 && p->next_mode == PHASE2;
  int64_t nch = ir_chan_base(p->pub.g, p->pub.g->n_tensors);
  for (int64_t c = 0; take && c < nch; c++) p->next[c] |= p->keep[c];
  rt_backend *old = p->in;
  ir_graph *ogc = p->gc;
  int64_t *opm = p->pmap, *osm = p->smap, *ocm = p->cmap;
  ir_call *oc0 = p->call[0], *oc1 = p->call[1];
  float *od = p->dense;
  uint8_t *omask = p->cmask, *ovar = p->cvaries, *odirty = p->cdirty;
  p->gc = NULL;
  uint8_t *was = p->keep;
  p->keep = p->next, p->next = was;
  int nl = p->pub.g->n_layers;
  memcpy(p->src + nl, p->src, (size_t)nl * sizeof *p->src);
  char err[512] = "out of memory";
  rt_backend *in = NULL;
  if (build_compact(p) == 0 && find_outside(p) == 0)
    in = rt_step_new(p->kind, p->gc, &p->gc->arch, p->pub.cap, p->pub.threads, err, sizeof err);
  if (in && p->profiling && in->i->profile(in)) {
    in->i->free(in), in = NULL;
    snprintf(err, sizeof err, "out of memory for the profile");
  }
  /* the set the step before kept, kept by this one too: taken from it
   * where the step can (on the device, without a second copy) */
  if (in && p->ds && !(old && in->i->take_dataset && in->i->take_dataset(in, old) == 0) &&
      (!in->i->set_dataset || in->i->set_dataset(in, p->ds, p->nm, p->crop))) {
    snprintf(err, sizeof err, "%s", in->i->set_dataset ? in->error : "the new step keeps no data set");
    in->i->free(in), in = NULL;
  }
  unsigned what = (d2d ? RT_TAKE_PARAMS | RT_TAKE_MOMENTUM : 0) | (take ? p->p2held * RT_TAKE_SLOT0 : 0);
  if (in && what && take_over(p, in, old, opm, ogc->n_params, what)) {
    snprintf(err, sizeof err, "%s", p->pub.error);
    in->i->free(in), in = NULL;
  }
  if (!in) { /* the step as it was */
    free_compact(p);
    p->gc = ogc, p->pmap = opm, p->smap = osm, p->cmap = ocm, p->call[0] = oc0, p->call[1] = oc1;
    p->dense = od, p->cmask = omask, p->cvaries = ovar, p->cdirty = odirty;
    p->next = p->keep, p->keep = was;
    memcpy(p->src, p->src + nl, (size_t)nl * sizeof *p->src);
    if (p->gc) find_outside(p);
    return fail(p, err);
  }
  if (old) {
    rt_backend_stats s = old->i->stats(old);
    p->retired.dense_backend += s.dense_backend, p->retired.dense_host += s.dense_host;
  }
  in->i->set_driver(in, p->fwd, p->bwd);
  in->i->set_training(in, p->training);
  in->i->phase2(in, p->phase2);
  if (p->profiling) {
    if (old && in->i->profile_take) in->i->profile_take(in, old);
    if (p->paused) in->i->profile_pause(in, 1);
  }
  if (old) old->i->free(old);
  if (!take) p->p2held = 0;
  /* the old gradients, at the old indices, are gone with the old step */
  p->fresh[RT_GRADS] = 0;
  let_go(p, RT_GRADS);
  if (ogc) {
    ir_free(ogc);
    free(opm), free(osm), free(ocm), free(oc0), free(oc1), free(od), free(omask), free(ovar), free(odirty);
  }
  p->in = in;
  p->mode = p->next_mode;
  p->pub.threads = in->threads;
  p->rebuilds++;
  gather_arch(p);
  for (int w = RT_PARAMS; w <= RT_STATS; w++)
    if (!d2d || w == RT_STATS) gather(p, w);
    else p->fresh[w] = 0; /* the new step's, at its indices */
  p->fresh[RT_GRADS] = 0;
  return 0;
}

/* Whether gc lacks what the new selection needs: a channel it keeps, or
 * a layer it has where gc's is gone. (Keeping more is exact.) */
static int grows(const packed *p) {
  const ir_graph *g = p->pub.g;
  int64_t nch = ir_chan_base(g, g->n_tensors);
  for (int64_t c = 0; c < nch; c++)
    if (p->next[c] && !p->keep[c]) return 1;
  for (int i = 0; i < g->n_layers; i++)
    if (!p->next[nch + i] && p->keep[nch + i]) return 1;
  return 0;
}

/* The selection for the executor's architecture and g's values. */
static void reselect(packed *p, int mode) {
  scatter(p, RT_PARAMS), scatter(p, RT_MOMENTUM);
  rt_plan_make(p->plan, p->pub.arch, p->mask, p->arr[RT_PARAMS], p->arr[RT_MOMENTUM]);
  select_channels(p->pub.g, p->pub.arch, p->plan, mode, p->next);
  p->next_mode = mode;
}

static int want(const packed *p) { return p->phase2 ? PHASE2 : TRAIN; }

/* Before each operation of the step, for a graph of mode `mode`: the step
 * takes what was edited. An edit of the parameters or their momentum may
 * make channels work that gc leaves out (a beta other than 0, a weight
 * set on): the step is then made again around them, as it is when the
 * mode changes. */
static int sync_for(packed *p, int mode) {
  if (!p->in) return fail(p, "the live layout has no step before its first prepare");
  /* a layer that came alive or died (rt_exec_set_alive) with no
   * parameter edited: the selection follows it too */
  int alive = memcmp(p->gc->arch.alive, p->pub.arch->alive, (size_t)p->pub.g->n_layers) != 0;
  if (p->ahead[RT_PARAMS] || p->ahead[RT_MOMENTUM] || p->mode != mode || alive) {
    reselect(p, mode);
    if (p->mode != mode || grows(p)) {
      if (rebuild(p)) return -1;
      memset(p->cdirty, 1, (size_t)p->pub.g->n_layers);
      return from_step(p, p->in->i->prepare(p->in, p->cdirty, p->cmask, p->mask ? p->cvaries : NULL));
    }
    gather_arch(p);
  }
  for (int w = RT_PARAMS; w <= RT_GRADS; w++)
    if (p->ahead[w]) gather(p, w);
  /* the gradients an sgd applies stay until it has (packed_sgd) */
  let_go(p, RT_PARAMS), let_go(p, RT_MOMENTUM);
  return 0;
}

static int sync_step(packed *p) { return sync_for(p, want(p)); }

/* ---- the operations ---- */

static void packed_free(rt_backend *b) {
  packed *p = P(b);
  if (!p) return;
  if (p->in) p->in->i->free(p->in);
  free_compact(p);
  for (int w = 0; w < N_STATE; w++) {
    if (!mapped(w)) free(p->arr[w]);
    else if (p->arr[w]) munmap(p->arr[w], map_bytes(p, w));
  }
  free(p->keep), free(p->next), free(p->outside), free(p->ov[0]), free(p->ov[1]), free(p->src), free(p->p2_view[0]), free(p->p2_view[1]);
  rt_plan_free(p->plan);
  free(p);
}

static int packed_prepare(rt_backend *b, const uint8_t *dirty, const uint8_t *mask,
                          const uint8_t *varies) {
  packed *p = P(b);
  p->mask = mask, p->varies = varies;
  reselect(p, want(p));
  int64_t nch = ir_chan_base(b->g, b->g->n_tensors);
  int all = !p->in || p->mode != p->next_mode ||
            memcmp(p->next, p->keep, (size_t)(nch + b->g->n_layers)) != 0;
  if (all) {
    if (rebuild(p)) return -1;
    memset(p->cdirty, 1, (size_t)b->g->n_layers);
  } else {
    if (find_outside(p)) return fail(p, "out of memory");
    gather_arch(p);
    for (int w = RT_PARAMS; w <= RT_STATS; w++)
      if (p->ahead[w]) gather(p, w);
    memcpy(p->cdirty, dirty, (size_t)b->g->n_layers);
  }
  int rc = from_step(p, p->in->i->prepare(p->in, p->cdirty, p->cmask, varies ? p->cvaries : NULL));
  stale(p);
  return rc;
}

static void packed_set_driver(rt_backend *b, rt_graph_fn fwd, rt_graph_fn bwd) {
  packed *p = P(b);
  p->fwd = fwd, p->bwd = bwd;
  if (p->in) p->in->i->set_driver(p->in, fwd, bwd);
}

static int packed_upload(rt_backend *b, const float *images, int n) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  return from_step(p, p->in->i->upload(p->in, images, n));
}

/* The set goes to the step, and to every step made after it (rebuild). */
static int packed_set_dataset(rt_backend *b, const rt_dataset *d, const rt_norm *nm, int crop) {
  packed *p = P(b);
  p->ds = NULL;
  if (!p->in || !p->in->i->set_dataset)
    return fail(p, "this step takes its batches as images");
  if (from_step(p, p->in->i->set_dataset(p->in, d, nm, crop))) return -1;
  p->ds = d, p->nm = nm, p->crop = crop;
  return 0;
}

static int packed_upload_draws(rt_backend *b, const rt_draw *dr, int n) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  return from_step(p, p->in->i->upload_draws(p->in, dr, n));
}

static int packed_forward(rt_backend *b) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  stale(p);
  return from_step(p, p->in->i->forward(p->in));
}

static int packed_loss(rt_backend *b, const ir_label *labels, int grad, double *loss, int *correct) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  return from_step(p, p->in->i->loss(p->in, labels, grad, loss, correct));
}

static int packed_backward(rt_backend *b) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  stale(p);
  return from_step(p, p->in->i->backward(p->in));
}

/* Calls of g's schedule become gc's: the same op of the same layer. */
static int packed_run(rt_backend *b, const ir_call *calls, int n) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  ir_call *c = malloc((size_t)(n ? n : 1) * sizeof *c);
  if (!c) return fail(p, "out of memory");
  for (int i = 0; i < n; i++) {
    size_t len = strlen(calls[i].fn);
    int bwd = len > 4 && strcmp(calls[i].fn + len - 4, "_bwd") == 0;
    int64_t l = calls[i].args[0];
    if (l < 0 || l >= b->g->n_layers) {
      free(c);
      return fail(p, "a schedule call names no layer of the graph");
    }
    c[i] = p->call[bwd][l];
    c[i].fn = calls[i].fn;
  }
  stale(p);
  int rc = from_step(p, p->in->i->run(p->in, c, n));
  free(c);
  return rc;
}

/* g's active parameters outside gc have no gradient but an edited one
 * (grads: the edit, or NULL); the step at the bounds decays them all the
 * same (rt_sgd), and so does this, where their values are (ov, or arr
 * while it holds them). */
static void sgd_outside(packed *p, const float *grads, float lr, float momentum, float decay) {
  for (int64_t k = 0; k < p->n_outside; k++) {
    int64_t i = p->outside[k];
    if (p->mask && !p->mask[i]) continue;
    float *w = p->held[RT_PARAMS] ? &p->arr[RT_PARAMS][i] : &p->ov[RT_PARAMS][k];
    float *v = p->held[RT_MOMENTUM] ? &p->arr[RT_MOMENTUM][i] : &p->ov[RT_MOMENTUM][k];
    *v = momentum * *v + ((grads ? grads[i] : 0.0f) + decay * *w);
    *w -= lr * *v;
  }
}

static int packed_sgd(rt_backend *b, float lr, float momentum, float decay) {
  packed *p = P(b);
  int edited = p->ahead[RT_GRADS];
  if (sync_step(p)) return -1;
  sgd_outside(p, edited ? p->arr[RT_GRADS] : NULL, lr, momentum, decay);
  stale(p);
  return from_step(p, p->in->i->sgd(p->in, lr, momentum, decay));
}

static int packed_train_step(rt_backend *b, const ir_label *labels, float lr, float momentum, float decay,
                             double *loss, int *correct) {
  packed *p = P(b);
  if (sync_step(p)) return -1;
  sgd_outside(p, NULL, lr, momentum, decay);
  stale(p);
  return from_step(p, p->in->i->train_step(p->in, labels, lr, momentum, decay, loss, correct));
}

static void packed_set_training(rt_backend *b, int on) {
  packed *p = P(b);
  p->training = on;
  if (p->in) p->in->i->set_training(p->in, on);
}

static const float *packed_view(rt_backend *b, rt_state which) {
  packed *p = P(b);
  if (which == RT_LOGITS) return p->in ? p->in->i->view(p->in, which) : NULL;
  scatter(p, which);
  return p->arr[which];
}

static float *packed_edit(rt_backend *b, rt_state which) {
  packed *p = P(b);
  if (which == RT_LOGITS) return NULL;
  /* a step that cannot take gradients (the device step's own) */
  if (which == RT_GRADS && (!p->in || !p->in->i->edit(p->in, RT_GRADS))) return NULL;
  int was = p->held[which];
  scatter(p, which);
  p->ahead[which] = 1;
  /* the gradients of the active parameters gc leaves out are 0 until
   * the caller says otherwise (sgd applies them: packed_sgd) */
  if (which == RT_GRADS && was)
    for (int64_t k = 0; k < p->n_outside; k++) p->arr[RT_GRADS][p->outside[k]] = 0.0f;
  return p->arr[which];
}

/* gc's index of g's parameter i, or -1 (pmap rises). */
static int64_t to_gc(const packed *p, int64_t i) {
  int64_t lo = 0, hi = p->gc->n_params;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (p->pmap[mid] < i) lo = mid + 1;
    else hi = mid;
  }
  return lo < p->gc->n_params && p->pmap[lo] == i ? lo : -1;
}

/* gc's [at, at + len) when it keeps every one of g's [start, start +
 * len) (pmap rises: the last in place means all are), else -1. */
static int64_t run_in_gc(const packed *p, int64_t start, int64_t len) {
  int64_t at = to_gc(p, start);
  return at >= 0 && at + len <= p->gc->n_params && p->pmap[at + len - 1] == start + len - 1 ? at : -1;
}

/* In phase II, a run that gc keeps goes to the step as it is, its masks
 * with it (the executor's, already set): it makes no channel worked that
 * gc lacks, since both ends of each of its weights are kept. Anything
 * else is an edit, which the step takes at its next operation. */
static int packed_set_range(rt_backend *b, rt_state which, int64_t start, int64_t len, const float *values) {
  packed *p = P(b);
  int64_t at = p->in && p->phase2 && p->mode == PHASE2 && !p->ahead[which]
                   ? run_in_gc(p, start, len) : -1;
  if (at < 0) {
    float *d = packed_edit(b, which);
    if (!d) return -1;
    if (values) memcpy(d + start, values, (size_t)len * sizeof *d);
    else memset(d + start, 0, (size_t)len * sizeof *d);
    return 0;
  }
  for (int64_t k = 0; k < len; k++) {
    int on = p->mask ? p->mask[start + k] : ir_alpha_get(p->pub.arch, start + k);
    p->cmask[at + k] = (uint8_t)on;
    ir_alpha_set(&p->gc->arch, at + k, on);
  }
  if (p->held[which] && p->fresh[which]) {
    if (values) memcpy(p->arr[which] + start, values, (size_t)len * sizeof(float));
    else memset(p->arr[which] + start, 0, (size_t)len * sizeof(float));
  }
  return from_step(p, p->in->i->set_range(p->in, which, at, len, values));
}

static void packed_phase2(rt_backend *b, int on) {
  packed *p = P(b);
  p->phase2 = on;
  if (p->in) p->in->i->phase2(p->in, on);
}

static int packed_dense_grad(rt_backend *b, const float *images, const ir_label *labels, int n,
                             float *out, double *loss) {
  packed *p = P(b);
  if (sync_for(p, PHASE2)) return -1;
  memset(p->dense, 0, (size_t)p->gc->n_params * sizeof(float));
  stale(p);
  if (from_step(p, p->in->i->dense_grad(p->in, images, labels, n, p->dense, loss))) return -1;
  for (int64_t k = 0; k < p->gc->n_params; k++) out[p->pmap[k]] += p->dense[k];
  return 0;
}

/* ---- phase II's gradients, kept by the step ---- */

/* Slots written through their views (p2_slot with write) into the step,
 * at gc's indices: before the next phase II call reads or writes them. */
static int p2_push(packed *p) {
  for (int slot = 0; slot < 2; slot++) {
    if (!(p->p2ahead >> slot & 1u)) continue;
    float *s = p->in->i->p2_slot(p->in, slot, 1);
    if (!s) return from_step(p, -1);
    for (int64_t k = 0; k < p->gc->n_params; k++) s[k] = p->p2_view[slot][p->pmap[k]];
    p->p2held |= 1u << slot;
  }
  p->p2ahead = 0;
  return 0;
}

static int packed_p2_grad(rt_backend *b, int slot, const float *images, const ir_label *labels, int count, int n,
                          double *loss) {
  packed *p = P(b);
  if (sync_for(p, PHASE2) || p2_push(p)) return -1;
  stale(p);
  if (from_step(p, p->in->i->p2_grad(p->in, slot, images, labels, count, n, loss))) return -1;
  p->p2held |= 1u << slot;
  return 0;
}

/* gc's best units are g's: a missing unit that gc leaves out has no
 * gradient (plan.h), and the order of starts is g's (pmap rises). */
static int packed_p2_top(rt_backend *b, int64_t k, rt_unit *out, int64_t *got) {
  packed *p = P(b);
  if (sync_for(p, PHASE2) || p2_push(p) || from_step(p, p->in->i->p2_top(p->in, k, out, got)))
    return -1;
  for (int64_t i = 0; i < *got; i++) out[i].start = p->pmap[out[i].start];
  return 0;
}

static int packed_p2_score(rt_backend *b, rt_unit *u, int64_t n) {
  packed *p = P(b);
  rt_unit *c = malloc((size_t)(n ? n : 1) * sizeof *c);
  int64_t *who = malloc((size_t)(n ? n : 1) * sizeof *who); /* c[j] is u[who[j]] */
  if (!c || !who) {
    free(c), free(who);
    return fail(p, "out of memory");
  }
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t at = to_gc(p, u[i].start);
    u[i].score = 0.0f; /* none in gc: no gradient */
    if (at >= 0) who[m] = i, c[m] = u[i], c[m++].start = at;
  }
  int rc = p2_push(p) ? -1 : from_step(p, p->in->i->p2_score(p->in, c, m));
  for (int64_t j = 0; rc == 0 && j < m; j++) u[who[j]].score = c[j].score;
  free(c), free(who);
  return rc;
}

static int packed_p2_hyper(rt_backend *b, float lr) {
  packed *p = P(b);
  if (sync_for(p, PHASE2) || p2_push(p)) return -1;
  stale(p);
  return from_step(p, p->in->i->p2_hyper(p->in, lr));
}

static int packed_p2_restore(rt_backend *b) {
  packed *p = P(b);
  if (sync_for(p, PHASE2) || p2_push(p)) return -1;
  stale(p);
  return from_step(p, p->in->i->p2_restore(p->in));
}

/* A slot at g's indices; written (write), the step takes it at its next
 * phase II call (p2_push). */
static float *packed_p2_slot(rt_backend *b, int slot, int write) {
  packed *p = P(b);
  if (p->in && p2_push(p)) return NULL;
  const float *s = p->in ? p->in->i->p2_slot(p->in, slot, 0) : NULL;
  if (!s) {
    if (p->in) from_step(p, -1);
    return NULL;
  }
  float **v = &p->p2_view[slot];
  if (!*v && !(*v = malloc((size_t)(b->g->n_params + 1) * sizeof(float)))) {
    fail(p, "out of memory");
    return NULL;
  }
  memset(*v, 0, (size_t)b->g->n_params * sizeof(float));
  for (int64_t k = 0; k < p->gc->n_params; k++) (*v)[p->pmap[k]] = s[k];
  if (write) p->p2ahead |= 1u << slot;
  return *v;
}

static rt_backend_stats packed_stats(const rt_backend *b) {
  const packed *p = (const packed *)b;
  rt_backend_stats s = p->retired;
  if (p->in) {
    rt_backend_stats t = p->in->i->stats(p->in);
    s.dense_backend += t.dense_backend, s.dense_host += t.dense_host;
  }
  return s;
}

static int packed_profile(rt_backend *b) {
  packed *p = P(b);
  p->profiling = 1, p->paused = 0;
  return p->in ? p->in->i->profile(p->in) : 0;
}

static void packed_profile_pause(rt_backend *b, int pause) {
  packed *p = P(b);
  p->paused = pause;
  if (p->in) p->in->i->profile_pause(p->in, pause);
}

static void packed_profile_report(const rt_backend *b, FILE *f, long steps) {
  const packed *p = (const packed *)b;
  if (p->in) p->in->i->profile_report(p->in, f, steps);
}

static int packed_channel_stats(rt_backend *b, int li, double *mean, double *var, double *min) {
  packed *p = P(b);
  /* the last forward's, as the step holds them: an edit since (a layer
   * coming alive asks between its edits) is not taken first */
  if (!p->in) return -1;
  /* a gone layer's output is its source's */
  int si = p->src[li];
  const ir_layer *l = &b->g->layers[li], *sl = &b->g->layers[si];
  int m = p->gc->layers[si].cout;
  double *t = malloc(3 * (size_t)(m ? m : 1) * sizeof *t);
  if (!t) return fail(p, "out of memory");
  int rc = p->in->i->channel_stats(p->in, si, t, t + m, min ? t + 2 * m : NULL);
  if (rc == 0) {
    /* the channels gc leaves out hold 0 */
    const uint8_t *k = p->keep + ir_chan_base(b->g, sl->out_t) + sl->out_ch;
    for (int c = 0, j = 0; c < l->cout; c++) {
      int in = k[c];
      mean[c] = in ? t[j] : 0.0, var[c] = in ? t[m + j] : 0.0;
      if (min) min[c] = in ? t[2 * m + j] : 0.0;
      j += in;
    }
  }
  free(t);
  return rc;
}

static rt_backend_mem packed_memory(const rt_backend *b) {
  const packed *p = (const packed *)b;
  rt_backend_mem m = {0, 0};
  if (p->in) m = p->in->i->memory(p->in);
  return m;
}

static rt_kernels *packed_kernels(rt_backend *b) {
  packed *p = P(b);
  return p->in ? p->in->i->kernels(p->in) : NULL;
}

static const rt_backend_i packed_i = {
    .name = "live",
    .free = packed_free,
    .prepare = packed_prepare,
    .set_driver = packed_set_driver,
    .upload = packed_upload,
    .set_dataset = packed_set_dataset,
    .upload_draws = packed_upload_draws,
    .forward = packed_forward,
    .loss = packed_loss,
    .backward = packed_backward,
    .run = packed_run,
    .sgd = packed_sgd,
    .train_step = packed_train_step,
    .set_training = packed_set_training,
    .view = packed_view,
    .edit = packed_edit,
    .set_range = packed_set_range,
    .phase2 = packed_phase2,
    .dense_grad = packed_dense_grad,
    .p2_grad = packed_p2_grad,
    .p2_top = packed_p2_top,
    .p2_score = packed_p2_score,
    .p2_hyper = packed_p2_hyper,
    .p2_restore = packed_p2_restore,
    .p2_slot = packed_p2_slot,
    .stats = packed_stats,
    .profile = packed_profile,
    .profile_pause = packed_profile_pause,
    .profile_report = packed_profile_report,
    .channel_stats = packed_channel_stats,
    .memory = packed_memory,
    .kernels = packed_kernels,
};

rt_backend *rt_backend_new(const char *backend, const ir_graph *g, const ir_arch *arch, int cap,
                           int threads, char *err, size_t errlen) {
  const char *name = backend ? backend : "ref";
  const char *slash = strchr(name, '/');
  char kind[32];
  size_t n = slash ? (size_t)(slash - name) : strlen(name);
  if (n >= sizeof kind) {
    snprintf(err, errlen, "unknown backend '%s'", name);
    return NULL;
  }
  memcpy(kind, name, n), kind[n] = 0;
  if (slash && strcmp(slash + 1, "bounds") != 0) {
    snprintf(err, errlen, "backend '%s': unknown layout '%s' (live, bounds)", name, slash + 1);
    return NULL;
  }
  if (slash && strcmp(slash + 1, "bounds") == 0)
    return rt_step_new(kind, g, arch, cap, threads, err, errlen);
  /* a step at the bounds first: the kind is checked, and nothing is
   * planned until the first prepare */
  packed *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->pub = (rt_backend){.i = &packed_i, .g = g, .arch = arch, .cap = cap, .threads = threads};
  snprintf(p->kind, sizeof p->kind, "%s", kind);
  int64_t nch = ir_chan_base(g, g->n_tensors);
  p->keep = calloc((size_t)(nch + g->n_layers) + 1, 1);
  p->next = calloc((size_t)(nch + g->n_layers) + 1, 1);
  p->src = calloc(2 * (size_t)g->n_layers + 1, sizeof *p->src);
  p->plan = rt_plan_new(g);
  int oom = !p->keep || !p->next || !p->src || !p->plan;
  for (int w = 0; w < N_STATE; w++)
    oom |= !(p->arr[w] = mapped(w) ? map_zeros(p, w, NULL)
                                   : calloc((size_t)count(p, w) + 1, sizeof(float)));
  if (oom) {
    packed_free(&p->pub);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  memset(p->fresh, 1, sizeof p->fresh);
  p->training = 1;
  /* the kind is checked now, on the seed's layout, and that step stays */
  p->mask = NULL, p->varies = NULL;
  reselect(p, TRAIN);
  if (rebuild(p)) {
    snprintf(err, errlen, "%s", p->pub.error);
    packed_free(&p->pub);
    return NULL;
  }
  return &p->pub;
}

rt_backend *rt_packed_step(rt_backend *b) {
  return b && b->i == &packed_i ? P(b)->in : NULL;
}

long rt_packed_rebuilds(const rt_backend *b) {
  return b && b->i == &packed_i ? ((const packed *)b)->rebuilds : -1;
}

int64_t rt_packed_active(rt_backend *b, rt_state which, float *out) {
  if (!b || b->i != &packed_i || (which != RT_PARAMS && which != RT_MOMENTUM)) return -1;
  packed *p = P(b);
  /* an edit or a view holds them in arr: read there */
  if (!p->in || p->held[which] || p->ahead[which]) return -1;
  const ir_graph *g = b->g;
  const uint64_t *alpha = b->arch->alpha;
  const float *s = p->in->i->view(p->in, which);
  int nr, maxc = 1;
  for (int li = 0; li < g->n_layers; li++)
    if (g->layers[li].cin > maxc || g->layers[li].cout > maxc)
      maxc = g->layers[li].cin > g->layers[li].cout ? g->layers[li].cin : g->layers[li].cout;
  prange *r = param_runs(g, &nr);
  int *ro = malloc(2 * (size_t)maxc * sizeof *ro), *rf = ro ? ro + maxc : NULL;
  if (!s || !r || !ro) {
    free(r), free(ro);
    return -1;
  }
  int64_t k = 0, j = 0; /* out's next, and the outside list's */
  for (int q = 0; q < nr; q++) {
    const ir_layer *l = &g->layers[r[q].li], *m = &p->gc->layers[r[q].li];
    const uint8_t *ko, *ki;
    kept_at(p, r[q].li, &ko, &ki);
    /* where a kept channel or input feature is in gc (kept_lists' order) */
    int pc = ir_per_chan(g, l), no = 0, nf = 0;
    for (int c = 0; c < l->cout; c++) ro[c] = ko[c] ? no++ : -1;
    for (int c = 0; c < l->cin; c++) rf[c] = ki[c / pc] ? nf++ : -1;
    int64_t kk = ir_fan_in(l) / l->cin, from = r[q].off, end = from + r[q].n;
    for (int64_t w = from >> 6; r[q].n > 0 && w <= (end - 1) >> 6; w++)
      for (uint64_t bits = alpha[w]; bits; bits &= bits - 1) {
        int64_t i = w * 64 + __builtin_ctzll(bits), at = -1;
        if (i < from || i >= end) continue;
        if (r[q].kind == 0) {
          int64_t row = (i - from) / kk;
          int co = (int)(row / l->cin), ci = (int)(row % l->cin);
          if (ro[co] >= 0 && rf[ci] >= 0)
            at = m->w_off + ((int64_t)ro[co] * nf + rf[ci]) * kk + (i - from) % kk;
        } else {
          int64_t c = (i - from) % l->cout, half = (i - from) / l->cout;
          if (ro[c] >= 0) at = (r[q].kind == 1 ? m->b_off : m->g_off + half * no) + ro[c];
        }
        if (at >= 0) out[k++] = s[at];
        else if (j < p->n_outside && p->outside[j] == i) out[k++] = p->ov[which][j++];
        else { /* cannot be: the outside list is every other */
          free(r), free(ro);
          return -1;
        }
      }
  }
  free(r), free(ro);
  return k;
}
