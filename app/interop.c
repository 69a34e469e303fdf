/* interop.c: the export plan as an ONNX model or a PyTorch module (see
 * interop.h).
 *
 * First a graph of dense ops (dg) is built from the plan; then it is
 * written, as protobuf (write_onnx) or as Python (write_torch). The graph
 * follows the plan's workspace: every plane the plan gives an offset to is
 * a channel of one value (the normalised input, or an op's output), found
 * through a map from the plane's offset. An op's input is the value it
 * reads when it reads one value whole, in order, or else the planes it
 * reads gathered (on axis 1) and concatenated.
 *
 * The protobuf wire format is written by hand (a varint, a key, a length
 * before each sub-message): each message is built in a buffer of its own
 * and appended to its parent with its length. The fields are those of
 * onnx.proto's ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto and ValueInfoProto; their numbers are named below. */
#include "app/interop.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/err.h"

/* ---- protobuf ------------------------------------------------------------ */

typedef struct pb {
  uint8_t *p;
  size_t n, cap;
  int oom;
} pb;

enum { WT_VARINT = 0, WT_LEN = 2 };

static void pb_raw(pb *b, const void *d, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}

static void pb_varint(pb *b, uint64_t v) {
  uint8_t t[10];
  int n = 0;
  do {
    t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  pb_raw(b, t, (size_t)n);
}

static void pb_key(pb *b, int field, int wt) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wt); }

static void pb_int(pb *b, int field, int64_t v) {
  pb_key(b, field, WT_VARINT);
  pb_varint(b, (uint64_t)v);
}

static void pb_bytes(pb *b, int field, const void *d, size_t n) {
  pb_key(b, field, WT_LEN);
  pb_varint(b, n);
  pb_raw(b, d, n);
}

static void pb_str(pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

/* Appends sub as field `field` of b, and frees it. */
static void pb_sub(pb *b, int field, pb *sub) {
  b->oom |= sub->oom;
  pb_bytes(b, field, sub->p, sub->n);
  free(sub->p);
  memset(sub, 0, sizeof *sub);
}

/* onnx.proto's field numbers and enums */
enum {
  MODEL_IR_VERSION = 1, MODEL_PRODUCER = 2, MODEL_PRODUCER_VERSION = 3, MODEL_DOC = 6,
  MODEL_GRAPH = 7, MODEL_OPSET = 8,
  OPSET_VERSION = 2,
  GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INIT = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12,
  NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTR = 5,
  ATTR_NAME = 1, ATTR_I = 3, ATTR_INTS = 8, ATTR_TYPE = 20, ATTR_INT = 2, ATTR_INTS_T = 7,
  TENSOR_DIMS = 1, TENSOR_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW = 9,
  ELEM_FLOAT = 1, ELEM_INT64 = 7,
  VI_NAME = 1, VI_TYPE = 2, TYPE_TENSOR = 1, TT_ELEM = 1, TT_SHAPE = 2, SHAPE_DIM = 1,
  DIM_VALUE = 1, DIM_PARAM = 2,
  IR_VERSION = 7, OPSET = 13
};

/* ---- the graph of dense ops ---------------------------------------------- */

typedef enum {
  DN_SUB, DN_DIV, DN_MUL, DN_ADD, /* value (op) constant, broadcast */
  DN_CONV, DN_GEMM,               /* value, weight, bias; mask: the weight's 0/1 */
  DN_RELU, DN_MAXPOOL, DN_GAP,    /* GAP: global average pool to [N, c] */
  DN_FLATTEN,                     /* [N, c, h, w] to [N, c * h * w] */
  DN_GATHER,                      /* channels of a value, by a constant index */
  DN_CONCAT,                      /* values, on channels */
  DN_MATMUL,                      /* value times a constant matrix */
  DN_EXPAND                       /* a constant [1, ...] over the input's batch */
} dn_kind;

/* A value: c channels, [N, c, h, w] when spatial, else [N, c]. Value 0 is
 * the graph's input. */
typedef struct dv {
  int c, h, w, spatial;
} dv;

typedef struct dn {
  dn_kind kind;
  int in[3], n_in;     /* values (>= 0), or constants as -2 - number; */
  int *many;           /* DN_CONCAT: n_in values */
  int out;             /* the value it makes */
  int k, stride, pad;  /* conv, max pool */
  int mask;            /* conv, gemm: the constant of the weight's mask */
  char layer[64];      /* the IR layer it comes from */
} dn;

typedef struct dc {
  int ints;            /* int64 data, else float */
  int64_t dims[4];
  int nd;
  int64_t n;           /* elements */
  void *data;
  int param;           /* a weight or a bias (trainable in PyTorch) */
  char name[96];       /* unique, a Python identifier */
} dc;

typedef struct dg {
  dn *nodes;
  int n_nodes, cap_nodes;
  dc *consts;
  int n_consts, cap_consts;
  dv *v;
  int n_v, cap_v;
  int logits;          /* the value of the logits */
  int in_c, in_h, in_w, classes;
  int oom;
} dg;

static void dg_free(dg *g) {
  for (int i = 0; i < g->n_nodes; i++) free(g->nodes[i].many);
  for (int i = 0; i < g->n_consts; i++) free(g->consts[i].data);
  free(g->nodes), free(g->consts), free(g->v);
  memset(g, 0, sizeof *g);
}

static int grow(void **p, int *cap, int n, size_t size) {
  if (n < *cap) return 0;
  int c = *cap ? 2 * *cap : 64;
  void *q = realloc(*p, (size_t)c * size);
  if (!q) return -1;
  *p = q, *cap = c;
  return 0;
}

static int val_new(dg *g, dv v) {
  if (grow((void **)&g->v, &g->cap_v, g->n_v, sizeof *g->v)) return g->oom = 1, -1;
  g->v[g->n_v] = v;
  return g->n_v++;
}

/* A constant named <layer>_<role>, unique; a copy of data. Returns its
 * number, -1 out of memory. */
static int cnst(dg *g, int ints, const int64_t *dims, int nd, const void *data,
                const char *layer, const char *role, int param) {
  if (grow((void **)&g->consts, &g->cap_consts, g->n_consts, sizeof *g->consts))
    return g->oom = 1, -1;
  dc *c = &g->consts[g->n_consts];
  memset(c, 0, sizeof *c);
  c->ints = ints, c->nd = nd, c->param = param, c->n = 1;
  for (int i = 0; i < nd; i++) c->dims[i] = dims[i], c->n *= dims[i];
  size_t bytes = (size_t)c->n * (ints ? sizeof(int64_t) : sizeof(float));
  if (!(c->data = malloc(bytes ? bytes : 1))) return g->oom = 1, -1;
  memcpy(c->data, data, bytes);
  char base[80];
  snprintf(base, sizeof base, "%s_%s", layer, role);
  for (char *s = base; *s; s++)
    if (!isalnum((unsigned char)*s)) *s = '_';
  const char *lead = isdigit((unsigned char)base[0]) ? "t" : ""; /* an identifier */
  snprintf(c->name, sizeof c->name, "%s%s", lead, base);
  for (int k = 2, dup = 1; dup; k++) { /* a second gather of one layer: _2, _3 ... */
    dup = 0;
    for (int i = 0; i < g->n_consts && !dup; i++) dup = strcmp(g->consts[i].name, c->name) == 0;
    if (dup) snprintf(c->name, sizeof c->name, "%s%s_%d", lead, base, k);
  }
  return g->n_consts++;
}

static int cst(int c) { return -2 - c; } /* a constant as a node's input */

/* A node like t over inputs in[0..n) (n <= 3, but for concat), making a
 * value of the given shape; returns it, -1 out of memory. */
static int add(dg *g, dn t, const int *in, int n, dv shape) {
  if (g->oom) return -1;
  for (int i = 0; i < n; i++)
    if (in[i] == -1) return -1; /* an input that failed */
  if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes))
    return g->oom = 1, -1;
  t.n_in = n;
  if (t.kind == DN_CONCAT) {
    if (!(t.many = malloc((size_t)n * sizeof *t.many))) return g->oom = 1, -1;
    memcpy(t.many, in, (size_t)n * sizeof *in);
  } else {
    memcpy(t.in, in, (size_t)n * sizeof *in);
  }
  if ((t.out = val_new(g, shape)) < 0) {
    free(t.many);
    return -1;
  }
  g->nodes[g->n_nodes++] = t;
  return t.out;
}

