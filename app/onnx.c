/* onnx.c: the export plan as an ONNX model (see onnx.h).
 *
 * The protobuf wire format is written by hand (a varint, a key, a length
 * before each sub-message): each message is built in a buffer of its own
 * and appended to its parent with its length. The fields are those of
 * onnx.proto's ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto and ValueInfoProto; their numbers are named below.
 *
 * The graph follows the plan's workspace: every plane the plan gives an
 * offset to is a channel of one ONNX value (the normalised input, or an
 * op's output), found through a map from the plane's offset. An op's
 * input is the value it reads when it reads one value whole, in order, or
 * else the planes it reads gathered (Gather on axis 1) and concatenated. */
#include "app/onnx.h"

#include <math.h>
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

/* ---- the graph ----------------------------------------------------------- */

/* A value of the graph: c channels, [N, c, h, w] when spatial, else
 * [N, c]. */
typedef struct ox_val {
  int c, h, w, spatial;
} ox_val;

typedef struct ox {
  const xp_plan *p;
  pb nodes, inits;
  int n_nodes, n_inits;
  ox_val *v;
  int n_v, cap_v;
  int32_t *val, *ch; /* per workspace offset that starts a plane: its value
                        and channel; -1 elsewhere */
  int32_t *idx;      /* per plane: its place in the op's input (distinct) */
  int64_t *starts;   /* the offsets that start planes, ascending */
  int n_starts;
  int batch;         /* value: [N] (for Expand), or -1 until first needed */
} ox;

static void vname(char *s, size_t n, int v) { snprintf(s, n, "v%d", v); }

static int val_new(ox *o, int c, int h, int w, int spatial) {
  if (o->n_v == o->cap_v) {
    int cap = o->cap_v ? 2 * o->cap_v : 64;
    ox_val *v = realloc(o->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    o->v = v, o->cap_v = cap;
  }
  o->v[o->n_v] = (ox_val){c, h, w, spatial};
  return o->n_v++;
}

/* An initializer; returns its number (its name is "c<number>"). */
static int init_tensor(ox *o, int elem, const int64_t *dims, int nd, const void *data,
                       size_t bytes) {
  pb t = {0};
  for (int i = 0; i < nd; i++) pb_int(&t, TENSOR_DIMS, dims[i]);
  pb_int(&t, TENSOR_TYPE, elem);
  char name[32];
  snprintf(name, sizeof name, "c%d", o->n_inits);
  pb_str(&t, TENSOR_NAME, name);
  pb_bytes(&t, TENSOR_RAW, data, bytes); /* little-endian, as raw_data is defined */
  pb_sub(&o->inits, GRAPH_INIT, &t);
  return o->n_inits++;
}

static int init_floats(ox *o, const int64_t *dims, int nd, const float *v) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= dims[i];
  return init_tensor(o, ELEM_FLOAT, dims, nd, v, (size_t)n * sizeof *v);
}

static int init_ints(ox *o, const int64_t *v, int64_t n) {
  int64_t dims[1] = {n};
  return init_tensor(o, ELEM_INT64, dims, 1, v, (size_t)n * sizeof *v);
}

static void attr_int(pb *a, const char *name, int64_t v) {
  pb t = {0};
  pb_str(&t, ATTR_NAME, name);
  pb_int(&t, ATTR_TYPE, ATTR_INT);
  pb_int(&t, ATTR_I, v);
  pb_sub(a, NODE_ATTR, &t);
}

static void attr_ints(pb *a, const char *name, const int64_t *v, int n) {
  pb t = {0};
  pb_str(&t, ATTR_NAME, name);
  pb_int(&t, ATTR_TYPE, ATTR_INTS_T);
  for (int i = 0; i < n; i++) pb_int(&t, ATTR_INTS, v[i]);
  pb_sub(a, NODE_ATTR, &t);
}

/* A node of op_type op over the named inputs, writing output `out`;
 * attrs (attribute fields already keyed, or NULL) are consumed. */
