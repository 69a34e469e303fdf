/* ptx.c: the GPU kernel generators and the PTX emitter (see ptx.h).
 *
 * The kernels are simple on purpose: one thread per output element walks
 * the active taps of its output channel (or, transposed, of its input
 * channel) from a baked index table; one thread per active weight sums
 * its gradient over the batch. They are written with the shared kit
 * (kgen/kit.h), their index tables from kg_pattern (kgen/pattern.h);
 * accumulators are allocas in the entry block, which the O3 pipeline of
 * cg_ptx_emit turns into registers, so the generator stays straight-line
 * C. */
#include "kgen/ptx.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

#include "kgen/kit.h"
#include "kgen/pattern.h"

static int keep_table(LLVMModuleRef m, const char *name, void *data, size_t bytes);

/* Starts a kernel: signature, the thread's global index, and a return for
 * the threads past `total` (i64). Returns that index. Its tables are
 * device globals (keep_table); its element pointers inbounds, since no
 * base it forms lies outside its buffer. */
static LLVMValueRef begin(kg_kit *p, LLVMModuleRef m, const char *name, LLVMValueRef (*total)(kg_kit *, const void *),
                          const void *arg) {
  kg_begin(p, m, name, keep_table);
  p->inbounds = 1;
  /* Mark it a kernel: an entry point the driver can launch. */
  LLVMValueRef md[3] = {p->fn, LLVMMDStringInContext(p->ctx, "kernel", 6),
                        LLVMConstInt(p->i32, 1, 0)};
  LLVMAddNamedMetadataOperand(m, "nvvm.annotations", LLVMMDNodeInContext(p->ctx, md, 3));
  LLVMValueRef gid = LLVMBuildAdd(p->b, LLVMBuildMul(p->b, kg_sreg(p, "ctaid.x"), kg_sreg(p, "ntid.x"), ""),
                                  kg_sreg(p, "tid.x"), "gid");
  LLVMValueRef in = LLVMBuildICmp(p->b, LLVMIntULT, gid, total(p, arg), "");
  LLVMBasicBlockRef work = kg_block(p, "work"), done = kg_block(p, "done");
  LLVMBuildCondBr(p->b, in, work, done);
  LLVMPositionBuilderAtEnd(p->b, done);
  LLVMBuildRetVoid(p->b);
  LLVMPositionBuilderAtEnd(p->b, work);
  return gid;
}

/* ---- tables ------------------------------------------------------------ */

/* The tables the generators wrote, per module, until the caller takes
 * them (cg_ptx_take_tables). */
typedef struct reg_entry {
  LLVMModuleRef m;
  cg_ptx_table t;
} reg_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *reg;
static size_t reg_n, reg_cap;

static int reg_add(LLVMModuleRef m, const cg_ptx_table *t) {
  pthread_mutex_lock(&reg_lock);
  int rc = 0;
  if (reg_n == reg_cap) {
    size_t cap = reg_cap ? 2 * reg_cap : 16;
    reg_entry *r = realloc(reg, cap * sizeof *r);
    if (r) reg = r, reg_cap = cap;
    else rc = -1;
  }
  if (!rc) reg[reg_n++] = (reg_entry){m, *t};
  pthread_mutex_unlock(&reg_lock);
  return rc;
}

/* The kit's hook for device tables: the registry takes the bytes. */
static int keep_table(LLVMModuleRef m, const char *name, void *data, size_t bytes) {
  cg_ptx_table t = {.data = data, .bytes = bytes};
  snprintf(t.name, sizeof t.name, "%s", name);
  return reg_add(m, &t);
}

cg_ptx_table *cg_ptx_take_tables(LLVMModuleRef m, size_t *n) {
  pthread_mutex_lock(&reg_lock);
  size_t k = 0;
  for (size_t i = 0; i < reg_n; i++) k += reg[i].m == m;
  cg_ptx_table *out = malloc((k ? k : 1) * sizeof *out);
  size_t j = 0, kept = 0;
  for (size_t i = 0; i < reg_n; i++) {
    if (reg[i].m == m && out) out[j++] = reg[i].t;
    else if (reg[i].m == m) free(reg[i].t.data);
    else reg[kept++] = reg[i];
  }
  reg_n = kept;
  pthread_mutex_unlock(&reg_lock);
  *n = out ? k : 0;
  return out;
}

void cg_ptx_free_tables(cg_ptx_table *t, size_t n) {
  for (size_t i = 0; t && i < n; i++) free(t[i].data);
  free(t);
}

static LLVMValueRef mulc(kg_kit *p, LLVMValueRef a, int64_t c) { return kg_mul(p, a, kg_c64(p, c)); }
static LLVMValueRef udivc(kg_kit *p, LLVMValueRef a, int64_t c) { return LLVMBuildUDiv(p->b, a, kg_c64(p, c), ""); }
static LLVMValueRef uremc(kg_kit *p, LLVMValueRef a, int64_t c) { return LLVMBuildURem(p->b, a, kg_c64(p, c), ""); }

/* 0 <= v < lim, as one unsigned compare. */
static LLVMValueRef in_range(kg_kit *p, LLVMValueRef v, int64_t lim) {
  return LLVMBuildICmp(p->b, LLVMIntULT, v, kg_c64(p, lim), "");
}