/* ---- from the plan --------------------------------------------------------- */

typedef struct ox {
  const xp_plan *p;
  dg *g;
  int32_t *val, *ch; /* per workspace offset that starts a plane: its value
                        and channel; -1 elsewhere */
  int32_t *idx;      /* per plane: its place in the op's input (distinct) */
  int64_t *starts;   /* the offsets that start planes, ascending */
  int n_starts;
} ox;

static dn node_of(dn_kind kind, const char *layer) {
  dn t;
  memset(&t, 0, sizeof t);
  t.kind = kind;
  t.mask = -1;
  snprintf(t.layer, sizeof t.layer, "%s", layer);
  return t;
}

/* The value and channel of the plane at workspace offset s. */
static int plane_of(const ox *o, int64_t s, int *ch) {
  if (s < 0 || s >= o->p->ws || o->val[s] < 0) return -1;
  *ch = o->ch[s];
  return o->val[s];
}

static void set_planes(ox *o, int v, int64_t first, int64_t plane, int n) {
  for (int j = 0; j < n; j++) o->val[first + j * plane] = v, o->ch[first + j * plane] = j;
}

/* The planes offs[0..n) as the channels of one value, in that order: a
 * value read whole, or a gather of each run from one value, then a
 * concat. */
static int gather(ox *o, const int64_t *offs, int n, const char *layer) {
  dg *g = o->g;
  int *vs = malloc((size_t)n * sizeof *vs), *cs = malloc((size_t)n * sizeof *cs);
  int *parts = malloc((size_t)n * sizeof *parts);
  int64_t *idx = malloc((size_t)n * sizeof *idx);
  int rc = -1, np = 0;
  if (!vs || !cs || !parts || !idx) goto out;
  for (int i = 0; i < n; i++)
    if ((vs[i] = plane_of(o, offs[i], &cs[i])) < 0) goto out;
  for (int i = 0; i < n;) {
    int j = i, v = vs[i];
    while (j < n && vs[j] == v) j++;
    int whole = j - i == g->v[v].c;
    for (int k = i; k < j && whole; k++) whole = cs[k] == k - i;
    if (whole) {
      parts[np++] = v;
    } else {
      for (int k = i; k < j; k++) idx[k - i] = cs[k];
      int64_t d[1] = {j - i};
      dv sh = g->v[v];
      sh.c = j - i;
      int in[2] = {v, cst(cnst(g, 1, d, 1, idx, layer, "index", 0))};
      if ((parts[np++] = add(g, node_of(DN_GATHER, layer), in, 2, sh)) < 0) goto out;
    }
    i = j;
  }
  if (np == 1) {
    rc = parts[0];
  } else {
    dv sh = g->v[parts[0]];
    sh.c = n;
    rc = add(g, node_of(DN_CONCAT, layer), parts, np, sh);
  }
out:
  free(vs), free(cs), free(parts), free(idx);
  return rc;
}