static void node(ox *o, const char *op, const char *const *in, int n_in, const char *out,
                 pb *attrs) {
  pb nd = {0};
  for (int i = 0; i < n_in; i++) pb_str(&nd, NODE_INPUT, in[i]);
  pb_str(&nd, NODE_OUTPUT, out);
  char name[32];
  snprintf(name, sizeof name, "n%d", o->n_nodes++);
  pb_str(&nd, NODE_NAME, name);
  pb_str(&nd, NODE_OP, op);
  if (attrs) {
    nd.oom |= attrs->oom;
    pb_raw(&nd, attrs->p, attrs->n);
    free(attrs->p);
    memset(attrs, 0, sizeof *attrs);
  }
  pb_sub(&o->nodes, GRAPH_NODE, &nd);
}

/* A node with value inputs (v >= 0) or initializers (-2 - number), making
 * a new value of the given shape; returns it, -1 out of memory. attrs is
 * consumed. */
static int op_val(ox *o, const char *op, const int *in, int n_in, pb *attrs, ox_val shape) {
  char(*names)[16] = malloc((size_t)(n_in ? n_in : 1) * sizeof *names);
  const char **np = malloc((size_t)(n_in ? n_in : 1) * sizeof *np);
  int v = names && np ? val_new(o, shape.c, shape.h, shape.w, shape.spatial) : -1;
  if (v < 0) {
    free(names), free(np);
    free(attrs ? attrs->p : NULL);
    return -1;
  }
  for (int i = 0; i < n_in; i++) {
    if (in[i] >= 0) vname(names[i], sizeof names[i], in[i]);
    else snprintf(names[i], sizeof names[i], "c%d", -2 - in[i]);
    np[i] = names[i];
  }
  char out[16];
  vname(out, sizeof out, v);
  node(o, op, np, n_in, out, attrs);
  free(names), free(np);
  return v;
}

static int cst(int init) { return -2 - init; } /* an initializer as op_val's input */

/* [N] of the graph's input, made once (Shape, then Slice). */
static int batch_of(ox *o) {
  if (o->batch >= 0) return o->batch;
  const char *in[1] = {"input"};
  char out[16];
  int v = val_new(o, 4, 0, 0, 0);
  if (v < 0) return -1;
  vname(out, sizeof out, v);
  node(o, "Shape", in, 1, out, NULL);
  int64_t z[1] = {0}, one[1] = {1};
  int s0 = init_ints(o, z, 1), s1 = init_ints(o, one, 1);
  int ins[3] = {v, cst(s0), cst(s1)};
  return o->batch = op_val(o, "Slice", ins, 3, NULL, (ox_val){1, 0, 0, 0});
}

/* A value of shape [N, rest...] holding the constant c ([1, rest...]):
 * Expand over the batch. */