/* acc += a * b, in the accumulator's type. */
static void accumulate(kg_kit *p, LLVMValueRef acc, LLVMTypeRef t, LLVMValueRef a, LLVMValueRef b) {
  if (t == p->f64) a = LLVMBuildFPExt(p->b, a, p->f64, ""), b = LLVMBuildFPExt(p->b, b, p->f64, "");
  LLVMValueRef v = LLVMBuildLoad2(p->b, t, acc, "");
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, v, LLVMBuildFMul(p->b, a, b, ""), ""), acc);
}

/* base[i] += the value in acc (a local). */
static void add_into(kg_kit *p, LLVMValueRef base, LLVMValueRef i, LLVMValueRef acc) {
  LLVMValueRef ptr = kg_at(p, base, i);
  LLVMValueRef sum = LLVMBuildFAdd(p->b, LLVMBuildLoad2(p->b, p->f32, ptr, ""), LLVMBuildLoad2(p->b, p->f32, acc, ""), "");
  LLVMBuildStore(p->b, sum, ptr);
}

/* acc = bias[o] when the bias pointer is not NULL and bias o is active. */
static void init_bias(kg_kit *p, LLVMValueRef acc, const uint8_t *bm, int nout, LLVMValueRef o) {
  LLVMBuildStore(p->b, LLVMConstReal(p->f32, 0), acc);
  LLVMValueRef has = LLVMBuildICmp(p->b, LLVMIntNE, p->pc, LLVMConstNull(p->fp), "");
  if (bm) {
    kg_tab bt = kg_table(p, "bm", bm, (size_t)nout, 1);
    LLVMValueRef on = LLVMBuildICmp(p->b, LLVMIntNE, kg_tab_get(p, bt, o), kg_c64(p, 0), "");
    has = LLVMBuildAnd(p->b, has, on, "");
  }
  LLVMBasicBlockRef join = kg_if_begin(p, has);
  LLVMBuildStore(p->b, kg_ldf(p, p->pc, o), acc);
  kg_if_end(p, join);
}

/* ---- conv ------------------------------------------------------------- */

static int conv_out(const cg_conv_desc *d, int *oh, int *ow) {
  if (d->k < 1 || d->stride < 1) return -1;
  *oh = (d->h + 2 * d->pad - d->k) / d->stride + 1;
  *ow = (d->w + 2 * d->pad - d->k) / d->stride + 1;
  return *oh > 0 && *ow > 0 && d->cin > 0 && d->cout > 0 ? 0 : -1;
}

int64_t cg_ptx_conv_threads(const cg_conv_desc *d, cg_ptx_op op, int64_t n) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return 0;
  int64_t kk = (int64_t)d->k * d->k;
  switch (op) {
  case CG_PTX_FWD: return n * d->cout * g.oh * g.tiles;
  case CG_PTX_BWD_DATA: return g.fast_bwd ? n * d->cin * d->h * g.in_tiles : n * d->cin * d->h * d->w;
  default: return cg_ptx_wchunks(n) * kg_mask_count(d->wm, (int64_t)d->cout * d->cin * kk);
  }
}

int64_t cg_ptx_linear_threads(const cg_linear_desc *d, cg_ptx_op op, int64_t n) {
  switch (op) {
  case CG_PTX_FWD: return n * d->out;
  case CG_PTX_BWD_DATA: return n * d->in;
  default: return kg_mask_count(d->wm, (int64_t)d->out * d->in);
  }
}

typedef struct conv_ctx {
  const cg_conv_desc *d;
  int oh, ow;
  int64_t per;                    /* threads per sample, or all (bwd_weight) */
  int batch;                      /* per counts per sample */
} conv_ctx;

static LLVMValueRef conv_total(kg_kit *p, const void *arg) {
  const conv_ctx *c = arg;
  return c->batch ? mulc(p, p->n, c->per) : kg_c64(p, c->per);
}

int cg_ptx_conv_geom_init(cg_ptx_conv_geom *g, const cg_conv_desc *d) {
  memset(g, 0, sizeof *g);
  if (conv_out(d, &g->oh, &g->ow)) return -1;
  const int s = d->stride, K = d->k;
  g->tiles = (g->ow + CG_PTX_TX - 1) / CG_PTX_TX;
  /* x padded by pad on every side, and on the right far enough that the
   * last tile's reads stay in the row. */
  g->hp = d->h + 2 * d->pad;
  g->wp = d->w + 2 * d->pad;
  int need = (g->tiles * CG_PTX_TX - 1) * s + K;
  if (g->wp < need) g->wp = need;
  g->xp_ns = (int64_t)d->cin * g->hp * g->wp;
  /* The input's gradient as a stride-1 correlation of dy padded by k-1-pad
   * with the flipped kernel: only for stride 1 and pad < k. */
  g->fast_bwd = s == 1 && d->pad <= K - 1;
  if (g->fast_bwd) {
    g->in_tiles = (d->w + CG_PTX_TX - 1) / CG_PTX_TX;
    g->hq = g->oh + 2 * (K - 1 - d->pad);
    g->wq = g->ow + 2 * (K - 1 - d->pad);
    need = g->in_tiles * CG_PTX_TX - 1 + K;
    if (g->wq < need) g->wq = need;
    g->dyp_ns = (int64_t)d->cout * g->hq * g->wq;
  }
  return 0;
}