/* A plane to sort by (value, channel), so that runs from one value are
 * long and a value read whole is found whole. */
typedef struct keyed {
  int64_t key, off;
} keyed;

static int by_key(const void *a, const void *b) {
  int64_t x = ((const keyed *)a)->key, y = ((const keyed *)b)->key;
  return x < y ? -1 : x > y;
}

/* The distinct planes in offs[0..n), sorted by (value, channel); their
 * count, or -1 out of memory or for an offset that is no plane the graph
 * has made. Each one's place among them is o->idx[offset] until the next
 * call. */
static int distinct(ox *o, int64_t *offs, int n) {
  keyed *k = malloc((size_t)(n ? n : 1) * sizeof *k);
  if (!k) return -1;
  for (int i = 0; i < n; i++) {
    if (offs[i] < 0 || offs[i] >= o->p->ws || o->val[offs[i]] < 0) {
      free(k);
      return -1;
    }
    k[i] = (keyed){(int64_t)o->val[offs[i]] * ((int64_t)1 << 32) + o->ch[offs[i]], offs[i]};
  }
  qsort(k, (size_t)n, sizeof *k, by_key);
  int m = 0;
  for (int i = 0; i < n; i++)
    if (!m || offs[m - 1] != k[i].off) offs[m++] = k[i].off;
  free(k);
  for (int i = 0; i < m; i++) o->idx[offs[i]] = i;
  return m;
}

/* The plane that workspace offset s lies in: the greatest start <= s. */
static int64_t start_of(const ox *o, int64_t s) {
  int lo = 0, hi = o->n_starts - 1, at = -1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (o->starts[mid] <= s) at = mid, lo = mid + 1;
    else hi = mid - 1;
  }
  return at < 0 ? -1 : o->starts[at];
}

/* ReLU, then batch norm after it (post: n scales, n shifts), on value v. */
static int activation(ox *o, const xp_op *op, int v, const char *layer) {
  dg *g = o->g;
  dv sh = g->v[v];
  if (op->relu) v = add(g, node_of(DN_RELU, layer), &v, 1, sh);
  if (!op->post || v < 0) return v;
  int64_t dims[4] = {1, op->n, 1, 1};
  int nd = sh.spatial ? 4 : 2;
  int m[2] = {v, cst(cnst(g, 0, dims, nd, op->post, layer, "scale", 0))};
  v = add(g, node_of(DN_MUL, layer), m, 2, sh);
  int a[2] = {v, cst(cnst(g, 0, dims, nd, op->post + op->n, layer, "shift", 0))};
  return add(g, node_of(DN_ADD, layer), a, 2, sh);
}

/* A value [N, ...] holding c ([1, ...]) for every image. */
static int constant(ox *o, const float *c, const int64_t *dims, int nd, dv shape,
                    const char *layer) {
  int in[1] = {cst(cnst(o->g, 0, dims, nd, c, layer, "const", 0))};
  return add(o->g, node_of(DN_EXPAND, layer), in, 1, shape);
}

/* The output of a weighted op without entries: act(bias), the same for
 * every image. */
static int const_op(ox *o, const xp_op *op, int conv, const char *layer) {
  int64_t hw = conv ? (int64_t)op->oh * op->ow : 1;
  float *c = malloc((size_t)(op->n * hw) * sizeof *c);
  if (!c) return -1;
  for (int j = 0; j < op->n; j++) {
    float y = op->bias[j];
    if (op->relu) y = y > 0.0f ? y : 0.0f;
    if (op->post) y = y * op->post[j] + op->post[op->n + j];
    for (int64_t i = 0; i < hw; i++) c[j * hw + i] = y;
  }
  int64_t dims[4] = {1, op->n, op->oh, op->ow};
  int v = constant(o, c, dims, conv ? 4 : 2, (dv){op->n, op->oh, op->ow, conv}, layer);
  free(c);
  return v;
}

/* The weight and its mask (1 where the plan has an entry), the bias, and
 * the node over input x. */
static int weighted(ox *o, dn t, int x, const float *w, const float *m, const int64_t *wd,
                    int nd, const xp_op *op, dv shape) {
  dg *g = o->g;
  int64_t bd[1] = {op->n};
  int wi = cnst(g, 0, wd, nd, w, t.layer, "weight", 1);
  t.mask = cnst(g, 0, wd, nd, m, t.layer, "mask", 0);
  int bi = cnst(g, 0, bd, 1, op->bias, t.layer, "bias", 1);
  if (wi < 0 || t.mask < 0 || bi < 0) return -1;
  int in[3] = {x, cst(wi), cst(bi)};
  int v = add(g, t, in, 3, shape);
  return v < 0 ? -1 : activation(o, op, v, t.layer);
}