static int constant(ox *o, const float *c, const int64_t *dims, int nd, ox_val shape) {
  int b = batch_of(o);
  if (b < 0) return -1;
  int ci = init_floats(o, dims, nd, c);
  int rest = init_ints(o, dims + 1, nd - 1);
  pb a = {0};
  attr_int(&a, "axis", 0);
  int cat[2] = {b, cst(rest)};
  int sh = op_val(o, "Concat", cat, 2, &a, (ox_val){nd, 0, 0, 0});
  if (sh < 0) return -1;
  int ex[2] = {cst(ci), sh};
  return op_val(o, "Expand", ex, 2, NULL, shape);
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
 * value read whole, or Gather of each run from one value, then Concat. */
static int gather(ox *o, const int64_t *offs, int n) {
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
    int whole = j - i == o->v[v].c;
    for (int k = i; k < j && whole; k++) whole = cs[k] == k - i;
    if (whole) {
      parts[np++] = v;
    } else {
      for (int k = i; k < j; k++) idx[k - i] = cs[k];
      int ii = init_ints(o, idx, j - i);
      pb a = {0};
      attr_int(&a, "axis", 1);
      ox_val sh = o->v[v];
      sh.c = j - i;
      int in[2] = {v, cst(ii)};
      if ((parts[np++] = op_val(o, "Gather", in, 2, &a, sh)) < 0) goto out;
    }
    i = j;
  }
  if (np == 1) {
    rc = parts[0];
  } else {
    pb a = {0};
    attr_int(&a, "axis", 1);
    ox_val sh = o->v[parts[0]];
    sh.c = n;
    rc = op_val(o, "Concat", parts, np, &a, sh);
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
static int activation(ox *o, const xp_op *op, int v) {
  ox_val sh = o->v[v];
  if (op->relu && (v = op_val(o, "Relu", &v, 1, NULL, sh)) < 0) return -1;
  if (!op->post) return v;
  int64_t dims[4] = {1, op->n, 1, 1};
  int nd = sh.spatial ? 4 : 2;
  int k = init_floats(o, dims, nd, op->post), b = init_floats(o, dims, nd, op->post + op->n);
  int m[2] = {v, cst(k)};
  if ((v = op_val(o, "Mul", m, 2, NULL, sh)) < 0) return -1;
  int a[2] = {v, cst(b)};
  return op_val(o, "Add", a, 2, NULL, sh);
}

/* The output of a weighted op without entries: act(bias), the same for
 * every image. */
static int const_op(ox *o, const xp_op *op, int conv) {
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
  int v = constant(o, c, dims, conv ? 4 : 2, (ox_val){op->n, op->oh, op->ow, conv});
  free(c);
  return v;
}

static int conv_op(ox *o, const xp_op *op) {
  const int kk = op->k * op->k;
  if (op->n_ent == 0) return const_op(o, op, 1);
  int64_t *L = malloc((size_t)op->n_ent * sizeof *L);
  if (!L) return -1;
  for (int64_t e = 0; e < op->n_ent; e++) L[e] = op->src[e];
  int nl = distinct(o, L, (int)op->n_ent), v = -1;
  float *w = nl > 0 ? calloc((size_t)op->n * nl * kk, sizeof *w) : NULL;
  if (!w) goto out;
  for (int j = 0; j < op->n; j++)
    for (int32_t e = op->start[j]; e < op->start[j + 1]; e++)
      w[((int64_t)j * nl + o->idx[op->src[e]]) * kk + op->tap[e]] = op->wt[e];
  int x = gather(o, L, nl);
  if (x < 0) goto out;
  int64_t wd[4] = {op->n, nl, op->k, op->k}, bd[1] = {op->n};
  int wi = init_floats(o, wd, 4, w), bi = init_floats(o, bd, 1, op->bias);
  int64_t ks[2] = {op->k, op->k}, st[2] = {op->stride, op->stride};
  int64_t pads[4] = {op->pad, op->pad, op->pad, op->pad};
  pb a = {0};
  attr_ints(&a, "kernel_shape", ks, 2);
  attr_ints(&a, "strides", st, 2);
  attr_ints(&a, "pads", pads, 4);
  int in[3] = {x, cst(wi), cst(bi)};
  v = op_val(o, "Conv", in, 3, &a, (ox_val){op->n, op->oh, op->ow, 1});
  if (v >= 0) v = activation(o, op, v);
out:
  free(L), free(w);
  return v;
}

static int linear_op(ox *o, const xp_op *op, const ir_graph *g) {
  if (op->n_ent == 0) return const_op(o, op, 0);
  const ir_layer *l = &g->layers[op->layer];
  const ir_tensor *it = &g->tensors[l->in_t];
  const int spatial = o->p->spatial[l->in_t], B = o->p->B;
  const int per = spatial ? it->h * it->w : 1, pw = it->w + 2 * B;
  int64_t *L = malloc((size_t)op->n_ent * sizeof *L);
  int64_t *at = malloc((size_t)op->n_ent * sizeof *at);
  float *w = NULL;
  int v = -1;
  if (!L || !at) goto out;
  /* each entry's plane, and its position in the plane unpadded */
  for (int64_t e = 0; e < op->n_ent; e++) {
    int64_t s = start_of(o, op->src[e]), rel = op->src[e] - s;
    L[e] = s;
    at[e] = spatial ? (rel / pw - B) * it->w + rel % pw - B : 0;
    if (s < 0 || at[e] < 0 || at[e] >= per) goto out;
  }
  int64_t *D = malloc((size_t)op->n_ent * sizeof *D);
  if (!D) goto out;
  memcpy(D, L, (size_t)op->n_ent * sizeof *D);
  int nl = distinct(o, D, (int)op->n_ent);
  int64_t cols = (int64_t)nl * per;
  if (nl <= 0 || !(w = calloc((size_t)(op->n * cols), sizeof *w))) {
    free(D);
    goto out;
  }
  for (int j = 0; j < op->n; j++)
    for (int32_t e = op->start[j]; e < op->start[j + 1]; e++)
      w[(int64_t)j * cols + (int64_t)o->idx[L[e]] * per + at[e]] = op->wt[e];
  int x = gather(o, D, nl);
  free(D);
  if (x < 0) goto out;
  if (spatial) {
    pb a = {0};
    attr_int(&a, "axis", 1);
    if ((x = op_val(o, "Flatten", &x, 1, &a, (ox_val){(int)cols, 0, 0, 0})) < 0) goto out;
  }
  int64_t wd[2] = {op->n, cols}, bd[1] = {op->n};
  int wi = init_floats(o, wd, 2, w), bi = init_floats(o, bd, 1, op->bias);
  pb a = {0};
  attr_int(&a, "transB", 1);
  int in[3] = {x, cst(wi), cst(bi)};
  v = op_val(o, "Gemm", in, 3, &a, (ox_val){op->n, 0, 0, 0});
  if (v >= 0) v = activation(o, op, v);
out:
  free(L), free(at), free(w);
  return v;
}

static int pool_op(ox *o, const xp_op *op) {
  int64_t *L = malloc(((size_t)op->n + 1) * sizeof *L);
  if (!L) return -1;
  for (int j = 0; j < op->n; j++) L[j] = op->src[j];
  int x = gather(o, L, op->n), v = -1;
  free(L);
  if (x < 0) return -1;
  if (op->kind == IR_MAXPOOL) {
    int64_t ks[2] = {op->k, op->k};
    pb a = {0};
    attr_ints(&a, "kernel_shape", ks, 2);
    attr_ints(&a, "strides", ks, 2);
    return op_val(o, "MaxPool", &x, 1, &a, (ox_val){op->n, op->oh, op->ow, 1});
  }
  if ((v = op_val(o, "GlobalAveragePool", &x, 1, NULL, (ox_val){op->n, 1, 1, 1})) < 0)
    return -1;
  pb a = {0};
  attr_int(&a, "axis", 1);
  return op_val(o, "Flatten", &v, 1, &a, (ox_val){op->n, 0, 0, 0});
}

/* The input normalisation: (input - mean) / std per channel, as the C
 * export computes it. */
static int norm_in(ox *o, const rt_norm *nm) {
  const xp_plan *p = o->p;
  int64_t dims[4] = {1, p->in_c, 1, 1};
  int mi = init_floats(o, dims, 4, nm->mean), si = init_floats(o, dims, 4, nm->std);
  int v = val_new(o, p->in_c, p->in_h, p->in_w, 1);
  if (v < 0) return -1;
  char mean[16], out[16];
  snprintf(mean, sizeof mean, "c%d", mi);
  vname(out, sizeof out, v);
  const char *in[2] = {"input", mean};
  node(o, "Sub", in, 2, out, NULL);
  int d[2] = {v, cst(si)};
  return op_val(o, "Div", d, 2, NULL, o->v[v]);
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
    v = gather(o, L, n);
  } else if (n == 0) {
    float *z = calloc((size_t)p->classes, sizeof *z);
    int64_t dims[2] = {1, p->classes};
    v = z ? constant(o, z, dims, 2, (ox_val){p->classes, 0, 0, 0}) : -1;
    free(z);
  } else if ((v = gather(o, L, n)) >= 0 &&
             (sel = calloc((size_t)n * p->classes, sizeof *sel))) {
    for (int k = 0, i = 0; k < p->classes; k++)
      if (p->logit_src[k] >= 0) sel[(int64_t)i++ * p->classes + k] = 1.0f;
    int64_t dims[2] = {n, p->classes};
    int in[2] = {v, cst(init_floats(o, dims, 2, sel))};
    v = op_val(o, "MatMul", in, 2, NULL, (ox_val){p->classes, 0, 0, 0});
  } else {
    v = -1;
  }
  free(L), free(sel);
  if (v < 0) return -1;
  char name[32];
  vname(name, sizeof name, v);
  const char *in[1] = {name};
  node(o, "Identity", in, 1, "logits", NULL);
  return 0;
}

int xp_onnx(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc,
            uint8_t **out, size_t *n, char *err, size_t errlen) {
  ox o = {.p = p, .batch = -1};
  int rc = -1;
  *out = NULL, *n = 0;
  o.val = malloc((size_t)(p->ws ? p->ws : 1) * sizeof *o.val);
  o.ch = malloc((size_t)(p->ws ? p->ws : 1) * sizeof *o.ch);
  o.idx = malloc((size_t)(p->ws ? p->ws : 1) * sizeof *o.idx);
  if (!o.val || !o.ch || !o.idx) goto oom;
  for (int64_t i = 0; i < p->ws; i++) o.val[i] = -1;

  /* every plane's start, ascending: the input's, then the ops' in order */
  int64_t n_starts = p->in_c;
  for (int i = 0; i < p->n_ops; i++) n_starts += p->ops[i].n;
  if (!(o.starts = malloc((size_t)(n_starts + 1) * sizeof *o.starts))) goto oom;
  const int64_t in_plane = xp_padded(p, p->in_h, p->in_w);
  for (int c = 0; c < p->in_c; c++) o.starts[o.n_starts++] = c * in_plane;
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    int spatial = op->kind == IR_CONV || op->kind == IR_MAXPOOL;
    int64_t plane = spatial ? xp_padded(p, op->oh, op->ow) : 1;
    for (int j = 0; j < op->n; j++) o.starts[o.n_starts++] = op->out + j * plane;
  }

  int x = norm_in(&o, nm);
  if (x < 0) goto oom;
  set_planes(&o, x, 0, in_plane, p->in_c);
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    if (op->n == 0) continue; /* nothing reads it */
    int v, spatial = op->kind == IR_CONV || op->kind == IR_MAXPOOL;
    switch (op->kind) {
    case IR_CONV:
      v = conv_op(&o, op);
      break;
    case IR_LINEAR:
      v = linear_op(&o, op, g);
      break;
    case IR_MAXPOOL:
      if ((op->h - op->k) / op->k + 1 != op->oh || (op->w - op->k) / op->k + 1 != op->ow) {
        rc = rt_fail(err, errlen, "layer %s: a max pool of %dx%d to %dx%d is not ONNX's",
                     g->layers[op->layer].name, op->h, op->w, op->oh, op->ow);
        goto fail;
      }
      v = pool_op(&o, op);
      break;
    case IR_GAP:
      v = pool_op(&o, op);
      break;
    case IR_COPY:
    default:
      v = -1;
      break;
    }
    if (v < 0) {
      rc = rt_fail(err, errlen, "layer %s: cannot express it in ONNX (out of memory, or a "
                   "plane the plan never made)", g->layers[op->layer].name);
      goto fail;
    }
    set_planes(&o, v, op->out, spatial ? xp_padded(p, op->oh, op->ow) : 1, op->n);
  }
  if (logits(&o)) goto oom;

  pb graph = {0}, model = {0}, opset = {0};
  graph.oom |= o.nodes.oom;
  pb_raw(&graph, o.nodes.p, o.nodes.n);
  pb_str(&graph, GRAPH_NAME, g->cfg.name);
  graph.oom |= o.inits.oom;
  pb_raw(&graph, o.inits.p, o.inits.n);
  int64_t in_dims[4] = {-1, p->in_c, p->in_h, p->in_w}, out_dims[2] = {-1, p->classes};
  value_info(&graph, GRAPH_INPUT, "input", in_dims, 4);
  value_info(&graph, GRAPH_OUTPUT, "logits", out_dims, 2);
  pb_int(&model, MODEL_IR_VERSION, IR_VERSION);
  pb_str(&model, MODEL_PRODUCER, "ilnas");
  pb_str(&model, MODEL_PRODUCER_VERSION, "1");
  pb_str(&model, MODEL_DOC, doc);
  pb_sub(&model, MODEL_GRAPH, &graph);
  pb_int(&opset, OPSET_VERSION, OPSET);
  pb_sub(&model, MODEL_OPSET, &opset);
  if (model.oom) {
    free(model.p);
    goto oom;
  }
  if (model.n >= ((size_t)1 << 31)) {
    free(model.p);
    rc = rt_fail(err, errlen, "the ONNX model would take %zu bytes, past protobuf's 2 GiB",
                 model.n);
    goto fail;
  }
  *out = model.p, *n = model.n;
  rc = 0;
  goto done;
oom:
  rc = rt_fail(err, errlen, "out of memory");
fail:
done:
  free(o.nodes.p), free(o.inits.p), free(o.v), free(o.val), free(o.ch), free(o.idx), free(o.starts);
  return rc;
}