/* The padded copy of a tensor t[n][c][h][w] (stride a_ns) into c =
 * tp[n][c][hp][wp], packed, t's pixel (y, x) at (y + top, x + left),
 * zeros around: one thread per element of tp. */
int cg_ptx_pad(LLVMModuleRef m, int64_t ch, int64_t h, int64_t w, int64_t top, int64_t left, int64_t hp,
               int64_t wp, const char *name) {
  if (ch < 1 || hp < 1 || wp < 1) return -1;
  conv_ctx c = {NULL, 0, 0, ch * hp * wp, 1};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef cc = udivc(&p, r, hp * wp), px = uremc(&p, r, hp * wp);
  LLVMValueRef y = kg_add(&p, udivc(&p, px, wp), kg_c64(&p, -top)), x = kg_add(&p, uremc(&p, px, wp), kg_c64(&p, -left));
  LLVMValueRef v = kg_local(&p, p.f32, "v");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), v);
  LLVMBasicBlockRef join = kg_if_begin(&p, LLVMBuildAnd(p.b, in_range(&p, y, h), in_range(&p, x, w), ""));
  LLVMValueRef at = kg_add(&p, kg_add(&p, kg_mul(&p, nn, p.a_ns), mulc(&p, cc, h * w)), kg_add(&p, mulc(&p, y, w), x));
  LLVMBuildStore(p.b, kg_ldf(&p, p.pa, at), v);
  kg_if_end(&p, join);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), kg_at(&p, p.pc, gid));
  return kg_end(&p);
}

/* A convolution over a padded input as a table of taps: output row r (a
 * channel) sums, over its entries j, w[widx[j]] times the input at
 * off[j] from its window's corner. No bounds are tested: the padding
 * holds the zeros. One thread per (sample, row, output line, tile of
 * CG_PTX_TX outputs along the line), the tiles fastest; each entry's
 * offset and weight, loaded once, feed CG_PTX_TX multiply-adds.
 * Transposed (bwd_data at stride 1), rows are input channels and a
 * weight reads output channel co through the flipped tap. */
typedef struct tapconv {
  int64_t oh, ow, tiles;         /* output plane, tiles per line */
  int64_t s, in_ns, in_cs, wp;   /* input stride; padded sample, channel, line */
  int transposed;                /* dx += (else y = acc + bias) */
} tapconv;

static int tap_conv(LLVMModuleRef m, const cg_conv_desc *d, const tapconv *t, const char *name) {
  const int64_t K = d->k, kk = K * K;
  if (t->in_ns > INT32_MAX) return -1;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, kk, t->transposed ? KG_BY_INPUT : KG_BY_OUTPUT)) return -1;
  int32_t *off = malloc((size_t)(pat.nnz ? pat.nnz : 1) * sizeof *off);
  if (!off) return kg_pattern_free(&pat), -1;
  for (int64_t j = 0; j < pat.nnz; j++) {
    int64_t wi = pat.idx[j], ky = wi % kk / K, kx = wi % K;
    int64_t ch = t->transposed ? wi / (d->cin * kk) : wi / kk % d->cin;
    if (t->transposed) ky = K - 1 - ky, kx = K - 1 - kx;
    off[j] = (int32_t)(ch * t->in_cs + ky * t->wp + kx);
  }
  const int64_t rows = pat.rows;
  conv_ctx c = {NULL, 0, 0, rows * t->oh * t->tiles, 1};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  kg_tab st = kg_table(&p, "start", pat.start, (size_t)rows + 1, 4);
  kg_tab ot = kg_table(&p, "off", off, (size_t)pat.nnz, 4);
  kg_tab wt = kg_table(&p, "widx", pat.idx, (size_t)pat.nnz, 4);
  kg_pattern_free(&pat), free(off);
  LLVMValueRef nn = udivc(&p, gid, c.per), q = uremc(&p, gid, c.per);
  LLVMValueRef r = udivc(&p, q, t->oh * t->tiles), lt = uremc(&p, q, t->oh * t->tiles);
  LLVMValueRef oy = udivc(&p, lt, t->tiles), tile = uremc(&p, lt, t->tiles);
  LLVMValueRef ox0 = mulc(&p, tile, CG_PTX_TX);
  LLVMValueRef base = kg_add(&p, mulc(&p, nn, t->in_ns), kg_add(&p, mulc(&p, oy, t->s * t->wp), mulc(&p, ox0, t->s)));
  LLVMValueRef acc[CG_PTX_TX];
  LLVMValueRef b0 = kg_local(&p, p.f32, "b0");
  if (t->transposed) LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), b0);
  else init_bias(&p, b0, d->bm, (int)rows, r);
  LLVMValueRef bv = LLVMBuildLoad2(p.b, p.f32, b0, "");
  for (int i = 0; i < CG_PTX_TX; i++) {
    acc[i] = kg_local(&p, p.f32, "acc");
    LLVMBuildStore(p.b, bv, acc[i]);
  }
  kg_loop l;
  kg_row_loop(&p, &l, st, r, 1);
  LLVMValueRef j = l.iv;
  LLVMValueRef at = kg_add(&p, base, kg_tab_get(&p, ot, j));
  LLVMValueRef wv = kg_ldf(&p, p.pb, kg_tab_get(&p, wt, j));
  for (int i = 0; i < CG_PTX_TX; i++) {
    LLVMValueRef xv = kg_ldf(&p, p.pa, kg_add(&p, at, kg_c64(&p, i * t->s)));
    LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc[i], "");
    LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, v, LLVMBuildFMul(p.b, wv, xv, ""), ""), acc[i]);
  }
  kg_loop_close(&p, &l);
  LLVMValueRef ob = kg_add(&p, kg_mul(&p, nn, p.b_ns), kg_add(&p, mulc(&p, r, t->oh * t->ow), mulc(&p, oy, t->ow)));
  for (int i = 0; i < CG_PTX_TX; i++) {
    LLVMValueRef ox = kg_add(&p, ox0, kg_c64(&p, i));
    LLVMBasicBlockRef join = kg_if_begin(&p, in_range(&p, ox, t->ow));
    LLVMValueRef op = kg_at(&p, t->transposed ? p.pc : p.pd, kg_add(&p, ob, ox));
    LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc[i], "");
    if (t->transposed) v = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, op, ""), v, "");
    LLVMBuildStore(p.b, v, op);
    kg_if_end(&p, join);
  }
  return kg_end(&p);
}