static int conv_op(ox *o, const xp_op *op, const char *layer) {
  const int kk = op->k * op->k;
  if (op->n_ent == 0) return const_op(o, op, 1, layer);
  int64_t *L = malloc((size_t)op->n_ent * sizeof *L);
  if (!L) return -1;
  for (int64_t e = 0; e < op->n_ent; e++) L[e] = op->src[e];
  int nl = distinct(o, L, (int)op->n_ent), v = -1;
  size_t nw = nl > 0 ? (size_t)op->n * nl * kk : 0;
  float *w = nw ? calloc(nw, sizeof *w) : NULL, *m = nw ? calloc(nw, sizeof *m) : NULL;
  if (!w || !m) goto out;
  for (int j = 0; j < op->n; j++)
    for (int32_t e = op->start[j]; e < op->start[j + 1]; e++) {
      int64_t at = ((int64_t)j * nl + o->idx[op->src[e]]) * kk + op->tap[e];
      w[at] = op->wt[e], m[at] = 1.0f;
    }
  int x = gather(o, L, nl, layer);
  if (x < 0) goto out;
  int64_t wd[4] = {op->n, nl, op->k, op->k};
  dn t = node_of(DN_CONV, layer);
  t.k = op->k, t.stride = op->stride, t.pad = op->pad;
  v = weighted(o, t, x, w, m, wd, 4, op, (dv){op->n, op->oh, op->ow, 1});
out:
  free(L), free(w), free(m);
  return v;
}

static int linear_op(ox *o, const xp_op *op, const ir_graph *g, const char *layer) {
  if (op->n_ent == 0) return const_op(o, op, 0, layer);
  const ir_layer *l = &g->layers[op->layer];
  const ir_tensor *it = &g->tensors[l->in_t];
  const int spatial = o->p->spatial[l->in_t], B = o->p->B;
  const int per = spatial ? it->h * it->w : 1, pw = it->w + 2 * B;
  int64_t *L = malloc((size_t)op->n_ent * sizeof *L);
  int64_t *at = malloc((size_t)op->n_ent * sizeof *at);
  int64_t *D = malloc((size_t)op->n_ent * sizeof *D);
  float *w = NULL, *m = NULL;
  int v = -1;
  if (!L || !at || !D) goto out;
  /* each entry's plane, and its position in the plane unpadded */
  for (int64_t e = 0; e < op->n_ent; e++) {
    int64_t s = start_of(o, op->src[e]), rel = op->src[e] - s;
    L[e] = D[e] = s;
    at[e] = spatial ? (rel / pw - B) * it->w + rel % pw - B : 0;
    if (s < 0 || at[e] < 0 || at[e] >= per) goto out;
  }
  int nl = distinct(o, D, (int)op->n_ent);
  int64_t cols = (int64_t)nl * per;
  if (nl <= 0 || !(w = calloc((size_t)(op->n * cols), sizeof *w)) ||
      !(m = calloc((size_t)(op->n * cols), sizeof *m)))
    goto out;
  for (int j = 0; j < op->n; j++)
    for (int32_t e = op->start[j]; e < op->start[j + 1]; e++) {
      int64_t c = (int64_t)j * cols + (int64_t)o->idx[L[e]] * per + at[e];
      w[c] = op->wt[e], m[c] = 1.0f;
    }
  int x = gather(o, D, nl, layer);
  if (spatial && x >= 0)
    x = add(o->g, node_of(DN_FLATTEN, layer), &x, 1, (dv){(int)cols, 0, 0, 0});
  if (x < 0) goto out;
  int64_t wd[2] = {op->n, cols};
  v = weighted(o, node_of(DN_GEMM, layer), x, w, m, wd, 2, op, (dv){op->n, 0, 0, 0});
out:
  free(L), free(at), free(D), free(w), free(m);
  return v;
}

static int pool_op(ox *o, const xp_op *op, const char *layer) {
  int64_t *L = malloc(((size_t)op->n + 1) * sizeof *L);
  if (!L) return -1;
  for (int j = 0; j < op->n; j++) L[j] = op->src[j];
  int x = gather(o, L, op->n, layer);
  free(L);
  if (op->kind == IR_GAP) return add(o->g, node_of(DN_GAP, layer), &x, 1, (dv){op->n, 0, 0, 0});
  dn t = node_of(DN_MAXPOOL, layer);
  t.k = t.stride = op->k;
  return add(o->g, t, &x, 1, (dv){op->n, op->oh, op->ow, 1});
}

/* The logits: the classifier's planes, a constant 0 where the plan has
 * none (a class no weight reaches), through a 0/1 selection. */
static int logits(ox *o) {
  const xp_plan *p = o->p;
  int64_t *L = malloc(((size_t)p->classes + 1) * sizeof *L);
  float *sel = NULL;
  int n = 0, v = -1;
  if (!L) return -1;
  for (int k = 0; k < p->classes; k++)
    if (p->logit_src[k] >= 0) L[n++] = p->logit_src[k];
  if (n == p->classes) {
    v = gather(o, L, n, "logits");
  } else if (n == 0) {
    float *z = calloc((size_t)p->classes, sizeof *z);
    int64_t dims[2] = {1, p->classes};
    v = z ? constant(o, z, dims, 2, (dv){p->classes, 0, 0, 0}, "logits") : -1;
    free(z);
  } else if ((v = gather(o, L, n, "logits")) >= 0 &&
             (sel = calloc((size_t)n * p->classes, sizeof *sel))) {
    for (int k = 0, i = 0; k < p->classes; k++)
      if (p->logit_src[k] >= 0) sel[(int64_t)i++ * p->classes + k] = 1.0f;
    int64_t dims[2] = {n, p->classes};
    int in[2] = {v, cst(cnst(o->g, 0, dims, 2, sel, "logits", "select", 0))};
    v = add(o->g, node_of(DN_MATMUL, "logits"), in, 2, (dv){p->classes, 0, 0, 0});
  } else {
    v = -1;
  }
  free(L), free(sel);
  return v;
}

/* The graph of plan p. Returns 0, or -1 with a message in err. */
static int build(dg *dgr, const xp_plan *p, const ir_graph *g, const rt_norm *nm, char *err,
                 size_t errlen) {
  ox o = {.p = p, .g = dgr};
  int rc = -1;
  memset(dgr, 0, sizeof *dgr);
  dgr->in_c = p->in_c, dgr->in_h = p->in_h, dgr->in_w = p->in_w, dgr->classes = p->classes;
  size_t ws = (size_t)(p->ws ? p->ws : 1);
  o.val = malloc(ws * sizeof *o.val);
  o.ch = malloc(ws * sizeof *o.ch);
  o.idx = malloc(ws * sizeof *o.idx);
  int64_t n_starts = p->in_c;
  for (int i = 0; i < p->n_ops; i++) n_starts += p->ops[i].n;
  o.starts = malloc((size_t)(n_starts + 1) * sizeof *o.starts);
  if (!o.val || !o.ch || !o.idx || !o.starts) goto oom;
  for (int64_t i = 0; i < p->ws; i++) o.val[i] = -1;

  /* every plane's start, ascending: the input's, then the ops' in order */
  const int64_t in_plane = xp_padded(p, p->in_h, p->in_w);
  for (int c = 0; c < p->in_c; c++) o.starts[o.n_starts++] = c * in_plane;
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    int spatial = op->kind == IR_CONV || op->kind == IR_MAXPOOL;
    int64_t plane = spatial ? xp_padded(p, op->oh, op->ow) : 1;
    for (int j = 0; j < op->n; j++) o.starts[o.n_starts++] = op->out + j * plane;
  }

  /* the input, normalised as the C export does: (input - mean) / std */
  int x = val_new(dgr, (dv){p->in_c, p->in_h, p->in_w, 1});
  int64_t dims[4] = {1, p->in_c, 1, 1};
  int sub[2] = {x, cst(cnst(dgr, 0, dims, 4, nm->mean, "input", "mean", 0))};
  x = add(dgr, node_of(DN_SUB, "input"), sub, 2, dgr->v[0]);
  int div[2] = {x, cst(cnst(dgr, 0, dims, 4, nm->std, "input", "std", 0))};
  if ((x = add(dgr, node_of(DN_DIV, "input"), div, 2, dgr->v[0])) < 0) goto oom;
  set_planes(&o, x, 0, in_plane, p->in_c);

  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    const char *layer = g->layers[op->layer].name;
    if (op->n == 0) continue; /* nothing reads it */
    int v = -1, spatial = op->kind == IR_CONV || op->kind == IR_MAXPOOL;
    switch (op->kind) {
    case IR_CONV:
      v = conv_op(&o, op, layer);
      break;
    case IR_LINEAR:
      v = linear_op(&o, op, g, layer);
      break;
    case IR_MAXPOOL:
      if ((op->h - op->k) / op->k + 1 != op->oh || (op->w - op->k) / op->k + 1 != op->ow) {
        rc = rt_fail(err, errlen, "layer %s: a max pool of %dx%d to %dx%d is not ONNX's or "
                     "PyTorch's", layer, op->h, op->w, op->oh, op->ow);
        goto fail;
      }
      v = pool_op(&o, op, layer);
      break;
    case IR_GAP:
      v = pool_op(&o, op, layer);
      break;
    case IR_COPY: /* vanishes in the plan */
      break;
    }
    if (v < 0) {
      if (dgr->oom) goto oom;
      rc = rt_fail(err, errlen, "layer %s reads a plane the export plan never made", layer);
      goto fail;
    }
    set_planes(&o, v, op->out, spatial ? xp_padded(p, op->oh, op->ow) : 1, op->n);
  }
  if ((dgr->logits = logits(&o)) < 0) goto oom;
  rc = 0;
  goto done;
oom:
  rc = rt_fail(err, errlen, "out of memory");
fail:
done:
  free(o.val), free(o.ch), free(o.idx), free(o.starts);
  if (rc) dg_free(dgr);
  return rc;
}

/* ---- ONNX ------------------------------------------------------------------- */

static void attr_int(pb *a, const char *name, int64_t v) {
  pb t = {0};
  pb_str(&t, ATTR_NAME, name);
  pb_int(&t, ATTR_TYPE, ATTR_INT);
  pb_int(&t, ATTR_I, v);
  pb_sub(a, NODE_ATTR, &t);
}

static void attr_ints(pb *a, const char *name, int64_t v, int n) {
  pb t = {0};
  pb_str(&t, ATTR_NAME, name);
  pb_int(&t, ATTR_TYPE, ATTR_INTS_T);
  for (int i = 0; i < n; i++) pb_int(&t, ATTR_INTS, v);
  pb_sub(a, NODE_ATTR, &t);
}

static void initializer(pb *graph, const char *name, int ints, const int64_t *dims, int nd,
                        const void *data, int64_t n) {
  pb t = {0};
  for (int i = 0; i < nd; i++) pb_int(&t, TENSOR_DIMS, dims[i]);
  pb_int(&t, TENSOR_TYPE, ints ? ELEM_INT64 : ELEM_FLOAT);
  pb_str(&t, TENSOR_NAME, name);
  pb_bytes(&t, TENSOR_RAW, data, (size_t)n * (ints ? 8 : 4)); /* little-endian hosts */
  pb_sub(graph, GRAPH_INIT, &t);
}