int cg_ptx_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return -1;
  tapconv tc = {g.oh, g.ow, g.tiles, d->stride, g.xp_ns, (int64_t)g.hp * g.wp, g.wp, 0};
  return tap_conv(m, d, &tc, name);
}

/* Stride 1: dx[ci][iy][ix] = sum over (co, ky, kx) of w[co][ci][ky][kx]
 * times dyp[co][iy + k-1-ky][ix + k-1-kx], dyp being dy padded by k-1-pad. */
static int conv_bwd_data_fast(LLVMModuleRef m, const cg_conv_desc *d, const cg_ptx_conv_geom *g,
                              const char *name) {
  tapconv tc = {d->h, d->w, g->in_tiles, 1, g->dyp_ns, (int64_t)g->hq * g->wq, g->wq, 1};
  return tap_conv(m, d, &tc, name);
}

/* The output (oy, ox) that reads the input at (ty0 - pad, tx0 - pad)
 * through tap kyx = ky*k + kx, and whether there is one: oy*stride =
 * ty0 - ky must be nonnegative (as unsigned, a negative value is out of
 * range), below oh*stride and a multiple of the stride; the same for x. */
static LLVMValueRef tap_output(kg_kit *p, const cg_conv_desc *d, const conv_ctx *c, LLVMValueRef ty0,
                               LLVMValueRef tx0, LLVMValueRef kyx, LLVMValueRef *oy, LLVMValueRef *ox) {
  LLVMValueRef ty = LLVMBuildSub(p->b, ty0, udivc(p, kyx, d->k), "");
  LLVMValueRef tx = LLVMBuildSub(p->b, tx0, uremc(p, kyx, d->k), "");
  *oy = udivc(p, ty, d->stride), *ox = udivc(p, tx, d->stride);
  LLVMValueRef ok = LLVMBuildAnd(p->b, in_range(p, ty, (int64_t)c->oh * d->stride),
                                 in_range(p, tx, (int64_t)c->ow * d->stride), "");
  if (d->stride > 1) {
    LLVMValueRef ex = LLVMBuildOr(p->b, uremc(p, ty, d->stride), uremc(p, tx, d->stride), "");
    ok = LLVMBuildAnd(p->b, ok, LLVMBuildICmp(p->b, LLVMIntEQ, ex, kg_c64(p, 0), ""), "");
  }
  return ok;
}

static int conv_bwd_data_general(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_ctx c = {d, 0, 0, 0, 1};
  if (conv_out(d, &c.oh, &c.ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)c.oh * c.ow, hw = (int64_t)d->h * d->w;
  kg_pattern pat;
  /* Rows are input channels, entries the weights that read them. */
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, kk, KG_BY_INPUT)) return -1;
  c.per = d->cin * hw;
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  kg_tab st = kg_table(&p, "start", pat.start, (size_t)d->cin + 1, 4);
  kg_tab wt = kg_table(&p, "widx", pat.idx, (size_t)pat.nnz, 4);
  kg_pattern_free(&pat);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef ci = udivc(&p, r, hw), px = uremc(&p, r, hw);
  LLVMValueRef ty0 = kg_add(&p, udivc(&p, px, d->w), kg_c64(&p, d->pad));
  LLVMValueRef tx0 = kg_add(&p, uremc(&p, px, d->w), kg_c64(&p, d->pad));
  LLVMValueRef yb = kg_mul(&p, nn, p.a_ns);
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  kg_loop l;
  kg_row_loop(&p, &l, st, ci, 1);
  LLVMValueRef j = l.iv;
  LLVMValueRef wi = kg_tab_get(&p, wt, j);
  LLVMValueRef co = udivc(&p, wi, d->cin * kk), kyx = uremc(&p, wi, kk);
  LLVMValueRef oy, ox;
  LLVMBasicBlockRef join = kg_if_begin(&p, tap_output(&p, d, &c, ty0, tx0, kyx, &oy, &ox));
  LLVMValueRef yi = kg_add(&p, kg_add(&p, yb, mulc(&p, co, ohw)), kg_add(&p, mulc(&p, oy, c.ow), ox));
  accumulate(&p, acc, p.f32, kg_ldf(&p, p.pa, yi), kg_ldf(&p, p.pb, wi));
  kg_if_end(&p, join);
  kg_loop_close(&p, &l);
  add_into(&p, p.pc, kg_add(&p, kg_mul(&p, nn, p.b_ns), r), acc);
  return kg_end(&p);
}