/* A value's or a constant's name: "input", v<n>, or the constant's. */
static void in_name(const dg *g, int x, char *s, size_t n) {
  if (x < 0) snprintf(s, n, "%s", g->consts[-2 - x].name);
  else if (x == 0) snprintf(s, n, "input");
  else snprintf(s, n, "v%d", x);
}

/* One ONNX node: op over ins (names), out, attributes a (consumed). */
static void onnx_node(pb *graph, int *count, const char *op, char (*ins)[96], int n,
                      const char *out, pb *a) {
  pb nd = {0};
  for (int i = 0; i < n; i++) pb_str(&nd, NODE_INPUT, ins[i]);
  pb_str(&nd, NODE_OUTPUT, out);
  char name[32];
  snprintf(name, sizeof name, "n%d", (*count)++);
  pb_str(&nd, NODE_NAME, name);
  pb_str(&nd, NODE_OP, op);
  if (a) {
    nd.oom |= a->oom;
    pb_raw(&nd, a->p, a->n);
    free(a->p);
    memset(a, 0, sizeof *a);
  }
  pb_sub(graph, GRAPH_NODE, &nd);
}

static void value_info(pb *g, int field, const char *name, const int64_t *dims, int nd) {
  pb vi = {0}, type = {0}, tt = {0}, shape = {0};
  for (int i = 0; i < nd; i++) {
    pb dim = {0};
    if (dims[i] < 0) pb_str(&dim, DIM_PARAM, "N");
    else pb_int(&dim, DIM_VALUE, dims[i]);
    pb_sub(&shape, SHAPE_DIM, &dim);
  }
  pb_int(&tt, TT_ELEM, ELEM_FLOAT);
  pb_sub(&tt, TT_SHAPE, &shape);
  pb_sub(&type, TYPE_TENSOR, &tt);
  pb_str(&vi, VI_NAME, name);
  pb_sub(&vi, VI_TYPE, &type);
  pb_sub(g, field, &vi);
}

static void write_graph(pb *graph, const dg *g, const char *name) {
  int count = 0, batch = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const dn *t = &g->nodes[i];
    char ins[4][96], out[32], mid[48];
    int n = t->kind == DN_CONCAT ? 0 : t->n_in;
    for (int k = 0; k < n; k++) in_name(g, t->in[k], ins[k], sizeof ins[k]);
    snprintf(out, sizeof out, "v%d", t->out);
    pb a = {0};
    switch (t->kind) {
    case DN_SUB: onnx_node(graph, &count, "Sub", ins, 2, out, NULL); break;
    case DN_DIV: onnx_node(graph, &count, "Div", ins, 2, out, NULL); break;
    case DN_MUL: onnx_node(graph, &count, "Mul", ins, 2, out, NULL); break;
    case DN_ADD: onnx_node(graph, &count, "Add", ins, 2, out, NULL); break;
    case DN_CONV:
      attr_ints(&a, "kernel_shape", t->k, 2);
      attr_ints(&a, "strides", t->stride, 2);
      attr_ints(&a, "pads", t->pad, 4);
      onnx_node(graph, &count, "Conv", ins, 3, out, &a);
      break;
    case DN_GEMM:
      attr_int(&a, "transB", 1);
      onnx_node(graph, &count, "Gemm", ins, 3, out, &a);
      break;
    case DN_RELU: onnx_node(graph, &count, "Relu", ins, 1, out, NULL); break;
    case DN_MAXPOOL:
      attr_ints(&a, "kernel_shape", t->k, 2);
      attr_ints(&a, "strides", t->stride, 2);
      onnx_node(graph, &count, "MaxPool", ins, 1, out, &a);
      break;
    case DN_GAP:
      snprintf(mid, sizeof mid, "%s_pool", out);
      onnx_node(graph, &count, "GlobalAveragePool", ins, 1, mid, NULL);
      snprintf(ins[0], sizeof ins[0], "%s", mid);
      attr_int(&a, "axis", 1);
      onnx_node(graph, &count, "Flatten", ins, 1, out, &a);
      break;
    case DN_FLATTEN:
      attr_int(&a, "axis", 1);
      onnx_node(graph, &count, "Flatten", ins, 1, out, &a);
      break;
    case DN_GATHER:
      attr_int(&a, "axis", 1);
      onnx_node(graph, &count, "Gather", ins, 2, out, &a);
      break;
    case DN_CONCAT: {
      char(*many)[96] = malloc((size_t)t->n_in * sizeof *many);
      if (!many) {
        graph->oom = 1;
        break;
      }
      for (int k = 0; k < t->n_in; k++) in_name(g, t->many[k], many[k], sizeof many[k]);
      attr_int(&a, "axis", 1);
      onnx_node(graph, &count, "Concat", many, t->n_in, out, &a);
      free(many);
      break;
    }
    case DN_MATMUL: onnx_node(graph, &count, "MatMul", ins, 2, out, NULL); break;
    case DN_EXPAND: {
      /* [N] from the input's shape once, then [N, the rest] per constant */
      const dc *c = &g->consts[-2 - t->in[0]];
      int64_t zero = 0, one = 1, d1[1] = {1}, dr[1] = {c->nd - 1};
      if (!batch) {
        char s[3][96] = {"input"};
        onnx_node(graph, &count, "Shape", s, 1, "shape", NULL);
        initializer(graph, "batch_start", 1, d1, 1, &zero, 1);
        initializer(graph, "batch_end", 1, d1, 1, &one, 1);
        snprintf(s[0], sizeof s[0], "shape");
        snprintf(s[1], sizeof s[1], "batch_start");
        snprintf(s[2], sizeof s[2], "batch_end");
        onnx_node(graph, &count, "Slice", s, 3, "batch", NULL);
        batch = 1;
      }
      char cat[2][96];
      snprintf(cat[0], sizeof cat[0], "batch");
      snprintf(cat[1], sizeof cat[1], "%s_d%d", t->layer, t->out); /* the rest of the shape */
      initializer(graph, cat[1], 1, dr, 1, c->dims + 1, c->nd - 1);
      snprintf(mid, sizeof mid, "%s_shape", out);
      attr_int(&a, "axis", 0);
      onnx_node(graph, &count, "Concat", cat, 2, mid, &a);
      snprintf(ins[1], sizeof ins[1], "%s", mid);
      onnx_node(graph, &count, "Expand", ins, 2, out, NULL);
      break;
    }
    }
  }
  char lg[2][96];
  in_name(g, g->logits, lg[0], sizeof lg[0]);
  onnx_node(graph, &count, "Identity", lg, 1, "logits", NULL);
  pb_str(graph, GRAPH_NAME, name);
  for (int i = 0; i < g->n_consts; i++) {
    const dc *c = &g->consts[i];
    int mask = 0; /* masks are PyTorch's: ONNX's weights hold their zeros */
    for (int k = 0; k < g->n_nodes && !mask; k++) mask = g->nodes[k].mask == i;
    if (!mask) initializer(graph, c->name, c->ints, c->dims, c->nd, c->data, c->n);
  }
  int64_t in_dims[4] = {-1, g->in_c, g->in_h, g->in_w}, out_dims[2] = {-1, g->classes};
  value_info(graph, GRAPH_INPUT, "input", in_dims, 4);
  value_info(graph, GRAPH_OUTPUT, "logits", out_dims, 2);
}

int xp_onnx(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc,
            uint8_t **out, size_t *n, char *err, size_t errlen) {
  *out = NULL, *n = 0;
  dg d;
  if (build(&d, p, g, nm, err, errlen)) return -1;
  pb graph = {0}, model = {0}, opset = {0};
  write_graph(&graph, &d, g->cfg.name);
  dg_free(&d);
  pb_int(&model, MODEL_IR_VERSION, IR_VERSION);
  pb_str(&model, MODEL_PRODUCER, "ilnas");
  pb_str(&model, MODEL_PRODUCER_VERSION, "1");
  pb_str(&model, MODEL_DOC, doc);
  pb_sub(&model, MODEL_GRAPH, &graph);
  pb_int(&opset, OPSET_VERSION, OPSET);
  pb_sub(&model, MODEL_OPSET, &opset);
  if (model.oom) {
    free(model.p);
    return rt_fail(err, errlen, "out of memory");
  }
  if (model.n >= ((size_t)1 << 31)) {
    free(model.p);
    return rt_fail(err, errlen, "the ONNX model would take %zu bytes, past protobuf's 2 GiB",
                   model.n);
  }
  *out = model.p, *n = model.n;
  return 0;
}

/* ---- PyTorch --------------------------------------------------------------- */

/* A Python string literal of s (the checkpoint's name goes into the
 * module's docstring and comments). */
static void py_str(FILE *f, const char *s) {
  fputc('\'', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '\\' || c == '\'') fprintf(f, "\\%c", c);
    else if (c < 32 || c > 126) fprintf(f, "\\x%02x", c);
    else fputc(c, f);
  }
  fputc('\'', f);
}

/* A value in the forward: input, or v<n>; a constant: self.<name>. */
static void py_in(FILE *f, const dg *g, int x) {
  if (x < 0) fprintf(f, "self.%s", g->consts[-2 - x].name);
  else if (x == 0) fprintf(f, "input");
  else fprintf(f, "v%d", x);
}