/* The stride-1 kernel over padded dy where it applies, else one thread
 * per dx element testing each tap's bounds. */
int cg_ptx_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return -1;
  return g.fast_bwd ? conv_bwd_data_fast(m, d, &g, name) : conv_bwd_data_general(m, d, name);
}

static LLVMValueRef lin_total(kg_kit *p, const void *arg);

/* cg_ptx_wchunks(n) * per threads. */
static LLVMValueRef chunk_total(kg_kit *p, const void *arg) {
  const int64_t *per = arg;
  return mulc(p, udivc(p, kg_add(p, p->n, kg_c64(p, CG_PTX_WCHUNK - 1)), CG_PTX_WCHUNK), *per);
}

/* One thread per (chunk of samples, active weight), the weights fastest,
 * so that a warp reads one dy plane (broadcast) and neighbouring taps of
 * one padded x plane: it sums its tap's products over its samples' output
 * planes in float, with no bounds to test, and stores the partial sum:
 * each thread writes its own, and cg_ptx_conv_wgrad_sum adds them. */
int cg_ptx_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d) || g.xp_ns > INT32_MAX) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)g.oh * g.ow;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, kk, KG_BY_OUTPUT)) return -1;
  size_t nnz = (size_t)pat.nnz;
  int32_t *off = malloc((nnz ? nnz : 1) * sizeof *off);
  if (!off) {
    kg_pattern_free(&pat);
    return -1;
  }
  for (size_t j = 0; j < nnz; j++) {
    int64_t wi = pat.idx[j], ci = wi / kk % d->cin, ky = wi % kk / K, kx = wi % K;
    off[j] = (int32_t)(ci * g.hp * g.wp + ky * g.wp + kx);
  }
  int64_t per = (int64_t)(nnz ? nnz : 1);
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, chunk_total, &per);
  kg_tab wt = kg_table(&p, "widx", pat.idx, nnz, 4);
  kg_tab ot = kg_table(&p, "off", off, nnz, 4);
  kg_pattern_free(&pat), free(off);
  LLVMValueRef q = udivc(&p, gid, per), j = uremc(&p, gid, per);
  LLVMValueRef wi = kg_tab_get(&p, wt, j), co = udivc(&p, wi, d->cin * kk);
  LLVMValueRef n0 = mulc(&p, q, CG_PTX_WCHUNK), n1 = kg_add(&p, n0, kg_c64(&p, CG_PTX_WCHUNK));
  n1 = LLVMBuildSelect(p.b, LLVMBuildICmp(p.b, LLVMIntULT, n1, p.n, ""), n1, p.n, "");
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  kg_loop ln, ly, lx;
  kg_loop_open(&p, &ln, n0, n1, 1);
  LLVMValueRef nn = ln.iv;
  LLVMValueRef xb = kg_add(&p, mulc(&p, nn, g.xp_ns), kg_tab_get(&p, ot, j));
  LLVMValueRef yb = kg_add(&p, kg_mul(&p, nn, p.b_ns), mulc(&p, co, ohw));
  kg_loop_open(&p, &ly, kg_c64(&p, 0), kg_c64(&p, g.oh), 1);
  LLVMValueRef oy = ly.iv;
  LLVMValueRef xr = kg_add(&p, xb, mulc(&p, oy, d->stride * g.wp)), yr = kg_add(&p, yb, mulc(&p, oy, g.ow));
  kg_loop_open(&p, &lx, kg_c64(&p, 0), kg_c64(&p, g.ow), 1);
  LLVMValueRef ox = lx.iv;
  accumulate(&p, acc, p.f32, kg_ldf(&p, p.pb, kg_add(&p, yr, ox)), kg_ldf(&p, p.pa, kg_add(&p, xr, mulc(&p, ox, d->stride))));
  kg_loop_close(&p, &lx);
  kg_loop_close(&p, &ly);
  kg_loop_close(&p, &ln);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, acc, ""), kg_at(&p, p.pd, gid));
  return kg_end(&p);
}

/* One thread per active weight: its partial sums, chunk after chunk (so
 * a warp reads consecutive floats), stored at its place in dw. */
int cg_ptx_conv_wgrad_sum(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  const int64_t kk = (int64_t)d->k * d->k;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, kk, KG_BY_OUTPUT)) return -1;
  size_t nnz = (size_t)pat.nnz;
  int64_t per[2] = {(int64_t)(nnz ? nnz : 1), 0};
  kg_kit p;
  LLVMValueRef j = begin(&p, m, name, lin_total, per);
  kg_tab wt = kg_table(&p, "widx", pat.idx, nnz, 4);
  kg_pattern_free(&pat);
  LLVMValueRef chunks = udivc(&p, kg_add(&p, p.n, kg_c64(&p, CG_PTX_WCHUNK - 1)), CG_PTX_WCHUNK);
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  kg_loop lq;
  kg_loop_open(&p, &lq, kg_c64(&p, 0), chunks, 1);
  LLVMValueRef v = kg_ldf(&p, p.pa, kg_add(&p, mulc(&p, lq.iv, per[0]), j));
  LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, acc, ""), v, ""), acc);
  kg_loop_close(&p, &lq);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, acc, ""), kg_at(&p, p.pc, kg_tab_get(&p, wt, j)));
  return kg_end(&p);
}

/* ---- linear ----------------------------------------------------------- */

static LLVMValueRef lin_total(kg_kit *p, const void *arg) {
  const int64_t *per = arg; /* per[0]: per sample (per[1] != 0) or all */
  return per[1] ? mulc(p, p->n, per[0]) : kg_c64(p, per[0]);
}

/* fwd (transpose 0) and bwd_data (transpose 1) differ only in which index
 * a thread owns and where it reads. */
static int linear_gemv(LLVMModuleRef m, const cg_linear_desc *d, const char *name, int transpose) {
  if (d->in < 1 || d->out < 1) return -1;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->out, d->in, 1, transpose ? KG_BY_INPUT : KG_BY_OUTPUT)) return -1;
  /* The entries as the other side's feature: fwd an input, bwd_data an
   * output. */
  for (int64_t j = 0; j < pat.nnz; j++) pat.idx[j] = transpose ? pat.idx[j] / d->in : pat.idx[j] % d->in;
  int64_t rows = pat.rows, per[2] = {rows, 1};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  kg_tab st = kg_table(&p, "start", pat.start, (size_t)rows + 1, 4);
  kg_tab it = kg_table(&p, "idx", pat.idx, (size_t)pat.nnz, 4);
  kg_pattern_free(&pat);
  /* Samples fastest: a warp walks one row's entries together, so the
   * table and weight loads are broadcasts and the loop does not diverge. */
  LLVMValueRef r = LLVMBuildUDiv(p.b, gid, p.n, ""), nn = LLVMBuildURem(p.b, gid, p.n, "");
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  if (transpose) LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  else init_bias(&p, acc, d->bm, d->out, r);
  kg_loop l;
  kg_row_loop(&p, &l, st, r, 1);
  LLVMValueRef j = l.iv;
  LLVMValueRef o = kg_tab_get(&p, it, j);
  /* fwd: r = output, o = input; bwd_data: r = input, o = output. The
   * input is batch-wide: sample nn of feature o at o * n + nn. */
  LLVMValueRef wi = transpose ? kg_add(&p, mulc(&p, o, d->in), r) : kg_add(&p, mulc(&p, r, d->in), o);
  accumulate(&p, acc, p.f32, kg_ldf(&p, p.pa, kg_add(&p, kg_mul(&p, o, p.n), nn)), kg_ldf(&p, p.pb, wi));
  kg_loop_close(&p, &l);
  LLVMValueRef outp = kg_at(&p, transpose ? p.pc : p.pd, kg_add(&p, kg_mul(&p, nn, p.b_ns), r));
  LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc, "");
  if (transpose) v = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, outp, ""), v, "");
  LLVMBuildStore(p.b, v, outp);
  return kg_end(&p);
}

int cg_ptx_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return linear_gemv(m, d, name, 0);
}

int cg_ptx_linear_bwd_data(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return linear_gemv(m, d, name, 1);
}

int cg_ptx_linear_bwd_weight(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  if (d->in < 1 || d->out < 1) return -1;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->out, d->in, 1, KG_BY_OUTPUT)) return -1;
  int64_t per[2] = {pat.nnz, 0};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  kg_tab wt = kg_table(&p, "widx", pat.idx, (size_t)pat.nnz, 4);
  kg_pattern_free(&pat);
  LLVMValueRef wi = kg_tab_get(&p, wt, gid);
  /* Two rows of the batch-wide inputs, each read in order. */
  LLVMValueRef yb = kg_mul(&p, udivc(&p, wi, d->in), p.n), xb = kg_mul(&p, uremc(&p, wi, d->in), p.n);
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  kg_loop ln;
  kg_loop_open(&p, &ln, kg_c64(&p, 0), p.n, 1);
  LLVMValueRef nn = ln.iv;
  accumulate(&p, acc, p.f32, kg_ldf(&p, p.pb, kg_add(&p, yb, nn)), kg_ldf(&p, p.pa, kg_add(&p, xb, nn)));
  kg_loop_close(&p, &ln);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, acc, ""), kg_at(&p, p.pc, wi));
  return kg_end(&p);
}

/* ---- bias gradient ----------------------------------------------------- */

/* One thread per (sample, output channel) sums its plane in double and
 * adds the sum into db by an atomic: the caller zeroes db first, masked
 * biases are skipped, so they stay exactly 0. */