int xp_torch(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc, FILE *py,
             FILE *bin, const char *bin_name, char *err, size_t errlen) {
  dg d;
  if (build(&d, p, g, nm, err, errlen)) return -1;
  int64_t floats = 0;
  for (int i = 0; i < d.n_consts; i++)
    if (!d.consts[i].ints) floats += d.consts[i].n;
  FILE *f = py;
  fprintf(f, "\"\"\"The network of model '%s', exported by ilnas; do not edit.\n\n", g->cfg.name);
  fprintf(f, "From: ");
  for (const char *s = doc; *s; s++) fputc(*s == '"' || (unsigned char)*s < 32 ? '_' : *s, f);
  fprintf(f, ".\n\n"
             "Net() is a torch.nn.Module of the trained network; its weights (%" PRId64 " floats,\n"
             "raw little-endian float32) are read from %s beside this file, or from\n"
             "Net(weights=PATH). It takes raw images scaled to [0, 1], float [N, %d, %d, %d]\n"
             "(the training normalisation is applied inside), and gives logits [N, %d].\n"
             "Each layer keeps its live channels only; a weight's mask (a buffer) is 1\n"
             "where the network has the weight and 0 where it does not, so training the\n"
             "module on keeps its architecture.\n\"\"\"\n",
          floats, bin_name, d.in_c, d.in_h, d.in_w, d.classes);
  fprintf(f, "import os\nimport sys\n\nimport torch\nimport torch.nn.functional as F\n\n");
  fprintf(f, "INPUT_SHAPE = (%d, %d, %d)\nCLASSES = %d\nFLOATS = %" PRId64 "\nSOURCE = ",
          d.in_c, d.in_h, d.in_w, d.classes, floats);
  py_str(f, doc);
  fprintf(f, "\n\n\nclass Net(torch.nn.Module):\n"
             "    def __init__(self, weights=None):\n"
             "        super().__init__()\n"
             "        path = weights or os.path.join(os.path.dirname(os.path.abspath(__file__)),\n"
             "                                       ");
  py_str(f, bin_name);
  fprintf(f, ")\n"
             "        with open(path, 'rb') as w:\n"
             "            raw = bytearray(w.read())\n"
             "        if len(raw) != 4 * FLOATS:\n"
             "            raise ValueError(f'{path}: {len(raw)} bytes, expected {4 * FLOATS} '\n"
             "                             f'(the weights of {SOURCE})')\n"
             "        if sys.byteorder != 'little':\n"
             "            raise ValueError('the weights are little-endian float32')\n"
             "        raw = torch.frombuffer(raw, dtype=torch.float32)\n");
  int64_t off = 0;
  for (int i = 0; i < d.n_consts; i++) {
    const dc *c = &d.consts[i];
    if (c->ints) {
      fprintf(f, "        self.register_buffer('%s', torch.tensor([", c->name);
      const int64_t *v = c->data;
      for (int64_t k = 0; k < c->n; k++) fprintf(f, "%s%" PRId64, k ? ", " : "", v[k]);
      fprintf(f, "], dtype=torch.int64))\n");
      continue;
    }
    fwrite(c->data, sizeof(float), (size_t)c->n, bin); /* little-endian hosts */
    char shape[96] = "";
    for (int k = 0; k < c->nd; k++)
      snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%" PRId64,
               k ? ", " : "", c->dims[k]);
    char slice[160];
    snprintf(slice, sizeof slice, "raw[%" PRId64 ":%" PRId64 "].view(%s).clone()", off,
             off + c->n, shape);
    if (c->param) fprintf(f, "        self.%s = torch.nn.Parameter(%s)\n", c->name, slice);
    else fprintf(f, "        self.register_buffer('%s', %s)\n", c->name, slice);
    off += c->n;
  }
  fprintf(f, "\n    def forward(self, input):\n");
  const char *layer = "";
  for (int i = 0; i < d.n_nodes; i++) {
    const dn *t = &d.nodes[i];
    if (strcmp(t->layer, layer)) fprintf(f, "        # %s\n", t->layer), layer = t->layer;
    fprintf(f, "        v%d = ", t->out);
    const char *bin_op = t->kind == DN_SUB ? " - " : t->kind == DN_DIV ? " / "
                       : t->kind == DN_MUL ? " * " : t->kind == DN_ADD ? " + "
                       : t->kind == DN_MATMUL ? " @ " : NULL;
    if (bin_op) {
      py_in(f, &d, t->in[0]), fputs(bin_op, f), py_in(f, &d, t->in[1]);
    } else {
      switch (t->kind) {
      case DN_CONV:
        fprintf(f, "F.conv2d("), py_in(f, &d, t->in[0]), fprintf(f, ", "), py_in(f, &d, t->in[1]);
        fprintf(f, " * self.%s, ", d.consts[t->mask].name), py_in(f, &d, t->in[2]);
        fprintf(f, ", stride=%d, padding=%d)", t->stride, t->pad);
        break;
      case DN_GEMM:
        fprintf(f, "F.linear("), py_in(f, &d, t->in[0]), fprintf(f, ", "), py_in(f, &d, t->in[1]);
        fprintf(f, " * self.%s, ", d.consts[t->mask].name), py_in(f, &d, t->in[2]);
        fprintf(f, ")");
        break;
      case DN_RELU: fprintf(f, "F.relu("), py_in(f, &d, t->in[0]), fprintf(f, ")"); break;
      case DN_MAXPOOL:
        fprintf(f, "F.max_pool2d("), py_in(f, &d, t->in[0]);
        fprintf(f, ", %d, %d)", t->k, t->stride);
        break;
      case DN_GAP: py_in(f, &d, t->in[0]), fprintf(f, ".mean((2, 3))"); break;
      case DN_FLATTEN:
        fprintf(f, "torch.flatten("), py_in(f, &d, t->in[0]), fprintf(f, ", 1)");
        break;
      case DN_GATHER:
        py_in(f, &d, t->in[0]), fprintf(f, ".index_select(1, "), py_in(f, &d, t->in[1]);
        fprintf(f, ")");
        break;
      case DN_CONCAT:
        fprintf(f, "torch.cat([");
        for (int k = 0; k < t->n_in; k++) fprintf(f, "%s", k ? ", " : ""), py_in(f, &d, t->many[k]);
        fprintf(f, "], 1)");
        break;
      case DN_EXPAND:
        py_in(f, &d, t->in[0]), fprintf(f, ".expand(input.shape[0], *"), py_in(f, &d, t->in[0]);
        fprintf(f, ".shape[1:])");
        break;
      default: /* the binary ops above */
        break;
      }
    }
    fputc('\n', f);
  }
  fprintf(f, "        return "), py_in(f, &d, d.logits), fprintf(f, "\n");
  dg_free(&d);
  return 0;
}