int cg_ptx_bias_grad(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per[2] = {nout, 1};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  LLVMValueRef nn = udivc(&p, gid, nout), o = uremc(&p, gid, nout);
  LLVMBasicBlockRef join = NULL;
  if (bm) {
    kg_tab bt = kg_table(&p, "bm", bm, (size_t)nout, 1);
    join = kg_if_begin(&p, LLVMBuildICmp(p.b, LLVMIntNE, kg_tab_get(&p, bt, o), kg_c64(&p, 0), ""));
  }
  LLVMValueRef acc = kg_local(&p, p.f64, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f64, 0), acc);
  LLVMValueRef base = kg_add(&p, kg_mul(&p, nn, p.a_ns), mulc(&p, o, plane));
  kg_loop l;
  kg_loop_open(&p, &l, kg_c64(&p, 0), kg_c64(&p, plane), 1);
  LLVMValueRef i = l.iv;
  LLVMValueRef v = LLVMBuildFPExt(p.b, kg_ldf(&p, p.pa, kg_add(&p, base, i)), p.f64, "");
  LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f64, acc, ""), v, ""), acc);
  kg_loop_close(&p, &l);
  LLVMValueRef sum = LLVMBuildFPTrunc(p.b, LLVMBuildLoad2(p.b, p.f64, acc, ""), p.f32, "");
  LLVMBuildAtomicRMW(p.b, LLVMAtomicRMWBinOpFAdd, kg_at(&p, p.pc, o), sum, LLVMAtomicOrderingMonotonic, 0);
  if (join) kg_if_end(&p, join);
  return kg_end(&p);
}

/* ---- dense helpers ----------------------------------------------------- */

int cg_ptx_bias_fill(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per[2] = {nout * plane, 1};
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  LLVMValueRef nn = udivc(&p, gid, per[0]), r = uremc(&p, gid, per[0]), o = udivc(&p, r, plane);
  LLVMValueRef v = kg_local(&p, p.f32, "v");
  init_bias(&p, v, bm, (int)nout, o);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), kg_at(&p, p.pd, kg_add(&p, kg_mul(&p, nn, p.b_ns), r)));
  return kg_end(&p);
}

static LLVMValueRef count_total(kg_kit *p, const void *arg) {
  (void)arg;
  return p->n;
}

int cg_ptx_scale(LLVMModuleRef m, const char *name) {
  kg_kit p;
  LLVMValueRef i = begin(&p, m, name, count_total, NULL);
  LLVMValueRef cp = kg_at(&p, p.pc, i);
  LLVMBuildStore(p.b, LLVMBuildFMul(p.b, LLVMBuildLoad2(p.b, p.f32, cp, ""), kg_ldf(&p, p.pa, i), ""), cp);
  return kg_end(&p);
}

/* The batch-wide column layout of the dense path: col[r][n * oh*ow],
 * r = ci*k*k + ky*k + kx, sample-major within a row, so that one sgemm
 * covers the batch. Its row length is runtime: n * oh*ow. */
static LLVMValueRef cols_total(kg_kit *p, const void *arg) { return kg_mul(p, p->n, kg_c64(p, *(const int64_t *)arg)); }

/* One thread per col element, the pixels fastest. */
int cg_ptx_im2col(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  int oh, ow;
  if (conv_out(d, &oh, &ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)oh * ow, hw = (int64_t)d->h * d->w;
  int64_t per = d->cin * kk * ohw;
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, cols_total, &per);
  LLVMValueRef row = mulc(&p, p.n, ohw);
  LLVMValueRef r = LLVMBuildUDiv(p.b, gid, row, ""), j = LLVMBuildURem(p.b, gid, row, "");
  LLVMValueRef nn = udivc(&p, j, ohw), px = uremc(&p, j, ohw);
  LLVMValueRef ci = udivc(&p, r, kk), kyx = uremc(&p, r, kk);
  LLVMValueRef iy = kg_add(&p, kg_add(&p, mulc(&p, udivc(&p, px, ow), d->stride), kg_c64(&p, -d->pad)), udivc(&p, kyx, K));
  LLVMValueRef ix = kg_add(&p, kg_add(&p, mulc(&p, uremc(&p, px, ow), d->stride), kg_c64(&p, -d->pad)), uremc(&p, kyx, K));
  LLVMValueRef v = kg_local(&p, p.f32, "v");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), v);
  LLVMValueRef ok = LLVMBuildAnd(p.b, in_range(&p, iy, d->h), in_range(&p, ix, d->w), "");
  LLVMBasicBlockRef join = kg_if_begin(&p, ok);
  LLVMValueRef xi = kg_add(&p, kg_add(&p, kg_mul(&p, nn, p.a_ns), mulc(&p, ci, hw)), kg_add(&p, mulc(&p, iy, d->w), ix));
  LLVMBuildStore(p.b, kg_ldf(&p, p.pa, xi), v);
  kg_if_end(&p, join);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), kg_at(&p, p.pc, gid));
  return kg_end(&p);
}

/* dx[n][ci][iy][ix] += the col entries that read it: one thread per dx
 * element, its taps in a fixed order. */
int cg_ptx_col2im(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_ctx c = {d, 0, 0, 0, 1};
  if (conv_out(d, &c.oh, &c.ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)c.oh * c.ow, hw = (int64_t)d->h * d->w;
  c.per = d->cin * hw;
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef ci = udivc(&p, r, hw), px = uremc(&p, r, hw);
  LLVMValueRef ty0 = kg_add(&p, udivc(&p, px, d->w), kg_c64(&p, d->pad));
  LLVMValueRef tx0 = kg_add(&p, uremc(&p, px, d->w), kg_c64(&p, d->pad));
  LLVMValueRef row = mulc(&p, p.n, ohw);
  LLVMValueRef cb = kg_add(&p, kg_mul(&p, mulc(&p, ci, kk), row), mulc(&p, nn, ohw));
  LLVMValueRef acc = kg_local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  kg_loop l;
  kg_loop_open(&p, &l, kg_c64(&p, 0), kg_c64(&p, kk), 1);
  LLVMValueRef kyx = l.iv;
  LLVMValueRef oy, ox;
  LLVMBasicBlockRef join = kg_if_begin(&p, tap_output(&p, d, &c, ty0, tx0, kyx, &oy, &ox));
  LLVMValueRef at = kg_add(&p, cb, kg_add(&p, kg_mul(&p, kyx, row), kg_add(&p, mulc(&p, oy, c.ow), ox)));
  LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc, "");
  LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, v, kg_ldf(&p, p.pa, at), ""), acc);
  kg_if_end(&p, join);
  kg_loop_close(&p, &l);
  add_into(&p, p.pc, kg_add(&p, kg_mul(&p, nn, p.b_ns), r), acc);
  return kg_end(&p);
}

/* Between a tensor t[n][nout][plane] (stride ns) and its batch-wide form
 * cm[nout][n * plane]: gather (to cm) or scatter (from cm, adding the
 * bias as bias_fill does). One thread per element, the pixels fastest. */
static int cm_move(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name, int scatter) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per = nout * plane;
  kg_kit p;
  LLVMValueRef gid = begin(&p, m, name, cols_total, &per);
  LLVMValueRef row = mulc(&p, p.n, plane);
  LLVMValueRef o = LLVMBuildUDiv(p.b, gid, row, ""), j = LLVMBuildURem(p.b, gid, row, "");
  LLVMValueRef nn = udivc(&p, j, plane), px = uremc(&p, j, plane);
  LLVMValueRef ti = kg_add(&p, kg_mul(&p, nn, scatter ? p.b_ns : p.a_ns), kg_add(&p, mulc(&p, o, plane), px));
  if (scatter) {
    LLVMValueRef v = kg_local(&p, p.f32, "v");
    init_bias(&p, v, bm, (int)nout, o);
    LLVMValueRef sum = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), kg_ldf(&p, p.pa, gid), "");
    LLVMBuildStore(p.b, sum, kg_at(&p, p.pd, ti));
  } else {
    LLVMBuildStore(p.b, kg_ldf(&p, p.pa, ti), kg_at(&p, p.pc, gid));
  }
  return kg_end(&p);
}

int cg_ptx_to_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const char *name) {
  return cm_move(m, nout, plane, NULL, name, 0);
}

int cg_ptx_from_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  return cm_move(m, nout, plane, bm, name, 1);
}

/* ---- PTX -------------------------------------------------------------- */

/* The GPU and PTX ISA the emitted code targets at most. LLVM 14 knows
 * processors up to sm_86, but sm_80 with PTX 7.5 (its newest ISA) is the
 * pair whose output `ptxas -arch=sm_90` accepts and the driver JIT-compiles
 * for every newer GPU, so a newer request is lowered to it. LLVM 16 added
 * sm_90 with PTX 7.8. */
#if LLVM_VERSION_MAJOR >= 16
#define PTX_MAX_SM 90
#define PTX_FEATURES "+ptx78"
#else
#define PTX_MAX_SM 80
#define PTX_FEATURES "+ptx75"
#endif

const char *cg_ptx_target_sm(const char *sm, char *buf, size_t len) {
  int v = 80;
  if (sm && strncmp(sm, "sm_", 3) == 0 && atoi(sm + 3) > 0) v = atoi(sm + 3);
  if (v > PTX_MAX_SM) v = PTX_MAX_SM;
  snprintf(buf, len, "sm_%d", v);
  return buf;
}

static pthread_once_t ptx_once = PTHREAD_ONCE_INIT;

static void ptx_init(void) {
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
}

int cg_ptx_emit(LLVMModuleRef m, const char *sm, char **ptx, char *err, size_t errlen) {
  static const char triple[] = "nvptx64-nvidia-cuda";
  *ptx = NULL;
  pthread_once(&ptx_once, ptx_init);
  LLVMTargetRef t;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    snprintf(err, errlen, "ptx: this LLVM cannot target %s: %s", triple, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return -1;
  }
  char cpu[16];
  cg_ptx_target_sm(sm, cpu, sizeof cpu);
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(t, triple, cpu, PTX_FEATURES, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelDefault);
  if (!tm) {
    snprintf(err, errlen, "ptx: cannot create a target machine for %s %s", triple, cpu);
    return -1;
  }
  LLVMSetTarget(m, triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  int rc = -1;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "ptx: generated module is invalid: %s", msg);
    goto out;
  }
  LLVMDisposeMessage(msg), msg = NULL;
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(m, "default<O3>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (e) {
    char *em = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "ptx: optimising: %s", em);
    LLVMDisposeErrorMessage(em);
    goto out;
  }
  LLVMMemoryBufferRef buf;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMAssemblyFile, &msg, &buf)) {
    snprintf(err, errlen, "ptx: emitting %s: %s", cpu, msg ? msg : "?");
    goto out;
  }
  size_t n = LLVMGetBufferSize(buf);
  *ptx = malloc(n + 1);
  if (!*ptx) {
    snprintf(err, errlen, "ptx: out of memory");
  } else {
    memcpy(*ptx, LLVMGetBufferStart(buf), n);
    (*ptx)[n] = 0;
    rc = 0;
  }
  LLVMDisposeMemoryBuffer(buf);
out:
  if (msg) LLVMDisposeMessage(msg);
  LLVMDisposeTargetMachine(tm);
  return rc;
}
